"""The training loop: optimisation, validation, checkpoints, exact resume, numerical guard.

A run directory looks like::

    run/
      config.json               the resolved Config
      metrics.jsonl             one JSON object per train log / validation
      checkpoints/step-00000300/  resumable: model files + trainer_state.{json,pt}
      best/                     model directory with the best validation ELBO so far

Every checkpoint is written under a temporary name and renamed when complete, so a crash (even
SIGKILL during a save) leaves the previous checkpoints intact. Resuming restores the model,
optimiser, plateau/early-stopping state, RNG states, step and the position in the epoch's batch
order, so on CPU a resumed run reproduces the uninterrupted one exactly. Resume uses the newest
checkpoint that reads back completely (nothing is unpickled); newer damaged ones are named and moved
to ``checkpoints/bad-step-N``. A run stopped before its first checkpoint starts again from step 0.
SIGINT/SIGTERM finish the current step, save a checkpoint and raise KeyboardInterrupt.
``train.max_minutes`` ends a sitting like ``max_steps`` (validation, checkpoint, normal return, with
``stopped="time"`` in the result); a resumed run gets a new budget.

Data parallel: under ``torchrun --nproc_per_node N -m textvae train ...`` every process trains on
its contiguous share of each global batch (``train.batch_size`` is the global batch) inside
DistributedDataParallel (nccl on GPU, gloo on CPU). The reparameterisation noise is drawn for the
whole global batch from a generator every rank holds in the same state, and each rank's loss is
scaled by its share, so N processes compute the same update as one process with the same global
batch (exactly so for the objective without free bits or with Li et al.'s per-example free bits;
Kingma et al.'s batch-mean free bits use each rank's share of the batch). Only rank 0 logs and
writes files; every rank validates (deterministic, identical) so lr decay and early stopping agree
without communication.
"""

import json
import math
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from . import collapse
from .config import FORMAT_VERSION, Config
from .data import BucketBatchSampler, attach_label_ids, collate, encode_split, load_splits
from .errors import CheckpointError, ConfigError, TrainingError
from .metrics import validate
from .model import TextVAE, restore_shared
from .objectives import kl_term, kl_weight
from .tokenizers import load_tokenizer, train_tokenizer

STATE_JSON = "trainer_state.json"
STATE_PT = "trainer_state.pt"
MAX_SKIPS = 10  # consecutive non-finite steps tolerated with train.nonfinite=skip


@dataclass
class Progress:
    """Everything about the run's position that is not a tensor (saved as JSON)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already consumed
    best_elbo: float = math.inf
    best_step: int = -1
    bad_evals: int = 0  # evaluations since the last improvement
    decays: int = 0  # learning-rate decays so far
    stopped_early: bool = False
    last_valid: dict = field(default_factory=dict)
    aggressive: bool = False  # He et al. (2019) aggressive encoder training still on (collapse.py)
    mi_prev: float | None = None  # its validation MI at the end of the previous epoch
    pretrain_end: int | None = None  # step at which Li et al. (2019) phase 2 began; None: not (yet)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available; use train.device=cpu")
    return torch.device(name)


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


def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, device) — joins the process group torchrun describes in the environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def list_checkpoints(run: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories are ignored)."""
    d = run / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith("step-")
                  and (p / STATE_JSON).is_file() and (p / STATE_PT).is_file())


class _UnusableCheckpoint(CheckpointError):
    """A checkpoint whose files are damaged or tampered with (resume falls back to an older one)."""


