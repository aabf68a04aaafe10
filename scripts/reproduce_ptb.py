"""Reproduce the posterior-collapse table on Penn Treebank: one row per remedy, each trained with
textvae's own ``train()`` and scored on the test split with ``textvae.metrics.evaluate``.

    python scripts/reproduce_ptb.py                        # every row, results/ptb.{json,md}
    python scripts/reproduce_ptb.py --rows vae-bowman,bn-vae --device cuda
    python scripts/reproduce_ptb.py --device cuda --jobs 7 --max-epochs 10   # 7 rows at once on one GPU
    python scripts/reproduce_ptb.py --list                 # the rows and their overrides
    # smoke test: every row builds and trains a few steps, tiny evaluation, into a scratch folder
    python scripts/reproduce_ptb.py --out-dir /tmp/ptb --runs-dir /tmp/ptb/runs --max-epochs 1 \\
        --max-steps 3 --iw-samples 5 --eval-sentences 50 --set train.progress=false

Every row starts from the ``ptb-li2019`` preset's shapes (LSTM encoder/decoder 256, embedding 256,
z 32, z into the decoder's initial state and every input, gradient clipping 5, linear KL warm-up from
0.1 over ~10 epochs), trains with one shared recipe (``RECIPE``: Adam lr 2e-3 instead of Li et al.'s
SGD lr 1, embedding/output dropout 0.4 instead of 0.5, validation every half epoch, lr halved after
2 evaluations without improvement, stop after 5 halvings; the decoder's output layer tied to its
input embeddings, every embedding table initialised U(-0.1, 0.1) as in He et al.'s and Li et al.'s
code) and changes only what its method needs
(``ROWS``: one dict per row, citing its paper). The recipe is a compute budget: Li et al.'s schedule
runs ~100 epochs, 4-5 hours per row on 2 CPU threads (2.3-2.75 min per epoch). On PTB's LSTM-LM
(valid perplexity after 2.5 epochs, side by side: Adam / dropout 0.5 185, Adam / 0.4 167; the
preset's SGD lr 1 / 0.5, ``textvae train --preset ptb-li2019 model.latent_dim=0``, was at 249 after
2 and 231 after 3 epochs) it converges in 20-28 epochs (see the README; those side-by-side figures
are untied). ``--set`` restores the preset's own schedule: ``train.optimizer=sgd``, ``train.lr=1``,
``model.emb_dropout=0.5``, ``model.out_dropout=0.5``, ``train.lr_patience=5``, ``train.eval_every=0``.
Bowman et al.'s reference perplexities were obtained with their own, smaller shapes (LSTM 191,
embedding 353, z 13) and preprocessing, so they are context, not targets.

Resumable, row by row: row R trains in ``--runs-dir/R`` (a textvae run directory; its
``reproduce.json`` records the sittings: command, seconds, device, commit; ``ptb.md`` lists the
commands). A row whose training finished is not retrained; one interrupted (Ctrl-C, SIGTERM, a crash,
the end of a session) resumes from its newest checkpoint with ``resume=True`` (only ``train.*`` may
change between sittings, e.g. ``--device``). A row that stopped at its ``--max-minutes`` budget counts
as finished unless the command has ``--extend``: then it trains on from its newest checkpoint (lr,
patience and halvings as they were) in a new sitting, with a new budget, and is evaluated again. A
finished row is evaluated once per (``--iw-samples``, ``--eval-sentences``).
After every row, ``--out-dir/ptb.json`` (one object per row) and ``ptb.md`` (the table with the
published numbers beside it, then a homotopy and three prior samples per row) are rewritten; rows
already in ``ptb.json`` whose run directory is not here (say, trained on another machine) are kept.
A kept row trained before an item was added to ``RECIPE`` is marked † in the table, with the items it
lacks; the table compares the LM row only with VAE rows trained under the same recipe.

Several rows at once: ``--jobs N`` runs each row in its own process of this script (``--rows ROW``,
output in ``--runs-dir/ROW.log``), N at a time, then writes the table from their runs. These models
are too small to keep a GPU busy alone: on one H200, 7 VAE rows at once trained at ~27k tokens/s
each (~6 min for 10 epochs; 9 at once ~22k each), against 5.6k for one row on 2 CPU threads. On a
CPU, N processes share the cores (``OMP_NUM_THREADS`` = cores / N unless set). ``--max-minutes``
caps each sitting's training time (``train.max_minutes``); the row then validates, checkpoints and
counts as finished, and the table says which rows stopped at a budget rather than converging.

Conventions are textvae's (README): NLL, KL and MI in nats per sentence; perplexity over words +
EOS; ``nll_iw`` with k = ``--iw-samples`` importance samples (500 in He et al. and Li et al.);
``elbo`` is the negative ELBO.
"""

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from textvae.config import load_config
from textvae.data import EncodedSplit, encode_split, load_splits
from textvae.errors import TextVAEError
from textvae.metrics import evaluate
from textvae.model import TextVAE
from textvae.train import list_checkpoints, resolve_device, train

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ptb"
PRESET = "ptb-li2019"
STATE = "reproduce.json"
CONCURRENT_ENV = "TEXTVAE_CONCURRENT_ROWS"  # set by --jobs for its row processes: how many share the machine
COMMAND_ENV = "TEXTVAE_REPRODUCE_COMMAND"  # set by --jobs for its row processes: the command the user typed

