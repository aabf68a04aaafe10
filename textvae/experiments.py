"""Experiments as data: a results table is a folder of YAML files, one per row.

A table folder (``experiments/ptb/``) holds ``table.yaml``, what every row shares, and one YAML
file per row. A row is a preset plus overrides plus seeds plus the evaluation to run, with the
paper it follows and, where one is known, its published reference. Nothing here trains: the
runner (``scripts/run_experiments.py``) turns a row into a ``Config`` with ``row_overrides`` and
calls ``textvae.train.train``; the report step (``scripts/report.py``) renders
``results/<table>.md`` from ``results/<table>.json`` and these files.

``table.yaml``::

    table: ptb                      # results/ptb.json, results/ptb.md, runs/ptb/<row>
    title: Penn Treebank ...        # the page's heading
    description: ...                # the paragraph under it (markdown)
    data_dir: ../shared/data/ptb    # relative to the repository root
    data_dir_env: TEXTVAE_PTB       # an environment variable that overrides data_dir
    preset: ptb-li2019              # every row's preset unless the row names its own
    recipe: [train.optimizer=adam, ...]          # overrides every row shares (before its own)
    steps_from_epochs: {train.eval_every: 0.5}   # settings given in epochs of the training split
    to_early_stop: true             # optional: every run trains to its early stop (or its row's own
                                    # max_epochs); one stopped at a budget (a time budget, a step
                                    # limit, an epoch limit set on the command line) is marked ◊ and
                                    # left out of the means, comparisons and goal. Without it a table
                                    # compares runs under the budgets its description states
    evaluation: {split: test, iw_samples: 500, samples: 3, homotopy_steps: 5, diversity_samples: 100}
                                    # samples: prior samples shown; diversity_samples: prior samples
                                    # that distinct-n and self-BLEU are computed on
    bleu_tokenize: none             # the BLEU convention this table's numbers are read under
    baseline: {row: lstm-lm, min_kl: 5.0, min_au: 10, max_ppl: 100}   # optional: the goal for VAE
                                    # rows whose latent is in use (means over seeds): PPL (IW) at most
                                    # max_ppl and NLL below the row's by more than 2 pooled sd
    summary: [nll_iw, kl, mig]      # optional: a mean ± sd over seeds table of these metrics
    compare: [{metric: mig, baseline: vae-plain, better: higher}]   # optional: each row's mean
                                    # against the baseline row's, "better" only beyond 2 pooled sd;
                                    # an entry's optional rows: [...] limits it to those rows, and
                                    # ratio: true also gives the ratio of the means (a cost: time)
    notes: [...]                    # paragraphs after the table (markdown)
    docs: docs/ptb.md               # optional, from the repository root: a page that shows the
                                    # summary, the comparisons and the goal; the report writes them
                                    # between the two marker lines of report.docs_markers

A row file::

    name: bn-vae                    # the row's id: runs/<table>/<name>, the json's "row" (letters,
                                    # digits and . _ + -, as table: is)
    order: 80                       # its place in the table (ascending)
    method: BN-VAE                  # the table's "method" cell
    paper: Zhu et al. (2020) ...    # what it follows, with the paper
    overrides: [model.bn_gamma=0.6, objective.kl_schedule=constant]
    seeds: [1234]                   # train.seed of each run; several (distinct) seeds: one run each
    steps_from_epochs: {objective.pretrain_ae_steps: {epochs: 20, max_fraction_of_run: 0.5}}
    evaluation: {iw_samples: 500}   # merged over the table's
    reference: {ppl: 116, nll: 100, source: ..., status: ..., differs: ...}   # optional

Only ``name``, ``method`` and ``paper`` are required in a row; a misspelt key, a key given twice or a
value of the wrong kind is an error (``ROW_KINDS``, ``TABLE_KINDS``; ``evaluation``, ``baseline`` and
``steps_from_epochs`` are checked entry by entry).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from .config_files import load_yaml, yaml_problem
from .errors import ConfigError

TABLE_FILE = "table.yaml"
EVALUATION_DEFAULTS = {"split": "test", "iw_samples": 500, "samples": 3, "homotopy_steps": 5, "diversity_samples": 100,
                       "disentanglement": False}  # True: the KL decomposition, and MIG/DCI on known factors
COMPARE_KEYS = {"metric", "baseline", "better"}  # required; optional: COMPARE_OPTIONAL
COMPARE_OPTIONAL = {"rows", "ratio"}  # the rows compared (default: all); also the ratio of the means
REFERENCE_KEYS = {"nll", "kl", "ppl", "source", "status", "differs"}


@dataclass
class Table:
    """What every row of one results table shares (``table.yaml``)."""

    table: str
    title: str
    folder: Path
    description: str = ""
    data_dir: str | None = None
    data_dir_env: str | None = None
    preset: str | None = None
    recipe: list[str] = field(default_factory=list)
    steps_from_epochs: dict = field(default_factory=dict)
    to_early_stop: bool = False
    evaluation: dict = field(default_factory=dict)
    bleu_tokenize: str | None = None
    baseline: dict | None = None
    summary: list[str] = field(default_factory=list)
    compare: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    docs: str | None = None


@dataclass
class Experiment:
    """One row of a table: a preset, overrides, seeds and the evaluation to run."""

    name: str
    method: str
    paper: str
    path: Path
    order: float = math.inf
    preset: str | None = None
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    steps_from_epochs: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    reference: dict | None = None

    def runs(self) -> list[tuple[str, int | None]]:
        """(run name, seed) of each run of this row: the row's name for one seed (or none, the
        preset's), ``NAME-seedS`` for each of several."""
        if len(self.seeds) <= 1:
            return [(self.name, self.seeds[0] if self.seeds else None)]
        return [(f"{self.name}-seed{s}", s) for s in self.seeds]


