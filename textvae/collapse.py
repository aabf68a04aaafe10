"""Posterior-collapse remedies that change how training updates the model, as strategies the
training loop calls through named hooks (:class:`Strategy`).

    aggressive inference-network training   He et al. (2019), "Lagging Inference Networks and
                                            Posterior Collapse in Variational Autoencoders"
    autoencoder pretraining, decoder reset  Li et al. (2019), "A Surprisingly Effective Fix for Deep
                                            Latent Variable Modeling of Text via a Simple
                                            Pretraining and Free-Bits"

The remedies that only reweight the objective (KL annealing, free bits, the autoencoder phase's
weight 0) are in objectives.py; those that change the model (word dropout, BN-VAE) in model.py.
Each remedy is a :class:`Strategy` subclass chosen from the objective config through the
``STRATEGIES`` table; a new remedy is a new class and a table entry, not a branch in the loop. The
rules they are built from are small functions, testable without a training run.

Aggressive training, as in He et al.'s code (text.py): for each training batch x, the encoder
(encoder + posterior head) alone is updated on x, then on training batches drawn uniformly at
random, until :class:`InnerLoop` says the loss stopped improving; then the decoder alone is updated
on x. In the encoder updates the decoder's own weights are taken out of the graph, so backward
computes no gradient for them (an update takes 0.84x the time at ptb-li2019's shapes:
``scripts/benchmark_aggressive.py --inner-update``); the gradient is clipped over the encoder's parameters, where He et al. clip the whole model's gradient
including the decoder's unused one (under DDP, where every rank must reduce the same parameters,
the decoder's gradients are computed and dropped as theirs). textvae
uses one optimiser with an encoder group and a decoder group rather than their two optimisers: a
parameter whose gradient is None is skipped by SGD and Adam alike (moments and step counts are per
parameter), so the updates are the same, and one optimiser keeps learning-rate decay and
checkpoints unchanged. At the end of every epoch the mutual information I(x; z) on the validation
split is measured with He et al.'s estimator (``calc_mi``: each minibatch is the aggregate
posterior, :func:`textvae.metrics.mi_batch`); the first epoch whose MI is below the previous
epoch's ends aggressive training for the rest of the run. ``objective.aggressive_mi_every=N``
measures it every N steps instead: an aggressive step costs tens of plain ones (one encoder update
per inner step), so on a large corpus a phase counted in whole epochs costs more than the plain
training it precedes, while a finer check lets the same rule end it as soon as MI stops rising.
"""

import math

import numpy as np
import torch

from .batching import BucketBatchSampler
from .metrics import mi_batch, posterior_parameters
from .model import Decoder

# --------------------------------------------------------------------------- encoder / decoder split


def encoder_parameters(model) -> list:
    """The inference network: ``model.encoder`` + ``model.latent`` (and a conditional model's label embedding)."""
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


def frozen_decoder(model) -> list:
    """Switch off ``requires_grad`` of the decoder's own parameters (not those it shares with the
    encoder, such as a shared embedding) and return them, for the caller to switch back on."""
    encoder = {id(p) for p in encoder_parameters(model)}
    frozen = [p for p in decoder_parameters(model) if p.requires_grad and id(p) not in encoder]
    for p in frozen:
        p.requires_grad_(False)
    return frozen


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
    mu, logvar = posterior_parameters(model, split, batch_size)
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

    Every decoder tensor that is also an encoder tensor is kept: with ``model.share_embedding`` the
    embedding table (and, tied to it, the output projection) is the encoder's input layer as much
    as the decoder's, and resetting it would throw away the encoder that phase 1 trained."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = Decoder(model.decoder.cfg).state_dict()
    encoder = {t.data_ptr() for name, t in model.state_dict(keep_vars=True).items() if not name.startswith("decoder.")}
    own = model.decoder.state_dict(keep_vars=True)
    fresh = {k: v for k, v in fresh.items() if own[k].data_ptr() not in encoder}
    missing, unexpected = model.decoder.load_state_dict(fresh, strict=False)
    assert not unexpected and all(own[k].data_ptr() in encoder for k in missing), (missing, unexpected)


# --------------------------------------------------------------------------- strategies the loop calls