BOWMAN = "Bowman et al. 2016"
LOGISTIC = ["objective.kl_schedule=logistic", "objective.logistic_k=0.0025", "objective.logistic_x0=2500"]

# Every row's training recipe, before its own overrides (see the docstring for why it differs from the
# preset's SGD); the validation interval is added by row_config: half an epoch of steps.
RECIPE = ["train.optimizer=adam", "train.lr=2e-3", "model.emb_dropout=0.4", "model.out_dropout=0.4",
          "train.lr_patience=1", "model.tie_embeddings=true", "model.emb_init=0.1"]

# One dict per row, in the table's order. "overrides" go on top of the ptb-li2019 preset;
# "pretrain_epochs" (Li et al.) becomes objective.pretrain_ae_steps once the epoch length is known;
# "reference" is a published test perplexity, only where we are sure of it.
ROWS = [
    {"name": "lstm-lm", "method": "LSTM-LM",
     "paper": "RNN language model, the baseline of Bowman et al. (2016), Generating Sentences from a "
              "Continuous Space",
     "overrides": ["model.latent_dim=0"],
     "reference": {"ppl": 116, "source": BOWMAN}},
    {"name": "vae-bowman", "method": "VAE (logistic KL annealing + word dropout)",
     "paper": "Bowman et al. (2016), Generating Sentences from a Continuous Space: logistic annealing "
              "k=0.0025, x0=2500; word keep rate 0.62 (their PTB model)",
     "overrides": [*LOGISTIC, "model.word_dropout=0.38"],
     "reference": {"ppl": 119, "source": BOWMAN}},
    {"name": "vae-inputless", "method": "VAE, inputless decoder",
     "paper": "Bowman et al. (2016): word dropout 1.0, the decoder sees only z (and BOS, <unk>s)",
     "overrides": [*LOGISTIC, "model.word_dropout=1.0"]},
    {"name": "vae-cyclical", "method": "VAE + cyclical KL annealing",
     "paper": "Fu et al. (2019), Cyclical Annealing Schedule: M=4 cycles over the run, R=0.5 rising",
     "overrides": ["objective.kl_schedule=cyclical", "objective.cycles=4", "objective.cycle_ratio=0.5"]},
    {"name": "vae-free-bits", "method": "VAE + free bits",
     "paper": "Kingma et al. (2016), Improved Variational Inference with Inverse Autoregressive Flow: "
              "batch-mean KL per dimension clamped at lambda=0.25 (8 nats over z 32)",
     "overrides": ["objective.free_bits=0.25", "objective.free_bits_mode=kingma"]},
    {"name": "vae-aggressive", "method": "VAE + aggressive inference network",
     "paper": "He et al. (2019), Lagging Inference Networks and Posterior Collapse in Variational "
              "Autoencoders: encoder inner loop until the loss stops improving, off once MI falls",
     "overrides": ["objective.aggressive=true"]},
    {"name": "vae-pretrain-fb", "method": "VAE + AE pretraining + free bits",
     "paper": "Li et al. (2019), A Surprisingly Effective Fix for Deep Latent Variable Modeling of Text: "
              "autoencoder (beta 0) up to 20 epochs or convergence, decoder reset, then KL warm-up from "
              "0 and per-example/per-dimension free bits with target 8 nats (0.25 per dimension), as in "
              "their README's (Yahoo) example command",
     "overrides": ["objective.reset_decoder=true", "objective.free_bits=0.25", "objective.free_bits_mode=li",
                   "objective.kl_start=0.0", "train.max_epochs=60"],
     "pretrain_epochs": 20},
    {"name": "bn-vae", "method": "BN-VAE",
     "paper": "Zhu et al. (2020), A Batch Normalized Inference Network Keeps the KL Vanishing Away: "
              "BatchNorm on mu with fixed scale gamma=0.6 (expected KL >= 32 * 0.36 / 2 = 5.76 nats), "
              "no annealing",
     "overrides": ["model.bn_gamma=0.6", "objective.kl_schedule=constant"]},
    {"name": "vae-plain", "method": "VAE (no annealing, no word dropout)",
     "paper": "the setting in which Bowman et al. (2016) observe posterior collapse",
     "overrides": ["objective.kl_schedule=constant"]},
]
ROW_NAMES = [r["name"] for r in ROWS]


