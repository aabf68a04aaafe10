"""The training loop of a sentence VAE (Bowman et al. 2016), readable top to bottom in ``Trainer.fit``.

A step runs the collapse strategies' hooks (textvae.collapse), the weighted loss, gradients, the numerical
guard, the optimiser step. Validation returns numbers (:meth:`Trainer.evaluate`); named steps act on them:
keep the best model (:func:`improves_best`), count the plateau (:func:`record_score`), decay the learning
rate or stop early (:func:`plateau`). A stop off the validation schedule (a step or time budget) validates
too, for best/ only, so that ``--resume`` goes on as an uninterrupted run would.
Checkpoints and exact resume: textvae.checkpoint. torchrun/DDP: textvae.distributed (``train.batch_size``
is the global batch; the noise is drawn for it whole and each rank's loss scaled by its share, so N
processes make one process's update). SIGINT and SIGTERM stop every phase (:class:`StopSignals`): during
training after the step, validation or checkpoint in progress, with a checkpoint saved; before the first step
at once, with nothing saved. Either way KeyboardInterrupt says what happened (the CLI exits with 130).
"""

import random
import sys
from pathlib import Path

import numpy as np
import torch

from . import checkpoint, collapse, distributed, precision
from .checkpoint import Progress, list_checkpoints
from .config import Config
from .batching import batch_sampler, collate
from .data import training_data
from .decomposition import PosteriorQueue
from .errors import ConfigError, DataError, TrainingError
from .metrics import validate
from .model import TextVAE
from .objectives import kl_weight, uniform_batches, vae_loss
from .optim import decay_lr, improves_best, make_optimizer, plateau, record_score
from .signals import StopSignals

MAX_SKIPS = 10  # consecutive non-finite steps tolerated with train.nonfinite=skip