class Strategy:
    """A remedy that changes the training loop. The loop (textvae.train.Trainer, passed as ``tr``)
    calls these hooks; each does nothing here, so a subclass overrides only what it changes.

    ``splits_optimizer``: the optimiser needs an encoder group and a decoder group
    (:func:`param_groups`). ``kl_schedule_start``: the step at which the objective's KL schedule
    (re)starts, or None (textvae.objectives.kl_weight's ``pretrain_end``).
    """

    splits_optimizer = False
    kl_schedule_start: int | None = None

    def before_step(self, tr, batch, offset: int, global_size: int) -> dict:
        """Before the step's loss on ``batch`` (rows offset.. of a global batch of global_size).
        Returns extra numbers for the train log."""
        return {}

    def after_backward(self, tr) -> None:
        """After the step's gradients are computed and found finite, before the optimiser step."""

    def end_of_epoch(self, tr) -> None:
        """After the last step of an epoch (``tr.progress.epoch`` is the next epoch)."""

    def score(self, valid: dict) -> float | None:
        """What best-model selection and plateau detection compare (None: the negative ELBO)."""
        return None

    def on_converged(self, tr) -> bool:
        """Validation stopped improving after every learning-rate decay; True when this strategy
        takes it over (the run goes on), False to let early stopping end the run."""
        return False

    def state(self) -> dict:
        """What a checkpoint stores (JSON values; saved inside trainer_state.json's progress)."""
        return {}

    def load_state(self, state: dict) -> None:
        """Restore :meth:`state` from a checkpoint's progress mapping (format 1 keys)."""


class Aggressive(Strategy):
    """He et al. (2019) aggressive inference-network training (see the module docstring): before
    every step, encoder-only updates until :class:`InnerLoop` stops them, then a decoder-only step;
    switched off for good at the first validation MI below the previous one (measured after every
    epoch, or every ``objective.aggressive_mi_every`` steps)."""

    splits_optimizer = True

    def __init__(self, objective):
        self.max_inner, self.window = objective.aggressive_max_inner, objective.aggressive_window
        self.mi_every = objective.aggressive_mi_every  # 0: after every epoch
        self.on = True
        self.mi_prev: float | None = None

    def before_step(self, tr, batch, offset, global_size) -> dict:
        step = tr.progress.step
        if self.on and self.mi_every and step and step % self.mi_every == 0:
            self.check_mi(tr)
        return {"encoder_updates": self.encoder_updates(tr, batch, offset, global_size) if self.on else 0}

    def encoder_updates(self, tr, batch, offset: int, global_size: int) -> int:
        """The inner loop: encoder-only updates on this batch, then on training batches drawn at
        random, until the loss stops improving. Returns the number of updates."""
        rule = InnerLoop(self.max_inner, self.window)
        rng = inner_batch_rng(tr.cfg.train.seed, tr.progress.step)
        batches = tr.sampler.global_batches(tr.progress.epoch)
        decoder = decoder_parameters(tr.model)
        # one process: the decoder's weights leave the graph, so backward computes no gradient for
        # them (DDP needs every rank's gradients of the same parameters, so there they are dropped)
        frozen = frozen_decoder(tr.model) if tr.procs.world == 1 else []
        try:
            while True:
                loss, rec, kl, _ = tr.loss(batch, offset, global_size)
                if not tr.backward(loss, rec, kl, batch, global_size, "encoder-update loss"):
                    return rule.updates  # a skipped non-finite update (train.nonfinite=skip)
                drop_grads(decoder)
                tr.optimizer.step()
                # every rank sees the global batch's loss, so that they stop together
                loss_sum, tokens = tr.procs.all_sum([float(loss.detach()) * len(batch), float(batch.num_tokens)])
                if rule.update(loss_sum, int(tokens)):
                    return rule.updates
                batch, offset, global_size = tr.shard(batches[int(rng.integers(len(batches)))])
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def after_backward(self, tr) -> None:
        if self.on:  # after the encoder's inner loop, the decoder alone is updated
            drop_grads(encoder_parameters(tr.model))

    def end_of_epoch(self, tr) -> None:
        if self.on and not self.mi_every:
            self.check_mi(tr)

    def check_mi(self, tr) -> None:
        """Measure the validation MI; switch aggressive training off for good if it fell."""
        p, t = tr.progress, tr.cfg.train
        mi = validation_mi(tr.model, tr.valid_data, t.batch_size, t.seed)
        self.on = not mi_stopped_rising(self.mi_prev, mi)
        tr.metrics.write({"kind": "aggressive", "step": p.step, "epoch": p.epoch, "mi": mi, "aggressive": self.on})
        where = f"step {p.step}" if self.mi_every else f"epoch {p.epoch}"
        tr.log(f"aggressive training: valid MI {mi:.3f} after {where} (previous "
               f"{'-' if self.mi_prev is None else f'{self.mi_prev:.3f}'}); "
               f"{'continues' if self.on else 'MI fell, switched off for the rest of the run'}")
        self.mi_prev = mi

    def state(self) -> dict:
        return {"aggressive": self.on, "mi_prev": self.mi_prev}

    def load_state(self, state: dict) -> None:
        self.on, self.mi_prev = state.get("aggressive", self.on), state.get("mi_prev")


