"""The VAE objective and its step-dependent weighting, one place for each:

    beta            ``objective.kl_weight``: the KL weight the schedules reach, the constant
                    weight of a beta-VAE (Higgins et al. 2017) when != 1 (:func:`_constant`)
    KL annealing    :data:`SCHEDULES`: constant, linear and logistic (Bowman et al. 2016),
                    cyclical (Fu et al. 2019); :func:`kl_weight` adds the autoencoder phase of
                    weight 0 (Li et al. 2019)
    free bits       :data:`FREE_BITS`: Kingma et al. (2016) and Li et al. (2019); :func:`kl_term`
    beta-TCVAE      ``objective.tc_alpha/tc_beta/tc_gamma`` (Chen et al. 2018): :func:`decomposed_kl_extra`,
                    trained on uniform batches (:func:`uniform_batches`)
    M2's alpha      ``objective.m2_alpha`` on the classifier's term (Kingma et al. 2014): :data:`TERM_WEIGHTS`
    the loss        :func:`vae_loss`

BN-VAE (Zhu et al. 2020) is not an objective: it changes the posterior, so it belongs to the
Gaussian latent (``textvae.latents.gaussian.MeanBatchNorm``, ``model.bn_gamma``). Word dropout
changes the decoder (model.py); aggressive training and pretraining change the updates (collapse.py).

The loss for a minibatch is ``rec.mean() + kl_weight(step) * kl_term(kl) + sum(losses)``, where
``rec`` is the per-sentence reconstruction NLL, ``kl`` the (B, Z) per-dimension KL and ``losses``
the latent family's own terms, all from ``TextVAE.forward``. ``kl_term`` is the free-bits-adjusted
KL used for gradients only; the KL that textvae reports is always the unclamped ``kl.sum(1).mean()``.
"""

import math

import torch

from .config import ObjectiveConfig
from .decomposition import minibatch_log_qz
from .errors import ConfigError


def _constant(step: int, c: ObjectiveConfig, total: int | None) -> float:
    """beta = ``kl_weight`` at every step: the VAE at 1, a beta-VAE (Higgins et al. 2017) otherwise."""
    return c.kl_weight


def _linear(step: int, c: ObjectiveConfig, total: int | None) -> float:
    """Linear warm-up from ``kl_start`` to ``kl_weight`` over ``kl_warmup_steps`` (Bowman et al. 2016)."""
    frac = min(1.0, step / c.kl_warmup_steps)
    return c.kl_start + (c.kl_weight - c.kl_start) * frac


def _logistic(step: int, c: ObjectiveConfig, total: int | None) -> float:
    """Bowman et al. (2016): kl_weight / (1 + exp(-k (step - x0)))."""
    x = -c.logistic_k * (step - c.logistic_x0)
    return c.kl_weight / (1.0 + math.exp(x)) if x < 700 else 0.0


def _cyclical(step: int, c: ObjectiveConfig, total: int | None) -> float:
    """Fu et al. (2019): M cycles over ``total`` steps; in each, the weight rises linearly from 0 to
    kl_weight during the first proportion R of the cycle and stays at kl_weight for the rest.
    After ``total`` steps the weight stays at kl_weight."""
    total = c.cycle_steps or total
    if not total or step >= total:
        return c.kl_weight
    period = total / c.cycles
    tau = (step % period) / period
    return c.kl_weight * min(1.0, tau / c.cycle_ratio)


SCHEDULES = {"constant": _constant, "linear": _linear, "logistic": _logistic, "cyclical": _cyclical}


def kl_weight(step: int, cfg: ObjectiveConfig, total_steps: int | None = None,
              pretrain_end: int | None = None) -> float:
    """The KL weight (beta) at optimiser step ``step`` (0-based).

    ``total_steps`` is the run's planned length, used by the cyclical schedule when
    ``objective.cycle_steps`` is not set.

    With ``objective.pretrain_ae_steps`` (Li et al. 2019), ``pretrain_end`` is the step at which
    phase 2 began (None while phase 1 lasts): the weight is 0 during phase 1, the autoencoder
    (their beta = 0), and the schedule starts again from its step 0 at ``pretrain_end``, as in
    their second, separate training run.
    """
    if cfg.pretrain_ae_steps > 0:
        if pretrain_end is None:
            return 0.0
        step -= pretrain_end
        total_steps = total_steps - pretrain_end if total_steps else total_steps
    return SCHEDULES[cfg.kl_schedule](step, cfg, total_steps)


