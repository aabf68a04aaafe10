"""The diagonal Gaussian latent of Bowman et al. (2016), after Kingma & Welling (2014).

q(z|x) = N(mu, diag(exp(logvar))) from a linear head on the encoder summary; prior p(z) = N(0, I);
z = mu + sigma * eps (the reparameterisation trick); the KL to the prior is analytic per
dimension. With ``model.bn_gamma`` the means pass through :class:`MeanBatchNorm` (BN-VAE, Zhu et
al. 2020), which bounds the expected KL from below; it is part of this latent, not of the
objective, because it changes the posterior itself.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Latent

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per dimension, in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def log_normal_per_dim(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z_d; mu_d, exp(logvar_d)) for each dimension (broadcasting)."""
    return -0.5 * (((z - mu) ** 2) / logvar.exp() + logvar + LOG_2PI)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension."""
    return log_normal_per_dim(z, mu, logvar).sum(-1)


def homotopy(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """Linear interpolation from ``a`` to ``b`` (each (Z,)): ``steps + 2`` points, endpoints included.

    Bowman et al. (2016), sec. 5: z(t) = (1 - t) a + t b for t evenly spaced in [0, 1].
    """
    if steps < 0:
        raise ValueError(f"steps={steps} must be >= 0")
    t = torch.linspace(0.0, 1.0, steps + 2, device=a.device, dtype=a.dtype).unsqueeze(1)  # (S, 1)
    return (1.0 - t) * a.unsqueeze(0) + t * b.unsqueeze(0)  # (S, Z); exact at t = 0 and t = 1


class MeanBatchNorm(nn.BatchNorm1d):
    """Zhu et al. (2020), "A Batch Normalized Inference Network Keeps the KL Vanishing Away" (BN-VAE):
    batch normalisation of the posterior means, mu_d <- gamma (mu_d - E[mu_d]) / sqrt(Var[mu_d]) + beta_d,
    with the scale gamma fixed (a parameter that is never trained) and the shift beta_d learned.

    Over a training batch each mu_d then has mean beta_d and variance gamma^2, so the batch-mean KL
    is >= 1/2 sum_d (gamma^2 + beta_d^2) >= Z gamma^2 / 2 (KL >= 1/2 sum_d mu_d^2, since
    sigma^2 - log sigma^2 - 1 >= 0). In eval mode the running statistics are used, as in any
    BatchNorm; they are buffers, so ``save_pretrained`` stores them. A training batch of one
    sentence has no batch statistics; it is normalised with the running ones (Zhu et al.'s code
    skips such batches). Under data parallelism each process normalises its own share of the
    batch (plain BatchNorm, not SyncBatchNorm).

    The bound needs Var[mu_d] >> eps, since BatchNorm divides by sqrt(Var + eps): with PyTorch's
    default eps = 1e-5 an encoder can shrink its raw means until their variance is below eps, and
    the normalised means (and the KL) then fall below the bound. Hence eps = 1e-10.
    """

    EPS = 1e-10

    def __init__(self, latent_dim: int, gamma: float):
        super().__init__(latent_dim, eps=self.EPS)
        self.weight.requires_grad_(False)  # gamma is fixed: the KL lower bound depends on it
        with torch.no_grad():
            self.weight.fill_(gamma)

    def forward(self, mu: torch.Tensor) -> torch.Tensor:
        if self.training and mu.size(0) == 1:
            return F.batch_norm(mu, self.running_mean, self.running_var, self.weight, self.bias,
                                training=False, eps=self.eps)
        return super().forward(mu)


class GaussianLatent(Latent):
    """Diagonal Gaussian posterior with a standard normal prior; params are ``(mu, logvar)``.

    ``head``: linear map from the encoder summary (in_dim) to [mu; logvar] (2 Z); log sigma^2 is
    clamped to [logvar_min, logvar_max] so that exp(logvar) stays finite; ``mu_bn`` (BN-VAE) when
    ``bn_gamma`` is set.
    """

    def __init__(self, in_dim: int, dim: int, logvar_min: float = -20.0, logvar_max: float = 10.0,
                 bn_gamma: float | None = None):
        super().__init__()
        self.dim = self.noise_dim = dim
        self.logvar_min, self.logvar_max = logvar_min, logvar_max
        self.head = nn.Linear(in_dim, 2 * dim)
        if bn_gamma is not None:
            self.mu_bn = MeanBatchNorm(dim, bn_gamma)

    @classmethod
    def from_config(cls, cfg, in_dim: int) -> "GaussianLatent":
        return cls(in_dim, cfg.latent_dim, cfg.logvar_min, cfg.logvar_max, cfg.bn_gamma)

    def posterior(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(h).chunk(2, dim=-1)  # (B, Z) each
        if hasattr(self, "mu_bn"):
            mu = self.mu_bn(mu)  # batch statistics in training, running statistics in eval
        return mu, logvar.clamp(self.logvar_min, self.logvar_max)

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.dim, generator=generator)  # (n, Z) standard normal eps

    def sample(self, params: tuple[torch.Tensor, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        mu, logvar = params
        return mu + noise.to(mu) * (0.5 * logvar).exp()  # reparameterisation trick

    def kl(self, params: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return gaussian_kl(*params)

    def log_q(self, z: torch.Tensor, params: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return log_normal(z, *params)

    def log_q_per_dim(self, z: torch.Tensor, params: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return log_normal_per_dim(z, *params)

    def log_q_pairs(self, z: torch.Tensor, params: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """sum_d (z_id - mu_jd)^2 / v_jd expanded into three matrix products, in float64: the terms
        grow as 1 / v and cancel when z_i is near mu_j, which float32 would not survive for sharp
        posteriors (logvar -10 makes 1 / v ~ 2e4)."""
        mu, logvar = (p.double() for p in params)
        zz, iv = z.double(), (-logvar).exp()  # (B, Z), (K, Z)
        quad = zz.pow(2) @ iv.T - 2 * zz @ (mu * iv).T + (mu.pow(2) * iv).sum(1)  # (B, K)
        return (-0.5 * (quad + logvar.sum(1) + z.size(-1) * LOG_2PI)).to(z.dtype)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z.pow(2).sum(-1) + z.size(-1) * LOG_2PI)

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.dim, generator=generator)

    def point(self, params: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return params[0]  # the posterior mean

    def prior_point(self) -> torch.Tensor:
        return torch.zeros(self.dim)  # the mean of N(0, I)

    def sweep(self, code: torch.Tensor, dim: int, values: list[float]) -> torch.Tensor:
        codes = code.repeat(len(values), 1)  # (V, Z)
        codes[:, dim] = torch.tensor(values, dtype=code.dtype, device=code.device)
        return codes

    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
        return homotopy(a, b, steps)
