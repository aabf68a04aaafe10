"""The training loop of a sentence VAE (Bowman et al. 2016), readable top to bottom in ``Trainer.fit``.

A step runs the collapse strategies' hooks (textvae.collapse), the weighted loss, gradients, the numerical
guard, the optimiser step. Validation returns numbers (:meth:`Trainer.evaluate`); named steps act on them:
keep the best model (:func:`record_score`), decay the learning rate or stop early (:func:`plateau`).
Checkpoints and exact resume: textvae.checkpoint. torchrun/DDP: textvae.distributed (``train.batch_size``
is the global batch; the noise is drawn for it whole and each rank's loss scaled by its share, so N
processes make one process's update). SIGINT and SIGTERM stop every phase (:class:`StopSignals`): during
training after the step, validation or checkpoint in progress, with a checkpoint saved; before the first step
at once, with nothing saved. Either way KeyboardInterrupt says what happened (the CLI exits with 130).
"""

import random
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import torch

from . import checkpoint, collapse, distributed
from .checkpoint import Progress, list_checkpoints, read_checkpoint  # noqa: F401 - part of this module's API
from .config import Config
from .data import BucketBatchSampler, attach_label_ids, collate, load_splits
from .distributed import resolve_device  # noqa: F401 - part of this module's API
from .errors import TrainingError
from .metrics import validate
from .model import TextVAE
from .objectives import kl_weight, vae_loss
from .tokenizers import load_tokenizer, train_tokenizer

MAX_SKIPS = 10  # consecutive non-finite steps tolerated with train.nonfinite=skip


def record_score(p: Progress, score: float) -> bool:
    """Model selection: True when ``score`` improves on the best so far (best/ is then saved)."""
    if score < p.best_elbo - 1e-6:
        p.best_elbo, p.best_step, p.bad_evals = score, p.step, 0
        return True
    p.bad_evals += p.step > 0
    return False


def plateau(p: Progress, t) -> str | None:
    """Bowman et al.'s schedule: after more than ``lr_patience`` evaluations without improvement,
    "decay" the learning rate, or "stop" once ``max_decays`` decays did not help; else None."""
    if not (t.max_decays and p.bad_evals > t.lr_patience):
        return None
    p.bad_evals = 0
    return "stop" if p.decays >= t.max_decays else "decay"


def decay_lr(optimizer, p: Progress, t) -> None:
    """Multiply every learning rate by ``train.lr_decay`` (not below ``train.min_lr``)."""
    p.decays += 1
    for g in optimizer.param_groups:
        g["lr"] = max(t.min_lr, g["lr"] * t.lr_decay)


