"""Few-label classification tables (Kingma et al. 2014, M1 and M2) with their baselines on the same
label draws: results/semisup_<name>.json and .md.

    # the built-in corpus, topic and sentiment (M2: topic, the corpus's own label; and sentiment)
    python scripts/semisup.py builtin --factors topic sentiment --m2-factors topic sentiment
    # dbpedia14 (14 classes); long on a CPU: one VAE, one AE and one M2 run per (size, draw)
    python scripts/semisup.py dbpedia14 --data-dir ../shared/data/dbpedia14 --preset default \\
        --set tokenizer.min_count=2 data.max_len=60
    # a smoke run in /tmp
    python scripts/semisup.py builtin --out-dir /tmp/semi --runs-dir /tmp/semi/runs --sizes 1 10 \\
        --draws 2 --m2-sizes 10 --m2-draws 1 --set train.max_epochs=1 data.builtin_size=600
    # two trainings at once (each its own process, one thread each on a CPU): the same table
    python scripts/semisup.py builtin --jobs 2

What it does, all of it from one command:

1. trains a VAE (the preset, labels ignored: M1's model) and the same model with KL weight 0 and no
   free bits (a plain autoencoder, "M1 (AE)", its last checkpoint: see ``AE``) on the whole training
   split (``--runs-dir/vae``, ``ae``);
2. for every factor, labelled size (per class; ``all``) and draw seed 0..``--draws``-1 draws the
   labelled examples with :func:`textvae.semisup.draw_labelled` and scores, on the test split, every
   method on that same draw: majority class, bag-of-words and TF-IDF logistic regressions, the encoder
   architecture trained from scratch on the draw alone, M1 on the VAE's and on the AE's posterior means;
3. trains M2 (``model.conditional/classifier``, ``data.labelled_per_class``, ``data.label_seed`` = the
   draw seed) for each ``--m2-factors`` x ``--m2-sizes`` x ``--m2-draws`` (default factor: the corpus's
   own label; another factor is made the label with ``data.label_field``, runs ``m2-FACTOR-SIZE-dDRAW``)
   and scores its classifier q(y|x); each M2 run with all labels also decodes ``--fidelity-samples``
   prior samples per label (``model.sample(label=...)``) and reports the share a TF-IDF classifier
   trained on the real labelled training text assigns to the asked label (``label_fidelity``, per factor).

``--jobs N`` first trains every model of steps 1 and 3 that has not finished, N processes at a time
(each this script with ``--only RUN``; logs in ``--runs-dir/RUN.log``), then scores as above.
Runs that finished are not retrained (``reproduce.json``, as scripts/run_experiments.py). Accuracy
and macro-F1 are mean ± sd (n - 1) over the draws; ``train_s`` is the wall-clock seconds of the
model's training (the VAE's and AE's are shared by all draws), ``fit_s`` of the classifier's fit.

Models train only from committed code, as in scripts/run_experiments.py (scripts/provenance.py): when
``textvae/`` or ``scripts/`` have uncommitted changes and a model still has to train, the command stops
before training anything and names the files, unless ``--allow-dirty`` (passed on to the ``--jobs``
processes): then each sitting keeps the changes as ``source-<hash>.diff`` in the model's run directory.
Scoring models trained already is never refused. The json records the commit this command scored with
(``commit``, ``dirty``) and per trained model (``models``: run name -> ``commit`` of its newest sitting,
``commit_dirty``, and its ``sittings`` from ``reproduce.json`` with their ``dirty_diff``); each score
names its model (``model``; None for the baselines, fitted by this command).
"""

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from processes import COMMAND_ENV, parallel_env, run_processes  # noqa: E402
from provenance import PACKAGE, UncommittedSource, check_source, source_state  # noqa: E402
from run_experiments import read_state, train_run, write_json  # noqa: E402