def read_checkpoint(ckpt: Path) -> tuple[dict, dict, dict]:
    """(trainer_state.json, trainer_state.pt, model weights) of checkpoint directory ``ckpt``.

    Nothing is unpickled: JSON, ``torch.load(weights_only=True)`` (tensors and plain containers
    only) and safetensors; the tokenizer files are checked too. A damaged, truncated or tampered
    file is a CheckpointError naming it; a checkpoint from a newer textvae is one as well."""
    import warnings

    from safetensors.torch import load_file

    from .config import read_format_version

    path = ckpt / STATE_JSON
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(meta, dict) and isinstance(meta.get("progress"), dict) and "lr" in meta):
            raise ValueError("not a textvae trainer state (it needs 'progress' and 'lr')")
        version = read_format_version(meta, str(path), _UnusableCheckpoint)
    except Exception as e:  # noqa: BLE001 - every failure means this checkpoint is unusable
        raise _unusable(path, e) from None
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format_version {version}, newer than this textvae understands "
                              f"({FORMAT_VERSION}); upgrade textvae to resume the run")
    try:
        path = ckpt / STATE_PT
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the pickle protocol before refusing it
            state = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(state, dict) and "optimizer" in state):
            raise ValueError("not a textvae optimiser state (no 'optimizer' entry)")
        path = ckpt / "model.safetensors"
        weights = load_file(str(path))
        path = ckpt
        load_tokenizer(ckpt)
    except Exception as e:  # noqa: BLE001 - torch and safetensors raise many types; all mean unusable
        raise _unusable(path, e) from None
    return meta, state, weights


def _unusable(path: Path, e: Exception) -> "_UnusableCheckpoint":
    """The error for a checkpoint file that failed to load with ``e``: what is wrong, in one line."""
    import pickle
    import re

    if isinstance(e, CheckpointError):
        return _UnusableCheckpoint(str(e))
    if isinstance(e, FileNotFoundError):
        return _UnusableCheckpoint(f"{path} is missing")
    if isinstance(e, pickle.UnpicklingError):
        m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\. Please use|\n\n|$)", str(e), re.S)
        detail = f" ({' '.join(m.group(1).split())})" if m else ""
        return _UnusableCheckpoint(f"{path} holds pickled Python objects, not just tensors{detail}; refused "
                                   f"without running them (unpickling can execute arbitrary code)")
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return _UnusableCheckpoint(f"{path} is damaged, truncated or not in the expected format "
                               f"({type(e).__name__}: {first})")


