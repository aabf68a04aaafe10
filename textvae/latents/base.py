"""The interface every latent family implements, so that ``TextVAE`` never knows which one it has.

A latent turns the encoder's summary h (B, H) into posterior parameters, draws a code z from them
with externally supplied noise, and scores codes: KL to the prior per dimension, log q(z|x),
log p(z). It also owns what the decoder and the high-level helpers need from the code space: a
prior sample, a point code for reconstruction and a path between two codes. New families (a VQ
codebook, Gumbel-softmax categoricals) are a new module in this package plus an entry in
``textvae.latents.LATENTS``; ``model.latent`` chooses one.

Posterior parameters are a tuple of tensors whose first dimension is the batch; their meaning
belongs to the family (the Gaussian's is ``(mu, logvar)``).
"""

import torch
from torch import nn


class Latent(nn.Module):
    """Posterior head, prior and code geometry of one latent family.

    ``dim`` is the size of the code z the decoder sees; ``noise_dim`` the size of one sample's
    noise (0 for a deterministic posterior). Subclasses implement every method below.
    """

    dim: int
    noise_dim: int
    discrete = False  # codes are choices among finitely many (evaluated by textvae.code_metrics)

    def posterior(self, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Posterior parameters of q(z|x) from the encoder summary h (B, H)."""
        raise NotImplementedError

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The noise of n posterior samples, (n, noise_dim) on the CPU. The trainer draws it for a
        whole data-parallel global batch, so every rank sees the same draws, and passes its share
        to ``TextVAE.forward``."""
        raise NotImplementedError

    def sample(self, params: tuple[torch.Tensor, ...], noise: torch.Tensor) -> torch.Tensor:
        """A differentiable sample z (B, dim) of q(z|x) from its parameters and ``noise`` (B, noise_dim)."""
        raise NotImplementedError

    def kl(self, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """KL(q(z|x) || p(z)) per dimension (B, dim), in nats; the objective sums and weights it."""
        raise NotImplementedError

    def extra_losses(self, params: tuple[torch.Tensor, ...], z: torch.Tensor,
                     weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Family-specific loss terms added to the objective unweighted, each a scalar (e.g. a VQ
        codebook and commitment loss). None for most families. ``weight`` (B,): each row's share, the
        terms then sum_i w_i t_i / sum_i w_i (M2's enumerated rows: q(y|x)); None: the mean over rows."""
        return {}

    def log_q(self, z: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """log q(z|x) summed over dimensions; z (..., B, dim) broadcasts against params (B, ...)."""
        raise NotImplementedError

    def log_q_per_dim(self, z: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """log q(z_d|x) for each dimension d, (..., dim): the factors that total-correlation
        estimates (beta-TCVAE) need."""
        raise NotImplementedError

    def log_q_pairs(self, z: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """log q(z_i|x_j) summed over dimensions for every sample z_i (B, dim) and posterior j of
        ``params`` (each (K, ...)): (B, K), without a (B, K, dim) tensor (beta-TCVAE's queue)."""
        raise NotImplementedError

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) summed over the last dimension."""
        raise NotImplementedError

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes drawn from the prior p(z), (n, dim) on the CPU."""
        raise NotImplementedError

    def point(self, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The single code that stands for q(z|x) when reconstructing (the Gaussian's mean)."""
        raise NotImplementedError

    def prior_point(self) -> torch.Tensor:
        """The code (dim,) that stands for the prior when a traversal starts from no sentence (the
        Gaussian's mean, 0)."""
        raise NotImplementedError

    def sweep(self, code: torch.Tensor, dim: int, values: list[float]) -> torch.Tensor:
        """Copies (len(values), dim) of ``code`` (dim,) with coordinate ``dim`` set to each value: a
        latent traversal. Families whose codes have no coordinates to set refuse it."""
        from ..errors import TextVAEError

        raise TextVAEError(f"a latent traversal sets one coordinate of a continuous code; the "
                           f"{type(self).__name__} has none to set")

    @property
    def decoder_dim(self) -> int:
        """The size of what the decoder reads of a code (:meth:`decoder_input`); ``dim`` unless the family
        embeds its codes."""
        return self.dim

    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        """What the decoder reads of codes z (..., dim): z itself unless the family embeds its codes
        (Gumbel: one vector per class)."""
        return z

    def features(self, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """What a probe or a plot reads of q(z|x), (B, F): the point code (discrete families: one-hot codes)."""
        return self.point(params)

    def path_point(self, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The end of an interpolation for q(z|x), (P,), what :meth:`interpolate` takes: the point code
        (a VQ latent: the vector before quantisation; Gumbel: the log-probabilities)."""
        return self.point(params)

    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
        """steps + 2 codes (steps + 2, dim) on a path between two path points a and b
        (:meth:`path_point`), endpoints included."""
        raise NotImplementedError

    def swap(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """A code homotopy from code a to code b (dim,): the M codes of a replaced by those of b one
        position at a time, (M + 1, dim). Only families made of M discrete codes have it."""
        from ..errors import TextVAEError

        raise TextVAEError(f"a code homotopy swaps the discrete codes of one sentence for another's; the "
                           f"{type(self).__name__} has no discrete codes (use the straight-line path)")
