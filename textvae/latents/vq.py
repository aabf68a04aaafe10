"""Vector quantisation: M vectors, each replaced by its nearest entry of a codebook of K vectors.

van den Oord, Vinyals & Kavukcuoglu (2017), "Neural Discrete Representation Learning" (VQ-VAE). A
linear head maps the encoder summary to z_e (B, M D), M vectors of size D; each becomes its nearest
codebook entry e_k (K, D), and the decoder sees z_q = [e_k1; ...; e_kM] (B, M D). Gradients pass
z_q -> z_e unchanged (straight-through). Loss terms beside the reconstruction, per sentence summed
over the M D coordinates: the codebook loss ||sg(z_e) - z_q||^2 and the commitment loss
beta ||z_e - sg(z_q)||^2 (beta = 0.25 in the paper). With ``ema`` the codebook is not learned by
gradient but moves to the exponential moving average of the vectors assigned to each entry (their
appendix A.1; Laplace-smoothed counts as in Razavi et al. 2019's code), and the codebook loss is dropped.

Dead-code restart (Dhariwal et al. 2020, "Jukebox", sec. 2.3; Zeghidour et al. 2021): an entry no
training batch has used for ``restart_window`` training steps is re-seeded with an encoder output
of the current batch, those farthest from their codes first (deterministic: no random draws, so
resume stays exact). Step counter, last-use steps and EMA statistics are buffers, saved with the weights.

q(z|x) is a point mass at the encoder's codes. Under the uniform prior over the K^M codes, its KL is
log K per position, so rec + M log K is the negative ELBO and an upper bound on -log p(x) under that
prior; ``kl`` reports it per position. ``textvae.code_prior`` fits a better prior after training.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Latent
from .gaussian import homotopy
from .gumbel import swap_path

EMA_EPS = 1e-5  # Laplace smoothing of the EMA counts


def _process_group():
    """torch.distributed when a process group of more than one process is running, else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def _gather_rows(dist, x: torch.Tensor) -> torch.Tensor:
    """Every process's rows of x (n_rank, ...) concatenated in rank order (ranks may hold different n)."""
    n = torch.tensor([x.size(0)], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    longest = int(max(sizes))
    padded = torch.zeros(longest, *x.shape[1:], dtype=x.dtype, device=x.device)
    padded[:x.size(0)] = x
    parts = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:int(size)] for part, size in zip(parts, sizes)])