def _read(path: Path) -> dict:
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read experiment file {path}: {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"experiment file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"experiment file {path}: invalid YAML{yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"experiment file {path} is empty or not a mapping; see textvae/experiments.py "
                          "for the keys a row or table.yaml takes")
    return data


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# what a key of table.yaml or a row takes: a check and the words for it
KINDS = {
    "text": (lambda v: isinstance(v, str), "a string"),
    "text or null": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "number": (_number, "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "texts": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "overrides": (lambda v: isinstance(v, list) and all(isinstance(x, str) and "=" in x for x in v),
                  "a list of section.key=value strings"),
    "mapping": (lambda v: isinstance(v, dict), "a mapping"),
    "mapping or null": (lambda v: v is None or isinstance(v, dict), "a mapping or null"),
    "list": (lambda v: isinstance(v, list), "a list"),
    # a table's or row's id names files and folders (results/<table>.json, runs/<table>/<row>-seed<S>) and
    # is picked by --rows a,b: no path separators, no "..", no commas or spaces
    "id": (lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", v) is not None,
           "a name of letters, digits and . _ + - (starting with a letter or digit)"),
    "distinct whole numbers": (lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool)
                                                                     for x in v) and len(set(v)) == len(v),
                               "a list of distinct whole numbers (each seed is one run, named after it)"),
}
TABLE_KINDS = {"table": "id", "title": "text", "description": "text", "data_dir": "text or null",
               "data_dir_env": "text or null", "preset": "text or null", "recipe": "overrides",
               "steps_from_epochs": "mapping", "to_early_stop": "bool", "evaluation": "mapping",
               "bleu_tokenize": "text or null", "baseline": "mapping or null", "summary": "texts", "compare": "list",
               "notes": "texts", "docs": "text or null"}
ROW_KINDS = {"name": "id", "method": "text", "paper": "text", "order": "number", "preset": "text or null",
             "overrides": "overrides", "seeds": "distinct whole numbers", "steps_from_epochs": "mapping",
             "evaluation": "mapping", "reference": "mapping or null"}


