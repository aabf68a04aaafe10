"""The KL decomposition of Hoffman & Johnson (2016) and Chen et al. (2018), "Isolating Sources of
Disentanglement in Variational Autoencoders" (beta-TCVAE).

With q(z) = (1/N) sum_n q(z|x_n) the aggregate posterior of N sentences and p(z) a factorised
prior, the average KL splits into three terms, each an expectation over n ~ uniform and
z ~ q(z|x_n)::

    E_n KL(q(z|x_n) || p(z))
        = E[log q(z|x_n) - log q(z)]                   index-code mutual information I_q(z; n)
        + E[log q(z) - sum_j log q(z_j)]               total correlation KL(q(z) || prod_j q(z_j))
        + E[sum_j log q(z_j) - log p(z)]               dimension-wise KL sum_j KL(q(z_j) || p(z_j))

The only hard part is log q(z) (and log q(z_j)), a mixture over the whole data set:

- :func:`minibatch_log_qz` estimates it from one minibatch, for the beta-TCVAE objective
  (``objectives.vae_loss``): minibatch weighted sampling (mws) or minibatch stratified sampling
  (mss), Chen et al. sec. 4.1 and appendix C; with a :class:`PosteriorQueue`
  (``objective.tc_queue``) the joint log q(z) also sums over the posteriors of earlier batches.
- :func:`kl_decomposition` computes it over a whole split, for evaluation.

With the three per-sample terms computed from the same z, the sum telescopes to
log q(z|x_n) - log p(z) exactly, a one-sample Monte Carlo estimate of the analytic KL: the three
terms sum to the average KL within that Monte Carlo noise, whatever the estimator of q(z).
"""

import math

import torch

def _mws_log_weights(b: int, n: int, m: int | None = None) -> torch.Tensor:
    """log importance weights (B, M) of minibatch weighted sampling, M = B unless given: row i
    estimates q(z_i) from M posteriors, z_i drawn from its own sentence i (column i, weight 1/N: that
    index is known, not sampled) and the M - 1 others uniform draws from the rest of the data set
    (weight (N - 1) / (N (M - 1)) each). Each row sums to 1, so exp(logsumexp(log q(z_i|x_j) + w_ij))
    estimates the density q(z_i). Chen et al.'s code weights every term 1/(NB) instead; that
    estimates q(z_i)/N, with the own sample weighted as a random draw: a constant -log N per density
    and a bias of order B/N."""
    m = b if m is None else m
    w = torch.full((b, m), math.log(n - 1) - math.log(n) - math.log(m - 1))
    w[:, :b].fill_diagonal_(-math.log(n))
    return w


def _mss_log_weights(b: int, n: int) -> torch.Tensor:
    """log importance weights (B, B) of minibatch stratified sampling (Chen et al. appendix C.2):
    with M = B - 1, row i gives its own sentence 1/N, the next sentence in the batch (cyclically)
    (N - M) / (N M) and the other M - 1 sentences 1/M; each row sums to 1. The diagonals are
    placed by index (a known slip in the released code's strided fill puts some off by one)."""
    m = b - 1
    w = torch.full((b, b), 1.0 / m)
    i = torch.arange(b)
    w[i, (i + 1) % b] = (n - m) / (n * m)
    w[i, i] = 1.0 / n
    return w.log()


LOG_WEIGHTS = {"mws": _mws_log_weights, "mss": _mss_log_weights}