class Trainer:
    """Owns the model, optimiser and data of one run; ``fit()`` runs it to the end."""

    def __init__(self, cfg: Config, out: str | Path, resume: bool = False, log=None):
        self.cfg, self.run, t = cfg, Path(out), cfg.train
        self.procs = distributed.setup(t.device)
        self.device, self.is_main = self.procs.device, self.procs.is_main
        precision.check(t, self.device, cfg.objective.aggressive)
        self.log = (log or (lambda msg: print(msg, file=sys.stderr, flush=True))) if self.is_main else (lambda m: None)
        self._saved_at, self._bar = None, None
        self._save_clock = distributed.Deadline(t.checkpoint_minutes, self.procs)  # and at each save
        if cfg.data.data_dir:  # absolute: evaluate, probe and --resume then work from any directory
            cfg.data.data_dir = str(Path(cfg.data.data_dir).expanduser().resolve())
        ckpt = checkpoint.prepare_run_dir(self.run, cfg, resume, self.log, self.is_main, self.procs.barrier)
        torch.manual_seed(t.seed)
        random.seed(t.seed)
        self.tokenizer, self.train_data, self.valid_data, labels = training_data(cfg, ckpt, self.log)
        cfg.model.vocab_size = self.tokenizer.vocab_size
        self.model = TextVAE(cfg.model, self.tokenizer, labels).to(self.device)
        self.log(f"model: {self.model.num_parameters():,} parameters; vocabulary {self.tokenizer.vocab_size:,} "
                 f"tokens ({cfg.tokenizer.kind} tokenizer); device {self.device}, precision {t.precision}")
        self.net = self.procs.wrap(self.model)  # what the step calls: the model or its DDP wrapper
        self.scaler = precision.grad_scaler(t.precision == "fp16")
        self.noise = torch.Generator().manual_seed(t.seed + 1)  # the same state on every rank
        self.strategies = collapse.strategies_for(cfg.objective)
        self.tc_queue = tc_queue(cfg, len(self.train_data), self.procs.world)
        self.optimizer = self.make_optimizer()
        self.sampler = batch_sampler(self.train_data, t, self.procs.world, self.procs.rank,
                                     by_length=not uniform_batches(cfg.objective))
        self.batches_per_epoch = len(self.sampler.global_batches(0))
        if not self.batches_per_epoch:  # else every epoch ends at once and the run "finishes" untrained
            raise DataError(f"the train split has {len(self.train_data)} example(s), too few for one batch shared by "
                            f"{self.procs.world} processes: nothing to train on; train with fewer processes "
                            f"(torchrun --nproc_per_node) or on more data")
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
        pretraining = any(getattr(s, "pretraining", False) for s in self.strategies)
        if pretraining and cfg.objective.pretrain_ae_steps >= self.total_steps:  # past max_steps: a ConfigError
            self.log(f"warning: objective.pretrain_ae_steps={cfg.objective.pretrain_ae_steps} is at least the "
                     f"{self.total_steps} steps of train.max_epochs={t.max_epochs}: unless the autoencoder "
                     f"converges first, the run ends before its VAE phase; lower it or train longer")
        # --resume: TensorBoard hides what the stopped sitting logged after the checkpoint (all of it without one)
        purge = (self.progress.step + 1 if ckpt else 0) if resume else None
        self.metrics = checkpoint.MetricsLog(self.run, t.tensorboard, enabled=self.is_main, purge_step=purge)
        self.procs.barrier()

    def make_optimizer(self) -> torch.optim.Optimizer:
        split = any(s.splits_optimizer for s in self.strategies)  # an encoder and a decoder group
        return make_optimizer(self.cfg.train, collapse.param_groups(self.model, split))

    def _save_checkpoint(self) -> Path:
        path = checkpoint.save_trainer(self)
        self._saved_at = self.progress.step
        self._save_clock = distributed.Deadline(self.cfg.train.checkpoint_minutes, self.procs)
        return path

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def evaluate(self) -> dict:
        """The validation numbers at this step (textvae.metrics.validate), logged and recorded."""
        p, t = self.progress, self.cfg.train
        v = validate(self.model, self.valid_data, batch_size=max(t.batch_size, 64), samples=t.eval_samples,
                     seed=t.seed, progress=f"valid step {p.step}" if t.progress and self.is_main else None)
        beta = self.kl_weight()
        self.metrics.write({"kind": "valid", "step": p.step, "epoch": p.epoch, **{k: v[k] for k in (  # discrete: codes
            "rec", "kl", "elbo", "ppl_elbo", "au", "kl_per_dim", "codebook_usage", "code_perplexity",  # M2: accuracy
            "accuracy") if k in v},
            "lr": self.lr(), "kl_weight": beta})
        self.log(f"valid step {p.step} epoch {p.epoch}: elbo {v['elbo']:.3f} = rec {v['rec']:.3f} + kl "
                 f"{v['kl']:.3f}  ppl_elbo {v['ppl_elbo']:.2f}  au {v['au']}  beta {beta:.3f}  lr {self.lr():.2e}"
                 + (f"  accuracy {v['accuracy']:.3f}" if "accuracy" in v else ""))
        p.last_valid = {k: v[k] for k in ("rec", "kl", "elbo", "ppl_elbo", "au")}
        return v

    def after_validation(self, v: dict) -> None:
        """Keep the best model; on a plateau decay the learning rate or stop early (unless a
        strategy takes the stop over: the end of Li et al.'s autoencoder phase)."""
        p, t = self.progress, self.cfg.train
        score = self.score(v)
        self.keep_if_best(score)
        if record_score(p, score):
            return
        action = plateau(p, t)
        if action == "decay":
            decay_lr(self.optimizer, p, t)
            self.log(f"learning rate decayed to {self.lr():.2e} ({p.decays}/{t.max_decays})")
        elif action == "stop" and not any(s.on_converged(self) for s in self.strategies):
            p.stopped_early = True
            self.log(f"early stopping: no improvement after {p.decays} learning-rate decays")

    def score(self, v: dict) -> float:
        """What model selection and the plateau compare: a strategy's score, else the negative ELBO."""
        return next((x for s in self.strategies if (x := s.score(v)) is not None), v["elbo"])

    def keep_if_best(self, score: float) -> None:
        """Save the model as best/ when ``score`` beats every validation so far."""
        if improves_best(self.progress, score) and self.is_main:
            checkpoint.save_best(self.run, self.model, self.cfg)

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
        with precision.autocast(self.device, self.cfg.train.precision):
            out = self.net(batch.tokens, batch.lengths, self.noise_for(offset, len(batch), global_size),
                           y=batch.label_ids)
            rec, kl_report = out.rec.float().mean(), out.kl.float().sum(1).mean()
            loss = vae_loss(out, beta, self.cfg.objective, dataset_size=len(self.train_data),
                            latent=self.model.latent, queue=self.tc_queue)  # beta-TCVAE's estimators
            return loss, rec, kl_report, beta

    def backward(self, loss, rec, kl, batch, global_size: int, term: str = "") -> bool:
        """Clipped gradients of ``loss``; False when non-finite and skipped (train.nonfinite=skip)."""
        self.optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks; scaling by the share makes that the global-batch mean
        self.scaler.scale(loss * len(batch) * self.procs.world / global_size).backward()  # always: every rank joins
        self.scaler.unscale_(self.optimizer)  # fp16: the true gradients, before clipping
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip or float("inf"))
        # fp16: an overflowing gradient is the scaler's business (it skips the step and lowers the scale)
        if torch.isfinite(loss) and (torch.isfinite(norm) or self.scaler.is_enabled()):
            return True
        p, finite = self.progress, torch.isfinite
        term = term or ("reconstruction" if not finite(rec) else "KL" if not finite(loss) else "gradient")
        msg = (f"non-finite {term} at step {p.step} (epoch {p.epoch}): reconstruction={rec.item():.4g}, "
               f"KL={kl.item():.4g}")
        p.nonfinite_skips += 1  # checkpointed: a resume goes on counting, as an uninterrupted run does
        if self.cfg.train.nonfinite == "skip" and p.nonfinite_skips < MAX_SKIPS:
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
        self.scaler.step(self.optimizer)  # fp32 / bf16: optimizer.step()
        self.scaler.update()
        self.progress.nonfinite_skips = 0
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
        t, p = self.cfg.train, self.progress
        if p.step == 0 and not p.last_valid:
            self.after_validation(self.evaluate())
            self._save_checkpoint()
        if self._signalled():  # during the first validation
            self._interrupt()
        self._bar = bar = tqdm(total=self.total_steps, initial=p.step, disable=not (t.progress and self.is_main),
                               dynamic_ncols=True, desc="train", unit="step", mininterval=0.5)
        deadline, self._evaluated_at = distributed.Deadline(t.max_minutes, self.procs), p.step
        log_every = max(1, min(50, self.batches_per_epoch // 4))
        done = lambda: bool(p.stopped_early or (t.max_steps and p.step >= t.max_steps)  # noqa: E731
                            or deadline.check(sync=p.step % log_every == 0) or self._signalled())
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
                elif ((t.checkpoint_every and p.step % t.checkpoint_every == 0)
                      or self._save_clock.check(sync=p.step % log_every == 0)):
                    self._checkpoint(with_eval=False)
            if p.batch_in_epoch >= len(batches):
                p.epoch, p.batch_in_epoch = p.epoch + 1, 0
                for s in self.strategies:
                    s.end_of_epoch(self)
                if not t.eval_every:
                    self._checkpoint(with_eval=True)
        bar.close()
        if self._signalled():
            self._interrupt()
        if deadline.passed:
            self.log(f"time budget train.max_minutes={t.max_minutes:g} reached at step {p.step} ({p.epoch} "
                     f"epochs and {p.batch_in_epoch} batches); --resume continues with a new budget")
        if self._evaluated_at != p.step:  # stopped off the validation schedule
            self._checkpoint(with_eval=True, scheduled=False)
        if self._signalled():  # during the last validation or checkpoint
            self._interrupt()
        stopped = ("early" if p.stopped_early else "time" if deadline.passed
                   else "max_steps" if t.max_steps and p.step >= t.max_steps else "max_epochs")
        return dict(p.last_valid, step=p.step, epoch=p.epoch, best_elbo=p.best_elbo, best_step=p.best_step,
                    stopped=stopped)

    def _signalled(self) -> bool:
        """Whether SIGINT/SIGTERM reached any of the processes. All get the same answer, and the signal,
        so that all stop after the same step: one stopping alone would wait forever for the others in
        its checkpoint while they wait for it in the next step's gradient all-reduce."""
        signum = self.procs.max_over(self._stop.received or 0)
        if signum and self._stop.received is None:
            self._stop.received = signum
        return bool(signum)

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

    def _checkpoint(self, with_eval: bool, scheduled: bool = True) -> None:
        """Flush the train log, validate and act on it if asked, save a checkpoint. A validation off the
        schedule (at a budget's stop) only updates best/: counted in the plateau, it would make a resumed
        run decay or stop at another validation than an uninterrupted one."""
        self._write_train_log()
        if with_eval:
            v = self.evaluate()
            if scheduled:
                self.after_validation(v)
            else:
                self.keep_if_best(self.score(v))
            self._evaluated_at = self.progress.step
        self._save_checkpoint()
        self.metrics.restart()  # tokens_per_s measures training, not validation or saving

    def _write_train_log(self) -> None:
        p = self.progress
        r = self.metrics.write_train(step=p.step, epoch=p.epoch, lr=self.lr())
        if r and self._bar is not None:
            self._bar.set_postfix(loss=f"{r['loss']:.2f}", kl=f"{r['kl']:.2f}", beta=f"{r['kl_weight']:.2f}")


def tc_queue(cfg: Config, dataset_size: int, world: int) -> PosteriorQueue | None:
    """The queue of earlier posteriors for beta-TCVAE's log q(z) (``objective.tc_queue``), or None."""
    size, batch = cfg.objective.tc_queue, -(-cfg.train.batch_size // world)  # a rank's largest share
    if size and size + batch > dataset_size:
        raise ConfigError(f"objective.tc_queue={size} plus a batch of {batch} is more than the {dataset_size} "
                          f"training sentences: the queue would hold a sentence twice; make it smaller")
    return PosteriorQueue(size) if size else None


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