# --------------------------------------------------------------------------- configuration


def row_config(row: dict, args):
    """The row's Config: preset, row overrides, then the command line's (--max-epochs ... --set)."""
    cli = [f"data.data_dir={json.dumps(str(args.data_dir))}"]
    if args.max_epochs:
        cli.append(f"train.max_epochs={args.max_epochs}")
    if args.max_steps:
        cli.append(f"train.max_steps={args.max_steps}")
    if args.max_minutes:
        cli.append(f"train.max_minutes={args.max_minutes:g}")
    if args.device:
        cli.append(f"train.device={args.device}")
    overrides = [*RECIPE, *row["overrides"], *cli, *args.set]
    cfg = load_config(PRESET, overrides=overrides)
    per_epoch = epoch_steps(cfg)
    derived = [f"train.eval_every={math.ceil(per_epoch / 2)}"]
    if row.get("pretrain_epochs"):
        derived.append(f"objective.pretrain_ae_steps={pretrain_steps(row, cfg, per_epoch)}")
    overrides = [*RECIPE, *derived, *row["overrides"], *cli, *args.set]  # the command line still wins
    return load_config(preset=PRESET, overrides=overrides), overrides


def epoch_steps(cfg) -> int:
    """Optimiser steps in one epoch of the training split."""
    return math.ceil(len(load_splits(cfg.data, ("train",))["train"]) / cfg.train.batch_size)


