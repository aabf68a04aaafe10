"""Posterior-collapse remedies that change how training updates the model (train.py calls them).

    aggressive inference-network training   He et al. (2019), "Lagging Inference Networks and
                                            Posterior Collapse in Variational Autoencoders"
    autoencoder pretraining, decoder reset  Li et al. (2019), "A Surprisingly Effective Fix for Deep
                                            Latent Variable Modeling of Text via a Simple
                                            Pretraining and Free-Bits"

The remedies that only reweight the objective (KL annealing, free bits, the autoencoder phase's
weight 0) are in objectives.py; those that change the model (word dropout, BN-VAE) in model.py.
Everything here is a small rule or helper, testable without a training run.

Aggressive training, as in He et al.'s code (text.py): for each training batch x, the encoder
(encoder + posterior head) alone is updated on x, then on training batches drawn uniformly at
random, until :class:`InnerLoop` says the loss stopped improving; then the decoder alone is updated
on x. Gradients always flow through the whole model (and are clipped over all parameters, as
theirs); the part not being trained has its gradients dropped before the optimiser step. textvae
uses one optimiser with an encoder group and a decoder group rather than their two optimisers: a
parameter whose gradient is None is skipped by SGD and Adam alike (moments and step counts are per
parameter), so the updates are the same, and one optimiser keeps learning-rate decay and
checkpoints unchanged. At the end of every epoch the mutual information I(x; z) on the validation
split is measured with He et al.'s estimator (``calc_mi``: each minibatch is the aggregate
posterior, :func:`textvae.metrics.mi_batch`); the first epoch whose MI is below the previous
epoch's ends aggressive training for the rest of the run.
"""

import math

import numpy as np
import torch

from .data import BucketBatchSampler
from .metrics import mi_batch, posterior_means
from .model import Decoder

# --------------------------------------------------------------------------- encoder / decoder split


def encoder_parameters(model) -> list:
    """The inference network: ``model.encoder`` + ``model.posterior`` (+ ``model.mu_bn``)."""
    return [p for name, p in model.named_parameters() if not name.startswith("decoder.")]


def decoder_parameters(model) -> list:
    """The generative network: ``model.decoder``."""
    return [p for name, p in model.named_parameters() if name.startswith("decoder.")]


def param_groups(model, aggressive: bool) -> list:
    """What the optimiser is built on: all parameters, or (aggressive training) two groups,
    encoder then decoder, so that either can be stepped alone."""
    if not aggressive:
        return list(model.parameters())
    return [{"params": encoder_parameters(model)}, {"params": decoder_parameters(model)}]


def drop_grads(params) -> None:
    """Set the gradients of ``params`` to None: the next optimiser step leaves them unchanged."""
    for p in params:
        p.grad = None


# --------------------------------------------------------------------------- aggressive training


class InnerLoop:
    """He et al.'s rule for ending the encoder-only updates of one training step.

    Call :meth:`update` after every encoder update with the loss summed over the batch's sentences
    and its token count. Every ``window`` updates the mean loss per token of the window is compared
    with the previous window's; the loop ends when it is higher (the inference network stopped
    improving), or after ``max_updates`` updates. The first window is compared with +inf, so at
    least ``min(2 * window, max_updates)`` updates are made unless the loss rises.
    """

    def __init__(self, max_updates: int, window: int):
        self.max_updates, self.window = max_updates, window
        self.updates = 0
        self._prev = math.inf
        self._loss = self._tokens = 0.0

    def update(self, loss_sum: float, tokens: int) -> bool:
        """Record one update; True when the loop should stop now."""
        self.updates += 1
        self._loss += loss_sum
        self._tokens += tokens
        if self.updates % self.window == 0:
            current = self._loss / max(self._tokens, 1)
            if current > self._prev:
                return True
            self._prev, self._loss, self._tokens = current, 0.0, 0.0
        return self.updates >= self.max_updates


def inner_batch_rng(seed: int, step: int) -> np.random.Generator:
    """The random generator choosing the inner loop's training batches at ``step``.

    Keyed on (seed, step) rather than carried along, so a resumed run draws the same batches with
    nothing extra in the checkpoint."""
    return np.random.default_rng([seed % 2**64, 0xA66, step])


def validation_mi(model, split, batch_size: int, seed: int) -> float:
    """I(x; z) on ``split`` as He et al. (2019) measure it to stop aggressive training (their
    ``calc_mi``): posterior means and variances in eval mode, each minibatch of ``batch_size``
    (length-sorted, fixed order) its own aggregate posterior, averaged weighted by size.
    Deterministic for ``seed``; the global RNG is not used."""
    mu, logvar = posterior_means(model, split, batch_size)
    batches = BucketBatchSampler(split.lengths, batch_size, shuffle=False).batches(0)
    return mi_batch(mu, logvar, batches, generator=seed)


def mi_stopped_rising(previous: float | None, current: float) -> bool:
    """He et al.: aggressive training ends when this epoch's MI is below the previous epoch's
    (their ``cur_mi - pre_mi < 0``). No previous epoch: keep going."""
    return previous is not None and current < previous


# --------------------------------------------------------------------------- pretraining (Li et al. 2019)


def pretraining(objective, pretrain_end: int | None) -> bool:
    """True while the autoencoder phase of ``objective.pretrain_ae_steps`` lasts."""
    return objective.pretrain_ae_steps > 0 and pretrain_end is None


def reset_decoder(model, seed: int) -> None:
    """Li et al. (2019), phase 2: re-initialise the decoder's parameters as a new model's (textvae's
    own initialisation) and keep the encoder. Deterministic for ``seed``; the global RNG state is
    left as it was. The parameters are overwritten in place, so optimisers and DDP wrappers that
    hold them stay valid.

    With ``model.share_embedding`` the embedding table is the encoder's input layer as much as the
    decoder's, so it is kept: resetting it would throw away the encoder that phase 1 trained."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = Decoder(model.decoder.cfg).state_dict()
    if model.decoder.embedding is getattr(getattr(model, "encoder", None), "embedding", None):
        fresh.pop("embedding.weight")
        if model.decoder.cfg.tie_embeddings:  # the output projection is the same table
            fresh.pop("proj.weight", None)
    missing, unexpected = model.decoder.load_state_dict(fresh, strict=False)
    assert not unexpected and set(missing) <= {"embedding.weight", "proj.weight"}, (missing, unexpected)