class PretrainThenReset(Strategy):
    """Li et al. (2019): train as an autoencoder (KL weight 0) for ``objective.pretrain_ae_steps``
    steps or until validation reconstruction converges, then go back to the best autoencoder on
    validation (their second run loads the first's best saved model), re-initialise the decoder
    (unless ``objective.reset_decoder=false``), keep the encoder, and start the VAE phase afresh as
    their second run does: KL schedule from its step 0, new optimiser at train.lr, new best-model and
    early-stopping state (the best/ model is the VAE's from then on)."""

    def __init__(self, objective):
        self.steps, self.reset = objective.pretrain_ae_steps, objective.reset_decoder
        self.kl_schedule_start = None  # the step the VAE phase began; None while pretraining

    @property
    def pretraining(self) -> bool:
        return self.kl_schedule_start is None

    def before_step(self, tr, batch, offset, global_size) -> dict:
        if self.pretraining and tr.progress.step >= self.steps:
            self.finish(tr, f"objective.pretrain_ae_steps={self.steps} steps are done")
        return {}

    def score(self, valid: dict) -> float | None:
        return valid["rec"] if self.pretraining else None  # the autoencoder is judged by what it optimises

    def on_converged(self, tr) -> bool:
        if self.pretraining:
            self.finish(tr, f"it converged (no improvement after {tr.progress.decays} learning-rate decays)")
            return True
        return False

    def finish(self, tr, reason: str) -> None:
        """End the autoencoder phase at the current step."""
        p = tr.progress
        self.kl_schedule_start = p.step
        best = best_autoencoder(tr)
        if self.reset:
            reset_decoder(tr.model, tr.cfg.train.seed + p.step)
        tr.optimizer = tr.make_optimizer()
        p.restart_selection()
        tr.metrics.write({"kind": "pretrain_end", "step": p.step, "epoch": p.epoch, "reason": reason,
                          "decoder_reset": self.reset, "autoencoder_step": best})
        kept = "" if best == p.step else f"the best autoencoder (step {best}) restored, "
        tr.log(f"step {p.step}: autoencoder pretraining ends, {reason}; {kept}"
               f"{'decoder re-initialised, ' if self.reset else ''}VAE phase begins")

    def state(self) -> dict:
        return {"pretrain_end": self.kl_schedule_start}

    def load_state(self, state: dict) -> None:
        self.kl_schedule_start = state.get("pretrain_end")


def best_autoencoder(tr) -> int:
    """Put the best autoencoder on validation (best/, saved under the pretraining score) back into
    ``tr.model`` when the model now is not it; its step. The current model goes on (its step returned)
    when it is the best, or when the only validation before it was step 0's, of the untrained model.
    Every rank reads best/, which rank 0 wrote at an earlier validation."""
    from safetensors.torch import load_file

    from .model import upgrade_state_dict

    p = tr.progress
    if p.best_step <= 0 or p.best_step == p.step:
        return p.step
    tr.procs.barrier()
    weights = load_file(str(tr.run / "best" / "model.safetensors"))
    tr.model.load_state_dict(upgrade_state_dict(weights, tr.cfg.model))
    return p.best_step


# which strategies a run uses: (is it on for this objective config, its class), in hook order
STRATEGIES = {
    "pretrain_then_reset": (lambda o: o.pretrain_ae_steps > 0, PretrainThenReset),
    "aggressive": (lambda o: o.aggressive, Aggressive),
}


def strategies_for(objective) -> list[Strategy]:
    """The strategies ``objective`` (an ObjectiveConfig) turns on, in the order of ``STRATEGIES``."""
    return [cls(objective) for is_on, cls in STRATEGIES.values() if is_on(objective)]