def _whole(v, least: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


# evaluation: each setting, its check and the words for it
EVALUATION_KINDS = {
    "split": (lambda v: v in ("train", "valid", "test"), "train, valid or test"),
    "iw_samples": (_whole, "a whole number >= 0 (0: no importance-weighted NLL)"),
    "samples": (_whole, "a whole number >= 0"),
    "homotopy_steps": (_whole, "a whole number >= 0"),
    "diversity_samples": (_whole, "a whole number >= 0"),
    "disentanglement": (lambda v: isinstance(v, bool), "true or false"),
}


def _evaluation_problems(ev: dict) -> list[str]:
    """What is wrong with an ``evaluation:`` mapping: unknown settings (a misspelt one was ignored) and values."""
    out = [f"evaluation has an unknown setting {k!r} (valid: {', '.join(EVALUATION_DEFAULTS)})"
           for k in ev if k not in EVALUATION_DEFAULTS]
    out += [f"evaluation.{k} must be {EVALUATION_KINDS[k][1]}, got {v!r:.80}"
            for k, v in ev.items() if k in EVALUATION_KINDS and not EVALUATION_KINDS[k][0](v)]
    return out


def _steps_from_epochs_problems(spec: dict) -> list[str]:
    """What is wrong with a ``steps_from_epochs:`` mapping: ``section.key: EPOCHS`` or ``section.key:
    {epochs: EPOCHS, max_fraction_of_run: F}``, EPOCHS > 0 and F in (0, 1] (or null)."""
    out = []
    for key, v in spec.items():
        where = f"steps_from_epochs.{key}"
        if not isinstance(key, str) or "." not in key or "=" in key:
            out.append(f"steps_from_epochs has the key {key!r}; each key is a section.key setting (train.eval_every)")
        if isinstance(v, dict):
            unknown = sorted(str(k) for k in v if k not in ("epochs", "max_fraction_of_run"))
            if unknown or "epochs" not in v:
                out.append(f"{where} takes epochs and optionally max_fraction_of_run, got {v!r:.80}")
            fraction = v.get("max_fraction_of_run")
            if fraction is not None and not (_number(fraction) and 0 < fraction <= 1):
                out.append(f"{where}.max_fraction_of_run must be in (0, 1] or null, got {fraction!r}")
            v = v.get("epochs", 1)
        if not (_number(v) and v > 0):
            out.append(f"{where} must be a number of epochs > 0 (or {{epochs: N, max_fraction_of_run: F}}), "
                       f"got {v!r:.80}")
    return out


BASELINE_KINDS = {  # the goal's settings (scripts/report.py), with its defaults where it has one
    "row": (lambda v: isinstance(v, str), "a row name"),
    "min_kl": (_number, "a number of nats (default 5)"),
    "min_au": (_number, "a number of active units (default 10)"),
    "max_ppl": (lambda v: v is None or _number(v), "a perplexity or null (default: no bound)"),
}


def _baseline_problems(spec: dict) -> list[str]:
    """What is wrong with ``baseline:``: a missing row, unknown keys (a misspelt bound was ignored), values."""
    out = [] if "row" in spec else ["baseline needs row: the name of the row the goal compares with"]
    out += [f"baseline has an unknown key {k!r} (valid: {', '.join(BASELINE_KINDS)})"
            for k in spec if k not in BASELINE_KINDS]
    out += [f"baseline.{k} must be {BASELINE_KINDS[k][1]}, got {v!r:.80}"
            for k, v in spec.items() if k in BASELINE_KINDS and not BASELINE_KINDS[k][0](v)]
    return out


# keys whose mapping is checked further, once it is one
NESTED = {"evaluation": _evaluation_problems, "steps_from_epochs": _steps_from_epochs_problems,
          "baseline": _baseline_problems}


def _build(cls, data: dict, where: Path, required: tuple[str, ...], kinds: dict[str, str], **extra):
    """``cls`` from ``data``: every unknown or missing key and value of the wrong kind in one ConfigError."""
    known = {f.name for f in fields(cls)} - set(extra)
    problems = [f"unknown key {k!r} (valid: {', '.join(sorted(known))})" for k in data if k not in known]
    problems += [f"missing key {k!r}" for k in required if k not in data]
    for k, v in data.items():
        check, words = KINDS[kinds[k]] if k in kinds else (lambda v: True, "")
        if not check(v):
            problems.append(f"{k} must be {words}, got {v!r:.80}")
        elif k in NESTED and v is not None:
            problems += NESTED[k](v)
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    return cls(**data, **extra)


def load_table(folder: str | Path) -> tuple[Table, list[Experiment]]:
    """The table of ``folder`` (its ``table.yaml``) and its rows, in table order (``order``, then name)."""
    folder = Path(folder)
    if not (folder / TABLE_FILE).is_file():
        raise ConfigError(f"{folder} has no {TABLE_FILE}: a table folder holds {TABLE_FILE} and one YAML "
                          "file per row (see experiments/ptb/)")
    table = _build(Table, _read(folder / TABLE_FILE), folder / TABLE_FILE, ("table", "title"), TABLE_KINDS,
                   folder=folder)
    for c in table.compare:
        if (not isinstance(c, dict) or not COMPARE_KEYS <= set(c) <= COMPARE_KEYS | COMPARE_OPTIONAL
                or c["better"] not in ("higher", "lower") or not KINDS["texts"][0](c.get("rows", []))
                or not isinstance(c["metric"], str) or not isinstance(c["baseline"], str)
                or not isinstance(c.get("ratio", False), bool)):
            raise ConfigError(f"{folder / TABLE_FILE}: each compare entry needs exactly {', '.join(sorted(COMPARE_KEYS))} "
                              f"with better: higher or lower, a metric and a baseline row name (and optionally rows: a "
                              f"list of row names, ratio: true or false), got {c!r}")
    stray = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".yaml", ".yml") and p.suffix != ".yaml")
    if stray:  # a row saved as .yml was left out of the table without a word
        raise ConfigError(f"{folder}: {', '.join(stray)}: a table's rows are the .yaml files of its folder; rename "
                          f"{'it' if len(stray) == 1 else 'them'} to end in .yaml")
    rows = [load_experiment(p) for p in sorted(folder.glob("*.yaml")) if p.name != TABLE_FILE]
    names = [r.name for r in rows]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{folder}: row name(s) {', '.join(twice)} used by more than one file")
    owner: dict[str, str] = {}  # run name -> its row: one run directory and one record each
    for r in rows:
        for run, _ in r.runs():
            if owner.setdefault(run, r.name) != r.name:
                raise ConfigError(f"{folder}: row {r.name!r} and row {owner[run]!r} both have a run named {run!r} "
                                  f"(runs/{table.table}/{run}): rename one of the rows")
    unknown = sorted({r for c in table.compare for r in [c["baseline"], *c.get("rows", [])] if r not in names})
    if unknown:
        raise ConfigError(f"{folder / TABLE_FILE}: compare names row(s) {', '.join(unknown)} that no file in {folder} "
                          f"defines (rows: {', '.join(names)})")
    if table.baseline is not None and table.baseline["row"] not in names:
        raise ConfigError(f"{folder / TABLE_FILE}: baseline names the row {table.baseline['row']!r}, which no file in "
                          f"{folder} defines (rows: {', '.join(names)})")
    return table, sorted(rows, key=lambda r: (r.order, r.name))


