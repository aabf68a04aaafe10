"""Train and evaluate the rows of results tables described as YAML (``experiments/<table>/``), then
write ``results/<table>.json`` and render ``results/<table>.md`` (``scripts/report.py``).

    python scripts/run_experiments.py experiments/ptb                       # every PTB row
    python scripts/run_experiments.py experiments/ptb/bn-vae.yaml --device cuda
    python scripts/run_experiments.py experiments/ptb --device cuda --jobs 7 --max-epochs 10
    python scripts/run_experiments.py experiments/ptb --list                # rows and their overrides
    python scripts/run_experiments.py experiments/ptb --missing --jobs 2    # the runs still to do
    python scripts/run_experiments.py experiments/ptb --status              # where each run stands
    # smoke test: a row builds, trains a few steps and is evaluated on a few sentences, in /tmp
    python scripts/run_experiments.py experiments/ptb --rows bn-vae --out-dir /tmp/ptb \\
        --runs-dir /tmp/ptb/runs --max-steps 3 --iw-samples 5 --eval-sentences 50 --set train.progress=false

Arguments are table folders (every row) or row files; the format is in ``textvae/experiments.py``.
Each run R of table T trains in ``--runs-dir/T/R`` with ``textvae.train.train`` (a textvae run
directory; its ``reproduce.json`` records the sittings: command, seconds, device, commit, rewritten every
minute while a sitting trains, so one killed outright keeps its command and time). A run whose
training finished is not retrained; one interrupted (Ctrl-C, SIGTERM, a crash) resumes from its newest
checkpoint. Between sittings only the device, the budgets and how often it saves and reports may change
(``SITTING_SETTINGS``): a run directory trained under other settings than the command gives is neither
resumed nor reused, and the runner says what differs. A run that stopped at a budget (``--max-minutes``,
or a ``--max-steps`` / ``--max-epochs`` the command raises or drops) counts as finished (in a table whose
runs train to their early stop, ``to_early_stop``, it is marked ◊ and left out of the means) unless
the command has ``--extend``: then it trains on from its newest checkpoint (lr, patience and halvings
as they were) in a new sitting and is evaluated again. A finished run is evaluated once per (split,
iw samples, eval sentences, seed); other sample or homotopy counts redo those alone. An evaluation
interrupted part-way goes on from its last save (every minute, ``evaluation.partial.safetensors`` in
the run directory) when the command is run again.

A run trains only from committed code. When ``textvae/`` or ``scripts/`` of the checkout the imported
textvae is in have uncommitted changes (staged, unstaged, or new files git does not ignore), a record would
name a commit that is not the code that trained it, so runs that have to train or resume are left untrained
and the runner names the files. ``--allow-dirty`` trains them anyway: each such sitting keeps the changes
in the run directory as ``source-<hash>.diff`` (``git apply`` it on a checkout of the commit) and records
``dirty_diff`` and ``dirty_diff_sha256``. Evaluating trained runs, ``--list`` and ``--status`` need neither;
a textvae installed from a wheel trains with commit null.

After every run, ``--out-dir/T.json`` (one object per run, the table's order) and ``T.md`` are
rewritten; runs already in ``T.json`` that this command did not run (another machine, another process
running beside this one, a row whose file is gone) are kept.

``--jobs N`` runs each row in its own process of this script (log in ``--runs-dir/T/R.log``), N at a
time; each row's runs go into ``T.json`` and ``T.md`` as its process ends. These models are too small
to keep a GPU busy alone: on one H200, 7 VAE rows at once trained at ~27k tokens/s each, against 5.6k
for one row on 2 CPU threads. On a CPU the processes share the cores (``OMP_NUM_THREADS`` = cores / N
unless set).
"""

import argparse
import contextlib
import importlib
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402  (scripts/report.py: the rendering step)
from processes import BUSY_EXIT, COMMAND_ENV, CONCURRENT_ENV, parallel_env, run_processes  # noqa: E402
import provenance  # noqa: E402  (scripts/provenance.py: which code trains)
from provenance import Source, UncommittedSource, keep_diff  # noqa: E402

from textvae.config_files import load_config  # noqa: E402
from textvae.data import EncodedSplit, load_splits  # noqa: E402
from textvae.disentanglement import read_factors  # noqa: E402
from textvae.errors import TextVAEError  # noqa: E402
from textvae.experiments import (data_dir, evaluation, load_experiment, load_table, row_overrides,  # noqa: E402
                                 steps_from_epochs, TABLE_FILE)
from textvae.metrics import evaluate, model_split  # noqa: E402
from textvae.model import TextVAE  # noqa: E402
from textvae.checkpoint import atomic_write, list_checkpoints, settings_differences  # noqa: E402
from textvae.distributed import resolve_device  # noqa: E402
from textvae.eval_checkpoint import saved_progress  # noqa: E402
from textvae.signals import StopSignals  # noqa: E402
from textvae.plot import read_metrics  # noqa: E402
from textvae.run_summary import strategy_phases  # noqa: E402
from textvae.train import train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent  # this script's folder, the checkout's scripts/ when it runs from one
PACKAGE = provenance.PACKAGE  # the textvae this process imported
STATE = "reproduce.json"
PARTIAL_EVALUATION = "evaluation.partial.safetensors"  # an evaluation pass in progress


class RunBusy(TextVAEError):
    """Another process holds the run's lock: it is training or evaluating that run now."""


# --------------------------------------------------------------------------- configuration


