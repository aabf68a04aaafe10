"""Run directories and checkpoints: atomic writes, save, load, list, resume.

A run directory looks like::

    run/
      config.json                 the resolved Config
      metrics.jsonl               one JSON object per train log / validation
      checkpoints/step-00000300/  resumable: model files + trainer_state.{json,pt}
      best/                       model directory with the best validation score so far

Every file textvae writes goes through :func:`atomic_write` (a temporary file, fsync, rename) and
every model or checkpoint directory through :func:`commit_dir` (written under a temporary name,
renamed when complete), so a crash, even SIGKILL during a save, leaves the previous version intact.
Nothing is unpickled on load: JSON, ``torch.load(weights_only=True)`` and safetensors only. A damaged
newest checkpoint is moved to ``checkpoints/bad-step-N`` and resume falls back to an older one.

This module imports only the standard library at import time (model.py and tokenizers.py use its
writer); torch, safetensors and the rest are imported inside the functions that need them.
"""

import json
import math
import os
import re
import shutil
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import CheckpointError, ConfigError

STATE_JSON = "trainer_state.json"
STATE_PT = "trainer_state.pt"
_STEP_DIR = re.compile(r"step-\d+")

# ----------------------------------------------------------------------------- atomic writes


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable, where the platform allows it."""
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


def fsync_tree(path: Path) -> None:
    """fsync every file of directory ``path`` and the directory itself."""
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(path)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` so that a reader sees the old file or the whole
    new one, never a part: a temporary sibling, fsync, then ``os.replace``. The sibling's name is this
    process's and thread's own, so two writers of one path (rows run side by side) never share it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def commit_dir(tmp: Path, final: Path, old: Path | None = None) -> None:
    """Replace directory ``final`` by the complete directory ``tmp``.

    The previous ``final`` is first renamed to ``old`` (default ``.NAME.old``), so that a stop
    between the two renames leaves a complete copy there (:func:`restore_interrupted_commit`)."""
    old = old or final.with_name(f".{final.name}.old")
    fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
    os.rename(tmp, final)  # the commit point
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(final.parent)


def restore_interrupted_commit(final: Path, old: Path) -> None:
    """Put ``old`` back as ``final`` when a :func:`commit_dir` stopped between its two renames."""
    if not final.exists() and old.is_dir():
        os.rename(old, final)


def restore_interrupted_commits(run: Path) -> None:
    """:func:`restore_interrupted_commit` for ``best/`` and every checkpoint of run directory ``run``
    (a step saved twice, at ``train.checkpoint_every`` and then at a validation, replaces its directory),
    then remove what saves and prunes killed part-way left behind: a checkpoint's unfinished copy
    (``.step-N.tmp``) and a pruned one half deleted (``.step-N.del``), each a checkpoint's worth of disk."""
    restore_interrupted_commit(run / "best", run / "best.old")
    d = run / "checkpoints"
    for old in sorted(d.glob(".step-*.old")) if d.is_dir() else ():
        final = old.with_name(old.name[1:-len(".old")])
        if _STEP_DIR.fullmatch(final.name):
            restore_interrupted_commit(final, old)
    for left in sorted(d.glob(".step-*")) if d.is_dir() else ():
        if left.suffix in (".tmp", ".del") and _STEP_DIR.fullmatch(left.name[1:-4]) and left.is_dir():
            shutil.rmtree(left, ignore_errors=True)


def remove_dir(path: Path) -> None:
    """Delete a directory; renamed first, so that a half-deleted one never keeps its name."""
    gone = path.with_name(f".{path.name}.del")
    shutil.rmtree(gone, ignore_errors=True)
    os.rename(path, gone)
    shutil.rmtree(gone, ignore_errors=True)


# ----------------------------------------------------------------------------- checkpoints


