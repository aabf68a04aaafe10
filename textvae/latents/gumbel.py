"""M categorical variables of K classes each, trained with the Gumbel-softmax relaxation.

Jang, Gu & Poole (2017), "Categorical Reparameterization with Gumbel-Softmax", and Maddison, Mnih &
Teh (2017), "The Concrete Distribution". q(z|x) = prod_m Cat(z_m; softmax(l_m)) from a linear head
on the encoder summary; prior p(z) = prod_m Uniform(K). The decoder sees the M one-hot vectors side
by side, z (B, M K).

Training draws the relaxed sample y_m = softmax((log pi_m + g_m) / tau), g ~ Gumbel(0, 1), with the
temperature tau annealed by the number of training forward passes t (one per optimiser step):
tau(t) = max(tau_min, tau_0 exp(-r t)) (Jang et al. sec. 4, who update it every N steps; here
every step). With ``hard`` the forward pass uses the one-hot arg max and the gradient is the relaxed
sample's (straight-through Gumbel-softmax). The decoder reads each variable through a learned
embedding of its K classes (``code_dim`` numbers each): a one-hot code's embedding is one row, a
relaxed code's the probability-weighted mix of rows, so the decoder sees M D numbers instead of M K.

Outside training (``eval()``) every sample is the hard one-hot arg max of log pi + g, an exact draw
from q, so log q and log p of a sample are exact and the importance-weighted bound of
``textvae.metrics.iw_log_likelihood`` is a valid bound on log p(x).

The KL to the uniform prior is analytic per variable: KL_m = sum_k pi_mk (log pi_mk + log K), in
[0, log K]; free bits and KL annealing act on it as on the Gaussian's per-dimension KL.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Latent


def temperature(t: int, tau0: float, tau_min: float, rate: float) -> float:
    """Jang et al. (2017): tau = max(tau_min, tau0 * exp(-rate * t)) after t training steps."""
    return max(tau_min, tau0 * math.exp(-rate * t))


def swap_path(a: torch.Tensor, b: torch.Tensor, vars: int) -> torch.Tensor:
    """A code homotopy between two codes of ``vars`` blocks each, a and b (dim,): vars + 1 codes,
    code i holding b's first i blocks and a's others (code 0 is a, the last is b)."""
    blocks_a, blocks_b = a.view(vars, -1), b.view(vars, -1)  # (M, block)
    return torch.stack([torch.cat([blocks_b[:i], blocks_a[i:]]).reshape(-1) for i in range(vars + 1)])


class GumbelLatent(Latent):
    """M categoricals of K classes; params are ``(log_pi,)``, the log-probabilities (B, M K)."""

    discrete = True

    def __init__(self, in_dim: int, vars: int, classes: int, code_dim: int = 32, tau: float = 1.0,
                 tau_min: float = 0.5, tau_decay: float = 1e-4, hard: bool = False):
        super().__init__()
        self.vars, self.classes = vars, classes
        self.dim = self.noise_dim = vars * classes
        self.tau0, self.tau_min, self.tau_decay, self.hard = tau, tau_min, tau_decay, hard
        self.head = nn.Linear(in_dim, vars * classes)
        self.code_dim = code_dim
        self.embedding = nn.Parameter(torch.randn(vars, classes, code_dim) / math.sqrt(code_dim))  # (M, K, D)
        # training forward passes so far: the temperature schedule's clock, saved with the weights
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, cfg, in_dim: int) -> "GumbelLatent":
        return cls(in_dim, cfg.latent_vars, cfg.latent_classes, cfg.code_dim, cfg.gumbel_tau, cfg.gumbel_tau_min,
                   cfg.gumbel_tau_decay, cfg.gumbel_hard)

    @property
    def tau(self) -> float:
        """The temperature of the next training sample."""
        return temperature(int(self.steps), self.tau0, self.tau_min, self.tau_decay)

    @property
    def decoder_dim(self) -> int:
        return self.vars * self.code_dim

    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        blocks = self._blocks(z)  # (..., M, K)
        flat = blocks.reshape(-1, self.vars, self.classes).transpose(0, 1)  # (M, N, K)
        out = torch.bmm(flat, self.embedding.to(z.dtype)).transpose(0, 1)  # (N, M, D)
        return out.reshape(*blocks.shape[:-2], self.vars * self.code_dim)  # (..., M D)

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(*x.shape[:-1], self.vars, self.classes)  # (..., M, K)

    def _one_hot(self, ids: torch.Tensor) -> torch.Tensor:
        """Codes (..., M K) from class ids (..., M)."""
        return F.one_hot(ids, self.classes).to(torch.float32).flatten(-2)

    def code_ids(self, z: torch.Tensor) -> torch.Tensor:
        """The class of each variable, (..., M), from codes z (..., M K)."""
        return self._blocks(z).argmax(-1)

    def posterior(self, h: torch.Tensor) -> tuple[torch.Tensor]:
        logits = self._blocks(self.head(h))  # (B, M, K)
        return (F.log_softmax(logits.float(), -1).flatten(-2),)  # (B, M K)

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(n, self.dim, generator=generator).clamp_min(torch.finfo(torch.float32).tiny)
        return -(-u.log()).log()  # Gumbel(0, 1), (n, M K); 4x faster than exponential_ with a generator

    def sample(self, params: tuple[torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        y = self._blocks(params[0] + noise.to(params[0]))  # (..., B, M, K)
        hard = self._one_hot(y.argmax(-1)).to(params[0])  # (..., B, M K): an exact draw from q
        if not self.training:
            return hard
        soft = F.softmax(y / self.tau, -1).flatten(-2)
        if torch.is_grad_enabled():
            self.steps += 1
        return hard - soft.detach() + soft if self.hard else soft  # straight-through or relaxed

    def kl(self, params: tuple[torch.Tensor]) -> torch.Tensor:
        log_pi = self._blocks(params[0])  # (B, M, K)
        return (log_pi.exp() * (log_pi + math.log(self.classes))).sum(-1)  # (B, M), per variable

    def log_q(self, z: torch.Tensor, params: tuple[torch.Tensor]) -> torch.Tensor:
        return (z * params[0]).sum(-1)  # exact for one-hot z

    def log_q_per_dim(self, z: torch.Tensor, params: tuple[torch.Tensor]) -> torch.Tensor:
        return self._blocks(z * params[0]).sum(-1)  # (..., M)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        return z.new_full(z.shape[:-1], -self.vars * math.log(self.classes))

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._one_hot(torch.randint(self.classes, (n, self.vars), generator=generator))

    def point(self, params: tuple[torch.Tensor]) -> torch.Tensor:
        return self._one_hot(self._blocks(params[0]).argmax(-1)).to(params[0])  # the mode of q

    def features(self, params: tuple[torch.Tensor]) -> torch.Tensor:
        return self.point(params)

    def prior_point(self) -> torch.Tensor:
        return self._one_hot(torch.zeros(self.vars, dtype=torch.long))

    def path_point(self, params: tuple[torch.Tensor]) -> torch.Tensor:
        return params[0]  # interpolation runs between log-probabilities

    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
        """a, b: log-probabilities (M K,) (:meth:`path_point`); each step of the straight line between
        them becomes the one-hot code of its arg max per variable."""
        from .gaussian import homotopy

        return self._one_hot(self._blocks(homotopy(a, b, steps)).argmax(-1)).to(a)

    def swap(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return swap_path(a, b, self.vars)