def cli_overrides(args, data: Path | None) -> list[str]:
    """The command line's overrides for every run: data folder, budgets, device, then ``--set``."""
    cli = [] if data is None else [f"data.data_dir={json.dumps(str(data))}"]
    for key, value in (("train.max_epochs", args.max_epochs), ("train.max_steps", args.max_steps),
                       ("train.max_minutes", args.max_minutes), ("train.device", args.device)):
        if value is not None:
            cli.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}")
    return [*cli, *args.set]


def run_config(table, row, seed, args):
    """One run's Config and its overrides: preset, recipe, step counts derived from the epoch length,
    seed, the row's overrides, then the command line's."""
    preset = row.preset or table.preset
    cli = cli_overrides(args, args.data_dir or data_dir(table, REPO))
    cfg = load_config(preset, overrides=row_overrides(table, row, seed, [], cli))
    per_epoch = epoch_steps(cfg)
    planned = cfg.train.max_epochs * per_epoch
    if cfg.train.max_steps:
        planned = min(planned, cfg.train.max_steps)
    overrides = row_overrides(table, row, seed, steps_from_epochs(table, row, per_epoch, planned), cli)
    return load_config(preset, overrides=overrides), overrides


def epoch_steps(cfg) -> int:
    """Optimiser steps in one epoch of the training split."""
    return math.ceil(len(load_splits(cfg.data, ("train",))["train"]) / cfg.train.batch_size)


# --------------------------------------------------------------------------- provenance


def source_state(with_diff: bool = False) -> Source:
    """``provenance.source_state`` of this process: the textvae it imported (``PACKAGE``), run from this
    script's folder (``SCRIPTS``)."""
    return provenance.source_state(PACKAGE, SCRIPTS, with_diff)


def check_source(source: Source, allow_dirty: bool) -> None:
    """``provenance.check_source``, its advice naming this script."""
    provenance.check_source(source, allow_dirty, Path(__file__).name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda)"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    n = torch.get_num_threads()
    return f"CPU {cpu}, {n} thread{'s' if n != 1 else ''}"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_state(run: Path) -> dict:
    try:
        return json.loads((run / STATE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {"finished": False, "sittings": []}


def write_json(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2) + "\n")


def invocation(argv: list[str]) -> str:
    """The command that started this sitting, as a user would retype it: this script with its arguments,
    after ``OMP_NUM_THREADS=N`` where that was set. A row process of ``--jobs`` reports its parent's."""
    if os.environ.get(COMMAND_ENV):
        return os.environ[COMMAND_ENV]
    omp = os.environ.get("OMP_NUM_THREADS")
    threads = f"OMP_NUM_THREADS={shlex.quote(omp)} " if omp is not None else ""
    return f"{threads}python scripts/run_experiments.py {shlex.join(argv)}".rstrip()


# --------------------------------------------------------------------------- one run


def train_run(name: str, cfg, run: Path, log, extend: bool = False, command: str | None = None,
              overrides: list[str] | None = None, hint: bool = True, source: Source | None = None,
              allow_dirty: bool = False) -> dict:
    """Train (or resume) one run; returns its reproduce.json state. ``extend``: a run that stopped at a
    budget this command lifts (``trains_on``) trains on in a new sitting instead of counting as finished.
    ``command`` (``invocation``) is recorded with the sitting, ``overrides`` (``run_config``'s) with the
    run once a sitting finishes it: the settings its training ended under, which a later command that
    only reuses the run (another budget, say) does not replace. ``hint``: say when --extend would train
    a finished run on. ``source`` (``source_state``, read now when not given): a run that has to train
    is refused (UncommittedSource, before its directory changes) when that code is not a commit, unless
    ``allow_dirty``: then the sitting keeps the uncommitted changes as ``source-<hash>.diff`` in the run
    directory and records the file (``dirty_diff``) and its sha256 (``dirty_diff_sha256``)."""
    state = read_state(run)
    changed = same_run(name, cfg, run) if state.get("finished") or list_checkpoints(run) else {}
    budget = trains_on(state.get("train_result") or {}, cfg) if state.get("finished") else None
    if state.get("finished") and not (extend and budget):
        log(f"[{name}] training already finished ({len(state['sittings'])} sitting(s)); not retrained"
            + (f" (it stopped at its {budget}: --extend trains it on)" if budget and hint else ""))
        return state
    source = source_state(with_diff=allow_dirty) if source is None else source
    check_source(source, allow_dirty)
    if state.get("finished"):
        log(f"[{name}] stopped at its {budget}; training on from its newest checkpoint (--extend)")
        for key in ("finished", "finished_at", "train_result", "evaluation", "evaluation_key"):
            state.pop(key, None)  # a new best model: the old evaluation no longer describes it
        write_json(run / STATE, state)
    resume = bool(list_checkpoints(run))
    if not resume and run.exists():
        shutil.rmtree(run)  # started but never checkpointed: nothing to resume, start afresh
    device = resolve_device(cfg.train.device)
    sitting = {"started": now(), "device": device_name(device), "commit": source.commit,
               "dirty": bool(source.uncommitted), "resumed": resume, "seconds": 0.0, "completed": False,
               "concurrent_rows": int(os.environ.get(CONCURRENT_ENV, "1")), "command": command}
    if source.checkout is None:
        log(f"[{name}] textvae is imported from {PACKAGE}, not a git checkout: the record names no commit")
    elif source.uncommitted:  # allowed: the patch that makes the commit into the code that trains
        sitting.update(keep_diff(source, run))
        log(f"[{name}] training with uncommitted changes to {len(source.uncommitted)} file(s) (--allow-dirty): "
            f"kept as {run / sitting['dirty_diff']}, a patch on commit {source.commit[:12]}")
    if changed:  # budgets, placement: recorded as they differ from the first sitting's (config.json)
        sitting["changed"] = {k: list(v) for k, v in changed.items()}
        log(f"[{name}] this sitting changes " + ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in changed.items()))
    log(f"[{name}] {'resuming' if resume else 'training'} in {run} on {sitting['device']}")
    with SittingRecord(run, sitting) as record:  # an interrupted or killed sitting still counts its seconds
        result = train(cfg, run, resume=resume)
        record.completed()
    state = read_state(run)
    state.update(finished=True, finished_at=now(), train_result=result, row=name, overrides=overrides)
    write_json(run / STATE, state)
    return state