@dataclass
class Progress:
    """The run's position and model-selection state: ``progress`` in trainer_state.json (with the
    state of the run's collapse strategies, textvae.collapse.Strategy.state, beside it)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already consumed
    best_elbo: float = math.inf  # the best validation score so far (collapse.Strategy.score): best/'s
    best_step: int = -1
    plateau_best: float = math.inf  # the best on the validation schedule: what the plateau compares
    bad_evals: int = 0  # scheduled evaluations since the last improvement
    decays: int = 0  # learning-rate decays so far
    nonfinite_skips: int = 0  # non-finite steps in a row (train.nonfinite=skip): the run stops at train.MAX_SKIPS
    stopped_early: bool = False
    last_valid: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "Progress":
        """From a saved ``progress`` mapping (other keys, the strategies' state, are ignored)."""
        names = {f.name for f in fields(cls)}
        d = {"plateau_best": d.get("best_elbo", math.inf), **d}  # saved before plateau_best: no stop off the schedule
        return cls(**{k: v for k, v in d.items() if k in names})

    def restart_selection(self) -> None:
        """Forget the best score, plateau and early-stopping state (a new training phase)."""
        self.best_elbo, self.best_step, self.bad_evals, self.decays, self.stopped_early = math.inf, -1, 0, 0, False
        self.plateau_best = math.inf


def save_trainer(tr) -> Path:
    """Checkpoint textvae.train.Trainer ``tr``: rank 0 writes checkpoints/step-N with the model,
    optimiser, progress, strategy state and every rank's RNG state; the other ranks wait."""
    import torch

    p, rng_ranks = tr.progress, tr.procs.gather(torch.get_rng_state())
    cuda_ranks = tr.procs.gather(torch.cuda.get_rng_state(tr.device)) if tr.device.type == "cuda" else []
    queue_ranks = tr.procs.gather(tr.tc_queue.state_dict()) if tr.tc_queue is not None else None
    if tr.is_main:
        progress = asdict(p)
        for s in tr.strategies:
            progress.update(s.state())
        meta = {"format_version": _format_version(), "progress": progress, "lr": tr.lr(),
                "batches": "length" if tr.sampler.by_length else "uniform",
                "metrics_records": tr.metrics.records}  # what resume keeps of metrics.jsonl
        state = {"optimizer": tr.optimizer.state_dict(), **rng_state(rng_ranks, cuda_ranks, tr.noise)}
        if tr.scaler.is_enabled():  # fp16: the dynamic loss scale and its growth tracker
            state["scaler"] = tr.scaler.state_dict()
        if tr.tc_queue is not None:  # beta-TCVAE's queue of earlier posteriors, one per rank
            state["tc_queue_ranks"] = queue_ranks
        save_checkpoint(tr.run, p.step, tr.model, model_extra(tr.cfg), meta, state, tr.cfg.train.keep_checkpoints)
    tr.procs.barrier()
    return tr.run / "checkpoints" / f"step-{p.step:08d}"


def load_trainer(tr, ckpt: Path) -> None:
    """Restore textvae.train.Trainer ``tr`` from checkpoint directory ``ckpt`` (format 1 and later),
    and drop the metrics.jsonl records written after it."""
    from .model import upgrade_state_dict

    meta, state, weights = read_checkpoint(ckpt)
    tr.model.load_state_dict(upgrade_state_dict(weights, tr.cfg.model))
    tr.optimizer.load_state_dict(state["optimizer"])
    if "scaler" in state and tr.scaler.is_enabled():
        tr.scaler.load_state_dict(state["scaler"])
    tr.progress = Progress.from_dict(meta["progress"])
    keep_batches(tr, meta.get("batches", "length"))
    if tr.tc_queue is not None:
        load_queue(tr.tc_queue, state.get("tc_queue_ranks"), tr.procs, tr.log)
    for s in tr.strategies:
        s.load_state(meta["progress"])
    for g in tr.optimizer.param_groups:
        g["lr"] = meta["lr"]
    reseed = tr.cfg.train.seed + 1000 * tr.procs.rank + tr.progress.step
    restore_rng(state, tr.noise, tr.procs, reseed, tr.log)
    if tr.is_main:
        truncate_metrics(tr.run, tr.progress.step, meta.get("metrics_records"))


def keep_batches(tr, saved: str) -> None:
    """Resume on the batches the run started with ("length" buckets or "uniform"; checkpoints
    without the key were written when every run trained on length buckets), so that resuming stays
    exact when the code would now choose the other kind (textvae.objectives.uniform_batches); say so."""
    by_length = saved == "length"
    if by_length != tr.sampler.by_length:
        tr.sampler.by_length = by_length
        tr.log(f"this run started on {saved} batches and resumes on them (a new run of this objective would "
               f"train on {'uniform' if by_length else 'length'} batches; see textvae.objectives.uniform_batches)")


def load_queue(queue, ranks: list | None, procs, log) -> None:
    """Put back this rank's beta-TCVAE queue. A checkpoint without one (written before
    objective.tc_queue was set) or by another number of processes starts it empty, and says so."""
    if ranks is not None and len(ranks) == procs.world:
        queue.load_state_dict(ranks[procs.rank], procs.device)
    else:
        log("objective.tc_queue: the checkpoint holds no queue for these processes; it starts empty")


def _format_version() -> int:
    from .config import FORMAT_VERSION

    return FORMAT_VERSION


def rng_state(rng_ranks: list, cuda_ranks: list, noise) -> dict:
    """The random states a resumed run needs to continue exactly: every rank's torch CPU state
    (``rng_ranks``) and, on GPU, every rank's CUDA state (``cuda_ranks``: dropout draws from it), the
    reparameterisation-noise generator and Python's."""
    import random

    return {"rng_torch_ranks": rng_ranks, "rng_noise": noise.get_state(), "rng_cuda": cuda_ranks,
            "rng_python": random.getstate()}


def restore_rng(state: dict, noise, procs, reseed: int, log) -> None:
    """Put back :func:`rng_state` for process ``procs.rank``. A checkpoint written by another
    number of processes cannot give each its dropout state: those are reseeded with ``reseed``."""
    import random

    import torch

    noise.set_state(state["rng_noise"])
    ranks = state["rng_torch_ranks"]
    if len(ranks) == procs.world:
        torch.set_rng_state(ranks[procs.rank])
    else:
        log(f"note: the checkpoint was written by {len(ranks)} process(es), this run has {procs.world}; "
            f"dropout randomness is reseeded, so the run will not be bit-identical")
        torch.manual_seed(reseed)
    cuda = state.get("rng_cuda") or []
    if procs.device.type == "cuda" and len(cuda) == procs.world:
        torch.cuda.set_rng_state(cuda[procs.rank], procs.device)
    elif procs.device.type == "cuda" and cuda:  # another number of processes, or rank 0's state alone (older checkpoints)
        if len(ranks) == procs.world:
            log("note: the checkpoint holds the CUDA random state of rank 0 alone; dropout randomness on "
                "the GPU is reseeded, so the run will not be bit-identical")
        torch.cuda.manual_seed(reseed)
    random.setstate(_to_tuple(state["rng_python"]))


def _to_tuple(x):
    """random.setstate needs tuples; torch.save/load may hand lists back."""
    return tuple(_to_tuple(i) for i in x) if isinstance(x, (list, tuple)) else x


def list_checkpoints(run: str | Path) -> list[Path]:
    """Complete checkpoints of run directory ``run``, oldest first (temporary, bad-* and partly
    written directories are ignored)."""
    d = Path(run) / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name)
                  and (p / STATE_JSON).is_file() and (p / STATE_PT).is_file())