from textvae import semisup  # noqa: E402
from textvae.checkpoint import list_checkpoints  # noqa: E402
from textvae.config_files import load_config  # noqa: E402
from textvae.disentanglement import read_factors  # noqa: E402
from textvae.metrics import model_split, posterior_parameters  # noqa: E402
from textvae.model import TextVAE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent  # this script's folder, the checkout's scripts/ when it runs from one
# a plain autoencoder: no KL in the loss; the validation ELBO then grows with the unpenalised KL, so it
# trains the VAE's epochs without decay or early stopping and its last checkpoint is the model
AE = ["objective.kl_schedule=constant", "objective.kl_weight=0", "objective.free_bits=0", "train.max_decays=0"]
M2 = ["model.conditional=true", "model.classifier=true"]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="table name: results/semisup_NAME.{json,md}, runs in --runs-dir")
    p.add_argument("--data-dir", help="corpus folder ({split}.txt + {split}.labels.txt, or jsonl with "
                   "data.label_field); default: the built-in corpus")
    p.add_argument("--preset", default="default")
    p.add_argument("--factors", nargs="+", default=None, help="factors to classify (default: the corpus's "
                   "label; the built-in corpus: topic)")
    p.add_argument("--sizes", nargs="+", default=["1", "10", "100", "all"], help="labels per class, or all")
    p.add_argument("--draws", type=int, default=5, help="label draws (seeds 0..N-1) per size")
    p.add_argument("--m2-sizes", nargs="*", default=["10", "all"], help="labels per class M2 is trained with")
    p.add_argument("--m2-draws", type=int, default=1, help="M2 runs per size (draw seeds 0..N-1)")
    p.add_argument("--m2-factors", nargs="+", default=None, help="factors M2 is trained on, each as the "
                   "corpus's label (data.label_field=FACTOR; the built-in corpus: topic, tense, sentiment, "
                   "length); default: the corpus's own label")
    p.add_argument("--m2", nargs="*", default=["train.labelled_ratio=0.25", "objective.m2_alpha=20"],
                   help="overrides of the M2 runs (after --set)")
    p.add_argument("--scratch-steps", type=int, default=300, help="optimiser steps of the from-scratch classifier "
                   "(batch 32; at least 5 epochs of the labelled examples)")
    p.add_argument("--m1", nargs="+", action="append", default=[], metavar=("NAME", "KEY=VALUE"),
                   help="another M1 VAE: run NAME trained with these overrides (after --set), method m1-NAME")
    p.add_argument("--fidelity-samples", type=int, default=40, help="prior samples per label from M2 (all labels)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of every run")
    p.add_argument("--runs-dir", type=Path, default=None, help="default: runs/semisup_NAME")
    p.add_argument("--out-dir", type=Path, default=REPO / "results")
    p.add_argument("--jobs", type=int, default=1, help="train up to N models at once, each in its own process")
    p.add_argument("--allow-dirty", action="store_true",
                   help="train models although textvae/ or scripts/ have uncommitted changes; each such sitting "
                        "keeps them in its run directory as source-<hash>.diff, a patch on its commit, and records "
                        "its sha256 (dirty_diff_sha256). Without it the command trains nothing then")
    p.add_argument("--only", metavar="RUN", help="train only this run (vae, ae, m1 NAME or m2-SIZE-dDRAW) and exit")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    return args


def size_of(text: str) -> int | None:
    return None if text == "all" else int(text)


def own_factor(args) -> str:
    """The factor the corpus's own labels are: ``label`` (a corpus folder) or the built-in corpus's topic."""
    return "label" if args.data_dir else "topic"


def m2_factors(args) -> list[str]:
    return args.m2_factors or [own_factor(args)]


def m2_plan(args) -> list[tuple[str, int | None, int]]:
    """(factor, labels per class or None for all, draw seed) of every M2 run, in training order."""
    return [(factor, size, draw) for factor in m2_factors(args) for size in map(size_of, args.m2_sizes)
            for draw in range(args.m2_draws if size is not None else 1)]


def planned_runs(args) -> dict[str, list[str]]:
    """Every model the table needs, run name -> its overrides (after --set): M1's VAE, the AE, the
    --m1 VAEs and the M2 runs (a factor other than the corpus's own label: data.label_field=FACTOR)."""
    runs = {"vae": [], "ae": AE, **{name: overrides for name, *overrides in args.m1}}
    for factor, size, draw in m2_plan(args):
        extra = [f"data.labelled_per_class={size}", f"data.label_seed={draw}"] if size else []
        label = [f"data.label_field={factor}"] if factor != own_factor(args) else []
        runs[m2_run(size, draw, None if factor == own_factor(args) else factor)] = [*M2, *label, *extra, *args.m2]
    return runs


def m2_run(size: int | None, draw: int, factor: str | None = None) -> str:
    """The run name of one M2 model (``factor``: one other than the corpus's own label)."""
    return f"m2-{factor + '-' if factor else ''}{size or 'all'}-d{draw}"