def minibatch_log_qz(z: torch.Tensor, params: tuple[torch.Tensor, ...], latent, dataset_size: int,
                     method: str = "mws", reference: tuple[torch.Tensor, ...] | None = None,
                     marginal_reference: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Minibatch estimates of log q(z_i) and sum_j log q(z_ij) for each sample z_i (B, Z) of a batch
    whose posterior parameters are ``params`` (each (B, ...)), q(z) the aggregate posterior of a data
    set of ``dataset_size`` sentences (Chen et al. 2018, sec. 4.1). ``method``: mws | mss.
    Returns two (B,) tensors; differentiable. Cost O(B^2 Z). A batch of one sentence has no other
    sentences to estimate from: it needs B >= 2 and dataset_size >= B.

    ``reference`` (mws only): K more posteriors (each (K, ...), detached: :class:`PosteriorQueue`, newest
    last) that join the batch's as draws for the joint log q(z_i): the own sentence keeps weight 1/N
    and the B - 1 + K others share (N - 1)/N, the mws weights of a batch of B + K. Cost O(B K Z) time
    through ``latent.log_q_pairs``, O(B K) memory. The per-dimension marginals use the batch and the
    newest ``marginal_reference`` of the K (at most K): they need a (B, B + M, Z) tensor, and a 1-D
    density is covered by far fewer points than a Z-dimensional one."""
    if method not in LOG_WEIGHTS:
        raise ValueError(f"minibatch_log_qz method {method!r} is unknown; choose one of "
                         f"{', '.join(map(repr, LOG_WEIGHTS))} (objective.tc_estimator)")
    b, k = z.size(0), 0 if reference is None else reference[0].size(0)
    if b < 2 or dataset_size < b + k:
        raise ValueError(f"minibatch_log_qz needs 2 <= batch size ({b}) and batch size + reference ({k}) "
                         f"<= dataset_size ({dataset_size})")
    if k and method != "mws":
        raise ValueError(f"a reference queue needs method='mws', not {method!r}")
    per_dim = latent.log_q_per_dim(z.unsqueeze(1), tuple(p.unsqueeze(0) for p in params))  # (B, B, Z)
    w = LOG_WEIGHTS[method](b, dataset_size).to(per_dim)  # (B, B): row i = sample, column j = posterior
    if not k:
        return torch.logsumexp(per_dim.sum(-1) + w, dim=1), torch.logsumexp(per_dim + w.unsqueeze(-1), 1).sum(-1)
    reference = tuple(r.to(z) for r in reference)
    m = min(marginal_reference, k)
    if m:
        newest = tuple(r[k - m:].unsqueeze(0) for r in reference)
        per_dim_m = torch.cat([per_dim, latent.log_q_per_dim(z.unsqueeze(1), newest)], dim=1)  # (B, B + M, Z)
    else:
        per_dim_m = per_dim
    w_m = _mws_log_weights(b, dataset_size, b + m).to(per_dim)  # (B, B + M)
    log_qz_marginals = torch.logsumexp(per_dim_m + w_m.unsqueeze(-1), dim=1).sum(-1)  # (B,)
    w = _mws_log_weights(b, dataset_size, b + k).to(per_dim)  # (B, B + K)
    joint = torch.cat([per_dim.sum(-1), latent.log_q_pairs(z, reference)], dim=1)  # (B, B + K)
    return torch.logsumexp(joint + w, dim=1), log_qz_marginals


class PosteriorQueue:
    """The posteriors (detached parameters) of the last ``size`` training sentences, first in first out:
    the extra reference points of beta-TCVAE's joint log q(z) (``objective.tc_queue``; MoCo's queue of
    keys, He et al. 2020, applied to Chen et al.'s estimator). The entries were computed with the
    encoder of up to size / B steps ago. A sentence seen at the end of one epoch and again at the start
    of the next can meet its own stale posterior, counted as a random draw: a bias of order 1/N.
    Part of the training checkpoint (:meth:`state_dict`), so resumed runs continue exactly."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"PosteriorQueue size must be >= 1, not {size}")
        self.size, self.params = size, None  # tuple of (K, ...) tensors, K <= size, newest last

    def __len__(self) -> int:
        return 0 if self.params is None else self.params[0].size(0)

    def push(self, params: tuple[torch.Tensor, ...]) -> None:
        """Queue a batch's posteriors. A batch with a non-finite parameter is left out: queued, it would
        make every estimate NaN until it left the queue (train.nonfinite=skip skips that step alone)."""
        new = tuple(p.detach().float() for p in params)
        if not all(bool(torch.isfinite(p).all()) for p in new):
            return
        if self.params is not None:
            new = tuple(torch.cat([old, p]) for old, p in zip(self.params, new))
        self.params = tuple(p[-self.size:] for p in new)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.params is None else {f"param{i}": p.cpu() for i, p in enumerate(self.params)}

    def load_state_dict(self, state: dict[str, torch.Tensor], device=None) -> None:
        self.params = tuple(state[f"param{i}"].to(device) for i in range(len(state))) if state else None


def kl_decomposition(mu: torch.Tensor, logvar: torch.Tensor, latent, generator: torch.Generator | None = None,
                     chunk: int = 256) -> dict[str, float]:
    """The KL decomposition over a whole split of N sentences with Gaussian posteriors
    N(mu_n, exp(logvar_n)) (each (N, Z)): one z_n ~ q(z|x_n) per sentence, log q(z_n) and
    log q(z_nj) from the exact mixture over all N posteriors (Chen et al. 2018's full-data
    estimator, their ``elbo_decomposition``).

    Returns ``{"mi", "tc", "dimwise_kl", "kl"}`` in nats per sentence: the index-code mutual
    information, the total correlation, the dimension-wise KL, and the analytic average KL.
    mi + tc + dimwise_kl is a one-sample Monte Carlo estimate of kl. mi is at most log N.

    Cost: O(N^2 Z) time; memory O(chunk N Z), since samples are scored against all N posteriors
    ``chunk`` at a time (no (N, N, Z) tensor is held). 10k sentences x 32 dims is ~3e9
    log-density terms: seconds on a GPU, minutes on a CPU; subsample big splits.
    ``latent`` provides ``log_q_per_dim``, ``log_prior`` and ``kl``; ``generator`` the sample noise.
    """
    if mu.dim() != 2 or mu.shape != logvar.shape or mu.size(0) == 0:
        raise ValueError(f"kl_decomposition needs posterior means and log-variances of the same shape (N, Z) "
                         f"with N >= 1 sentences; got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    if chunk < 1:
        raise ValueError(f"kl_decomposition chunk={chunk}: the samples scored at a time must be at least 1")
    with torch.no_grad():
        n = mu.size(0)
        eps = torch.randn(mu.shape, generator=generator).to(mu)
        z = mu + eps * (0.5 * logvar).exp()  # (N, Z)
        params = (mu.unsqueeze(0), logvar.unsqueeze(0))  # (1, N, Z)
        log_qz, log_qz_marg = [], []
        for start in range(0, n, chunk):
            per_dim = latent.log_q_per_dim(z[start:start + chunk].unsqueeze(1), params)  # (C, N, Z)
            log_qz.append(torch.logsumexp(per_dim.sum(-1), dim=1) - math.log(n))  # (C,)
            log_qz_marg.append((torch.logsumexp(per_dim, dim=1) - math.log(n)).sum(-1))  # (C,)
        log_qz, log_qz_marg = torch.cat(log_qz), torch.cat(log_qz_marg)
        log_qzx = latent.log_q(z, (mu, logvar))  # (N,)
        log_pz = latent.log_prior(z)  # (N,)
        return {"mi": (log_qzx - log_qz).mean().item(),
                "tc": (log_qz - log_qz_marg).mean().item(),
                "dimwise_kl": (log_qz_marg - log_pz).mean().item(),
                "kl": latent.kl((mu, logvar)).sum(1).mean().item()}