def save_model_dir(model, final: Path, extra: dict, files: dict | None = None, old: Path | None = None) -> None:
    """Save ``model`` (``save_pretrained``) plus ``files`` (name -> str/bytes, or a callable
    writing to the path it is given) as directory ``final``, atomically."""
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, extra=extra)
    for name, data in (files or {}).items():
        if callable(data):
            data(tmp / name)
        else:
            atomic_write(tmp / name, data)
    commit_dir(tmp, final, old)


def save_checkpoint(run: Path, step: int, model, extra: dict, meta: dict, state: dict, keep: int) -> Path:
    """Write ``checkpoints/step-N`` (model files, ``meta`` as trainer_state.json, the tensors of
    ``state`` as trainer_state.pt) and prune all but the newest ``keep`` checkpoints."""
    import torch

    final = run / "checkpoints" / f"step-{step:08d}"
    final.parent.mkdir(parents=True, exist_ok=True)
    save_model_dir(model, final, extra, {STATE_PT: lambda path: torch.save(state, path),
                                         STATE_JSON: json.dumps(meta, indent=2) + "\n"})
    for old in list_checkpoints(run)[:-keep]:
        remove_dir(old)
    return final


def save_best(run: Path, model, cfg) -> None:
    """Write ``best/`` atomically (the previous one is ``best.old`` between the two renames)."""
    save_model_dir(model, run / "best", model_extra(cfg), old=run / "best.old")


def model_extra(cfg) -> dict:
    """What a run's saved models keep beside their model config: the data settings of ``cfg``."""
    return {"data": asdict(cfg.data)}


class UnusableCheckpoint(CheckpointError):
    """A checkpoint whose files are damaged or tampered with (resume falls back to an older one)."""