def trains_on(result: dict, cfg) -> str | None:
    """The budget a finished run stopped at that ``cfg`` would let it train past ("time budget", "step
    limit", "epoch limit"), or None: it stopped early, or at a step or epoch limit ``cfg`` keeps."""
    why = result.get("stopped")
    t = cfg.train
    if (why == "time" or (why == "max_steps" and (not t.max_steps or t.max_steps > result.get("step", 0)))
            or (why == "max_epochs" and t.max_epochs > result.get("epoch", 0))):
        return report.STOPPED[why]
    return None


# settings the sittings of one run may differ in: where it trains, how it saves and reports, its budgets
# (a run that stopped at a budget is marked in the table; --extend trains it on) and the corpus's path
SITTING_SETTINGS = ("train.device", "train.progress", "train.tensorboard", "train.checkpoint_minutes",
                    "train.checkpoint_every", "train.keep_checkpoints", "train.max_minutes", "train.max_steps",
                    "train.max_epochs", "data.data_dir")


def same_run(name: str, cfg, run: Path) -> dict[str, tuple]:
    """Check that the run directory holds the model this command describes before resuming or reusing
    it: one trained under other settings (a recipe changed since, a ``--set`` given or left out) would
    be recorded as this row's run, or resumed under a changed recipe mid-run. Returns the differences in
    ``SITTING_SETTINGS`` alone, which may change between sittings."""
    changed = settings_differences(run / "config.json", cfg, ("data", "tokenizer", "model", "objective", "train"))
    model = {k: v for k, v in changed.items() if k not in SITTING_SETTINGS}
    planned = {k: v for k, v in changed.items() if k in ("train.max_steps", "train.max_epochs")}
    cycles = ""
    if planned and cfg.objective.kl_schedule == "cyclical" and not cfg.objective.cycle_steps:
        model.update(planned)  # the cycles span the planned run: another length stretches them mid-run
        cycles = (" (objective.kl_schedule=cyclical spreads its cycles over the planned run, so another length "
                  "would stretch them mid-run; objective.cycle_steps fixes their span)")
    if model:
        raise TextVAEError(
            f"{run} holds a run of {name} trained with other settings than this command gives it: "
            + ", ".join(f"{k} {a!r} (this command: {b!r})" for k, (a, b) in model.items()) + cycles
            + f". Resumed or reused, it would be recorded as this row's run. Give the settings it was trained "
              f"with, or move it away (mv {run} {run}.old) and run the command again to train it afresh")
    return {k: v for k, v in changed.items() if k in SITTING_SETTINGS}


class SittingRecord:
    """This sitting's entry in the run's reproduce.json (its command, device, seconds so far), rewritten
    every ``every`` seconds while it trains and once more at its end. A sitting stopped by a signal the
    trainer catches is recorded at its end; one killed outright (SIGKILL, a machine taken back, a
    session's end) keeps what its last rewrite said, at most ``every`` seconds short.

    Each rewrite also reads the machine's 1-minute load average: ``load`` is their mean over the sitting
    and ``cpu_cores`` the machine's cores. Wall-clock times of runs are only comparable under the same
    load, and ``concurrent_rows`` counts only the rows of this command: a training started by another
    command beside this one (or anything else the machine ran) shows in the load alone."""

    def __init__(self, run: Path, sitting: dict, every: float = 60.0):
        self.run, self.sitting, self.every = run, sitting, every
        sitting["id"] = os.urandom(6).hex()  # sittings of a short run can start within the same second
        self.start = time.perf_counter()
        self.loads: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.write()
        return False

    def completed(self) -> None:
        self.sitting["completed"] = True

    def _beat(self) -> None:
        while not self.stop.wait(self.every):
            self.measure_load()
            self.write()

    def measure_load(self) -> None:
        if not hasattr(os, "getloadavg"):  # not on Windows
            return
        self.loads.append(os.getloadavg()[0])
        self.sitting.update(load=round(sum(self.loads) / len(self.loads), 2), cpu_cores=os.cpu_count())

    def write(self) -> None:
        """Replace this sitting's entry (matched by its id) in reproduce.json. Until the trainer
        has made the run directory there is nothing to write into. Called by the beat thread, then once
        by ``__exit__`` after that thread has ended, so never twice at once."""
        if not self.run.is_dir():
            return
        self.sitting["seconds"] = time.perf_counter() - self.start
        state = read_state(self.run)
        others = [s for s in state.get("sittings", []) if s.get("id") != self.sitting["id"]]
        state["sittings"] = others + [dict(self.sitting)]
        write_json(self.run / STATE, state)