def pretrain_steps(row: dict, cfg, per_epoch: int) -> int:
    """``pretrain_epochs`` epochs of steps, at most half the run (so a smoke run has a VAE phase)."""
    planned = cfg.train.max_epochs * per_epoch
    if cfg.train.max_steps:
        planned = min(planned, cfg.train.max_steps)
    return max(1, min(row["pretrain_epochs"] * per_epoch, planned // 2))


# --------------------------------------------------------------------------- provenance


def git_commit(repo: Path = REPO) -> tuple[str, bool]:
    """(HEAD commit, whether tracked files other than ``results/`` have uncommitted changes);
    ("unknown", False) without git. ``results/`` is left out: it is this script's output, rewritten
    after every row, so a row started beside another row's evaluation would otherwise look dirty."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"], cwd=repo, capture_output=True, text=True, check=True)
        return head.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- one row


def invocation(argv: list[str]) -> str:
    """The command that started this sitting, as a user would retype it: this script with its arguments,
    after ``OMP_NUM_THREADS=N`` where that was set. A row process of ``--jobs`` reports its parent's."""
    if os.environ.get(COMMAND_ENV):
        return os.environ[COMMAND_ENV]
    omp = os.environ.get("OMP_NUM_THREADS")
    threads = f"OMP_NUM_THREADS={shlex.quote(omp)} " if omp is not None else ""
    return f"{threads}python scripts/reproduce_ptb.py {shlex.join(argv)}".rstrip()


def train_row(row: dict, cfg, run: Path, log, extend: bool = False, command: str | None = None) -> dict:
    """Train (or resume) the row's run; returns its reproduce.json state. ``extend``: a row that stopped
    at its time budget (``--max-minutes``) trains on in a new sitting instead of counting as finished.
    ``command`` (``invocation``) is recorded with the sitting."""
    state = read_state(run)
    if state.get("finished"):
        if not (extend and (state.get("train_result") or {}).get("stopped") == "time"):
            log(f"[{row['name']}] training already finished ({len(state['sittings'])} sitting(s)); not retrained")
            return state
        log(f"[{row['name']}] stopped at its time budget; training on from its newest checkpoint (--extend)")
        for key in ("finished", "finished_at", "train_result", "evaluation", "evaluation_key"):
            state.pop(key, None)  # a new best model: the old evaluation no longer describes it
        write_json(run / STATE, state)
    resume = bool(list_checkpoints(run))
    if not resume and run.exists():
        shutil.rmtree(run)  # started but never checkpointed: nothing to resume, start afresh
    device = resolve_device(cfg.train.device)
    commit, dirty = git_commit()
    sitting = {"started": now(), "device": device_name(device), "commit": commit, "dirty": dirty,
               "resumed": resume, "seconds": 0.0, "completed": False,
               "concurrent_rows": int(os.environ.get(CONCURRENT_ENV, "1")), "command": command}
    log(f"[{row['name']}] {'resuming' if resume else 'training'} in {run} on {sitting['device']}")
    start = time.perf_counter()
    try:
        result = train(cfg, run, resume=resume)
        sitting["completed"] = True
    finally:  # an interrupted sitting still counts its seconds
        sitting["seconds"] = time.perf_counter() - start
        if run.exists():
            state = read_state(run)
            state["sittings"] = state.get("sittings", []) + [sitting]
            write_json(run / STATE, state)
    state.update(finished=True, finished_at=now(), train_result=result, row=row["name"])
    write_json(run / STATE, state)
    return state


def subset(split: EncodedSplit, n: int | None) -> EncodedSplit:
    if not n or n >= len(split):
        return split
    out = EncodedSplit(split.ids[:n], split.texts[:n], split.labels[:n] if split.labels is not None else None)
    out.stats = {"examples": n, "tokens": int(out.lengths.sum()) + n}
    return out


def homotopy_pair(texts: list[str]) -> tuple[str, str]:
    """Two test sentences of 6-12 words (the first such pair), as Bowman et al.'s examples."""
    picked = [t for t in texts if 6 <= len(t.split()) <= 12][:2]
    return tuple(picked) if len(picked) == 2 else (texts[0], texts[-1])


def evaluate_row(row: dict, cfg, run: Path, state: dict, args, log, command: str | None = None) -> dict:
    """Test-set metrics, a homotopy and prior samples of the row's best model (cached in the state)."""
    key = {"iw_samples": args.iw_samples, "eval_sentences": args.eval_sentences, "seed": cfg.train.seed}
    if state.get("evaluation_key") == key and state.get("evaluation"):
        return state
    device = resolve_device(cfg.train.device)
    model = TextVAE.from_pretrained(run, device=device)
    split = subset(encode_split(load_splits(cfg.data, ("test",))["test"], model.tokenizer, cfg.data),
                   args.eval_sentences)
    log(f"[{row['name']}] evaluating on {len(split)} test sentences, k = {args.iw_samples} ...")
    metrics = evaluate(model, split, iw_samples=args.iw_samples, seed=cfg.train.seed)
    extras = {"samples": model.sample(3, seed=cfg.train.seed), "homotopy": None, "homotopy_ends": None}
    if not model.is_lm:
        a, b = homotopy_pair(split.texts)
        extras.update(homotopy=model.interpolate(a, b, steps=5), homotopy_ends=[a, b])
    state.update(evaluation=metrics, evaluation_key=key, evaluated_at=now(), evaluation_device=device_name(device),
                 evaluation_command=command, **extras)
    write_json(run / STATE, state)
    return state


def row_record(row: dict, run: Path, overrides: list[str], state: dict) -> dict:
    """The row's object in ptb.json; ``config`` is the run's resolved config.json."""
    ev, sittings = state["evaluation"], state.get("sittings", [])
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    devices = list(dict.fromkeys(s["device"] for s in sittings))
    commits = list(dict.fromkeys(s["commit"] for s in sittings))
    ref = row.get("reference") or {}
    return {
        "row": row["name"], "method": row["method"], "paper": row["paper"],
        "nll_iw": ev["nll_iw"], "ppl_iw": ev["ppl_iw"], "kl": ev["kl"], "mi_full": ev["mi_full"],
        "mi_batch": ev["mi_batch"], "au": ev["au"], "elbo": ev["elbo"], "ppl_elbo": ev["ppl_elbo"],
        "rec": ev["rec"], "bleu_rec": ev["bleu_rec"], "distinct_2": ev["distinct_2"],
        "epochs": state["train_result"]["epoch"], "steps": state["train_result"]["step"],
        "stopped": stop_reason(state["train_result"], config),
        "train_seconds": sum(s["seconds"] for s in sittings), "device": " + ".join(devices),
        "concurrent_rows": max((s.get("concurrent_rows", 1) for s in sittings), default=1),
        "commit": commits[-1] if commits else None, "commit_dirty": any(s.get("dirty") for s in sittings),
        "iw_samples": state["evaluation_key"]["iw_samples"], "test_sentences": ev["sentences"],
        "test_tokens": ev["tokens"], "eval_seconds": ev["seconds"], "eval_device": state.get("evaluation_device"),
        "eval_command": state.get("evaluation_command"),
        "reference_ppl": ref.get("ppl"), "reference_source": ref.get("source"),
        "samples": state["samples"], "homotopy": state["homotopy"], "homotopy_ends": state["homotopy_ends"],
        "overrides": overrides, "config": config, "sittings": sittings,
    }


def stop_reason(result: dict, config: dict) -> str:
    """Why training ended: "early" (lr halvings exhausted), "time" (train.max_minutes), "max_steps",
    "max_epochs". Runs from before the trainer reported it: early if it ended before max_epochs."""
    if result.get("stopped"):
        return result["stopped"]
    t = config.get("train", {})
    if t.get("max_steps") and result["step"] >= t["max_steps"]:
        return "max_steps"
    return "max_epochs" if result["epoch"] >= t.get("max_epochs", 0) else "early"


# --------------------------------------------------------------------------- the tables

STOPPED = {"early": "early stop", "time": "time budget", "max_steps": "step limit", "max_epochs": "epoch limit"}


def _num(v, fmt="{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def _duration(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 60:
        return f"{s:.0f}s"
    h, m = divmod(int(round(s / 60)), 60)
    return f"{h}h {m:02d}m" if h else f"{m}m"


def _epochs(r: dict) -> str:
    why = r.get("stopped") or stop_reason({"epoch": r["epochs"], "step": r.get("steps", 0)}, r.get("config", {}))
    return f"{r['epochs']} ({STOPPED[why]})"


def _device(r: dict) -> str:
    n = r.get("concurrent_rows", 1)
    return _md(r["device"]) + (f", {n} rows at once" if n > 1 else "")


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def command_line_settings(record: dict) -> list[str]:
    """The record's overrides that came from the command line (--max-epochs, --set ...), not from its row
    or ``RECIPE``; the data directory and the derived values (row_config puts them before the command
    line's: the first ``train.eval_every`` and ``objective.pretrain_ae_steps``) are left out."""
    row = next((x for x in ROWS if x["name"] == record["row"]), {"overrides": []})
    derived, out = {"train.eval_every", "objective.pretrain_ae_steps"}, []
    for o in record.get("overrides", []):
        key = o.split("=", 1)[0]
        if key in derived:
            derived.discard(key)  # a later one was given on the command line
        elif o not in row["overrides"] and o not in RECIPE and key != "data.data_dir":
            out.append(o)
    return out


def recipe_gaps(record: dict) -> list[str]:
    """The items of today's ``RECIPE`` that the record's run was not given: it was trained under an
    earlier recipe (``ptb.json`` keeps rows trained on other machines), so it compares with the rows
    missing the same items, not with the rest. A later override of the same key (``--set``) wins, as
    in the row's config."""
    given = dict(o.split("=", 1) for o in record.get("overrides", []))
    return [o for o in RECIPE if given.get(o.split("=", 1)[0]) != o.split("=", 1)[1]]


def lm_comparison(records: list[dict], min_kl: float = 5.0, min_au: int = 10) -> list[str]:
    """One line per VAE row trained under the LM row's recipe that uses its latent (KL >= min_kl nats,
    AU >= min_au): its test perplexity against the LM's, and the gap in NLL nats per sentence (the
    scale of the IW estimate's seed noise, ``scripts/iw_seed_noise.py``). Empty without an LM row."""
    lm = next((r for r in records if r["row"] == "lstm-lm"), None)
    if lm is None:
        return []
    out = []
    for r in records:
        if r is lm or recipe_gaps(r) != recipe_gaps(lm) or r["kl"] < min_kl or r["au"] < min_au:
            continue
        verdict = "below" if r["ppl_iw"] < lm["ppl_iw"] else "not below"
        out.append(f"{r['row']}: PPL (IW) {r['ppl_iw']:.2f}, {verdict} the LM's {lm['ppl_iw']:.2f} "
                   f"({r['ppl_iw'] - lm['ppl_iw']:+.2f}; NLL {r['nll_iw'] - lm['nll_iw']:+.3f} nats per sentence), "
                   f"KL {r['kl']:.2f}, AU {r['au']}")
    return out


def commands_section(records: list[dict]) -> list[str]:
    """For each row whose run recorded them, the commands of its training sittings (each with its machine,
    time and whether it finished) and of the evaluation in the table: what to type to redo the row."""
    items, unrecorded = [], []
    for r in records:
        sittings = r.get("sittings") or []
        if not r.get("eval_command") and not any(s.get("command") for s in sittings):
            unrecorded.append(r["row"])
            continue
        steps = [f"`{s.get('command') or 'not recorded'}` ({_md(s['device'])}, {_duration(s['seconds'])}"
                 + ("" if s.get("completed", True) else ", interrupted") + ")" for s in sittings]
        steps.append(f"evaluated by `{r.get('eval_command') or 'not recorded'}` "
                     f"({_md(r.get('eval_device') or '?')}, {_duration(r.get('eval_seconds'))})")
        items.append(f"- {r['row']}: " + "; then ".join(steps) + ".")
    if not items:
        return []
    out = ["", "Commands that made each row, in order (training sittings, then the evaluation in the table):", ""]
    out += items
    if unrecorded:
        out += ["", f"Not recorded for {', '.join(unrecorded)}: they ran before the script kept its command "
                "line (the README lists them)."]
    return out


def render_markdown(records: list[dict], pending: list[str]) -> str:
    commits = sorted({r["commit"] for r in records if r.get("commit")})
    ks = sorted({r["iw_samples"] for r in records if r.get("iw_samples")})
    lines = [
        "# Penn Treebank: posterior-collapse remedies",
        "",
        "Written by `scripts/reproduce_ptb.py` (see its docstring for the command and the rows' exact "
        "settings, also in `ptb.json`). Every row starts from the `ptb-li2019` preset's shapes (LSTM "
        "256/256, embedding 256, z 32), trains with one recipe (" + " ".join(f"`{o}`" for o in RECIPE) +
        ", validation every half epoch) and changes only what its method needs. Test split; NLL, KL, MI "
        "in nats per sentence; perplexities over words + EOS; NLL (IW) with k = "
        f"{', '.join(map(str, ks)) or '–'} importance samples; −ELBO = rec + KL. MI: whole test set as the "
        "aggregate posterior (Li et al. 2019's convention). AU: active units, Cov > 0.01. BLEU rec: greedy "
        "reconstruction from the posterior mean.",
        "",
        f"Commit(s): {', '.join(c[:12] for c in commits) or '–'}.",
        "",
        "| row | method | NLL (IW) | PPL (IW) | KL | MI | AU | −ELBO | PPL (ELBO) | BLEU rec | epochs | train time "
        "| eval time | device | published PPL |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_name = {r["row"]: r for r in records}
    for name in (n for n in ROW_NAMES if n in by_name or n in pending):  # the table's order, run or not
        if name not in by_name:
            lines.append(f"| {name} | {_md(next(x['method'] for x in ROWS if x['name'] == name))} | not run yet "
                         f"|  |  |  |  |  |  |  |  |  |  |  |  |")
            continue
        r = by_name[name]
        ref = "" if r.get("reference_ppl") is None else f"{r['reference_ppl']} ({r['reference_source']})"
        mark = " †" if recipe_gaps(r) else ""
        lines.append(
            f"| {r['row']}{mark} | {_md(r['method'])} | {_num(r['nll_iw'])} | {_num(r['ppl_iw'])} | {_num(r['kl'])} | "
            f"{_num(r['mi_full'])} | {r['au']} | {_num(r['elbo'])} | {_num(r['ppl_elbo'])} | "
            f"{_num(r['bleu_rec'], '{:.1f}')} | {_epochs(r)} | {_duration(r['train_seconds'])} | "
            f"{_duration(r.get('eval_seconds'))} | {_device(r)} | {ref} |")
    earlier: dict[str, list[str]] = {}
    for r in records:
        if recipe_gaps(r):
            earlier.setdefault(" ".join(f"`{o}`" for o in recipe_gaps(r)), []).append(r["row"])
    for missing, rows in earlier.items():
        lines += ["", f"† Trained under an earlier recipe, without {missing}: {', '.join(rows)}. Compare "
                  "these rows with each other, not with the rest; to bring one up to date, run it again "
                  "(`--rows`) without its old run directory."]
    compared = lm_comparison(records)
    if compared:
        lines += ["", "VAE rows trained under the LM row's recipe whose latent is in use (KL ≥ 5 nats, AU ≥ 10), "
                  "against the LM (the epochs column says whether each converged): " + "; ".join(compared) + "."]
    extras: dict[str, list[str]] = {}
    for r in records:
        extras.setdefault(" ".join(f"`{o}`" for o in command_line_settings(r)) or "none", []).append(r["row"])
    if records:
        lines += ["", "Settings given on the command line (on top of the preset and each row's own): " + "; ".join(
            f"{', '.join(rows)}: {_md(settings) if settings == 'none' else settings}" for settings, rows in extras.items())
            + ". `train.max_epochs` below the preset's 40 and `train.max_minutes` are compute budgets: a row "
              "that stopped at its epoch limit or time budget had not converged (early stop: 5 learning-rate "
              "halvings without improvement). Train and eval times are wall-clock; where several rows ran at once "
              "(`--jobs`) they shared the machine, so each took longer than it would alone."]
    lines += commands_section(records)
    lines += ["", "Published numbers: only where we are sure of them; Bowman et al. (2016) trained smaller "
              "models (LSTM 191, embedding 353, z 13) on their own PTB split handling, so their perplexities are "
              "context rather than targets. Blank: not stated here.", "", "## Samples and homotopies", ""]
    for r in records:
        lines += [f"### {r['row']}: {_md(r['method'])}", "", f"{_md(r['paper'])}.", "",
                  "Three samples from the prior (ancestral sampling):", ""]
        lines += [f"- {_md(s)}" for s in r["samples"]]
        if r.get("homotopy"):
            lines += ["", "Homotopy between the posterior means of two test sentences (greedy decoding, "
                      "5 intermediate points; Bowman et al. 2016, sec. 5):", ""]
            last = len(r["homotopy"]) - 1
            lines += [f"{i + 1}. " + (f"**{_md(s)}**" if i in (0, last) else _md(s))
                      for i, s in enumerate(r["homotopy"])]
            lines += ["", f"(inputs: “{_md(r['homotopy_ends'][0])}” → “{_md(r['homotopy_ends'][1])}”)"]
        lines.append("")
    return "\n".join(lines)


def write_outputs(out_dir: Path, records: dict[str, dict]) -> None:
    """ptb.json: one object per row (table order); ptb.md: the table and examples."""
    ordered = [records[n] for n in ROW_NAMES if n in records]
    write_json(out_dir / "ptb.json", ordered)
    pending = [n for n in ROW_NAMES if n not in records]
    (out_dir / "ptb.md").write_text(render_markdown(ordered, pending) + "\n", encoding="utf-8")


def load_records(out_dir: Path) -> dict[str, dict]:
    try:
        rows = json.loads((out_dir / "ptb.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return {r["row"]: r for r in rows if isinstance(r, dict) and r.get("row") in ROW_NAMES}


# --------------------------------------------------------------------------- several rows at once


def row_command(args, name: str, out_dir: Path) -> list[str]:
    """This script's command line for one row, with the same settings, writing its table to out_dir."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rows", name, "--data-dir", str(args.data_dir),
           "--out-dir", str(out_dir), "--runs-dir", str(args.runs_dir), "--iw-samples", str(args.iw_samples)]
    for flag, value in (("--eval-sentences", args.eval_sentences), ("--max-epochs", args.max_epochs),
                        ("--max-steps", args.max_steps), ("--max-minutes", args.max_minutes),
                        ("--device", args.device)):
        if value is not None:
            cmd += [flag, str(value)]
    for o in args.set:
        cmd += ["--set", o]
    return cmd + (["--extend"] if args.extend else [])


def run_in_parallel(args, log) -> list[str] | None:
    """Train and evaluate the rows in up to ``args.jobs`` processes at once (each its own
    ``--rows ROW`` run of this script, output in ``--runs-dir/ROW.log``); returns the rows that
    failed, or None when interrupted (SIGINT/SIGTERM reach the row processes, which checkpoint)."""
    names = [n for n in ROW_NAMES if n in args.rows]
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **{CONCURRENT_ENV: str(min(args.jobs, len(names))), COMMAND_ENV: args.command})
    on_cpu = args.device == "cpu" or (args.device in (None, "auto") and not torch.cuda.is_available())
    if on_cpu and "OMP_NUM_THREADS" not in os.environ:  # share the cores instead of oversubscribing them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // min(args.jobs, len(names))))
    scratch = Path(tempfile.mkdtemp(prefix="reproduce-ptb-"))
    waiting, running, failed = list(names), {}, []

    def on_term(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        while waiting or running:
            while waiting and len(running) < args.jobs:
                name = waiting.pop(0)
                logfile = open(args.runs_dir / f"{name}.log", "a", encoding="utf-8")
                proc = subprocess.Popen(row_command(args, name, scratch / name), stdout=logfile,
                                        stderr=subprocess.STDOUT, env=env)
                running[name] = (proc, logfile, time.perf_counter())
                log(f"[{name}] started (process {proc.pid}); log: {args.runs_dir / f'{name}.log'}")
            time.sleep(1.0)
            for name, (proc, logfile, started) in list(running.items()):
                if proc.poll() is None:
                    continue
                logfile.close()
                del running[name]
                took = _duration(time.perf_counter() - started)
                if proc.returncode == 130:
                    log(f"[{name}] interrupted after {took}; run the same command again to resume it")
                    failed.append(name)
                elif proc.returncode:
                    log(f"[{name}] failed after {took} (exit status {proc.returncode}); see "
                        f"{args.runs_dir / f'{name}.log'}")
                    failed.append(name)
                else:
                    log(f"[{name}] done in {took}")
    except KeyboardInterrupt:
        log(f"interrupted: waiting for {', '.join(running)} to save a checkpoint")
        for proc, _, _ in running.values():
            proc.terminate()
        for proc, logfile, _ in running.values():
            proc.wait()
            logfile.close()
        return None
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(scratch, ignore_errors=True)
    return failed


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("TEXTVAE_PTB", DEFAULT_DATA)),
                   help="PTB train/valid/test.txt (default: $TEXTVAE_PTB or ../shared/data/ptb)")
    p.add_argument("--rows", default=",".join(ROW_NAMES), help=f"comma-separated, from: {', '.join(ROW_NAMES)}")
    p.add_argument("--out-dir", type=Path, default=Path("results"), help="where ptb.json and ptb.md go")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/ptb"), help="one textvae run directory per row")
    p.add_argument("--iw-samples", type=int, default=500, help="importance samples for the test NLL")
    p.add_argument("--eval-sentences", type=int, default=None,
                   help="evaluate on the first N test sentences only (smoke tests)")
    p.add_argument("--max-epochs", type=int, default=None, help="train.max_epochs for every row (smoke tests)")
    p.add_argument("--max-steps", type=int, default=None, help="train.max_steps for every row (smoke tests)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="train.max_minutes for every row: wall-clock training budget per sitting")
    p.add_argument("--device", default=None, help="train.device: auto | cpu | cuda | cuda:N")
    p.add_argument("--extend", action="store_true",
                   help="rows that stopped at their time budget train on from their newest checkpoint (a new "
                        "--max-minutes sitting) and are evaluated again; without it they count as finished")
    p.add_argument("--jobs", type=int, default=1,
                   help="rows trained and evaluated at once, each in its own process (one GPU runs several "
                        "of these small models faster together than one after another); logs in "
                        "--runs-dir/ROW.log")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for every row, e.g. train.progress=false (repeatable)")
    p.add_argument("--list", action="store_true", help="print the rows and their overrides, then exit")
    args = p.parse_args(argv)
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in args.rows if r not in ROW_NAMES]
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(ROW_NAMES)}")
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    if args.max_minutes is not None and args.max_minutes <= 0:
        p.error("--max-minutes must be > 0")
    if args.max_steps is not None and args.max_steps < 2:
        p.error("--max-steps must be at least 2 (the pretraining row needs an autoencoder and a VAE step)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    args.command = invocation(sys.argv[1:] if argv is None else list(argv))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.list:
        for row in ROWS:
            extra = f" objective.pretrain_ae_steps=<{row['pretrain_epochs']} epochs>" if row.get("pretrain_epochs") else ""
            print(f"{row['name']:16} {row['method']}")
            print(f"{'':16} {' '.join(row['overrides'])}{extra}")
            print(f"{'':16} {row['paper']}")
        return 0
    if not args.data_dir.is_dir():
        log(f"error: PTB data directory {args.data_dir} does not exist; pass --data-dir or set $TEXTVAE_PTB "
            f"(see data/ptb/README.md)")
        return 2
    records, failed = load_records(args.out_dir), []
    if args.jobs > 1 and len(args.rows) > 1:
        failed = run_in_parallel(args, log)  # then the loop below only reads each row's finished state
        if failed is None:
            return 130
    for row in (r for r in ROWS if r["name"] in args.rows and r["name"] not in failed):
        run = args.runs_dir / row["name"]
        try:
            cfg, overrides = row_config(row, args)
            state = train_row(row, cfg, run, log, extend=args.extend, command=args.command)
            state = evaluate_row(row, cfg, run, state, args, log, command=args.command)
        except KeyboardInterrupt as e:  # Ctrl-C / SIGTERM: the trainer saved a checkpoint first
            log(f"[{row['name']}] interrupted ({e}); run the same command again to resume")
            return 130
        except TextVAEError as e:  # this row cannot go on; the others still can
            log(f"[{row['name']}] failed: {e}")
            failed.append(row["name"])
            continue
        # read ptb.json again: another process (a row run on its own beside this one) may have
        # written its row since this command started, and that row must not go back to its old record
        records = {**records, **load_records(args.out_dir), row["name"]: row_record(row, run, overrides, state)}
        write_outputs(args.out_dir, records)
        r = records[row["name"]]
        log(f"[{row['name']}] nll_iw {_num(r['nll_iw'])}  ppl_iw {_num(r['ppl_iw'])}  kl {_num(r['kl'])}  "
            f"mi {_num(r['mi_full'])}  au {r['au']}  -> {args.out_dir / 'ptb.md'}")
    if failed:
        log(f"rows that failed: {', '.join(failed)} (fix and run again with --rows {','.join(failed)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