def read_checkpoint(ckpt: Path) -> tuple[dict, dict, dict]:
    """(trainer_state.json, trainer_state.pt, model weights) of checkpoint directory ``ckpt``.

    Nothing is unpickled: JSON, ``torch.load(weights_only=True)`` (tensors and plain containers
    only) and safetensors; the tokenizer files are checked too. A damaged, truncated or tampered
    file is an :class:`UnusableCheckpoint` naming it; a checkpoint from a newer textvae is a
    CheckpointError."""
    import warnings

    import torch
    from safetensors.torch import load_file

    from .config import FORMAT_VERSION, read_format_version
    from .tokenizers import load_tokenizer

    path = ckpt / STATE_JSON
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(meta, dict) and isinstance(meta.get("progress"), dict) and "lr" in meta):
            raise ValueError("not a textvae trainer state (it needs 'progress' and 'lr')")
        version = read_format_version(meta, str(path), UnusableCheckpoint)
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


def _unusable(path: Path, e: Exception) -> UnusableCheckpoint:
    """The error for a checkpoint file that failed to load with ``e``: what is wrong, in one line."""
    import pickle

    if isinstance(e, CheckpointError):
        return UnusableCheckpoint(str(e))
    if isinstance(e, FileNotFoundError):
        return UnusableCheckpoint(f"{path} is missing")
    if isinstance(e, pickle.UnpicklingError):
        m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\. Please use|\n\n|$)", str(e), re.S)
        detail = f" ({' '.join(m.group(1).split())})" if m else ""
        return UnusableCheckpoint(f"{path} holds pickled Python objects, not just tensors{detail}; refused "
                                  f"without running them (unpickling can execute arbitrary code)")
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return UnusableCheckpoint(f"{path} is damaged, truncated or not in the expected format "
                              f"({type(e).__name__}: {first})")


def newest_usable(run: Path, log, is_main: bool = True) -> Path:
    """The newest checkpoint of ``run`` that reads back (:func:`read_checkpoint`). Damaged ones
    newer than it are renamed bad-step-N (kept for inspection, never resumed from or pruned) and
    reported through ``log``."""
    bad: list[tuple[Path, str]] = []
    for ckpt in reversed(list_checkpoints(run)):
        try:
            read_checkpoint(ckpt)
        except UnusableCheckpoint as e:
            bad.append((ckpt, str(e)))
            continue
        for skipped, why in bad:
            aside = skipped.with_name(f"bad-{skipped.name}")
            if is_main:
                shutil.rmtree(aside, ignore_errors=True)
                os.rename(skipped, aside)
            log(f"warning: skipped checkpoint {skipped}: {why}; moved it to {aside}")
        log(f"resuming from {ckpt} (newest complete checkpoint)")
        return ckpt
    raise CheckpointError(f"--resume: no usable checkpoint in {run / 'checkpoints'}:\n  - "
                          + "\n  - ".join(why for _, why in bad)
                          + "\nStart a new run (another --out) or restore the checkpoint files")


# ----------------------------------------------------------------------------- run directories


def prepare_run_dir(run: Path, cfg, resume: bool, log, is_main: bool = True, barrier=None) -> Path | None:
    """Check run directory ``run`` for a new run or ``--resume``; return the checkpoint to resume
    from, or None to start at step 0. A new run needs a directory without a run in it; a resumed
    one the same data/tokenizer/model/objective settings as its config.json (train.* may change).
    ``barrier``: waits for every process (rank 0 repairs the directory before the others read it)."""
    if not resume:
        if run.exists() and (list_checkpoints(run) or (run / "metrics.jsonl").exists()):
            raise ConfigError(f"--out {run} already holds a run; pass --resume to continue it, "
                              f"or choose a new --out directory")
        if is_main:
            run.mkdir(parents=True, exist_ok=True)
        return None
    if is_main:
        restore_interrupted_commits(run)
    if barrier is not None:
        barrier()
    if not list_checkpoints(run):
        if (run / "config.json").is_file():  # stopped before its first checkpoint
            log(f"--resume: {run} has no complete checkpoint yet (the run stopped before its first "
                f"one); starting it again from step 0")
            if is_main:
                (run / "metrics.jsonl").unlink(missing_ok=True)
            return None
        raise CheckpointError(f"--resume: {run} has no complete checkpoint in {run / 'checkpoints'}; "
                              f"start a new run without --resume")
    _check_same_settings(run / "config.json", cfg)
    return newest_usable(run, log, is_main)


def _check_same_settings(saved: Path, cfg) -> None:
    changed = settings_differences(saved, cfg)
    if changed:
        raise ConfigError(f"--resume: these settings differ from the run's {saved}: "
                          f"{', '.join(f'{k} ({a!r} -> {b!r})' for k, (a, b) in changed.items())}; "
                          f"resume with the same preset/config and overrides (only train.* may change)")