def _global_batch_mean(kl: torch.Tensor) -> torch.Tensor:
    """The detached mean (Z,) of each dimension over the global batch: under data parallelism
    (torch.distributed initialised, more than one process) over the rows of every process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return kl.detach().mean(0)
    sums = torch.cat([kl.detach().float().sum(0), kl.new_full((1,), kl.size(0), dtype=torch.float32)])
    dist.all_reduce(sums)  # every process calls the loss at every step, so they all meet here
    return sums[:-1] / sums[-1]


def free_bits_kingma(kl: torch.Tensor, lam: float) -> torch.Tensor:
    """Kingma et al. (2016), "Improved Variational Inference with Inverse Autoregressive Flow":
    the batch-averaged KL of each dimension is clamped from below at lambda, so a dimension whose
    average KL is under lambda gets no gradient pushing it further down. kl (B, Z) -> scalar.

    Under data parallelism the clamp is decided on the global batch's mean, so N processes make the
    update of one (each process's value keeps its own share's mean where the dimension is above lambda)."""
    mean = kl.mean(0)  # (Z,)
    return torch.where(_global_batch_mean(kl) > lam, mean, torch.full_like(mean, lam)).sum()


def free_bits_li(kl: torch.Tensor, lam: float) -> torch.Tensor:
    """Li et al. (2019), "A Surprisingly Effective Fix for Deep Latent Variable Modeling of Text":
    per example and per dimension, KL terms below lambda are masked out of the objective.
    kl (B, Z) -> scalar (mean over the batch of the masked per-sentence sums)."""
    return (kl * (kl > lam).to(kl.dtype)).sum(1).mean()


FREE_BITS = {"kingma": free_bits_kingma, "li": free_bits_li}


def kl_term(kl: torch.Tensor, cfg: ObjectiveConfig) -> torch.Tensor:
    """The KL used for gradients: free-bits-adjusted when ``objective.free_bits`` > 0."""
    if cfg.free_bits > 0:
        return FREE_BITS[cfg.free_bits_mode](kl, cfg.free_bits)
    return kl.sum(1).mean()


def tc_enabled(cfg: ObjectiveConfig) -> bool:
    """Whether the beta-TCVAE terms are on: any of tc_alpha, tc_beta, tc_gamma differs from 1."""
    return (cfg.tc_alpha, cfg.tc_beta, cfg.tc_gamma) != (1.0, 1.0, 1.0)


def uniform_batches(cfg: ObjectiveConfig) -> bool:
    """Whether training batches must be uniform samples of the data set rather than length buckets
    (textvae.batching.BucketBatchSampler's ``by_length``): true when the objective estimates the
    aggregate posterior q(z) from the batch (beta-TCVAE, :func:`tc_enabled`). On a batch of one
    sentence length the estimator sees the total correlation within that length, which can be far
    below the data set's (docs/disentangle.md), and the penalty then pushes on the wrong quantity."""
    return tc_enabled(cfg)


def decomposed_kl_extra(out, cfg: ObjectiveConfig, latent, dataset_size: int, queue=None) -> torch.Tensor:
    """Chen et al. (2018), "Isolating Sources of Disentanglement in VAEs" (beta-TCVAE): the KL splits
    into index-code MI + total correlation + dimension-wise KL (textvae.decomposition), and their
    objective weights the three by alpha, beta, gamma. This returns the minibatch estimate of
    ``(alpha - 1) MI + (beta - 1) TC + (gamma - 1) DWKL`` (scalar), which vae_loss adds to the
    analytic KL: since MI + TC + DWKL equals log q(z|x) - log p(z) per sample, a one-sample estimate
    of the KL, analytic KL + this extra has the expectation of the weighted sum of the three terms,
    with less variance than the all-Monte-Carlo form of Chen et al.'s code, and is exactly the plain
    ELBO's KL term when all weights are 1. log q(z) is estimated from the batch with
    ``objective.tc_estimator`` over a data set of ``dataset_size`` sentences; with a ``queue``
    (textvae.decomposition.PosteriorQueue, ``objective.tc_queue``) the joint log q(z) also sums over
    its posteriors (the marginals over its newest ``objective.tc_queue_marginals``), and this batch's
    posteriors are pushed into it afterwards."""
    log_qzx = latent.log_q(out.z, out.params)  # (B,)
    reference = None if queue is None else queue.params
    log_qz, log_qz_marg = minibatch_log_qz(out.z, out.params, latent, dataset_size, cfg.tc_estimator, reference,
                                           cfg.tc_queue_marginals)
    if queue is not None:
        queue.push(out.params)
    log_pz = latent.log_prior(out.z)  # (B,)
    mi, tc, dwkl = log_qzx - log_qz, log_qz - log_qz_marg, log_qz_marg - log_pz
    return ((cfg.tc_alpha - 1.0) * mi + (cfg.tc_beta - 1.0) * tc + (cfg.tc_gamma - 1.0) * dwkl).mean()


def vae_loss(out, beta: float, cfg: ObjectiveConfig, dataset_size: int | None = None,
             latent=None, queue=None) -> torch.Tensor:
    """The minibatch loss of a :class:`textvae.model.VAEOutput` at KL weight ``beta``:
    ``rec.mean() + beta * (kl_term(kl) + tc_extra) + sum of the latent's own terms`` (scalar;
    ``beta * kl_term(kl) + tc_extra`` when ``objective.tc_anneal`` is off).

    ``tc_extra`` is :func:`decomposed_kl_extra` when :func:`tc_enabled`, else 0. It needs
    ``dataset_size`` (the number of training sentences, for log q(z)) and ``latent`` (the model's
    latent family, for log q(z|x) per dimension), and ``queue`` when ``objective.tc_queue`` > 0. With
    ``objective.tc_anneal`` (the default) the annealed weight ``beta`` multiplies the whole
    decomposed KL, so the schedule keeps the ratios alpha : beta : gamma; with it off, tc_extra is
    added at full weight from step 0 while only the plain KL is annealed, closer to Chen et al.'s
    code, whose TC weight is constant unless ``--beta-anneal`` is given. At weights 1 either way is
    the plain annealed ELBO. Under DDP each rank estimates log q(z) from its own share of the batch
    (B = the local batch size; no gathering across ranks) and keeps its own queue.
    A batch of one sentence has no estimate of q(z): its tc_extra is 0.
    """
    kl, extra = kl_term(out.kl, cfg), 0.0
    if tc_enabled(cfg) and out.z.size(0) > 1:
        if dataset_size is None or latent is None:
            raise ConfigError("objective.tc_alpha/tc_beta/tc_gamma differ from 1 (beta-TCVAE), but the loss was "
                              "called without dataset_size and latent; pass vae_loss(..., dataset_size="
                              "len(train_data), latent=model.latent)")
        if cfg.tc_queue and queue is None:
            raise ConfigError(f"objective.tc_queue={cfg.tc_queue}, but the loss was called without its queue; "
                              f"pass vae_loss(..., queue=PosteriorQueue({cfg.tc_queue}))")
        extra = decomposed_kl_extra(out, cfg, latent, dataset_size, queue)
    loss = out.rec.mean() + (beta * (kl + extra) if cfg.tc_anneal else beta * kl + extra)
    for name, term in out.losses.items():
        loss = loss + TERM_WEIGHTS.get(name, lambda c: 1.0)(cfg) * term
    return loss


# Weights of a model's own loss terms (VAEOutput.losses) that the objective sets; others weigh 1.
# M2 (textvae.m2): Kingma et al.'s alpha on the classifier's cross-entropy of the labelled examples.
TERM_WEIGHTS = {"classification": lambda c: c.m2_alpha}