class Trainer:
    """Owns the model, optimiser and data of one run; ``fit()`` runs it to the end."""

    def __init__(self, cfg: Config, out: str | Path, resume: bool = False, log=None):
        self.cfg = cfg
        self.run = Path(out)
        self.rank, self.world, self.device = init_distributed(resolve_device(cfg.train.device))
        self.is_main = self.rank == 0
        say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.log = say if self.is_main else (lambda msg: None)
        self._stop_signal: int | None = None
        self._skips = 0
        ckpt = self._prepare_run_dir(resume)

        torch.manual_seed(cfg.train.seed)
        random.seed(cfg.train.seed)
        splits = load_splits(cfg.data, ("train", "valid"))
        train_texts = splits["train"].with_format("arrow")["text"].to_pylist()
        self.tokenizer = load_tokenizer(ckpt) if ckpt else train_tokenizer(cfg.tokenizer, train_texts)
        self.train_data = encode_split(splits["train"], self.tokenizer, cfg.data)
        self.valid_data = encode_split(splits["valid"], self.tokenizer, cfg.data)
        for name, split in (("train", self.train_data), ("valid", self.valid_data)):
            s = split.stats
            self.log(f"{name}: {s['examples']} examples, {s['tokens']} tokens (words + EOS); skipped "
                     f"{s.get('skipped_blank', 0)} blank, truncated {s.get('truncated', 0)}, "
                     f"dropped {s.get('dropped', 0)} (data.long_policy={cfg.data.long_policy})")

        cfg.model.vocab_size = self.tokenizer.vocab_size
        labels = None
        if cfg.model.conditional:  # the conditional VAE's labels: the training split's, sorted
            labels = sorted(set(self.train_data.labels or []))
            attach_label_ids(self.train_data, labels, "the train split")
            attach_label_ids(self.valid_data, labels, "the valid split")
        self.model = TextVAE(cfg.model, self.tokenizer, labels).to(self.device)
        self.net = self.model  # what the step calls: the model itself, or its DDP wrapper
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda"
                                               else None)
        # Reparameterisation noise for whole global batches, in the same state on every rank.
        self.noise = torch.Generator().manual_seed(cfg.train.seed + 1)
        # aggressive training (He et al. 2019) steps encoder and decoder separately: two groups
        params = collapse.param_groups(self.model, cfg.objective.aggressive)
        t = cfg.train
        self.optimizer = make_optimizer(t, params)
        self.sampler = BucketBatchSampler(self.train_data.lengths, t.batch_size, shuffle=True, seed=t.seed,
                                          num_replicas=self.world, rank=self.rank)
        self.batches_per_epoch = len(self.sampler.global_batches(0))
        planned = t.max_epochs * self.batches_per_epoch
        self.total_steps = min(planned, t.max_steps) if t.max_steps else planned
        self.progress = Progress(aggressive=cfg.objective.aggressive)
        if self.world > 1:
            torch.manual_seed(t.seed + 1000 * self.rank)  # dropout masks differ between ranks
        if ckpt:
            self._load_checkpoint(ckpt)
        elif self.is_main:
            cfg.save(self.run / "config.json")
        self.tb = self._tensorboard() if t.tensorboard and self.is_main else None
        self._barrier()

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    # ------------------------------------------------------------------ run directory and checkpoints

    def _prepare_run_dir(self, resume: bool) -> Path | None:
        run = self.run
        if resume:
            ckpts = list_checkpoints(run)
            if not ckpts and (run / "config.json").is_file():  # stopped before its first checkpoint
                self.log(f"--resume: {run} has no complete checkpoint yet (the run stopped before its first "
                         f"one); starting it again from step 0")
                if self.is_main:
                    (run / "metrics.jsonl").unlink(missing_ok=True)
                return None
            if not ckpts:
                raise CheckpointError(f"--resume: {run} has no complete checkpoint in {run / 'checkpoints'}; "
                                      f"start a new run without --resume")
            saved = run / "config.json"
            if saved.is_file():
                from .config import _read_mapping

                old = Config.from_dict(_read_mapping(saved, str(saved)), str(saved)).to_dict()
                new = self.cfg.to_dict()
                changed = [f"{sec}.{k}" for sec in ("data", "tokenizer", "model", "objective")
                           for k in old[sec]
                           if old[sec][k] != new[sec][k] and (sec, k) not in (("model", "vocab_size"),
                                                                              ("model", "num_labels"))]
                if changed:
                    raise ConfigError(f"--resume: these settings differ from the run's {saved}: "
                                      f"{', '.join(changed)}; resume with the same preset/config and "
                                      f"overrides (only train.* may change)")
            if self.is_main and not (run / "best").exists() and (run / "best.old").is_dir():
                os.rename(run / "best.old", run / "best")  # stopped between the two renames of _save_best
            return self._newest_usable(ckpts)
        if run.exists() and (list_checkpoints(run) or (run / "metrics.jsonl").exists()):
            raise ConfigError(f"--out {run} already holds a run; pass --resume to continue it, "
                              f"or choose a new --out directory")
        if self.is_main:
            run.mkdir(parents=True, exist_ok=True)
        return None

    def _newest_usable(self, ckpts: list[Path]) -> Path:
        """The newest checkpoint that reads back (see read_checkpoint). Damaged ones newer than it
        are renamed bad-step-N (kept for inspection, never resumed from or pruned) and reported."""
        bad: list[tuple[Path, str]] = []
        for ckpt in reversed(ckpts):
            try:
                read_checkpoint(ckpt)
            except _UnusableCheckpoint as e:
                bad.append((ckpt, str(e)))
                continue
            for skipped, why in bad:
                aside = skipped.with_name(f"bad-{skipped.name}")
                if self.is_main:
                    shutil.rmtree(aside, ignore_errors=True)
                    os.rename(skipped, aside)
                self.log(f"warning: skipped checkpoint {skipped}: {why}; moved it to {aside}")
            self.log(f"resuming from {ckpt} (newest complete checkpoint)")
            return ckpt
        raise CheckpointError(f"--resume: no usable checkpoint in {self.run / 'checkpoints'}:\n  - "
                              + "\n  - ".join(why for _, why in bad)
                              + "\nStart a new run (another --out) or restore the checkpoint files")

    def _load_checkpoint(self, ckpt: Path) -> None:
        meta, state, weights = read_checkpoint(ckpt)
        self.model.load_state_dict(restore_shared(weights, self.cfg.model))
        self.optimizer.load_state_dict(state["optimizer"])
        self.progress = Progress(**meta["progress"])
        for g in self.optimizer.param_groups:
            g["lr"] = meta["lr"]
        self.noise.set_state(state["rng_noise"])
        ranks = state["rng_torch_ranks"]
        if len(ranks) == self.world:
            torch.set_rng_state(ranks[self.rank])
        else:
            self.log(f"note: the checkpoint was written by {len(ranks)} process(es), this run has "
                     f"{self.world}; dropout randomness is reseeded, so the run will not be bit-identical")
            torch.manual_seed(self.cfg.train.seed + 1000 * self.rank + self.progress.step)
        if self.device.type == "cuda" and state.get("rng_cuda"):
            torch.cuda.set_rng_state(state["rng_cuda"][0], self.device)
        random.setstate(_to_tuple(state["rng_python"]))
        if self.is_main:
            self._truncate_metrics(self.progress.step)

    def _save_checkpoint(self) -> Path:
        """Rank 0 writes step-N atomically (every rank's RNG state included); others wait."""
        rng_ranks = [torch.get_rng_state()]
        if self.world > 1:
            rng_ranks = [None] * self.world
            dist.all_gather_object(rng_ranks, torch.get_rng_state())
        ckdir = self.run / "checkpoints"
        final = ckdir / f"step-{self.progress.step:08d}"
        if self.is_main:
            self._write_checkpoint(final, rng_ranks)
        self._barrier()
        return final

    def _write_checkpoint(self, final: Path, rng_ranks: list) -> None:
        ckdir = final.parent
        ckdir.mkdir(exist_ok=True)
        tmp = ckdir / f".{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp, extra={"data": asdict(self.cfg.data)})
        state = {"optimizer": self.optimizer.state_dict(), "rng_torch_ranks": rng_ranks,
                 "rng_noise": self.noise.get_state(),
                 "rng_cuda": [torch.cuda.get_rng_state(self.device)] if self.device.type == "cuda" else [],
                 "rng_python": random.getstate()}
        torch.save(state, tmp / STATE_PT)
        meta = {"format_version": FORMAT_VERSION, "progress": self.progress.__dict__,
                "lr": self.optimizer.param_groups[0]["lr"]}
        (tmp / STATE_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)  # the commit point: a step-* directory is always complete
        _fsync_dir(ckdir)
        for old in list_checkpoints(self.run)[:-self.cfg.train.keep_checkpoints]:
            gone = old.with_name(f".{old.name}.del")  # renamed first: a half-deleted step-* never exists
            shutil.rmtree(gone, ignore_errors=True)
            os.rename(old, gone)
            shutil.rmtree(gone, ignore_errors=True)

    def _save_best(self) -> None:
        if not self.is_main:
            return
        best, tmp, old = self.run / "best", self.run / ".best.tmp", self.run / "best.old"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp, extra={"data": asdict(self.cfg.data)})
        _fsync_tree(tmp)
        if best.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.rename(best, old)  # if we die here, best.old is still a complete model
        os.rename(tmp, best)
        shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(self.run)

    # ------------------------------------------------------------------ logging

    def _record(self, record: dict) -> None:
        if not self.is_main:
            return
        with open(self.run / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, record["step"])

    def _truncate_metrics(self, step: int) -> None:
        """Drop records written after the checkpoint we resume from (they will be written again)."""
        path = self.run / "metrics.jsonl"
        if not path.exists():
            return
        keep = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                pass  # a half-written last line from a crash
        atomic_write_text(path, "".join(l + "\n" for l in keep))

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("train.tensorboard=true needs the tensorboard package: pip install tensorboard") from None
        return SummaryWriter(str(self.run / "tb"))

    # ------------------------------------------------------------------ evaluation and plateau logic

    def _lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def evaluate(self) -> dict:
        p, t = self.progress, self.cfg.train
        v = validate(self.model, self.valid_data, batch_size=max(t.batch_size, 64), samples=t.eval_samples,
                     seed=t.seed)
        beta = kl_weight(p.step, self.cfg.objective, self.total_steps, p.pretrain_end)
        self._record({"kind": "valid", "step": p.step, "epoch": p.epoch, "rec": v["rec"], "kl": v["kl"],
                      "elbo": v["elbo"], "ppl_elbo": v["ppl_elbo"], "au": v["au"], "kl_per_dim": v["kl_per_dim"],
                      "lr": self._lr(), "kl_weight": beta})
        self.log(f"valid step {p.step} epoch {p.epoch}: elbo {v['elbo']:.3f} = rec {v['rec']:.3f} + kl "
                 f"{v['kl']:.3f}  ppl_elbo {v['ppl_elbo']:.2f}  au {v['au']}  beta {beta:.3f}  lr {self._lr():.2e}")
        p.last_valid = {k: v[k] for k in ("rec", "kl", "elbo", "ppl_elbo", "au")}
        # the autoencoder phase (Li et al. 2019) is judged by what it optimises: reconstruction
        score = v["rec"] if collapse.pretraining(self.cfg.objective, p.pretrain_end) else v["elbo"]
        if score < p.best_elbo - 1e-6:
            p.best_elbo, p.best_step, p.bad_evals = score, p.step, 0
            self._save_best()
        elif p.step > 0:
            p.bad_evals += 1
            if t.max_decays and p.bad_evals > t.lr_patience:
                p.bad_evals = 0
                if p.decays >= t.max_decays and collapse.pretraining(self.cfg.objective, p.pretrain_end):
                    self._end_pretraining(f"it converged (no improvement after {p.decays} learning-rate decays)")
                elif p.decays >= t.max_decays:
                    p.stopped_early = True
                    self.log(f"early stopping: no improvement after {p.decays} learning-rate decays")
                else:
                    p.decays += 1
                    for g in self.optimizer.param_groups:
                        g["lr"] = max(t.min_lr, g["lr"] * t.lr_decay)
                    self.log(f"learning rate decayed to {self._lr():.2e} ({p.decays}/{t.max_decays})")
        return v

    # ------------------------------------------------------------------ the loop

    def _step(self, batch, offset: int, global_size: int) -> dict | None:
        """One optimiser step on this rank's share (rows offset.. of a global batch of global_size).

        Returns the logged terms (this rank's share), or None when a non-finite step was skipped."""
        p, o = self.progress, self.cfg.objective
        if collapse.pretraining(o, p.pretrain_end) and p.step >= o.pretrain_ae_steps:
            self._end_pretraining(f"objective.pretrain_ae_steps={o.pretrain_ae_steps} steps are done")
        inner = self._encoder_updates(batch, offset, global_size) if p.aggressive else 0
        loss, rec, kl_report, beta = self._loss(batch, offset, global_size)
        # DDP averages gradients over ranks; scaling by the share makes that the global-batch mean.
        share = len(batch) * self.world / global_size
        self.optimizer.zero_grad(set_to_none=True)
        (loss * share).backward()  # always, so every rank joins DDP's all-reduce
        clip = self.cfg.train.grad_clip or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if not (torch.isfinite(loss) and torch.isfinite(norm)):
            bad = ("reconstruction" if not torch.isfinite(rec) else "KL" if not torch.isfinite(loss)
                   else "gradient")
            return self._nonfinite(bad, rec, kl_report)
        if p.aggressive:  # He et al.: after the encoder's inner loop, the decoder alone is updated
            collapse.drop_grads(collapse.encoder_parameters(self.model))
        self.optimizer.step()
        self._skips = 0
        terms = {"loss": loss.detach(), "rec": rec.detach(), "kl": kl_report.detach(), "kl_weight": beta}
        if o.aggressive:
            terms["encoder_updates"] = inner  # mean per step in the train log; 0 once switched off
        return terms

    def _loss(self, batch, offset: int, global_size: int):
        """The weighted loss on this rank's share of a global batch: (loss, rec, kl, kl_weight)."""
        p = self.progress
        beta = kl_weight(p.step, self.cfg.objective, self.total_steps, p.pretrain_end)
        eps = torch.randn(global_size, self.model.latent_dim, generator=self.noise)[offset:offset + len(batch)]
        out = self.net(batch.tokens, batch.lengths, eps.to(self.device, non_blocking=True), y=batch.label_ids)
        rec = out.rec.mean()
        kl_report = out.kl.sum(1).mean()
        loss = rec + beta * kl_term(out.kl, self.cfg.objective)
        return loss, rec, kl_report, beta

    # ------------------------------------------------------------------ posterior-collapse remedies

    def _encoder_updates(self, batch, offset: int, global_size: int) -> int:
        """He et al. (2019) aggressive training, the inner loop (see collapse.py): encoder-only
        updates on this batch, then on training batches drawn at random, until the loss stops
        improving. Returns the number of updates."""
        o, t, p = self.cfg.objective, self.cfg.train, self.progress
        rule = collapse.InnerLoop(o.aggressive_max_inner, o.aggressive_window)
        rng = collapse.inner_batch_rng(t.seed, p.step)
        batches = self.sampler.global_batches(p.epoch)
        decoder = collapse.decoder_parameters(self.model)
        while True:
            loss, rec, kl, _ = self._loss(batch, offset, global_size)
            self.optimizer.zero_grad(set_to_none=True)
            (loss * len(batch) * self.world / global_size).backward()
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip or float("inf"))
            if not (torch.isfinite(loss) and torch.isfinite(norm)):
                self._nonfinite("encoder-update loss", rec, kl)  # raises unless train.nonfinite=skip
                return rule.updates
            collapse.drop_grads(decoder)
            self.optimizer.step()
            totals = torch.tensor([float(loss.detach()) * len(batch), float(batch.num_tokens)], device=self.device)
            if self.world > 1:
                dist.all_reduce(totals)  # every rank sees the global batch's loss: they stop together
            if rule.update(float(totals[0]), int(totals[1])):
                return rule.updates
            chosen = batches[int(rng.integers(len(batches)))]
            parts = np.array_split(chosen, self.world)
            offset, global_size = sum(len(part) for part in parts[:self.rank]), len(chosen)
            batch = collate(self.train_data, parts[self.rank].tolist()).to(self.device, non_blocking=True)

    def _end_of_epoch(self) -> None:
        """He et al. (2019): while aggressive training is on, measure the validation MI after every
        epoch and switch aggressive training off for good once it falls."""
        p, t = self.progress, self.cfg.train
        if not p.aggressive:
            return
        mi = collapse.validation_mi(self.model, self.valid_data, t.batch_size, t.seed)
        if collapse.mi_stopped_rising(p.mi_prev, mi):
            p.aggressive = False
        self._record({"kind": "aggressive", "step": p.step, "epoch": p.epoch, "mi": mi, "aggressive": p.aggressive})
        self.log(f"aggressive training: valid MI {mi:.3f} after epoch {p.epoch} (previous "
                 f"{'-' if p.mi_prev is None else f'{p.mi_prev:.3f}'}); "
                 f"{'continues' if p.aggressive else 'MI fell, switched off for the rest of the run'}")
        p.mi_prev = mi

    def _end_pretraining(self, reason: str) -> None:
        """Li et al. (2019): the autoencoder phase ends. Re-initialise the decoder (unless
        objective.reset_decoder=false), keep the encoder, and start the VAE phase afresh as their
        second run does: KL schedule from its step 0, new optimiser at train.lr, new best-model and
        early-stopping state (the best/ model is the VAE's from now on)."""
        p, t = self.progress, self.cfg.train
        p.pretrain_end = p.step
        if self.cfg.objective.reset_decoder:
            collapse.reset_decoder(self.model, t.seed + p.step)
        self.optimizer = make_optimizer(t, collapse.param_groups(self.model, self.cfg.objective.aggressive))
        p.best_elbo, p.best_step, p.bad_evals, p.decays, p.stopped_early = math.inf, -1, 0, 0, False
        self.log(f"step {p.step}: autoencoder pretraining ends, {reason}; "
                 f"{'decoder re-initialised, ' if self.cfg.objective.reset_decoder else ''}VAE phase begins")

    def _nonfinite(self, term: str, rec, kl):
        p = self.progress
        self._skips += 1
        msg = (f"non-finite {term} at step {p.step} (epoch {p.epoch}): reconstruction={rec.item():.4g}, "
               f"KL={kl.item():.4g}")
        if self.cfg.train.nonfinite == "skip" and self._skips < MAX_SKIPS:
            self.log(msg + "; step skipped (train.nonfinite=skip)")
            self.optimizer.zero_grad(set_to_none=True)
            return None
        ckpts = list_checkpoints(self.run)
        where = f"the last good checkpoint is {ckpts[-1]}" if ckpts else "no checkpoint was saved yet"
        raise TrainingError(f"{msg}. Training stopped; {where} and the best model is in {self.run / 'best'}. "
                            f"Try a lower train.lr, train.grad_clip, or train.nonfinite=skip.")

    def _on_signal(self, signum, frame):
        self._stop_signal = signum

    def fit(self) -> dict:
        """Train until max_epochs / max_steps / early stopping. Returns the last validation dict."""
        from tqdm.auto import tqdm

        cfg, t, p = self.cfg, self.cfg.train, self.progress
        handlers = {}
        if hasattr(signal, "SIGTERM"):
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    handlers[sig] = signal.signal(sig, self._on_signal)
                except ValueError:  # not in the main thread
                    pass
        try:
            if p.step == 0 and not p.last_valid:
                self.evaluate()
                self._save_checkpoint()
            bar = tqdm(total=self.total_steps, initial=p.step, disable=not (t.progress and self.is_main),
                       dynamic_ncols=True,
                       desc="train", unit="step", mininterval=0.5)
            sums, count, tokens, t0 = {}, 0, 0, time.perf_counter()
            evaluated_at = p.step

            def flush_train_log():
                nonlocal sums, count, tokens, t0
                if count:
                    rec = {k: (v.item() if torch.is_tensor(v) else v) / count for k, v in sums.items()}
                    self._record({"kind": "train", "step": p.step, "epoch": p.epoch, **rec, "lr": self._lr(),
                                  "tokens_per_s": tokens / max(time.perf_counter() - t0, 1e-9)})
                    bar.set_postfix(loss=f"{rec['loss']:.2f}", kl=f"{rec['kl']:.2f}", beta=f"{rec['kl_weight']:.2f}")
                sums, count, tokens, t0 = {}, 0, 0, time.perf_counter()

            def checkpoint(with_eval: bool):
                nonlocal evaluated_at, t0
                flush_train_log()
                if with_eval:
                    self.evaluate()
                    evaluated_at = p.step
                self._save_checkpoint()
                t0 = time.perf_counter()  # tokens_per_s measures training, not validation or saving

            deadline = time.monotonic() + 60 * t.max_minutes if t.max_minutes else None
            timed_out = False

            def out_of_time() -> bool:
                """train.max_minutes reached: checked at every step, or with several processes every
                log_every steps by rank 0 for all (so that they stop at the same step)."""
                nonlocal timed_out
                if deadline is None or timed_out:
                    return timed_out
                if self.world == 1:
                    timed_out = time.monotonic() >= deadline
                elif p.step % log_every == 0:
                    flag = torch.tensor([float(time.monotonic() >= deadline)], device=self.device)
                    dist.broadcast(flag, 0)
                    timed_out = bool(flag.item())
                return timed_out

            def done() -> bool:
                return bool(p.stopped_early or (t.max_steps and p.step >= t.max_steps) or out_of_time())

            log_every = max(1, min(50, self.batches_per_epoch // 4))
            while p.epoch < t.max_epochs and not done() and self._stop_signal is None:
                batches = self.sampler.global_batches(p.epoch)
                self.model.train()
                while p.batch_in_epoch < len(batches) and not done() and self._stop_signal is None:
                    parts = np.array_split(batches[p.batch_in_epoch], self.world)  # as the sampler shards
                    offset = sum(len(part) for part in parts[:self.rank])
                    batch = collate(self.train_data, parts[self.rank].tolist()).to(self.device, non_blocking=True)
                    terms = self._step(batch, offset, len(batches[p.batch_in_epoch]))
                    p.step += 1
                    p.batch_in_epoch += 1
                    bar.update(1)
                    if terms is not None:
                        for k, v in terms.items():
                            sums[k] = sums.get(k, 0.0) + v
                        count += 1
                        tokens += batch.num_tokens
                    if p.step % log_every == 0:
                        flush_train_log()
                    if t.eval_every and p.step % t.eval_every == 0:
                        checkpoint(with_eval=True)
                    elif t.checkpoint_every and p.step % t.checkpoint_every == 0:
                        checkpoint(with_eval=False)
                if p.batch_in_epoch >= len(batches):
                    p.epoch += 1
                    p.batch_in_epoch = 0
                    self._end_of_epoch()
                    if not t.eval_every:
                        checkpoint(with_eval=True)
            bar.close()
            if self._stop_signal is not None:
                checkpoint(with_eval=False)
                name = signal.Signals(self._stop_signal).name
                raise KeyboardInterrupt(f"{name} received at step {p.step}: checkpoint saved in "
                                        f"{list_checkpoints(self.run)[-1]}; continue with --resume")
            if timed_out:
                self.log(f"time budget train.max_minutes={t.max_minutes:g} reached at step {p.step} ({p.epoch} "
                         f"epochs and {p.batch_in_epoch} batches); --resume continues with a new budget")
            if evaluated_at != p.step:
                checkpoint(with_eval=True)
            stopped = ("early" if p.stopped_early else "time" if timed_out
                       else "max_steps" if t.max_steps and p.step >= t.max_steps else "max_epochs")
            return dict(p.last_valid, step=p.step, epoch=p.epoch, best_elbo=p.best_elbo, best_step=p.best_step,
                        stopped=stopped)
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)
            if self.tb is not None:
                self.tb.close()


def _to_tuple(x):
    """random.setstate needs tuples; torch.save/load may hand lists back."""
    return tuple(_to_tuple(i) for i in x) if isinstance(x, (list, tuple)) else x


def train(cfg: Config, out: str | Path, resume: bool = False, log=None) -> dict:
    """Train a model described by ``cfg`` into run directory ``out`` (see module docstring)."""
    return Trainer(cfg, out, resume=resume, log=log).fit()