def train_in_parallel(args, argv: list[str], log) -> None:
    """Train the unfinished runs of :func:`planned_runs`, ``args.jobs`` processes at a time (each this
    script with ``--only RUN``, run by scripts/processes.py); a run that failed or was interrupted stops
    the table with its log named."""
    todo = [name for name in planned_runs(args) if not read_state(args.runs_dir / name).get("finished")]
    if not todo:
        return
    env = parallel_env(args.jobs, len(todo), args.command, on_cpu=not torch.cuda.is_available())
    commands = {name: ([sys.executable, __file__, *argv, "--jobs", "1", "--only", name], args.runs_dir / f"{name}.log")
                for name in todo}
    failed = run_processes(commands, args.jobs, env, log)
    if failed is None:
        raise SystemExit("interrupted: the runs saved checkpoints; run the same command again to resume")
    if failed:
        raise SystemExit(f"{', '.join(failed)} failed; see {', '.join(str(commands[n][1]) for n in failed)}; "
                         f"run the same command again to resume")


def trained(name, overrides, args, log, last: bool = False) -> tuple[TextVAE, float]:
    """The best model of run ``name`` (``last``: its newest checkpoint), trained now unless finished,
    and its training seconds."""
    data = [f"data.data_dir={json.dumps(str(Path(args.data_dir).resolve()))}"] if args.data_dir else []
    cfg = load_config(preset=args.preset, overrides=[*data, *args.set, *overrides])
    run = args.runs_dir / name
    train_run(name, cfg, run, log, command=args.command, source=args.source, allow_dirty=args.allow_dirty)
    sittings = read_state(run)["sittings"]
    args.models[name] = model_provenance(sittings)
    return TextVAE.from_pretrained(list_checkpoints(run)[-1] if last else run), sum(s["seconds"] for s in sittings)


def model_provenance(sittings: list[dict]) -> dict:
    """A trained model's entry in the json's ``models``, as scripts/run_experiments.py records a run: the
    commit of its newest sitting, whether any sitting trained from uncommitted code (``commit_dirty``; the
    sitting's ``dirty_diff`` is the patch, in the run directory), and the sittings of its reproduce.json."""
    commits = list(dict.fromkeys(s.get("commit") for s in sittings))
    return {"commit": commits[-1] if commits else None, "commit_dirty": any(s.get("dirty") for s in sittings),
            "sittings": sittings}


def refuse_uncommitted(args, runs: list[str]) -> None:
    """Stop before anything trains when any of ``runs`` has to train from code that is not a commit
    (``provenance.check_source``); runs that finished are only scored, which is never refused."""
    todo = [name for name in runs if not read_state(args.runs_dir / name).get("finished")]
    if todo:
        try:
            check_source(args.source, args.allow_dirty, Path(__file__).name)
        except UncommittedSource as e:
            raise SystemExit(f"not trained ({', '.join(todo)}): {e}") from None


def factor_labels(model, split, factor: str, encoded) -> list[str]:
    """Labels of ``factor`` aligned with the encoded split (the corpus's own label: ``encoded.labels``)."""
    if factor == "label" or (factor == "topic" and not model.extra_config.get("data", {}).get("data_dir")):
        return list(encoded.labels)
    from textvae.config import DataConfig

    labels = read_factors(DataConfig(**model.extra_config["data"]), split)[factor]
    if len(labels) != len(encoded):
        raise SystemExit(f"factor {factor}: {len(labels)} labels for {len(encoded)} encoded {split} examples "
                         f"(examples were dropped by data.max_len); raise data.max_len")
    return labels


def timed(fn, *a, **k):
    start = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - start