def load_experiment(path: str | Path) -> Experiment:
    """One row file, checked: unknown keys, a reference without a source, seeds that are not integers."""
    path = Path(path)
    row = _build(Experiment, _read(path), path, ("name", "method", "paper"), ROW_KINDS, path=path)
    if row.seeds and any(o.split("=", 1)[0].strip() == "train.seed" for o in row.overrides):
        raise ConfigError(f"{path}: overrides set train.seed, which would replace every seed of seeds: "
                          f"{row.seeds} (each run would train the same seed under another name); list the "
                          f"seeds under seeds: alone")
    if row.reference is not None:
        bad = set(row.reference) - REFERENCE_KEYS
        if bad or "source" not in row.reference:
            raise ConfigError(f"{path}: reference needs a source and takes only {', '.join(sorted(REFERENCE_KEYS))}"
                              + (f" (unknown: {', '.join(sorted(bad))})" if bad else ""))
    return row


def evaluation(table: Table, row: Experiment) -> dict:
    """The row's evaluation settings: the defaults, then the table's, then the row's own."""
    return {**EVALUATION_DEFAULTS, **table.evaluation, **row.evaluation}


def data_dir(table: Table, repo: Path) -> Path | None:
    """The table's corpus folder: ``$data_dir_env`` when set, else ``data_dir`` from the repository root."""
    if table.data_dir_env and os.environ.get(table.data_dir_env):
        return Path(os.environ[table.data_dir_env])
    return None if table.data_dir is None else (repo / table.data_dir)


def steps_from_epochs(table: Table, row: Experiment, per_epoch: int, planned_steps: int) -> list[str]:
    """``key=steps`` overrides for the settings given in epochs (the table's, then the row's): ``epochs``
    times the optimiser steps of one epoch, rounded up; with ``max_fraction_of_run`` at most that
    fraction of the planned run (so that a short smoke run still reaches what comes after)."""
    out = []
    for key, spec in {**table.steps_from_epochs, **row.steps_from_epochs}.items():
        spec = spec if isinstance(spec, dict) else {"epochs": spec}
        steps = math.ceil(spec["epochs"] * per_epoch)
        if spec.get("max_fraction_of_run") is not None:
            steps = min(steps, int(planned_steps * spec["max_fraction_of_run"]))
        out.append(f"{key}={max(1, steps)}")
    return out


def row_overrides(table: Table, row: Experiment, seed: int | None, derived: list[str],
                  command_line: list[str]) -> list[str]:
    """The overrides of one run, in the order they apply: the table's recipe, the derived step counts,
    the seed, the row's own, then the command line's (which win)."""
    seed_override = [] if seed is None else [f"train.seed={seed}"]
    return [*table.recipe, *derived, *seed_override, *row.overrides, *command_line]