class VQLatent(Latent):
    """M vectors of size D quantised to a codebook of K entries; params are ``(z_e,)`` (B, M D)."""

    discrete = True

    def __init__(self, in_dim: int, vars: int, classes: int, code_dim: int, beta: float = 0.25,
                 ema: bool = False, decay: float = 0.99, restart: bool = True, restart_window: int = 100):
        super().__init__()
        self.vars, self.classes, self.code_dim = vars, classes, code_dim
        self.dim, self.noise_dim = vars * code_dim, 0
        self.beta, self.ema, self.decay = beta, ema, decay
        self.restart, self.restart_window = restart, restart_window
        self.head = nn.Linear(in_dim, vars * code_dim)
        book = torch.empty(classes, code_dim).uniform_(-1.0 / classes, 1.0 / classes)
        if ema:
            self.register_buffer("codebook", book)
            # each entry starts as the average of one vector, itself: an unused entry then stays put
            self.register_buffer("ema_count", torch.ones(classes))
            self.register_buffer("ema_sum", book.clone())
        else:
            self.codebook = nn.Parameter(book)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training steps so far
        self.register_buffer("last_used", torch.zeros(classes, dtype=torch.long))  # step each entry was last used
        self.prior = None  # a fitted textvae.code_prior.CodePrior, attached after training

    def attach_prior(self, prior) -> None:
        """Use a fitted prior (textvae.code_prior.CodePrior) for log p(z) and prior samples, put on the
        codebook's device and dtype. It is not a submodule, so that its weights stay out of the model's
        state_dict (they live in their own file, code_prior.safetensors); :meth:`_apply` moves it with the model."""
        book = self.codebook
        object.__setattr__(self, "prior", prior.to(device=book.device, dtype=book.dtype))

    def _apply(self, fn, recurse: bool = True):
        # Module.to / cuda / double / half / to_empty convert every tensor through _apply, children included;
        # the prior, kept off the module tree, follows as a child would.
        super()._apply(fn, recurse)
        if recurse and self.prior is not None:
            self.prior._apply(fn)
        return self

    @classmethod
    def from_config(cls, cfg, in_dim: int) -> "VQLatent":
        return cls(in_dim, cfg.latent_vars, cfg.latent_classes, cfg.code_dim, cfg.vq_beta, cfg.vq_ema,
                   cfg.vq_ema_decay, cfg.vq_restart, cfg.vq_restart_window)

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(*x.shape[:-1], self.vars, self.code_dim)  # (..., M, D)

    def code_ids(self, z: torch.Tensor) -> torch.Tensor:
        """The nearest codebook entry of each of the M vectors of z (..., M D): ids (..., M)."""
        with torch.no_grad():
            v = self._blocks(z.detach()).float()  # (..., M, D)
            book = self.codebook.float()
            dist = v.pow(2).sum(-1, keepdim=True) - 2 * v @ book.t() + book.pow(2).sum(-1)  # (..., M, K)
            return dist.argmin(-1)

    def codes(self, ids: torch.Tensor) -> torch.Tensor:
        """The decoder's code (..., M D) of code ids (..., M)."""
        return F.embedding(ids, self.codebook).flatten(-2)

    def one_hot(self, ids: torch.Tensor) -> torch.Tensor:
        return F.one_hot(ids, self.classes).to(torch.float32).flatten(-2)  # (..., M K)

    def posterior(self, h: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.head(h),)  # z_e (B, M D)

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.zeros(n, 0)  # deterministic

    def sample(self, params: tuple[torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        z_e = params[0]
        z_q = self.codes(self.code_ids(z_e)).to(z_e)
        z = z_e + (z_q - z_e).detach() if self.training else z_q  # straight-through gradient
        return z.expand(*noise.shape[:-1], self.dim)

    def kl(self, params: tuple[torch.Tensor]) -> torch.Tensor:
        return params[0].new_full((params[0].size(0), self.vars), math.log(self.classes))  # (B, M)

    def extra_losses(self, params: tuple[torch.Tensor], z: torch.Tensor,
                     weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        z_e = params[0]
        ids = self.code_ids(z_e)  # (B, M)
        z_q = self.codes(ids).to(z_e)  # (B, M D)

        def mean(rows: torch.Tensor) -> torch.Tensor:  # (B,) -> scalar: plain or weighted mean over rows
            return rows.mean() if weight is None else (weight.to(rows) * rows).sum() / weight.detach().sum()

        out = {"commitment": self.beta * mean((z_e - z_q.detach()).pow(2).sum(-1))}
        if not self.ema:
            out["codebook"] = mean((z_q - z_e.detach()).pow(2).sum(-1))
        if self.training and torch.is_grad_enabled():
            share = None if weight is None else weight.detach().float().repeat_interleave(self.vars)  # (B M,)
            self._update(self._blocks(z_e.detach()).reshape(-1, self.code_dim).float(), ids.reshape(-1), share)
        return out

    @torch.no_grad()
    def _update(self, vectors: torch.Tensor, ids: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        """After one training batch's assignments (vectors (N, D), ids (N,), each vector's share
        ``weight`` (N,), default 1): the EMA codebook and dead-code restart. Under data parallelism
        the counts and sums are summed over processes and restarts draw on every process's vectors,
        so all ranks keep one codebook, the one a single process would have with the whole global batch."""
        dist = _process_group()
        counts = torch.bincount(ids, weight, minlength=self.classes).to(vectors)  # (K,)
        one_hot = F.one_hot(ids, self.classes).to(vectors)  # (N, K)
        if weight is not None:
            one_hot = one_hot * weight.unsqueeze(1)
        sums = one_hot.t() @ vectors if self.ema else None  # (K, D)
        if dist is not None:
            dist.all_reduce(counts)
            if sums is not None:
                dist.all_reduce(sums)
        self.steps += 1
        self.last_used[counts > 0] = self.steps
        if self.ema:
            self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            n = self.ema_count.sum()
            count = (self.ema_count + EMA_EPS) / (n + self.classes * EMA_EPS) * n
            self.codebook.copy_(self.ema_sum / count.unsqueeze(1))
        if not self.restart:
            return
        dead = (self.steps - self.last_used >= self.restart_window).nonzero().flatten()
        if len(dead) == 0:
            return
        error = (vectors - self.codebook[ids].float()).pow(2).sum(-1)  # (N,)
        if dist is not None:
            vectors, error = _gather_rows(dist, vectors), _gather_rows(dist, error)
        far = error.argsort(descending=True, stable=True)  # the worst-served encoder outputs first
        seeds = vectors[far[torch.arange(len(dead), device=far.device) % len(far)]].to(self.codebook)
        self.codebook.data[dead] = seeds
        self.last_used[dead] = self.steps
        if self.ema:
            self.ema_sum[dead], self.ema_count[dead] = seeds, 1.0

    def log_q(self, z: torch.Tensor, params: tuple[torch.Tensor]) -> torch.Tensor:
        return z.new_zeros(z.shape[:-1])  # a point mass at the encoder's codes

    def log_q_per_dim(self, z: torch.Tensor, params: tuple[torch.Tensor]) -> torch.Tensor:
        return z.new_zeros(*z.shape[:-1], self.vars)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z): the fitted prior's when one is attached, else uniform, -M log K."""
        if self.prior is not None:
            ids = self.code_ids(z).to(self.prior.out.weight.device)
            return self.prior.log_prob(ids).to(z)
        return z.new_full(z.shape[:-1], -self.vars * math.log(self.classes))

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.prior is not None:
            ids = self.prior.sample(n, generator)
        else:
            ids = torch.randint(self.classes, (n, self.vars), generator=generator)
        return self.codes(ids.to(self.codebook.device)).detach().cpu()

    def point(self, params: tuple[torch.Tensor]) -> torch.Tensor:
        return self.codes(self.code_ids(params[0])).to(params[0])  # z_q

    def features(self, params: tuple[torch.Tensor]) -> torch.Tensor:
        return self.one_hot(self.code_ids(params[0]))  # (B, M K)

    def prior_point(self) -> torch.Tensor:
        return self.codes(torch.zeros(self.vars, dtype=torch.long, device=self.codebook.device)).detach()

    def path_point(self, params: tuple[torch.Tensor]) -> torch.Tensor:
        return params[0]  # z_e, before quantisation

    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
        """a, b: vectors before quantisation (M D,); each step of the straight line is quantised."""
        path = homotopy(a, b, steps)  # (S, M D)
        return self.codes(self.code_ids(path)).to(a)

    def swap(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return swap_path(a, b, self.vars)