def main(argv=None) -> int:
    args = parse(argv)
    args.runs_dir = args.runs_dir or REPO / "runs" / f"semisup_{args.name}"
    omp = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if os.environ.get("OMP_NUM_THREADS") else ""
    argv = sys.argv[1:] if argv is None else list(argv)
    args.command = os.environ.get(COMMAND_ENV) or f"{omp}python scripts/semisup.py " + shlex.join(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    runs = planned_runs(args)
    if args.only and args.only not in runs:
        raise SystemExit(f"--only {args.only}: not a run of this table; its runs: {', '.join(runs)}")
    args.source, args.models = source_state(PACKAGE, SCRIPTS, with_diff=args.allow_dirty), {}  # the code imported now
    refuse_uncommitted(args, [args.only] if args.only else list(runs))
    if args.only:
        trained(args.only, runs[args.only], args, log, last=args.only == "ae")
        return 0
    if args.jobs > 1:
        train_in_parallel(args, argv, log)
    vae, vae_s = trained("vae", runs["vae"], args, log)
    ae, ae_s = trained("ae", runs["ae"], args, log, last=True)
    train, test = model_split(vae, "train"), model_split(vae, "test")
    models = {"m1-vae": (vae, vae_s), "m1-ae": (ae, ae_s)}
    run_of = {"m1-vae": "vae", "m1-ae": "ae"}  # method -> the run of its model
    for name, *overrides in args.m1:
        models[f"m1-{name}"] = trained(name, runs[name], args, log)
        run_of[f"m1-{name}"] = name
        METHOD_NAMES[f"m1-{name}"] = f"M1 (VAE, {' '.join(overrides)})"
    features = {m: (posterior_parameters(model, train)[0], posterior_parameters(model, test)[0], seconds)
                for m, (model, seconds) in models.items()}
    records = []
    for factor in args.factors or [own_factor(args)]:
        y_train_names = factor_labels(vae, "train", factor, train)
        y_test_names = factor_labels(vae, "test", factor, test)
        classes = sorted(set(y_train_names) - {""})
        semisup.check_test_labels(classes, y_test_names, f"the test split ({factor})")
        index = {c: k for k, c in enumerate(classes)}
        test_rows = [i for i, c in enumerate(y_test_names) if c != ""]
        y_test = np.array([index[y_test_names[i]] for i in test_rows])
        K = len(classes)
        for size in map(size_of, args.sizes):
            for draw in range(args.draws if size is not None else 1):  # all labels: one "draw"
                rows = semisup.draw_labelled(y_train_names, size, draw, f"the train split ({factor})")
                y = np.array([index[y_train_names[i]] for i in rows])
                methods = {
                    "majority": (lambda: semisup.majority(y, len(test_rows)), 0.0),
                    "bow-lr": (lambda: semisup.bag_of_words_lr([train.ids[i] for i in rows], y,
                                                               [test.ids[i] for i in test_rows], K), 0.0),
                    "tfidf-lr": (lambda: semisup.tfidf_lr([train.texts[i] for i in rows], y,
                                                          [test.texts[i] for i in test_rows]), 0.0),
                    "scratch": (lambda: semisup.from_scratch(vae.config, train, rows, y, _subset(test, test_rows),
                                                             K, steps=max(args.scratch_steps, 5 * len(rows) // 32),
                                                             seed=draw), 0.0),
                    **{m: (lambda f=f: semisup.m1(f[0][rows], y, f[1][test_rows], K), f[2])
                       for m, f in features.items()},
                }
                for method, (fit, train_s) in methods.items():
                    pred, fit_s = timed(fit)
                    records.append({"factor": factor, "method": method, "per_class": size or "all", "draw": draw,
                                    "labelled": len(rows), "n_test": len(test_rows), "classes": K,
                                    **semisup.score(pred, y_test, K), "train_s": train_s, "fit_s": fit_s,
                                    "model": run_of.get(method)})
                    log(f"{factor} {method} {size or 'all'} draw {draw}: acc {records[-1]['accuracy']:.3f}")
                write_results(args, records)
    fidelity = {}
    for factor, size, draw in m2_plan(args):
        name = m2_run(size, draw, None if factor == own_factor(args) else factor)
        model, m2_s = trained(name, runs[name], args, log)
        own_test = model_split(model, "test")  # labelled by the factor the model was trained on
        rows = test_rows_own(own_test)
        (pred_names, _), fit_s = timed(model.classify, [own_test.texts[i] for i in rows])
        y_own = [own_test.labels[i] for i in rows]
        names = model.label_names
        records.append({"factor": factor, "method": "m2", "per_class": size or "all", "draw": draw,
                        "labelled": None, "n_test": len(y_own), "classes": len(names),
                        **semisup.score([names.index(p) for p in pred_names], [names.index(c) for c in y_own],
                                        len(names)),
                        "train_s": m2_s, "fit_s": fit_s, "model": name})
        log(f"m2 {factor} {size or 'all'} draw {draw}: acc {records[-1]['accuracy']:.3f}")
        if size is None:
            fidelity[factor] = label_fidelity(model, model_split(model, "train"), args.fidelity_samples)
        write_results(args, records, fidelity)
    write_results(args, records, fidelity)
    return 0


def test_rows_own(split) -> list[int]:
    return [i for i, c in enumerate(split.labels) if c != ""]


def _subset(split, rows):
    from textvae.data import EncodedSplit

    return EncodedSplit([split.ids[i] for i in rows], [split.texts[i] for i in rows],
                        [split.labels[i] for i in rows] if split.labels is not None else None)


def label_fidelity(model, train, n: int) -> dict:
    """Share of ``n`` prior samples per label that a TF-IDF classifier trained on the real labelled
    training text assigns to the label they were decoded with."""
    names = model.label_names
    rows = [i for i, c in enumerate(train.labels) if c in names]
    asked, texts = [], []
    for k, name in enumerate(names):
        texts += model.sample(n, seed=k, label=name)
        asked += [k] * n
    pred = semisup.tfidf_lr([train.texts[i] for i in rows], [names.index(train.labels[i]) for i in rows], texts)
    per = {name: float(np.mean(pred[k * n:(k + 1) * n] == k)) for k, name in enumerate(names)}
    return {"samples_per_label": n, "share_with_asked_label": float(np.mean(pred == np.array(asked))),
            "per_label": per}


def summarise(records: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["factor"], r["per_class"], r["method"]), []).append(r)
    out = []
    for (factor, size, method), rs in groups.items():
        acc, f1 = np.array([r["accuracy"] for r in rs]), np.array([r["macro_f1"] for r in rs])
        out.append({"factor": factor, "per_class": size, "method": method, "draws": [r["draw"] for r in rs],
                    "accuracy_mean": float(acc.mean()), "accuracy_sd": float(acc.std(ddof=1)) if len(rs) > 1 else None,
                    "macro_f1_mean": float(f1.mean()), "train_s": float(np.mean([r["train_s"] for r in rs])),
                    "fit_s": float(np.mean([r["fit_s"] for r in rs]))})
    return out


METHOD_NAMES = {"majority": "majority class", "bow-lr": "bag-of-words LR", "tfidf-lr": "TF-IDF LR (scikit-learn)",
                "scratch": "encoder from scratch", "m1-ae": "M1 on a plain AE (no KL)", "m1-vae": "M1 (VAE)",
                "m2": "M2"}


def write_results(args, records, fidelity=None) -> None:
    summary = summarise(records)
    stem = args.out_dir / f"semisup_{args.name}"
    write_json(stem.with_suffix(".json"), {"table": f"semisup_{args.name}", "command": args.command,
                                           "commit": args.source.commit, "dirty": bool(args.source.uncommitted),
                                           "models": args.models, "summary": summary,
                                           "label_fidelity": fidelity, "runs": records})
    lines = [f"# Few-label classification: {args.name}", "",
             f"Reproduce: `{args.command}`", "",
             "Accuracy on the test split, mean ± sd over label draws (seeds in the json); macro-F1 mean; "
             "train s: the model's training (shared by all draws for M1), fit s: the classifier's fit.", ""]
    for r in records:
        METHOD_NAMES.setdefault(r["method"], r["method"])
    order = {m: i for i, m in enumerate(METHOD_NAMES)}
    for factor in dict.fromkeys(s["factor"] for s in summary):
        lines += [f"## {factor}", "", "| labels per class | method | draws | accuracy | macro-F1 | train s | fit s |",
                  "|---|---|---|---|---|---|---|"]
        rows = [s for s in summary if s["factor"] == factor]
        rows.sort(key=lambda s: (s["per_class"] == "all", s["per_class"] if s["per_class"] != "all" else 0,
                                 order[s["method"]]))
        for s in rows:
            sd = f" ± {100 * s['accuracy_sd']:.1f}" if s["accuracy_sd"] is not None else ""
            lines.append(f"| {s['per_class']} | {METHOD_NAMES[s['method']]} | {len(s['draws'])} | "
                         f"{100 * s['accuracy_mean']:.1f}{sd} | {100 * s['macro_f1_mean']:.1f} | "
                         f"{s['train_s']:.0f} | {s['fit_s']:.1f} |")
        lines.append("")
    for factor, f in (fidelity or {}).items():
        lines += [f"M2 (all labels, {factor}) prior samples decoded with each label: "
                  f"{100 * f['share_with_asked_label']:.1f}% are assigned the asked label by a TF-IDF "
                  f"classifier trained on the real labelled training text ({f['samples_per_label']} per label).",
                  ""]
    stem.with_suffix(".md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