def run_status(run: Path, record: dict | None = None, table=None) -> str:
    """One line on where a run stands: not started; training (its newest checkpoint, its last validation,
    the learning rate); trained and evaluating (the saved share of the evaluation pass); or done. A run
    whose directory is not here but that ``record`` (its object in T.json) describes is reported from it,
    marked † when ``table``'s recipe has changed since."""
    if not run.exists() and record is not None:
        old = " †, trained under an earlier recipe" if table is not None and report.recipe_gaps(record, table) else ""
        how = "; commands not recorded (--missing trains it again)" if report.unrecorded(record) else ""
        return (f"recorded in {table.table if table else 'the'}.json{old} (its run directory is not here): "
                f"PPL (IW) {report.num(record.get('ppl_iw'))}, stopped: {record.get('stopped', '?')}{how}")
    state = read_state(run)
    sittings = state.get("sittings", [])
    spent = f"{report.duration(sum(s['seconds'] for s in sittings))} in {len(sittings)} sitting(s)"
    if state.get("evaluation"):
        ev, result = state["evaluation"], state.get("train_result") or {}
        return (f"done: PPL (IW) {report.num(ev.get('ppl_iw'))}, KL {report.num(ev.get('kl'))}, AU {ev.get('au')}; "
                f"stopped: {result.get('stopped', '?')} at epoch {result.get('epoch', '?')}; trained {spent}")
    if state.get("finished"):
        saved = saved_progress(run / PARTIAL_EVALUATION)
        if saved is None:
            return f"trained ({spent}); evaluation not started"
        of = f" of {saved['batches']}" if saved["batches"] else ""
        return (f"trained ({spent}); evaluating: {saved['done']}{of} batches saved after "
                f"{report.duration(saved['seconds'])}")
    checkpoints = list_checkpoints(run)
    if not checkpoints:
        return "not started" if not run.exists() else "started, no checkpoint yet"
    valid = last_validation(run)
    lr = valid.get("lr") if valid else None
    seen = (f"; last validation at step {valid['step']} (epoch {valid.get('epoch', '?')}): elbo "
            f"{report.num(valid.get('elbo'))}, lr {'?' if lr is None else format(lr, '.2g')}" if valid else "")
    return f"training: newest checkpoint {checkpoints[-1].name}{seen}; {spent}"


def last_validation(run: Path) -> dict | None:
    """The run's last validation record in metrics.jsonl, or None."""
    try:
        lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("kind") == "valid":
            return record
    return None


def subset(split: EncodedSplit, n: int | None) -> EncodedSplit:
    if not n or n >= len(split):
        return split
    out = EncodedSplit(split.ids[:n], split.texts[:n], split.labels[:n] if split.labels is not None else None,
                       split.label_ids[:n] if split.label_ids is not None else None)
    out.stats = {"examples": n, "tokens": int(out.lengths.sum()) + n}
    return out


def homotopy_pair(texts: list[str]) -> tuple[str, str]:
    """Two test sentences of 6-12 words (the first such pair), as Bowman et al.'s examples."""
    picked = [t for t in texts if 6 <= len(t.split()) <= 12][:2]
    return tuple(picked) if len(picked) == 2 else (texts[0], texts[-1])


def evaluate_run(name: str, settings: dict, cfg, run: Path, state: dict, eval_sentences: int | None, log,
                 command: str | None = None) -> dict:
    """Metrics, a homotopy and prior samples of the run's best model on ``settings["split"]``, cached in
    the state: the metrics by split, iw samples, sentences and seed (``evaluation_key``), the samples and
    the homotopy by how many of each (``extras_key``), so that asking for other samples does not redo an
    evaluation pass of hours."""
    key = {"split": settings["split"], "iw_samples": settings["iw_samples"], "eval_sentences": eval_sentences,
           "seed": cfg.train.seed, "disentanglement": bool(settings.get("disentanglement")),
           **({"diversity_samples": n} if (n := settings["diversity_samples"]) != 100 else {})}
    extras_key = {"samples": settings["samples"], "homotopy_steps": settings["homotopy_steps"]}
    # a key saved before it held the split was of the test split, every table's then; samples and
    # homotopy saved before extras_key are counted
    saved_key = {"split": "test", **(state.get("evaluation_key") or {})}
    metrics_cached = bool(state.get("evaluation")) and saved_key == key
    homotopy = state.get("homotopy")
    saved_extras = state.get("extras_key") or {
        "samples": len(state.get("samples") or []),
        "homotopy_steps": len(homotopy) - 2 if homotopy else settings["homotopy_steps"]}
    if metrics_cached and saved_extras == extras_key:
        return state
    with StopSignals(f"the evaluation of {name}") as stop:
        device = resolve_device(cfg.train.device)
        model = TextVAE.from_pretrained(run, device=device)
        split_name = settings["split"]
        split = subset(model_split(model, split_name, data=cfg.data), eval_sentences)
        if not metrics_cached:
            metrics = evaluation_pass(name, settings, cfg, run, model, split, log)
        with stop.deferred():  # the pass has removed its saved state: its numbers must reach the run's state
            extras = {"samples": model.sample(settings["samples"], seed=cfg.train.seed), "homotopy": None,
                      "homotopy_ends": None, "extras_key": extras_key}
            if not model.is_lm and settings["homotopy_steps"]:
                a, b = homotopy_pair(split.texts)
                extras.update(homotopy=model.interpolate(a, b, steps=settings["homotopy_steps"]),
                              homotopy_ends=[a, b])
            if not metrics_cached:
                state.update(evaluation=metrics, evaluation_key=key, evaluated_at=now(),
                             evaluation_device=device_name(device), evaluation_command=command)
            state.update(extras)
            write_json(run / STATE, state)
    return state


def evaluation_pass(name: str, settings: dict, cfg, run: Path, model, split: EncodedSplit, log) -> dict:
    """``evaluate``'s metrics of ``model`` on ``split``, saved every minute: a sitting that ends mid-pass
    continues there next time (textvae.eval_checkpoint); the pass itself stops at a signal by saving its
    last whole batch."""
    split_name = settings["split"]
    log(f"[{name}] evaluating on {len(split)} {split_name} sentences, k = {settings['iw_samples']} ...")
    factors = None
    if settings.get("disentanglement"):
        if split.stats.get("dropped"):
            raise TextVAEError(f"{split.stats['dropped']} {split_name} examples were dropped when encoding "
                               f"(data.long_policy=drop): factor labels no longer line up with the codes")
        factors = {f: labels[:len(split)] for f, labels in read_factors(cfg.data, split_name).items()} or None
    return evaluate(model, split, iw_samples=settings["iw_samples"], seed=cfg.train.seed,
                    n_samples=settings["diversity_samples"], decomposition=bool(settings.get("disentanglement")),
                    factors=factors, resume_file=run / PARTIAL_EVALUATION, log=lambda m: log(f"[{name}] {m}"))