def make_optimizer(t, params) -> torch.optim.Optimizer:
    """Adam or SGD; the fused (single-kernel) implementation where this torch has one for the
    device (about 15% faster per step on a 2-core CPU for PTB-sized models), else the default."""
    params = list(params)
    kind, kwargs = {"adam": (torch.optim.Adam, {"weight_decay": t.weight_decay}),
                    "sgd": (torch.optim.SGD, {"momentum": t.momentum, "weight_decay": t.weight_decay})}[t.optimizer]
    try:
        return kind(params, lr=t.lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return kind(params, lr=t.lr, **kwargs)


class StopSignals:
    """SIGINT and SIGTERM as a request to stop, for the ``with`` block it guards (nestable; main thread only).

    With ``defer=False`` (start-up, data preparation, the end-of-run summary) the handler raises
    KeyboardInterrupt at once, naming the signal and ``phase``. With ``defer=True`` (the training loop) it
    records the signal in ``received``; the loop checks it at its safe points (after a step, a validation,
    a checkpoint) and stops there, and a signal the loop has not acted on when the block ends raises
    KeyboardInterrupt then, so that none is lost. The previous handlers are restored on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, phase: str, defer: bool = False):
        self.phase, self.defer, self.received, self.handled, self._previous = phase, defer, None, False, {}

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def _on_signal(self, signum, frame) -> None:
        self.received = signum
        if not self.defer:
            self.handled = True
            raise KeyboardInterrupt(f"{self.name} received during {self.phase}")

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # Python delivers signals there only
            self._previous = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS}
        return self

    def __exit__(self, kind, error, tb) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        if kind is None and self.received is not None and not self.handled:
            raise KeyboardInterrupt(f"{self.name} received during {self.phase}")


class Trainer:
    """Owns the model, optimiser and data of one run; ``fit()`` runs it to the end."""

    def __init__(self, cfg: Config, out: str | Path, resume: bool = False, log=None):
        self.cfg, self.run, t = cfg, Path(out), cfg.train
        self.procs = distributed.setup(t.device)
        self.device, self.is_main = self.procs.device, self.procs.is_main
        self.log = (log or (lambda msg: print(msg, file=sys.stderr, flush=True))) if self.is_main else (lambda m: None)
        self._skips, self._saved_at, self._bar = 0, None, None
        ckpt = checkpoint.prepare_run_dir(self.run, cfg, resume, self.log, self.is_main)
        torch.manual_seed(t.seed)
        random.seed(t.seed)
        splits = load_splits(cfg.data, ("train", "valid"))
        texts = splits["train"].with_format("arrow")["text"].to_pylist()
        self.tokenizer = load_tokenizer(ckpt) if ckpt else train_tokenizer(cfg.tokenizer, texts)
        self.train_data, self.valid_data = (splits.encode(n, self.tokenizer, cfg.data) for n in ("train", "valid"))
        for name, s in (("train", self.train_data.stats), ("valid", self.valid_data.stats)):
            self.log(f"{name}: {s['examples']} examples, {s['tokens']} tokens (words + EOS); skipped "
                     f"{s.get('skipped_blank', 0)} blank, truncated {s.get('truncated', 0)}, "
                     f"dropped {s.get('dropped', 0)} (data.long_policy={cfg.data.long_policy})")
        cfg.model.vocab_size = self.tokenizer.vocab_size
        labels = sorted(set(self.train_data.labels or [])) if cfg.model.conditional else None
        if labels is not None:  # the conditional VAE's labels: the training split's, sorted
            attach_label_ids(self.train_data, labels, "the train split")
            attach_label_ids(self.valid_data, labels, "the valid split")
        self.model = TextVAE(cfg.model, self.tokenizer, labels).to(self.device)
        self.net = self.procs.wrap(self.model)  # what the step calls: the model or its DDP wrapper
        self.noise = torch.Generator().manual_seed(t.seed + 1)  # the same state on every rank
        self.strategies = collapse.strategies_for(cfg.objective)
        self.optimizer = self.make_optimizer()
        self.sampler = BucketBatchSampler(self.train_data.lengths, t.batch_size, shuffle=True, seed=t.seed,
                                          num_replicas=self.procs.world, rank=self.procs.rank)
        self.batches_per_epoch = len(self.sampler.global_batches(0))
        planned = t.max_epochs * self.batches_per_epoch
        self.total_steps = min(planned, t.max_steps) if t.max_steps else planned
        self.progress = Progress()
        if self.procs.world > 1:
            torch.manual_seed(t.seed + 1000 * self.procs.rank)  # dropout masks differ between ranks
        if ckpt:
            checkpoint.load_trainer(self, ckpt)
            self._saved_at = self.progress.step  # a signal before the next step needs no new checkpoint
        elif self.is_main:
            cfg.save(self.run / "config.json")
        self.metrics = checkpoint.MetricsLog(self.run, t.tensorboard, enabled=self.is_main)
        self.procs.barrier()

    def make_optimizer(self) -> torch.optim.Optimizer:
        split = any(s.splits_optimizer for s in self.strategies)  # an encoder and a decoder group
        return make_optimizer(self.cfg.train, collapse.param_groups(self.model, split))

    def _save_checkpoint(self) -> Path:
        path = checkpoint.save_trainer(self)
        self._saved_at = self.progress.step
        return path

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def evaluate(self) -> dict:
        """The validation numbers at this step (textvae.metrics.validate), logged and recorded."""
        p, t = self.progress, self.cfg.train
        v = validate(self.model, self.valid_data, batch_size=max(t.batch_size, 64), samples=t.eval_samples,
                     seed=t.seed, progress=f"valid step {p.step}" if t.progress and self.is_main else None)
        beta = self.kl_weight()
        self.metrics.write({"kind": "valid", "step": p.step, "epoch": p.epoch, **{k: v[k] for k in (
            "rec", "kl", "elbo", "ppl_elbo", "au", "kl_per_dim")}, "lr": self.lr(), "kl_weight": beta})
        self.log(f"valid step {p.step} epoch {p.epoch}: elbo {v['elbo']:.3f} = rec {v['rec']:.3f} + kl "
                 f"{v['kl']:.3f}  ppl_elbo {v['ppl_elbo']:.2f}  au {v['au']}  beta {beta:.3f}  lr {self.lr():.2e}")
        p.last_valid = {k: v[k] for k in ("rec", "kl", "elbo", "ppl_elbo", "au")}
        return v

    def after_validation(self, v: dict) -> None:
        """Keep the best model; on a plateau decay the learning rate or stop early (unless a
        strategy takes the stop over: the end of Li et al.'s autoencoder phase)."""
        p, t = self.progress, self.cfg.train
        score = next((x for s in self.strategies if (x := s.score(v)) is not None), v["elbo"])
        if record_score(p, score):
            if self.is_main:
                checkpoint.save_best(self.run, self.model, self.cfg)
            return
        action = plateau(p, t)
        if action == "decay":
            decay_lr(self.optimizer, p, t)
            self.log(f"learning rate decayed to {self.lr():.2e} ({p.decays}/{t.max_decays})")
        elif action == "stop" and not any(s.on_converged(self) for s in self.strategies):
            p.stopped_early = True
            self.log(f"early stopping: no improvement after {p.decays} learning-rate decays")

    def kl_weight(self) -> float:
        start = next((s.kl_schedule_start for s in self.strategies if s.kl_schedule_start is not None), None)
        return kl_weight(self.progress.step, self.cfg.objective, self.total_steps, start)

    def shard(self, global_batch) -> tuple:
        """This rank's share of a global batch of example indices: (batch, offset, global size)."""
        parts = np.array_split(global_batch, self.procs.world)  # as the sampler shards
        offset = sum(len(part) for part in parts[:self.procs.rank])
        batch = collate(self.train_data, parts[self.procs.rank].tolist()).to(self.device, non_blocking=True)
        return batch, offset, len(global_batch)

    def noise_for(self, offset: int, n: int, global_size: int) -> torch.Tensor:
        """Reparameterisation noise for rows offset..offset+n of a global batch (drawn whole)."""
        eps = self.model.noise(global_size, self.noise)  # (global_size, the latent's noise dim), on the CPU
        return eps[offset:offset + n].to(self.device, non_blocking=True)

    def loss(self, batch, offset: int, global_size: int):
        """The weighted loss on this rank's share of a global batch: (loss, rec, kl, kl_weight)."""
        beta = self.kl_weight()
        out = self.net(batch.tokens, batch.lengths, self.noise_for(offset, len(batch), global_size), y=batch.label_ids)
        rec, kl_report = out.rec.mean(), out.kl.sum(1).mean()
        return vae_loss(out, beta, self.cfg.objective), rec, kl_report, beta

    def backward(self, loss, rec, kl, batch, global_size: int, term: str = "") -> bool:
        """Clipped gradients of ``loss``; False when non-finite and skipped (train.nonfinite=skip)."""
        self.optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks; scaling by the share makes that the global-batch mean
        (loss * len(batch) * self.procs.world / global_size).backward()  # always: every rank joins
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip or float("inf"))
        if torch.isfinite(loss) and torch.isfinite(norm):
            return True
        p, finite = self.progress, torch.isfinite
        term = term or ("reconstruction" if not finite(rec) else "KL" if not finite(loss) else "gradient")
        msg = (f"non-finite {term} at step {p.step} (epoch {p.epoch}): reconstruction={rec.item():.4g}, "
               f"KL={kl.item():.4g}")
        self._skips += 1
        if self.cfg.train.nonfinite == "skip" and self._skips < MAX_SKIPS:
            self.log(msg + "; step skipped (train.nonfinite=skip)")
            self.optimizer.zero_grad(set_to_none=True)
            return False
        ckpts = list_checkpoints(self.run)
        where = f"the last good checkpoint is {ckpts[-1]}" if ckpts else "no checkpoint was saved yet"
        raise TrainingError(f"{msg}. Training stopped; {where} and the best model is in {self.run / 'best'}. "
                            f"Try a lower train.lr, train.grad_clip, or train.nonfinite=skip.")

    def step(self, batch, offset: int, global_size: int) -> dict | None:
        """One optimiser step on this rank's share (rows offset.. of a global batch of global_size).
        Returns the terms to log, or None when a non-finite step was skipped."""
        extra = {}
        for s in self.strategies:
            extra.update(s.before_step(self, batch, offset, global_size))
        loss, rec, kl, beta = self.loss(batch, offset, global_size)
        if not self.backward(loss, rec, kl, batch, global_size):
            return None
        for s in self.strategies:
            s.after_backward(self)
        self.optimizer.step()
        self._skips = 0
        return {"loss": loss.detach(), "rec": rec.detach(), "kl": kl.detach(), "kl_weight": beta, **extra}

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict:
        """Train until max_epochs / max_steps / max_minutes / early stopping. Returns the last
        validation numbers with step, epoch, best_elbo, best_step and ``stopped`` (why)."""
        from tqdm.auto import tqdm

        with StopSignals("the end of training", defer=True) as self._stop:
            try:
                return self._fit(tqdm)
            finally:
                self.metrics.close()

    def _fit(self, tqdm) -> dict:
        t, p, stop = self.cfg.train, self.progress, self._stop
        if p.step == 0 and not p.last_valid:
            self.after_validation(self.evaluate())
            self._save_checkpoint()
        if stop.received is not None:  # during the first validation
            self._interrupt()
        self._bar = bar = tqdm(total=self.total_steps, initial=p.step, disable=not (t.progress and self.is_main),
                               dynamic_ncols=True, desc="train", unit="step", mininterval=0.5)
        deadline, self._evaluated_at = distributed.Deadline(t.max_minutes, self.procs), p.step
        log_every = max(1, min(50, self.batches_per_epoch // 4))
        done = lambda: bool(p.stopped_early or (t.max_steps and p.step >= t.max_steps)  # noqa: E731
                            or deadline.check(sync=p.step % log_every == 0) or stop.received is not None)
        while p.epoch < t.max_epochs and not done():
            batches = self.sampler.global_batches(p.epoch)
            self.model.train()
            while p.batch_in_epoch < len(batches) and not done():
                batch, offset, size = self.shard(batches[p.batch_in_epoch])
                self.metrics.add(self.step(batch, offset, size), batch.num_tokens)
                p.step, p.batch_in_epoch = p.step + 1, p.batch_in_epoch + 1
                bar.update(1)
                if p.step % log_every == 0:
                    self._write_train_log()
                if t.eval_every and p.step % t.eval_every == 0:
                    self._checkpoint(with_eval=True)
                elif t.checkpoint_every and p.step % t.checkpoint_every == 0:
                    self._checkpoint(with_eval=False)
            if p.batch_in_epoch >= len(batches):
                p.epoch, p.batch_in_epoch = p.epoch + 1, 0
                for s in self.strategies:
                    s.end_of_epoch(self)
                if not t.eval_every:
                    self._checkpoint(with_eval=True)
        bar.close()
        if stop.received is not None:
            self._interrupt()
        if deadline.passed:
            self.log(f"time budget train.max_minutes={t.max_minutes:g} reached at step {p.step} ({p.epoch} "
                     f"epochs and {p.batch_in_epoch} batches); --resume continues with a new budget")
        if self._evaluated_at != p.step:
            self._checkpoint(with_eval=True)
        if stop.received is not None:  # during the last validation or checkpoint
            self._interrupt()
        stopped = ("early" if p.stopped_early else "time" if deadline.passed
                   else "max_steps" if t.max_steps and p.step >= t.max_steps else "max_epochs")
        return dict(p.last_valid, step=p.step, epoch=p.epoch, best_elbo=p.best_elbo, best_step=p.best_step,
                    stopped=stopped)

    def _interrupt(self) -> None:
        """Act on a SIGINT/SIGTERM the loop received: a checkpoint of this step (unless one was just
        saved), then KeyboardInterrupt saying where it is and how to continue."""
        stop, p = self._stop, self.progress
        stop.handled = True
        if self._saved_at != p.step:
            self._checkpoint(with_eval=False)
        where = f"at step {p.step}" if p.step else "before the first step"
        raise KeyboardInterrupt(f"{stop.name} received {where}: checkpoint saved in {list_checkpoints(self.run)[-1]}"
                                f"; continue with --resume")

    def _checkpoint(self, with_eval: bool) -> None:
        """Flush the train log, validate and act on it if asked, save a checkpoint."""
        self._write_train_log()
        if with_eval:
            self.after_validation(self.evaluate())
            self._evaluated_at = self.progress.step
        self._save_checkpoint()
        self.metrics.restart()  # tokens_per_s measures training, not validation or saving

    def _write_train_log(self) -> None:
        p = self.progress
        r = self.metrics.write_train(step=p.step, epoch=p.epoch, lr=self.lr())
        if r and self._bar is not None:
            self._bar.set_postfix(loss=f"{r['loss']:.2f}", kl=f"{r['kl']:.2f}", beta=f"{r['kl_weight']:.2f}")


def train(cfg: Config, out: str | Path, resume: bool = False, log=None) -> dict:
    """Train a model described by ``cfg`` into run directory ``out``; returns the last validation
    numbers, the best score and why training stopped (see :meth:`Trainer.fit`)."""
    with StopSignals("start-up (data, tokenizer, model), before the first step; no checkpoint was saved") as stop:
        trainer = Trainer(cfg, out, resume=resume, log=log)
        try:
            result = trainer.fit()
            stop.phase = f"the end of training; the run is complete in {out}"
            return result
        finally:
            trainer.procs.close()