def settings_differences(saved: Path, cfg, sections=("data", "tokenizer", "model", "objective"),
                         free=()) -> dict[str, tuple]:
    """The settings of ``cfg`` in ``sections`` that differ from the run's saved config.json:
    ``{"section.key": (saved, now)}``; none when there is no config.json. ``free``: "section.key" names
    that may differ (besides those derived from the data: the vocabulary size and the label names)."""
    if not saved.is_file():
        return {}
    from .config import Config
    from .config_files import _read_mapping

    old = Config.from_dict(_read_mapping(saved, str(saved)), str(saved)).to_dict()
    new = cfg.to_dict()
    for d in (old["data"], new["data"]):  # a relative data_dir (saved by older versions) as an absolute one
        if d.get("data_dir"):
            d["data_dir"] = str(Path(d["data_dir"]).expanduser().resolve())
    free = {"model.vocab_size", "model.id2label", *free}  # derived from the data, not chosen
    return {f"{sec}.{k}": (old[sec][k], new[sec].get(k)) for sec in sections for k in old[sec]
            if old[sec][k] != new[sec].get(k) and f"{sec}.{k}" not in free}


class MetricsLog:
    """``run/metrics.jsonl``, one JSON object per line, and with ``tensorboard`` the same numbers
    as TensorBoard scalars under ``run/tb`` (``KIND/KEY``). Only the process with ``enabled`` writes.
    ``purge_step`` (a resumed run): TensorBoard hides the events of that step and later that earlier
    sittings wrote (the files stay; a restart marker tells readers to drop them), as
    :func:`truncate_metrics` drops their records from metrics.jsonl.

    Train records average the step terms given to :meth:`add` since the previous one."""

    def __init__(self, run: Path, tensorboard: bool = False, enabled: bool = True, purge_step: int | None = None):
        self.path, self.tb, self.enabled = run / "metrics.jsonl", None, enabled
        # records in the file (a resumed run appends to what its checkpoint kept); checkpoints store it
        self.records = len(_metrics_lines(self.path)) if enabled else 0
        if tensorboard and enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("train.tensorboard=true needs the tensorboard package: "
                                  "pip install tensorboard") from None
            self.tb = SummaryWriter(str(run / "tb"), purge_step=purge_step)
        self.restart()

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        self.records += 1
        for k, v in record.items() if self.tb is not None else ():
            if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                self.tb.add_scalar(f"{record['kind']}/{k}", v, record["step"])

    def add(self, terms: dict | None, tokens: int) -> None:
        """One training step's terms (numbers or 0-d tensors) and token count; None: a skipped step."""
        if terms is not None:
            for k, v in terms.items():
                self.sums[k] = self.sums.get(k, 0.0) + v
            self.count, self.tokens = self.count + 1, self.tokens + tokens

    def write_train(self, **fields) -> dict | None:
        """Write the train record of the steps since the last one (with ``fields`` and tokens per
        second since :meth:`restart`); returns it, or None when there was no step to average."""
        import time

        import torch

        record = None
        if self.count:
            means = {k: (v.item() if torch.is_tensor(v) else v) / self.count for k, v in self.sums.items()}
            elapsed = max(time.perf_counter() - self.t0, 1e-9)
            record = {"kind": "train", **fields, **means, "tokens_per_s": self.tokens / elapsed}
            self.write(record)
        self.restart()
        return record

    def restart(self) -> None:
        """Start a new averaging window and clock (tokens_per_s measures training steps only)."""
        import time

        self.sums, self.count, self.tokens, self.t0 = {}, 0, 0, time.perf_counter()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _metrics_lines(path: Path) -> list[str]:
    """The complete records of a metrics.jsonl file (a half-written last line from a crash is not one)."""
    if not path.exists():
        return []
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            keep.append(line)
    return keep


def truncate_metrics(run: Path, step: int, records: int | None = None) -> None:
    """Drop the metrics.jsonl records written after the checkpoint a run resumes from (it writes them
    again): keep the first ``records``, as many as there were when it was saved; for a checkpoint that
    did not count them (an earlier textvae), those of steps up to ``step``. So a record written at the
    checkpoint's step but after it (a validation MI check of aggressive training) is dropped too."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return
    lines = _metrics_lines(path)
    keep = lines[:records] if records is not None else [x for x in lines if json.loads(x)["step"] <= step]
    atomic_write(path, "".join(line + "\n" for line in keep))