METRICS = ("nll_iw", "ppl_iw", "kl", "mi_full", "mi_batch", "au", "elbo", "ppl_elbo", "rec", "bleu_rec",
           "distinct_2", "self_bleu", "self_bleu_texygen", "n_samples")
# evaluate's keys for discrete latents (textvae.code_metrics); a Gaussian row has none, a discrete row no MI
CODE_METRICS = ("latent", "nll_bound_uniform", "ppl_bound_uniform", "nll_bound_prior", "ppl_bound_prior",
                "active_variables", "codebook_usage", "code_perplexity")
# evaluate's disentanglement keys (settings disentanglement: true); the decomposition's terms flattened
DISENTANGLEMENT = ("mig", "mig_per_factor", "mig_top_dims", "mig_mutual_info", "dci_disentanglement",
                   "dci_completeness", "dci_informativeness")


def run_record(table, row, name: str, seed, run: Path, overrides: list[str], state: dict) -> dict:
    """The run's object in ``T.json``; ``config`` is the run's resolved config.json, ``overrides`` those
    its training ended under (this command's for runs trained before the runner kept them).
    ``bleu_tokenize`` is the sacrebleu tokeniser ``evaluate`` reports for ``bleu_rec`` (None where it
    reports none)."""
    ev, sittings = state["evaluation"], state.get("sittings", [])
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    devices = list(dict.fromkeys(s["device"] for s in sittings))
    commits = list(dict.fromkeys(s["commit"] for s in sittings))
    ref = row.reference or {}
    return {
        "row": name, "experiment": row.name, "seed": seed, "method": row.method, "paper": row.paper,
        **{k: ev.get(k) for k in METRICS}, "bleu_tokenize": ev.get("bleu_tokenize"),
        **{k: ev[k] for k in CODE_METRICS if k in ev},
        **{k: ev[k] for k in DISENTANGLEMENT if k in ev},
        **{f"decomposition_{k}": v for k, v in (ev.get("decomposition") or {}).items()},
        "epochs": state["train_result"]["epoch"], "steps": state["train_result"]["step"],
        "stopped": report.stop_reason(state["train_result"], config),
        "phases": strategy_phases(read_metrics(run), state["train_result"]["step"]),
        "train_seconds": sum(s["seconds"] for s in sittings), "train_tokens_per_s": training_speed(run),
        "device": " + ".join(devices),
        "concurrent_rows": max((s.get("concurrent_rows", 1) for s in sittings), default=1),
        **training_load(sittings),
        "commit": commits[-1] if commits else None, "commit_dirty": any(s.get("dirty") for s in sittings),
        "iw_samples": state["evaluation_key"]["iw_samples"], "test_sentences": ev["sentences"],
        "eval_sentences": state["evaluation_key"].get("eval_sentences"),
        "test_tokens": ev["tokens"], "eval_seconds": ev["seconds"], "eval_device": state.get("evaluation_device"),
        "eval_command": state.get("evaluation_command"),
        "reference_ppl": ref.get("ppl"), "reference_source": ref.get("source"),
        "samples": state["samples"], "homotopy": state["homotopy"], "homotopy_ends": state["homotopy_ends"],
        "overrides": state.get("overrides") or overrides, "config": config, "sittings": sittings,
    }


def training_load(sittings: list[dict]) -> dict:
    """``train_load``: the machine's mean load average over the sittings that measured it, weighted by
    their seconds, with ``cpu_cores`` and ``train_load_share`` (the share of the training time those
    sittings cover); nothing when none did (runs from before it was recorded)."""
    measured = [s for s in sittings if s.get("load") is not None and s.get("seconds")]
    seconds = sum(s["seconds"] for s in measured)
    if not seconds:
        return {}
    return {"train_load": round(sum(s["load"] * s["seconds"] for s in measured) / seconds, 2),
            "cpu_cores": max(s.get("cpu_cores") or 0 for s in measured) or None,
            "train_load_share": round(seconds / sum(s["seconds"] for s in sittings), 3)}


def adopt_single_seed_run(run: Path, single: Path, seed, log) -> None:
    """A row that had one seed kept its run in RUNS/T/ROW; once it lists several, that seed's run is
    RUNS/T/ROW-seedS. Move the old directory there (if it trained that seed) so it resumes or is
    reused instead of training again."""
    if run.exists() or run == single or not (single / "config.json").is_file():
        return
    try:
        trained_seed = json.loads((single / "config.json").read_text(encoding="utf-8"))["train"]["seed"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if trained_seed == seed:
        single.rename(run)
        log(f"[{run.name}] the row's single-seed run {single} trained this seed: moved to {run}")


def training_speed(run: Path) -> float | None:
    """The median of the training-throughput records (tokens/s, training steps only) in the run's
    metrics.jsonl; None when it has none."""
    speeds = []
    try:
        with open(run / "metrics.jsonl", encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                if record.get("kind") == "train" and record.get("tokens_per_s"):
                    speeds.append(float(record["tokens_per_s"]))
    except (OSError, json.JSONDecodeError):
        return None
    return statistics.median(speeds) if speeds else None


# --------------------------------------------------------------------------- the json


def load_records(path: Path) -> dict[str, dict]:
    """The records of a table's json by run name; none when there is no json yet. A json that does not
    read is an error: taken as empty, the next write would keep only its own row."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TextVAEError(f"{path} does not read as the table's json ({e}); its records would be lost: restore "
                           f"it (git checkout {path}) or move it away, then run the command again") from None
    return {r["row"]: r for r in rows if isinstance(r, dict) and r.get("row")}


@contextlib.contextmanager
def run_lock(run: Path):
    """Held while this process trains or evaluates a run, so that a second runner given the same run (a
    ``--missing`` beside a running chain, the same command in another shell) leaves it alone instead of
    training it twice into one directory."""
    lock = run.with_name(f".{run.name}.lock")  # beside the run: the directory itself may be removed and made again
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        if fcntl is not None:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunBusy(f"another process is training or evaluating {run} (it holds {lock}); "
                              f"this command leaves the run to it") from None
        yield


@contextlib.contextmanager
def table_lock(out_dir: Path, table: str):
    """Held while one process reads, merges and writes a table's json and pages, so that rows finishing
    at once in side-by-side processes (--jobs, or separate commands) each keep the other's record."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f".{table}.lock", "a") as fh:
        if fcntl is not None:  # POSIX; elsewhere the window is the few milliseconds of a write
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def write_outputs(out_dir: Path, table, rows, records: dict[str, dict]) -> None:
    """T.json: one object per run, the table's order (runs no row file names last); T.md rendered from it,
    and for the repository's own results the table's docs page (``docs`` in table.yaml)."""
    records = {r["row"]: r for r in report.seeded_names(rows, list(records.values()))}
    names = [name for row in rows for name, _ in row.runs()]
    ordered = [records[n] for n in names if n in records] + [r for n, r in records.items() if n not in names]
    write_json(out_dir / f"{table.table}.json", ordered)
    pages = current_report()
    atomic_write(out_dir / f"{table.table}.md", pages.render(table, rows, ordered))
    if pages.writes_docs(out_dir):
        pages.write_docs(table, rows, ordered)


def current_report():
    """scripts/report.py as it is on disk now. A run lasts hours, and the page it writes at the end
    should be the one ``report.py`` would render from the json, not the one of the code this process
    imported when it started. If the file on disk does not load (an edit in progress), the imported
    module renders, and the log says so; the json is written before either."""
    try:
        importlib.reload(report)
    except Exception as e:  # noqa: BLE001  (any error in an edited file: keep the loaded module)
        print(f"scripts/report.py did not load ({type(e).__name__}: {e}); rendering with the version loaded "
              f"at start; run `python scripts/report.py` again once it loads", file=sys.stderr, flush=True)
    return report


# --------------------------------------------------------------------------- several rows at once


def row_command(args, table, name: str, out_dir: Path) -> list[str]:
    """This script's command line for one row (the runs of it --rows picked), with the same settings,
    writing its table to out_dir."""
    picked = ",".join(sorted(args.only_runs.get(name, ()))) or name
    cmd = [sys.executable, str(Path(__file__).resolve()), str(table.folder), "--rows", picked,
           "--out-dir", str(out_dir), "--runs-dir", str(args.runs_dir)]
    for flag, value in (("--data-dir", args.data_dir), ("--iw-samples", args.iw_samples),
                        ("--eval-sentences", args.eval_sentences), ("--max-epochs", args.max_epochs),
                        ("--max-steps", args.max_steps), ("--max-minutes", args.max_minutes),
                        ("--device", args.device)):
        if value is not None:
            cmd += [flag, str(value)]
    for o in args.set:
        cmd += ["--set", o]
    return cmd + (["--extend"] if args.extend else []) + (["--allow-dirty"] if args.allow_dirty else [])


def run_in_parallel(args, jobs: list, log, on_done=None) -> list[str] | None:
    """Train and evaluate the rows (``jobs``: (table, row) pairs) in up to ``args.jobs`` processes at
    once (each its own ``--rows ROW`` run of this script, output in ``--runs-dir/T/ROW.log``);
    ``on_done(table, row)`` as each succeeds. Returns the rows that failed, or None when interrupted
    (:func:`run_processes`)."""
    on_cpu = args.device == "cpu" or (args.device in (None, "auto") and not torch.cuda.is_available())
    env = parallel_env(args.jobs, len(jobs), args.command, on_cpu)
    scratch = Path(tempfile.mkdtemp(prefix="run-experiments-"))
    commands = {row.name: (row_command(args, table, row.name, scratch / table.table / row.name),
                           args.runs_dir / table.table / f"{row.name}.log") for table, row in jobs}
    try:
        by_name = {row.name: (table, row) for table, row in jobs}
        done = None if on_done is None else (lambda name: on_done(*by_name[name]))
        return run_processes(commands, args.jobs, env, log, done, busy=args.busy)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiments", nargs="+", type=Path,
                   help="table folders (every row) or row files (experiments/ptb, experiments/ptb/bn-vae.yaml)")
    p.add_argument("--rows", default=None, help="comma-separated row names: only these rows of the tables given; "
                   "a run name (ROW-seedS) picks one seed of a row")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the corpus folder for every row (default: the table's data_dir_env, else its data_dir)")
    p.add_argument("--out-dir", type=Path, default=REPO / "results", help="where T.json and T.md go")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="one run directory per row: RUNS/T/ROW")
    p.add_argument("--iw-samples", type=int, default=None, help="importance samples (default: the row's evaluation)")
    p.add_argument("--eval-sentences", type=int, default=None, help="evaluate on the first N sentences only")
    p.add_argument("--max-epochs", type=int, default=None, help="train.max_epochs for every row")
    p.add_argument("--max-steps", type=int, default=None, help="train.max_steps for every row (smoke tests)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="train.max_minutes for every row: wall-clock training budget per sitting")
    p.add_argument("--device", default=None, help="train.device: auto | cpu | cuda | cuda:N")
    p.add_argument("--extend", action="store_true",
                   help="runs that stopped at a budget this command lifts (a time budget; a step or epoch "
                        "limit raised or dropped) train on from their newest checkpoint and are evaluated again; "
                        "without it they count as finished")
    p.add_argument("--jobs", type=int, default=1, help="rows trained and evaluated at once, one process each")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for every row, e.g. train.progress=false (repeatable)")
    p.add_argument("--missing", action="store_true",
                   help="only the runs without a current record in --out-dir/T.json (none yet, one trained "
                        "under an earlier recipe, marked †, one stopped at a budget or evaluated otherwise, "
                        "marked ◊, or one whose commands were not recorded): what a sitting still has to do "
                        "(with --extend, the runs stopped at a budget train on)")
    p.add_argument("--allow-dirty", action="store_true",
                   help="train (or resume) runs although textvae/ or scripts/ have uncommitted changes; each such "
                        "sitting keeps them in its run directory as source-<hash>.diff, a patch on its commit, "
                        "and records its sha256 (dirty_diff_sha256). Without it such runs are not trained")
    p.add_argument("--list", action="store_true", help="print the rows and their overrides, then exit")
    p.add_argument("--status", action="store_true",
                   help="print where each run stands (not started, training, evaluating, done), then exit")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    if args.max_minutes is not None and args.max_minutes <= 0:
        p.error("--max-minutes must be > 0")
    if any(o.split("=", 1)[0].strip() == "train.seed" for o in args.set):
        p.error("--set train.seed=... would give every run of a row that one seed, under the names of the row's "
                "own seeds (ROW-seedS); a row's seeds are its file's seeds: list, and --rows ROW-seedS picks one")
    if args.max_steps is not None and args.max_steps < 2:
        p.error("--max-steps must be at least 2 (a pretraining row needs an autoencoder and a VAE step)")
    return args


def select(args) -> list[tuple]:
    """(table, its rows, the rows to run) for each table the arguments name, in the order given."""
    picked: dict[Path, tuple] = {}
    for path in args.experiments:
        folder = path if path.is_dir() else path.parent
        if not (folder / TABLE_FILE).is_file() and not path.exists():
            raise TextVAEError(f"{path} does not exist: give a table folder (experiments/ptb) or a row file in one")
        table, rows = load_table(folder)
        entry = picked.setdefault(folder.resolve(), (table, rows, []))
        wanted = rows if path.is_dir() else [r for r in rows if r.name == load_experiment(path).name]
        entry[2].extend(r for r in wanted if r not in entry[2])
    args.only_runs = {}  # row -> the run names --rows picked of it (a row named whole: all its runs)
    if args.rows:
        names = [n.strip() for n in args.rows.split(",") if n.strip()]
        known = {r.name for _, rows, _ in picked.values() for r in rows}
        run_of = {run: r.name for _, rows, _ in picked.values() for r in rows for run, _ in r.runs()}
        unknown = [n for n in names if n not in known and n not in run_of]
        if unknown:
            raise TextVAEError(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(sorted(known))} (or one "
                               f"run of a row with several seeds: {', '.join(sorted(set(run_of) - known)) or 'none'})")
        for n in names:
            if n not in known:
                args.only_runs.setdefault(run_of[n], set()).add(n)
        for n in names:
            if n in known:
                args.only_runs.pop(n, None)
        wanted = set(names) | {run_of[n] for n in names if n not in known}
        picked = {k: (t, rows, [r for r in sel if r.name in wanted]) for k, (t, rows, sel) in picked.items()}
    if args.missing:
        picked = {k: (t, rows, missing_runs(args, t, rows, sel)) for k, (t, rows, sel) in picked.items()}
    return [(t, rows, sorted(sel, key=rows.index)) for t, rows, sel in picked.values()]


def missing_runs(args, table, rows, selected: list) -> list:
    """--missing: of the ``selected`` rows (and the runs --rows picked of them), those whose runs have no
    current record in --out-dir/T.json: none yet, one trained under an earlier recipe (†), one that
    stopped at a budget or was evaluated otherwise than its row says (◊, ``report.shortfalls``: with
    ``--extend`` it trains on, and it is evaluated again), or one whose commands were not recorded
    (``report.unrecorded``). Narrows ``args.only_runs`` to those runs."""
    records = report.seeded_names(rows, list(load_records(args.out_dir / f"{table.table}.json").values()))
    current = {r["row"] for r in records if not report.recipe_gaps(r, table) and not report.unrecorded(r)
               and not report.shortfalls(r, table, rows)}
    keep = []
    for row in selected:
        picked = args.only_runs.get(row.name)
        runs = {name for name, _ in row.runs() if name not in current and (picked is None or name in picked)}
        if runs:
            keep.append(row)
            args.only_runs[row.name] = runs
    return keep


def run_row(args, table, rows, row, log, record_only: bool = False) -> bool | None:
    """Train (or resume, or reuse), evaluate and record the runs of ``row`` that the arguments picked,
    rewriting ``T.json`` and ``T.md`` after each. True when all went through, False when one failed
    (the others still ran), None when interrupted (the trainer saved a checkpoint first, or the evaluation
    its last whole batch). A run another process holds is left to it and added to ``args.busy``.
    ``record_only``: a row process of --jobs has just trained and evaluated the runs; only record them
    (with --extend, training on here would give a run stopped at its budget a second sitting)."""
    out = args.out_dir / f"{table.table}.json"
    settings = evaluation(table, row)
    if args.iw_samples is not None:
        settings["iw_samples"] = args.iw_samples
    ok = True
    for name, seed in row.runs():
        if row.name in args.only_runs and name not in args.only_runs[row.name]:
            continue
        run = args.runs_dir / table.table / name
        adopt_single_seed_run(run, args.runs_dir / table.table / row.name, seed, log)
        try:
            with run_lock(run):
                cfg, overrides = run_config(table, row, seed, args)
                state = train_run(name, cfg, run, log, extend=args.extend and not record_only, command=args.command,
                                  overrides=overrides, hint=not record_only, source=args.source,
                                  allow_dirty=args.allow_dirty)
                state = evaluate_run(name, settings, cfg, run, state, args.eval_sentences, log, command=args.command)
        except KeyboardInterrupt as e:  # Ctrl-C / SIGTERM: a checkpoint or the evaluation's last batch was saved
            log(f"[{name}] interrupted ({e}); run the same command again to resume")
            return None
        except UncommittedSource as e:  # refused before the run directory changed; said in full once
            log(f"[{name}] not trained: {e if not args.refused else 'the code is not a commit (above)'}")
            args.refused.append(name)
            ok = False
            continue
        except RunBusy as e:  # not a failure of this run: another process is on it
            log(f"[{name}] {e}")
            args.busy.append(name)
            continue
        except TextVAEError as e:  # this run cannot go on; the others still can
            log(f"[{name}] failed: {e}")
            ok = False
            continue
        # read the json just before writing: another process (a row run beside this one) may have
        # written its row since this command started, and that row must not go back to its old record
        with table_lock(args.out_dir, table.table):
            records = {**load_records(out), name: run_record(table, row, name, seed, run, overrides, state)}
            write_outputs(args.out_dir, table, rows, records)
        r = records[name]
        log(f"[{name}] nll_iw {report.num(r['nll_iw'])}  ppl_iw {report.num(r['ppl_iw'])}  "
            f"kl {report.num(r['kl'])}  mi {report.num(r['mi_full'])}  au {r['au']}  "
            f"-> {args.out_dir / (table.table + '.md')}")
    return ok


def main(argv=None) -> int:
    args = parse_args(argv)
    args.command = invocation(sys.argv[1:] if argv is None else list(argv))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    try:
        tables = select(args)
    except TextVAEError as e:
        log(f"error: {e}")
        return 2
    if args.status:
        for table, rows, chosen in tables:
            records = load_records(args.out_dir / f"{table.table}.json").values()
            recorded = {r["row"]: r for r in report.seeded_names(rows, list(records))}
            for row in chosen:
                for name, _ in row.runs():
                    if row.name not in args.only_runs or name in args.only_runs[row.name]:
                        status = run_status(args.runs_dir / table.table / name, recorded.get(name), table)
                        print(f"{name:28} {status}")
        return 0
    if args.list:
        for table, _, chosen in tables:
            print(f"{table.table}: {table.title} (preset {table.preset}; recipe {' '.join(table.recipe)})")
            for row in chosen:
                derived = " ".join(f"{k}=<{v} epochs>" for k, v in row.steps_from_epochs.items())
                print(f"  {row.name:16} {row.method}")
                print(f"  {'':16} {' '.join(row.overrides)} {derived}".rstrip())
                print(f"  {'':16} {row.paper}")
                if row.name in args.only_runs:  # --rows or --missing picked some of its runs
                    print(f"  {'':16} runs: {', '.join(n for n, _ in row.runs() if n in args.only_runs[row.name])}")
        return 0
    for table, _, _ in tables:
        data = args.data_dir or data_dir(table, REPO)
        if data is not None and not data.is_dir():
            env = f" or set ${table.data_dir_env}" if table.data_dir_env else ""
            log(f"error: {table.table}: data directory {data} does not exist; pass --data-dir{env} "
                f"(see data/{table.table}/README.md)")
            return 2
    failed, recorded, args.busy, args.refused = [], set(), [], []
    args.source = source_state(with_diff=args.allow_dirty)  # the code imported at the start, which trains
    if args.jobs > 1 and sum(len(chosen) for *_, chosen in tables) > 1:
        all_rows = {id(table): rows for table, rows, _ in tables}
        try:
            check_source(args.source, args.allow_dirty)
        except UncommittedSource as e:  # the row processes would say it each in its own log
            log(f"note: {e}. The row processes leave every run that has to train or resume untrained (its row "
                f"fails); runs trained already are evaluated and recorded")

        def record(table, row):  # a row process finished: its runs go into T.json and T.md now
            if run_row(args, table, all_rows[id(table)], row, log, record_only=True):
                recorded.add((table.table, row.name))

        failed = run_in_parallel(args, [(t, r) for t, _, chosen in tables for r in chosen], log, record)
        if failed is None:
            return 130
    for table, rows, chosen in tables:
        for row in (r for r in chosen if r.name not in failed and (table.table, r.name) not in recorded):
            status = run_row(args, table, rows, row, log)
            if status is None:
                return 130
            if not status:
                failed.append(row.name)
    failed = [n for n in dict.fromkeys(failed) if n not in args.busy]
    if failed:
        log(f"rows that failed: {', '.join(failed)} (fix and run again with --rows {','.join(failed)})")
    if args.busy:
        log(f"left to another process that is training or evaluating them: {', '.join(dict.fromkeys(args.busy))} "
            f"(--status says where each stands; run the command again once that process has finished)")
    return 1 if failed else BUSY_EXIT if args.busy else 0


if __name__ == "__main__":
    sys.exit(main())
