"""Experiments as data: the YAML rows (textvae/experiments.py), the runner (scripts/run_experiments.py)
end to end on a tiny PTB-shaped corpus (three rows of a few steps each, then the outputs, then a second
sitting that must reuse the runs instead of retraining), and the report step (scripts/report.py)."""
import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import load_script, signal_on_call
from textvae.config_files import load_config
from textvae.corpus import builtin_corpus
from textvae.errors import ConfigError, TextVAEError
from textvae.experiments import load_experiment, load_table, row_overrides

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "run_experiments.py"
PTB = REPO / "experiments" / "ptb"
ROWS = "lstm-lm-seed1234,vae-pretrain-fb-seed1234,bn-vae-seed1234"  # one seed of each row: its run name
SMALL = ["--set", "model.emb_dim=16", "--set", "model.enc_hidden=16", "--set", "model.dec_hidden=16",
         "--set", "train.progress=false"]
# the tests train from this checkout, which has uncommitted changes while someone works in it (CI's fresh
# clone has none): the runner trains from such a tree only when told to
ANY_TREE = ["--allow-dirty"]


@pytest.fixture(scope="module")
def script():
    return load_script("run_experiments")


@pytest.fixture(scope="module")
def report():
    return load_script("report")


@pytest.fixture(scope="module")
def table():
    return load_table(PTB)


@pytest.fixture
def ptb_dir(tmp_path):
    corpus = builtin_corpus(300)
    d = tmp_path / "ptb"
    d.mkdir()
    for split, examples in corpus.items():  # PTB's own file names: ptb.train.txt, ...
        (d / f"ptb.{split}.txt").write_text("".join(e["text"] + "\n" for e in examples))
    return d


def run(script, ptb_dir, tmp_path, *extra, rows=ROWS, experiments=PTB):
    return script.main([str(experiments), "--data-dir", str(ptb_dir), "--rows", rows,
                        "--out-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
                        "--max-epochs", "1", "--max-steps", "4", "--iw-samples", "3", "--eval-sentences", "8",
                        *SMALL, *ANY_TREE, *extra])


@pytest.mark.integration  # the runner trains and evaluates rows end to end
def test_rows_train_evaluate_and_write_the_table(script, table, ptb_dir, tmp_path, capsys):
    assert run(script, ptb_dir, tmp_path) == 0
    records = json.loads((tmp_path / "results" / "ptb.json").read_text())
    assert [r["row"] for r in records] == ROWS.split(",")  # the table's order, not the command's
    for r in records:
        assert r["iw_samples"] == 3 and r["test_sentences"] == 8
        assert r["nll_iw"] > 0 and r["ppl_iw"] > 1 and r["steps"] == 4
        assert r["config"]["train"]["max_steps"] == 4 and r["train_seconds"] > 0 and r["device"].startswith("CPU")
        assert len(r["samples"]) == 3
    n_train = len((ptb_dir / "ptb.train.txt").read_text().splitlines())
    per_epoch = -(-n_train // records[0]["config"]["train"]["batch_size"])
    for r in records:  # the shared recipe, with validation every half epoch of this corpus
        assert r["config"]["train"]["optimizer"] == "adam" and r["config"]["model"]["out_dropout"] == 0.4
        assert r["config"]["train"]["eval_every"] == -(-per_epoch // 2)
    lm, pretrain, bn = records
    assert lm["kl"] == 0 and lm["au"] == 0 and lm["homotopy"] is None
    assert lm["nll_iw"] == pytest.approx(lm["elbo"], rel=1e-5)  # no latent: IW-NLL is the exact NLL
    assert pretrain["config"]["objective"]["pretrain_ae_steps"] == 2  # at most half the run
    assert pretrain["phases"] == [{"phase": "pretrain", "steps": 2, "decoder_reset": True,
                                   "reason": "objective.pretrain_ae_steps=2 steps are done"}]
    assert lm["phases"] == bn["phases"] == []
    assert len(bn["homotopy"]) == 7 and bn["config"]["model"]["bn_gamma"] == 0.6
    assert bn["nll_iw"] <= bn["elbo"] + 1e-3  # the IW bound is at least as tight as the ELBO (k >= 1)
    assert not list(tmp_path.rglob(script.PARTIAL_EVALUATION))  # finished passes leave no partial state

    for r in records:  # each record names its row file's experiment, its seed, its BLEU convention
        assert r["row"] == f"{r['experiment']}-seed1234" and r["seed"] == r["config"]["train"]["seed"] == 1234
        assert "bleu_tokenize" in r
    md = (tmp_path / "results" / "ptb.md").read_text()
    assert md.count("not run yet") == sum(len(row.runs()) for row in table[1]) - 3
    assert "`train.max_epochs=1` `train.max_steps=4`" in md  # the budget is stated, not hidden
    settings = next(line for line in md.splitlines() if line.startswith("Settings given on the command line"))
    assert "train.optimizer" not in settings and "eval_every" not in settings  # the recipe is not a budget
    assert "| lstm-lm ◊ | LSTM-LM |" in md and "PPL 116 (Bowman et al. 2016, Table 1)" in md
    # runs stopped at a step limit are marked and not counted in the means, comparisons and goal
    assert ("◊ Not counted in the means over seeds, the comparisons or the goal: lstm-lm-seed1234 (stopped at "
            "its step limit, epoch 0; k = 3 importance samples, not the row's 500; evaluated on the first 8 test "
            "sentences only (--eval-sentences)); vae-pretrain-fb-seed1234") in md
    assert ("- vae-pretrain-fb-seed1234: autoencoder pretraining for the first 2 of 4 steps (50.0%), ended because "
            "objective.pretrain_ae_steps=2 steps are done; the decoder re-initialised, then the VAE phase.") in md
    runs = md[md.index("Every run:"):]
    order = [runs.index(f"| {name} ") for row in table[1] for name, _ in row.runs()]
    assert order == sorted(order)  # pending runs stand in their place, not at the end

    # a second sitting reuses the finished runs and their cached evaluation: same numbers, no training
    capsys.readouterr()
    assert run(script, ptb_dir, tmp_path) == 0
    err = capsys.readouterr().err
    assert err.count("not retrained") == 3 and "evaluating" not in err
    assert json.loads((tmp_path / "results" / "ptb.json").read_text()) == records


def test_command_line_settings_leave_out_recipe_and_derived_values_only(report, table):
    t, rows = table
    derived = ["train.eval_every=658", "objective.pretrain_ae_steps=26300", "train.seed=1234"]
    row = next(r for r in rows if r.name == "vae-pretrain-fb")
    cli = ['data.data_dir="/x"', "train.eval_every=0", "train.lr=1"]
    record = {"row": row.name, "overrides": [*t.recipe, *derived, *row.overrides, *cli]}
    assert report.command_line_settings(record, t, rows) == ["train.eval_every=0", "train.lr=1"]


def test_missing_data_dir_is_a_clear_error(script, tmp_path, capsys):
    assert script.main([str(PTB), "--data-dir", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "ptb.json").exists()


@pytest.mark.integration  # rows in subprocesses
def test_jobs_run_rows_in_parallel_processes_then_write_one_table(script, ptb_dir, tmp_path, capsys):
    rows = "lstm-lm-seed1234,bn-vae-seed1234"
    assert script.main([str(PTB), "--data-dir", str(ptb_dir), "--rows", rows, "--jobs", "2",
                        "--out-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
                        "--max-epochs", "1", "--max-steps", "3", "--iw-samples", "3", "--eval-sentences", "8",
                        *SMALL, *ANY_TREE]) == 0
    err = capsys.readouterr().err
    assert "[lstm-lm] started (process" in err and "[bn-vae] done in" in err
    assert err.count("not retrained") == 2 and "evaluating" not in err  # the parent only reads the runs
    # each row is recorded as its process ends, not after the last one
    assert err.index("[lstm-lm-seed1234] nll_iw") < err.index("[bn-vae] done in") or \
        err.index("[bn-vae-seed1234] nll_iw") < err.index("[lstm-lm] done in")
    records = json.loads((tmp_path / "results" / "ptb.json").read_text())
    assert [r["row"] for r in records] == rows.split(",")
    for r in records:
        assert r["concurrent_rows"] == 2 and r["stopped"] == "max_steps" and r["steps"] == 3
        assert r["sittings"][0]["concurrent_rows"] == 2 and r["nll_iw"] > 0
        assert "nll_iw" in (tmp_path / "runs" / "ptb" / f"{r['experiment']}.log").read_text()  # each row's own log
    md = (tmp_path / "results" / "ptb.md").read_text()
    assert md.count("2 rows at once") == 2 and md.count("(step limit)") == 2
    for r in records:  # each row process records the command the user typed, not its own
        assert "--jobs 2" in r["sittings"][0]["command"] and r["eval_command"] == r["sittings"][0]["command"]


def test_stop_reason_of_runs_that_did_not_record_it(report):
    config = {"train": {"max_epochs": 10, "max_steps": None}}
    assert report.stop_reason({"epoch": 8, "step": 100, "stopped": "time"}, config) == "time"
    assert report.stop_reason({"epoch": 8, "step": 100}, config) == "early"
    assert report.stop_reason({"epoch": 10, "step": 100}, config) == "max_epochs"
    assert report.stop_reason({"epoch": 0, "step": 4}, {"train": {"max_epochs": 1, "max_steps": 4}}) == "max_steps"


def test_rows_from_an_earlier_recipe_are_marked_and_compared_only_with_their_own_lm(report, table):
    def record(name, recipe, ppl, kl, au):
        return {"row": name, "method": name, "paper": "p", "overrides": [*recipe, "train.eval_every=9"],
                "nll_iw": ppl / 10, "ppl_iw": ppl, "kl": kl, "mi_full": 0.0, "au": au, "elbo": 1.0, "ppl_elbo": ppl,
                "bleu_rec": None, "epochs": 3, "stopped": "early", "train_seconds": 1.0, "device": "CPU",
                "samples": [f"a sample of {name}"]}
    t, rows = table
    recipe = t.recipe
    old = recipe[:-1]  # as if the recipe's last item had been added after these rows ran
    records = [record("lstm-lm", recipe, 120.0, 0.0, 0), record("vae-free-bits", recipe, 118.5, 7.5, 32),
               record("bn-vae", recipe, 121.0, 6.1, 32), record("vae-cyclical", recipe, 110.0, 0.6, 2),
               record("vae-plain", old, 100.0, 9.0, 32)]
    assert report.recipe_gaps(records[0], t) == [] and report.recipe_gaps(records[-1], t) == [recipe[-1]]
    key = recipe[-1].split("=")[0]  # an item given, then undone by --set: not the recipe either
    undone = record("vae-plain", [*recipe, f"{key}=0.5"], 100.0, 9.0, 32)
    assert report.recipe_gaps(undone, t) == [recipe[-1]]
    lines = report.baseline_comparison(rows, records, t)
    # the collapsed row (KL 0.6) and the earlier-recipe row are not compared, however low their perplexity
    assert [line.split(" (")[0] for line in lines] == ["vae-free-bits", "bn-vae"]
    assert "vae-free-bits (1 seed): PPL (IW) 118.50 against 120.00, NLL -0.150 nats per sentence" in lines[0]
    assert "does not meet it (PPL above 100; one seed, so no verdict on the margin)" in lines[0]
    md = report.render(t, rows, records)
    assert "Rows that meet it: none." in md
    # but a reader is told about the collapsed row whose NLL is below the LM's
    assert report.unused_latent_below_baseline(rows, records, t) == [
        "vae-cyclical (1 seed: NLL -1.000, PPL (IW) 110.00, KL 0.60, AU 2.0)"]
    assert ("Below the lstm-lm row's mean NLL but not counted, because the latent is not in use: vae-cyclical "
            "(1 seed: NLL -1.000") in md
    assert "| vae-plain † |" in md and "| bn-vae |" in md
    assert f"without `{recipe[-1]}`: vae-plain." in md
    summary = "\n".join(report.summary_section(t, rows, records))
    assert "| vae-plain † | VAE (no annealing, no word dropout) | 1 | 10.00 |" in summary  # only † runs: shown, marked
    # a row with runs under both recipes is summarised over its current runs alone, not a mix of the two
    mixed = records + [{**record("vae-plain", recipe, 101.0, 0.0, 0), "row": "vae-plain-seed1", "experiment": "vae-plain"}]
    summary = "\n".join(report.summary_section(t, rows, mixed))
    assert "| vae-plain | VAE (no annealing, no word dropout) | 1 | 10.10 |" in summary
    samples = md[md.index("## Samples and homotopies"):]  # from the current models only
    assert "a sample of bn-vae" in samples and "a sample of vae-plain" not in samples
    assert "Not shown: vae-plain, trained under an earlier recipe" in samples
    assert report.baseline_comparison(rows, records[1:], t) == []  # no baseline row, nothing to compare with


def test_recipe_gaps_are_read_from_the_config_the_run_trained_with(report, table):
    t, _ = table
    config = load_config(t.preset, overrides=list(t.recipe)).to_dict()
    record = {"row": "bn-vae", "overrides": list(t.recipe), "config": config}
    assert report.recipe_gaps(record, t) == []
    # its overrides name the whole recipe, but the model it trained had untied embeddings (a run
    # directory reused under a newer command): the config says so
    untied = {**record, "config": {**config, "model": {**config["model"], "tie_embeddings": False}}}
    assert report.recipe_gaps(untied, t) == ["model.tie_embeddings=true"]
    # a recipe item the run got from its preset rather than an override is still the recipe
    lr = next(o for o in t.recipe if o.startswith("train.lr="))
    assert report.recipe_gaps({**record, "overrides": [o for o in t.recipe if o != lr]}, t) == []
    slower = {**record, "config": {**config, "train": {**config["train"], "lr": 1e-3}}}
    assert report.recipe_gaps(slower, t) == [lr]
    assert report.recipe_gaps({**record, "config": {"train": {}}}, t) == list(t.recipe)  # keys it lacks



def test_a_number_like_value_of_a_text_key_is_compared_as_written(report):
    """data.splits.valid=010 names the split '010' (the config keeps a text key's value as written); read
    as a YAML number (8) it never matched, and a run trained with that recipe was marked as trained under
    another one."""
    config = load_config("tiny", overrides=["data.splits.valid=010", "data.text_field=2024"]).to_dict()
    assert config["data"]["splits"]["valid"] == "010" and config["data"]["text_field"] == "2024"
    assert report._config_has(config, "data.splits.valid", "010")
    assert report._config_has(config, "data.text_field", "2024")
    assert not report._config_has(config, "data.splits.valid", "8")
    assert report._config_has(config, "train.seed", str(config["train"]["seed"]))


def test_runs_stopped_at_a_budget_or_evaluated_otherwise_are_marked_and_not_counted(report, table):
    t, rows = table

    def record(name, seed, nll, **extra):
        return {"row": f"{name}-seed{seed}", "experiment": name, "method": name, "paper": "p", "seed": seed,
                "overrides": list(t.recipe), "nll_iw": nll, "ppl_iw": 99.0, "kl": 7.0, "mi_full": 5.0, "au": 32,
                "elbo": nll + 1, "ppl_elbo": 101.0, "bleu_rec": None, "epochs": 30, "steps": 900,
                "stopped": "early", "iw_samples": 500, "test_sentences": 3761, "train_seconds": 1.0,
                "device": "CPU", "samples": [], **extra}

    lm = [record("lstm-lm", s, n) for s, n in zip((1234, 1, 2), (101.0, 101.1, 100.9))]
    fb = [record("vae-free-bits", s, n) for s, n in zip((1234, 1, 2), (100.5, 100.6, 100.4))]
    assert "**meets the goal**" in report.baseline_comparison(rows, lm + fb, t)[0]
    short = {"time": {**fb[1], "stopped": "time", "epochs": 3},
             "k": {**fb[1], "iw_samples": 5},
             "sentences": {**fb[1], "test_sentences": 50, "eval_sentences": 50}}
    assert report.shortfalls(short["time"], t, rows) == ["stopped at its time budget, epoch 3"]
    assert report.shortfalls(short["k"], t, rows) == ["k = 5 importance samples, not the row's 500"]
    assert report.shortfalls(short["sentences"], t, rows) == [
        "evaluated on the first 50 test sentences only (--eval-sentences)"]
    # a limit above the split's size evaluated all of it; one from before the record kept it is read
    # from the evaluation's command
    assert report.shortfalls({**fb[1], "eval_sentences": 5000}, t, rows) == []
    assert report.shortfalls({**fb[1], "test_sentences": 50, "eval_command": "python x --eval-sentences 50"},
                             t, rows) == ["evaluated on the first 50 test sentences only (--eval-sentences)"]
    # a table whose runs compare under a common budget (no to_early_stop) counts its budget stops
    assert report.shortfalls(short["time"], dataclasses.replace(t, to_early_stop=False), rows) == []
    for why, r in short.items():
        records = lm + [fb[0], r, fb[2]]
        assert report.counted(t, rows, records) == lm + [fb[0], fb[2]], why
        md = report.render(t, rows, records)
        assert "| vae-free-bits | VAE + free bits | 2 | 100.45 ± 0.07 |" in md, why  # over the two that count
        assert "| vae-free-bits-seed1 ◊ |" in md and "◊ Not counted in the means over seeds" in md
        assert "vae-free-bits (2 seeds)" in report.baseline_comparison(rows, records, t)[0]
    # a row with no run that counts is summarised over the runs it has, marked
    only = report.render(t, rows, lm + [{**r, "stopped": "max_steps"} for r in fb])
    assert "| vae-free-bits ◊ | VAE + free bits | 3 | 100.50 ± 0.10 |" in only
    assert "Rows that meet it: none." not in only and "vae-free-bits (3 seeds)" not in only
    # an epoch limit is the row's own unless the command line set it (a budget then)
    capped = {**fb[1], "stopped": "max_epochs", "overrides": [*t.recipe, "train.max_epochs=10"]}
    assert report.shortfalls(capped, t, rows) == ["stopped at its epoch limit, epoch 30"]
    assert report.shortfalls({**capped, "overrides": list(t.recipe)}, t, rows) == []


def test_the_goal_is_met_only_beyond_two_pooled_sd_over_seeds_and_under_the_ppl_bound(report, table):
    t, rows = table

    def record(name, seed, nll, ppl, kl=7.0, au=32):
        return {"row": f"{name}-seed{seed}", "experiment": name, "seed": seed, "overrides": list(t.recipe),
                "nll_iw": nll, "ppl_iw": ppl, "kl": kl, "au": au}

    lm = [record("lstm-lm", s, n, 100.5) for s, n in zip((1234, 1, 2), (101.0, 101.1, 100.9))]
    far = [record("vae-free-bits", s, n, 99.5) for s, n in zip((1234, 1, 2), (100.5, 100.6, 100.4))]
    near = [record("bn-vae", s, n, 99.9) for s, n in zip((1234, 1, 2), (100.9, 101.1, 101.0))]
    high = [record("vae-pretrain-fb", s, n, 100.2) for s, n in zip((1234, 1, 2), (100.5, 100.6, 100.4))]
    lines = {line.split(" (")[0]: line for line in report.baseline_comparison(rows, lm + far + near + high, t)}
    assert "**meets the goal**" in lines["vae-free-bits"]  # -0.5 nats, pooled sd 0.1
    assert "NLL not below the baseline's by more than 2 pooled sd" in lines["bn-vae"]
    assert "PPL above 100" in lines["vae-pretrain-fb"] and "meets the goal" not in lines["vae-pretrain-fb"]
    assert "Rows that meet it: vae-free-bits." in "".join(report.goal_section(t, rows, lm + far + near + high))


def test_bleu_under_another_convention_is_not_shown_as_current(report, table):
    t, rows = table
    base = {"method": "m", "paper": "p", "overrides": t.recipe, "nll_iw": 1.0, "ppl_iw": 2.0, "kl": 0.0,
            "mi_full": 0.0, "au": 0, "elbo": 1.0, "ppl_elbo": 2.0, "epochs": 1, "stopped": "early",
            "train_seconds": 1.0, "device": "CPU", "samples": []}
    records = [{**base, "row": "bn-vae", "bleu_rec": 5.9373, "bleu_tokenize": "13a"},
               {**base, "row": "vae-plain", "bleu_rec": 2.6412},  # written before the convention was recorded
               {**base, "row": "vae-free-bits", "bleu_rec": 0.8123, "bleu_tokenize": "none"}]
    md = report.render(t, rows, records)
    per_run = md[md.index("Every run:"):].splitlines()  # after the mean ± sd table
    line = {name: next(x for x in per_run if x.startswith(f"| {name} |")) for name in
            ("bn-vae", "vae-plain", "vae-free-bits")}
    assert "| 0.8 |" in line["vae-free-bits"]  # the table's own convention: a number in the column
    for name in ("bn-vae", "vae-plain"):  # the old one: a mark in the column, the value in a footnote
        assert "| ‡ |" in line[name] and "5.9" not in line[name] and "2.6" not in line[name]
    note = next(x for x in md.splitlines() if x.startswith("‡ "))
    assert "`13a`" in note and "bn-vae 5.9" in note and "vae-plain 2.6" in note and "free-bits" not in note


def test_the_published_ptb_table_keeps_every_number_and_marks_old_bleu(report, table):
    records = json.loads((REPO / "results" / "ptb.json").read_text())
    # the records scored before the BLEU fix say 13a; every run recorded since (the LM's seed 1 first, on
    # 2026-12-06) is scored with none, and a run trained again replaces its 13a record
    before_fix = {"lstm-lm-seed1234", "vae-bowman", "vae-inputless", "vae-cyclical", "vae-free-bits-seed1234",
                  "vae-aggressive", "vae-pretrain-fb-seed1234", "bn-vae-seed1234", "vae-plain"}
    assert len(records) >= 10 and {r["bleu_tokenize"] for r in records} <= {"13a", "none"}
    assert {r["row"] for r in records if r["bleu_tokenize"] == "13a"} <= before_fix
    assert next(r for r in records if r["row"] == "lstm-lm-seed1")["bleu_tokenize"] == "none"
    md = report.render(*table, records)
    assert md == (REPO / "results" / "ptb.md").read_text()  # ptb.md is rendered from ptb.json as it stands
    begin, end = report.docs_markers(table[0])
    docs = (REPO / table[0].docs).read_text()  # and docs/ptb.md shows the same summary, not a hand copy
    assert docs.split(begin)[1].split(end)[0] == "\n\n" + report.docs_block(*table, records) + "\n"
    lm = next(r for r in records if r["row"] == "lstm-lm-seed1")  # a finished run that is not trained again
    assert lm["nll_iw"] == pytest.approx(100.9447, abs=1e-4) and "| 100.06 |" in md
    assert "| ‡ |" in md and "| 5.9 |" not in md


def hand_written_prose(page: str, markers: tuple[str, str]) -> list[tuple[int, str]]:
    """(line number, line) of a docs page outside the report's block (between ``markers``) and outside
    markdown tables."""
    begin, end = markers
    out, inside = [], False
    for i, line in enumerate(page.splitlines(), 1):
        if line.strip() in (begin, end):
            inside = line.strip() == begin
        elif not inside and not line.startswith("|"):
            out.append((i, line))
    return out


def test_the_ptb_pages_prose_cites_the_table_as_it_stands(report, table):
    """docs/ptb.md reads the table in its own words; when a run lands, a likelihood it quotes (a value with
    two decimals, 50 or more) must still be a run's value or a row's mean over seeds in results/ptb.json, and
    "mean ± sd" a row's mean and sd over seeds. Runs trained again change these: the prose then fails
    here instead of quoting a table that no longer exists."""
    t, rows = table
    records = report.seeded_names(rows, json.loads((REPO / "results" / "ptb.json").read_text()))
    metrics = ("nll_iw", "ppl_iw", "elbo", "ppl_elbo")
    values = {f"{r[m]:.2f}" for r in records for m in metrics if r.get(m) is not None}
    spreads = set()
    for m in metrics + ("kl", "mi_full", "au"):
        for seeds in report.seed_values(rows, records, m).values():
            mean, sd = report.mean_sd(seeds)
            values.add(f"{mean:.2f}")
            spreads.add(f"{mean:.2f} ± {sd:.2f}")
    stale = []
    for i, line in hand_written_prose((REPO / t.docs).read_text(encoding="utf-8"), report.docs_markers(t)):
        quoted = re.findall(r"(?<![\d.])\d+\.\d\d(?![\d.])", line)
        stale += [f"line {i}: {x}" for x in quoted if float(x) >= 50 and x not in values]
        stale += [f"line {i}: {x}" for x in re.findall(r"\d+\.\d\d ± \d+\.\d\d", line) if x not in spreads]
    assert not stale, f"{t.docs} quotes numbers that results/ptb.json no longer holds: {stale}"


@pytest.fixture(scope="module")
def seed_noise_script():
    return load_script("iw_seed_noise")


@pytest.mark.integration  # the runner trains and evaluates rows end to end
def test_iw_seed_noise_of_a_trained_row(script, seed_noise_script, ptb_dir, tmp_path, capsys):
    assert run(script, ptb_dir, tmp_path) == 0
    capsys.readouterr()
    runs = tmp_path / "runs" / "ptb"
    argv = ["--data-dir", str(ptb_dir), "--sentences", "12", "-k", "4", "--json"]
    assert seed_noise_script.main([str(runs / "bn-vae-seed1234"), *argv]) == 0
    out = json.loads(capsys.readouterr().out)
    n_test = len((ptb_dir / "ptb.test.txt").read_text().splitlines())
    assert out["sentences"] == 12 and out["split_sentences"] == n_test
    a, b = out["nll_per_seed"]
    assert a != b and out["sentence_sd"] > 0  # two seeds, two different estimates
    assert out["split_se_nats"] == pytest.approx(out["sentence_sd"] / n_test ** 0.5)
    with pytest.raises(SystemExit):  # one seed twice measures nothing: a usage error
        seed_noise_script.main([str(runs / "bn-vae-seed1234"), *argv, "--seeds", "3,3"])
    # the LM's NLL is exact: nothing to measure, said so
    assert seed_noise_script.main([str(runs / "lstm-lm-seed1234"), *argv]) == 2
    assert "exact" in capsys.readouterr().err
    assert seed_noise_script.main([str(tmp_path / "nowhere"), *argv]) == 2
    assert "config.json not found" in capsys.readouterr().err
    no_weights = tmp_path / "no-weights"  # a config but no model: an error message, not a traceback
    no_weights.mkdir()
    (no_weights / "config.json").write_text((runs / "bn-vae-seed1234" / "config.json").read_text())
    assert seed_noise_script.main([str(no_weights), *argv]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_seed_noise_arithmetic(seed_noise_script):
    import torch
    a = torch.tensor([10.0, 11.0, 12.0, 13.0], dtype=torch.float64)
    b = a + torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    got = seed_noise_script.seed_noise(a, b, split_sentences=100, split_tokens=2000)
    sd = (4 / 3) ** 0.5 / 2 ** 0.5  # sample sd of the differences (+-1), over sqrt(2)
    assert got["sentence_sd"] == pytest.approx(sd)
    assert got["split_se_nats"] == pytest.approx(sd / 10)
    assert got["split_se_ppl_rel"] == pytest.approx(math.exp(sd / 10 * 100 / 2000) - 1)


@pytest.mark.integration  # the runner trains and evaluates rows end to end
def test_extend_trains_a_row_on_after_its_time_budget_and_evaluates_it_again(script, ptb_dir, tmp_path, capsys):
    def lm(*extra):
        return script.main([str(PTB), "--data-dir", str(ptb_dir), "--rows", "lstm-lm-seed1234",
                            "--out-dir", str(tmp_path / "results"),
                            "--runs-dir", str(tmp_path / "runs"), "--max-steps", "6", "--iw-samples", "2",
                            "--eval-sentences", "8", "--set", "model.emb_dim=16", "--set", "model.dec_hidden=16",
                            "--set", "train.progress=false", *ANY_TREE, *extra])

    def record():
        return json.loads((tmp_path / "results" / "ptb.json").read_text())[0]

    assert lm("--max-minutes", "1e-6") == 0  # the budget ends the sitting after its first step
    first = record()
    assert first["stopped"] == "time" and first["steps"] < 6 and len(first["sittings"]) == 1
    assert lm("--max-minutes", "1e-6") == 0 and record() == first  # without --extend: finished, kept as is
    capsys.readouterr()
    assert lm("--extend") == 0  # no budget this time: trains on to max_steps from its checkpoint
    err = capsys.readouterr().err
    assert "training on from its newest checkpoint" in err and "evaluating" in err
    second = record()
    assert second["stopped"] == "max_steps" and second["steps"] == 6 and len(second["sittings"]) == 2
    assert second["sittings"][1]["resumed"] and second["nll_iw"] != first["nll_iw"]
    capsys.readouterr()
    assert lm("--extend") == 0  # its step limit is the command's own: nothing to train on
    assert "not retrained" in capsys.readouterr().err and record() == second
    assert lm("--max-steps", "8") == 0  # a raised limit without --extend: finished, and told how to go on
    assert "it stopped at its step limit: --extend trains it on" in capsys.readouterr().err and record() == second
    assert lm("--max-steps", "8", "--extend") == 0
    third = record()
    assert third["steps"] == 8 and len(third["sittings"]) == 3 and third["sittings"][2]["resumed"]
    assert third["sittings"][2]["changed"]["train.max_steps"] == [6, 8]  # against its first sitting's
    # each sitting keeps the command that ran it, and the table lists them: how to redo the row
    commands = [s["command"] for s in second["sittings"]]
    assert commands[0].endswith("--max-minutes 1e-6") and commands[1].endswith("--extend")
    assert all(c.startswith((f"python scripts/run_experiments.py {PTB} --data-dir", "OMP_NUM_THREADS=")) for c in commands)
    assert second["eval_command"] == commands[1]
    md = (tmp_path / "results" / "ptb.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("- lstm-lm-seed1234: "))
    assert line.index(commands[0]) < line.index(commands[1]) < line.index("evaluated by")


@pytest.mark.integration  # the runner trains and evaluates a row, then evaluates it again
def test_other_samples_redo_the_samples_not_the_evaluation_pass(script, ptb_dir, tmp_path, monkeypatch):
    assert script.main([str(PTB), "--data-dir", str(ptb_dir), "--rows", "bn-vae-seed1234",
                        "--out-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
                        "--max-steps", "2", "--iw-samples", "2", "--eval-sentences", "6", *SMALL, *ANY_TREE]) == 0
    run = tmp_path / "runs" / "ptb" / "bn-vae-seed1234"
    state = json.loads((run / "reproduce.json").read_text())
    assert state["evaluation_key"]["split"] == "test" and state["extras_key"] == {"samples": 3, "homotopy_steps": 5}
    t, rows = load_table(PTB)
    row = next(r for r in rows if r.name == "bn-vae")
    args = script.parse_args([str(PTB), "--data-dir", str(ptb_dir), "--max-steps", "2", *SMALL])
    cfg, _ = script.run_config(t, row, 1234, args)
    settings = {**script.evaluation(t, row), "iw_samples": 2}

    def no_pass(*a, **k):
        raise AssertionError("the evaluation pass ran again")

    monkeypatch.setattr(script, "evaluate", no_pass)
    old = {**state, "evaluation_key": {k: v for k, v in state["evaluation_key"].items() if k != "split"}}
    old.pop("extras_key")  # a state saved before either: its metrics and samples still count
    assert script.evaluate_run("bn-vae-seed1234", settings, cfg, run, old, 6, print) is old
    more = script.evaluate_run("bn-vae-seed1234", {**settings, "samples": 5, "homotopy_steps": 2}, cfg, run,
                               dict(state), 6, print)
    assert len(more["samples"]) == 5 and len(more["homotopy"]) == 4 and more["evaluation"] == state["evaluation"]
    with pytest.raises(AssertionError, match="pass ran again"):  # another split is another evaluation
        script.evaluate_run("bn-vae-seed1234", {**settings, "split": "valid"}, cfg, run, dict(state), 6, print)


@pytest.mark.integration  # the runner trains a row, then is given other settings for it
def test_a_run_trained_under_other_settings_is_neither_reused_nor_resumed(script, ptb_dir, tmp_path, capsys):
    def lm(*extra):
        return script.main([str(PTB), "--data-dir", str(ptb_dir), "--rows", "lstm-lm-seed1234",
                            "--out-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
                            "--max-steps", "3", "--iw-samples", "2", "--eval-sentences", "8",
                            "--set", "model.emb_dim=16", "--set", "model.dec_hidden=16",
                            "--set", "train.progress=false", *ANY_TREE, *extra])

    results, run = tmp_path / "results" / "ptb.json", tmp_path / "runs" / "ptb" / "lstm-lm-seed1234"
    assert lm() == 0
    first = results.read_text()
    capsys.readouterr()
    # a recipe item changed since it trained: reused, its numbers would be recorded as the new recipe's
    assert lm("--set", "train.lr=0.01") == 1
    err = capsys.readouterr().err
    assert "train.lr 0.002 (this command: 0.01)" in err and f"mv {run} {run}.old" in err
    assert results.read_text() == first
    state = json.loads((run / "reproduce.json").read_text())
    state["finished"] = False  # as if its sitting had been interrupted: resuming would change lr mid-run
    (run / "reproduce.json").write_text(json.dumps(state))
    assert lm("--set", "model.dec_hidden=32") == 1 and "model.dec_hidden 16 (this command: 32)" in capsys.readouterr().err
    assert len(json.loads((run / "reproduce.json").read_text())["sittings"]) == 1  # not a sitting more
    # where it trains and its budgets may change between sittings; the sitting records what changed
    assert lm("--set", "train.device=cpu", "--set", "train.checkpoint_minutes=5") == 0
    err = capsys.readouterr().err
    assert "resuming" in err and "this sitting changes " in err and "train.device ('auto' -> 'cpu')" in err
    sittings = json.loads(results.read_text())[0]["sittings"]
    assert len(sittings) == 2 and sittings[1]["changed"]["train.checkpoint_minutes"] == [None, 5.0]



def test_a_cyclical_run_is_not_given_another_planned_length(script, tmp_path):
    # its cycles span the planned run: a raised step limit would stretch them mid-run
    t, rows = load_table(PTB)
    row = next(r for r in rows if r.name == "vae-cyclical")
    run = tmp_path / "vae-cyclical"
    run.mkdir()
    data = tmp_path / "ptb"
    data.mkdir()
    for split in ("train", "valid", "test"):
        (data / f"ptb.{split}.txt").write_text("a b c\n" * 40)
    args = script.parse_args([str(PTB), "--data-dir", str(data), "--max-steps", "4"])
    cfg, _ = script.run_config(t, row, 1234, args)
    cfg.save(run / "config.json")
    assert script.same_run("vae-cyclical", cfg, run) == {}
    longer, _ = script.run_config(t, row, 1234, script.parse_args([str(PTB), "--data-dir", str(data), "--max-steps", "8"]))
    with pytest.raises(TextVAEError, match=r"train.max_steps 4 \(this command: 8\) \(objective.kl_schedule=cyclical"):
        script.same_run("vae-cyclical", longer, run)
    fixed, _ = script.run_config(t, row, 1234, script.parse_args([str(PTB), "--data-dir", str(data), "--max-steps", "8",
                                                                   "--set", "objective.cycle_steps=4"]))
    cfg.objective.cycle_steps = 4
    cfg.save(run / "config.json")
    assert script.same_run("vae-cyclical", fixed, run) == {"train.max_steps": (4, 8)}  # a span of its own


def test_the_recorded_command_can_be_typed_again(script, monkeypatch):
    monkeypatch.delenv(script.COMMAND_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert script.invocation(["--rows", "bn-vae", "--data-dir", "my ptb"]) == \
        "python scripts/run_experiments.py --rows bn-vae --data-dir 'my ptb'"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert script.invocation(["--rows", "lstm-lm"]) == "OMP_NUM_THREADS=1 python scripts/run_experiments.py --rows lstm-lm"
    monkeypatch.setenv(script.COMMAND_ENV, "python scripts/run_experiments.py --jobs 7")  # a --jobs row process
    assert script.invocation(["--rows", "lstm-lm", "--out-dir", "/tmp/x"]) == "python scripts/run_experiments.py --jobs 7"


def test_parallel_processes_run_at_most_jobs_at_once_and_report_which_failed(tmp_path, monkeypatch):
    processes = load_script("processes")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = processes.parallel_env(jobs=2, processes=3, command="python x.py --jobs 2", on_cpu=True)
    assert env[processes.CONCURRENT_ENV] == "2" and env[processes.COMMAND_ENV] == "python x.py --jobs 2"
    assert int(env["OMP_NUM_THREADS"]) >= 1
    py = [sys.executable, "-c"]
    marker = tmp_path / "running"
    # each process fails if another one is running: at most one at a time with jobs=1
    solo = (f"import os,sys,time; p={str(marker)!r}; sys.exit(9) if os.path.exists(p) else open(p,'w').close(); "
            f"time.sleep(0.3); os.remove(p); print('ran'); sys.exit(int(sys.argv[1]))")
    commands = {name: ([*py, solo, code], tmp_path / "logs" / f"{name}.log")
                for name, code in (("a", "0"), ("b", "3"), ("c", "0"))}
    messages, done = [], []

    def on_done(name):  # called as each succeeds, before the next starts: what records a row's results
        done.append((name, sorted(p.name for p in (tmp_path / "logs").iterdir())))

    assert processes.run_processes(commands, 1, env, messages.append, on_done) == ["b"]
    assert done == [("a", ["a.log"]), ("c", ["a.log", "b.log", "c.log"])]  # not for the failed one
    assert all((tmp_path / "logs" / f"{n}.log").read_text().strip() == "ran" for n in "abc")
    assert any("[b] failed" in m and "exit status 3" in m for m in messages)


@pytest.mark.integration  # the runner trains and evaluates rows end to end
def test_a_row_run_on_its_own_keeps_rows_another_process_wrote_meanwhile(script, ptb_dir, tmp_path, monkeypatch):
    # e.g. `--rows bn-vae` evaluating while `--rows vae-free-bits` trains in a second shell
    assert run(script, ptb_dir, tmp_path) == 0
    path = tmp_path / "results" / "ptb.json"
    evaluate = script.evaluate_run

    def other_process_writes_first(row, *a, **kw):
        records = json.loads(path.read_text())
        records[0]["nll_iw"] = 1.25  # lstm-lm's row, rewritten after this command read ptb.json
        path.write_text(json.dumps(records))
        return evaluate(row, *a, **kw)

    monkeypatch.setattr(script, "evaluate_run", other_process_writes_first)
    assert run(script, ptb_dir, tmp_path, rows="bn-vae-seed1234") == 0
    records = {r["row"]: r for r in json.loads(path.read_text())}
    assert records["lstm-lm-seed1234"]["nll_iw"] == 1.25 and set(records) == set(ROWS.split(","))


@pytest.fixture
def checkout(script, tmp_path, monkeypatch):
    """A git checkout with a committed textvae/ and scripts/ (and docs, results, tests beside them), made
    the source the runner imports and runs; returns (its folder, a git command in it)."""
    repo = tmp_path / "checkout"

    def git(*a):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=repo, check=True,
                              capture_output=True, text=True).stdout

    for name, text in {"textvae/model.py": "x = 1\n", "scripts/run_experiments.py": "y = 1\n",
                       "docs/a.md": "a\n", "results/ptb.json": "[]\n", "tests/test_a.py": "z = 1\n",
                       ".gitignore": "*.pyc\n/.venv\n"}.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    monkeypatch.setattr(script, "PACKAGE", repo / "textvae")
    monkeypatch.setattr(script, "SCRIPTS", repo / "scripts")
    return repo, git


def test_only_uncommitted_changes_to_textvae_and_scripts_make_the_source_dirty(script, checkout, tmp_path,
                                                                                 monkeypatch):
    repo, git = checkout
    source = script.source_state()
    assert source.checkout == repo and source.commit == git("rev-parse", "HEAD").strip()
    assert source.uncommitted == [] and source.scripts is None
    # what a run does not execute: the runner's own results, docs, tests, ignored files
    (repo / "results" / "ptb.json").write_text("[{}]\n")
    (repo / "docs" / "a.md").write_text("b\n")
    (repo / "docs" / "new.md").write_text("new\n")
    (repo / "tests" / "test_a.py").write_text("z = 2\n")
    (repo / "textvae" / "model.pyc").write_bytes(b"\0")
    git("add", "tests/test_a.py")
    assert script.source_state() == script.Source(repo, source.commit)
    # what it does: unstaged, staged and untracked changes under textvae/ and scripts/
    (repo / "textvae" / "model.py").write_text("x = 2\n")
    (repo / "scripts" / "run_experiments.py").write_text("y = 2\n")
    git("add", "scripts/run_experiments.py")
    (repo / "textvae" / "latents.py").write_text("w = 1\n")
    source = script.source_state(with_diff=True)
    assert source.uncommitted == ["textvae/latents.py", "textvae/model.py", "scripts/run_experiments.py"]
    assert b"+x = 2" in source.diff and b"+y = 2" in source.diff and b"+w = 1" in source.diff
    assert b"docs" not in source.diff and b"results" not in source.diff and b"tests" not in source.diff
    assert script.source_state().diff is None  # the patch only where it is asked for

    # installed from a wheel (no checkout), or into an ignored .venv of one: no commit to name, not refused
    wheel = tmp_path / "site-packages" / "textvae"
    wheel.mkdir(parents=True)
    monkeypatch.setattr(script, "PACKAGE", wheel)
    assert script.source_state() == script.Source()
    (repo / ".venv" / "textvae").mkdir(parents=True)
    monkeypatch.setattr(script, "PACKAGE", repo / ".venv" / "textvae")
    assert script.source_state() == script.Source()
    script.check_source(script.Source(), allow_dirty=False)


def test_uncommitted_source_is_refused_with_what_to_do(script, checkout, tmp_path, monkeypatch):
    repo, git = checkout
    script.check_source(script.source_state(), allow_dirty=False)  # committed: nothing to say
    for i in range(6):
        (repo / "textvae" / f"m{i}.py").write_text("")
    source = script.source_state()
    with pytest.raises(script.UncommittedSource) as e:
        script.check_source(source, allow_dirty=False)
    msg = str(e.value)
    assert f"the textvae source in {repo} has uncommitted changes (textvae/m0.py, textvae/m1.py, " \
           f"textvae/m2.py, textvae/m3.py and 2 more)" in msg
    assert f"commit {source.commit[:12]}" in msg and "could not be reproduced from its record" in msg
    assert "Commit the changes" in msg and "git worktree add" in msg and "--allow-dirty" in msg
    script.check_source(source, allow_dirty=True)
    # this script from one checkout, textvae from another: no commit or patch describes that
    monkeypatch.setattr(script, "SCRIPTS", tmp_path / "other" / "scripts")
    with pytest.raises(script.UncommittedSource, match=r"this script is in .*other/scripts, but the textvae it "
                       r"imports is .*checkout/textvae.*PYTHONPATH=.*other python scripts/run_experiments.py"):
        script.check_source(script.source_state(), allow_dirty=True)


def test_runs_are_not_trained_from_uncommitted_code_but_listed_and_their_status_shown(script, checkout, ptb_dir,
                                                                                       tmp_path, capsys):
    repo, _ = checkout
    (repo / "textvae" / "model.py").write_text("x = 2\n")
    argv = [str(PTB), "--data-dir", str(ptb_dir), "--rows", "lstm-lm-seed1234,bn-vae-seed1234",
            "--out-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"), "--max-steps", "3", *SMALL]
    assert script.main(argv) == 1
    err = capsys.readouterr().err
    assert f"[lstm-lm-seed1234] not trained: the textvae source in {repo} has uncommitted changes " \
           f"(textvae/model.py)" in err and "pass --allow-dirty" in err
    assert "[bn-vae-seed1234] not trained: the code is not a commit (above)" in err  # said in full once
    assert "rows that failed: lstm-lm, bn-vae" in err
    assert not (tmp_path / "runs" / "ptb" / "lstm-lm-seed1234").exists() and not (tmp_path / "results").exists()
    assert script.main([*argv, "--status"]) == 0 and script.main([*argv, "--list"]) == 0  # they train nothing
    assert "not trained" not in capsys.readouterr().err


def test_the_row_processes_of_jobs_are_allowed_what_the_command_is(script, table):
    t, _ = table
    for extra, allowed in (([], False), (["--allow-dirty"], True)):
        args = script.parse_args([str(PTB), "--jobs", "2", *extra])
        args.only_runs = {}
        assert ("--allow-dirty" in script.row_command(args, t, "bn-vae", Path("/tmp/o"))) == allowed


@pytest.mark.integration  # the runner trains a row from uncommitted code, then evaluates and extends it
def test_allowed_uncommitted_code_is_kept_as_a_patch_on_the_commit_and_named_by_its_hash(script, checkout, ptb_dir,
                                                                                          tmp_path, capsys):
    repo, git = checkout
    (repo / "textvae" / "model.py").write_text("x = 2\n")
    (repo / "scripts" / "new.py").write_text("n = 1\n")
    (repo / "docs" / "a.md").write_text("not source\n")
    argv = [str(PTB), "--data-dir", str(ptb_dir), "--rows", "lstm-lm-seed1234", "--out-dir", str(tmp_path / "results"),
            "--runs-dir", str(tmp_path / "runs"), "--iw-samples", "2", "--eval-sentences", "4", *SMALL]
    assert script.main([*argv, "--max-steps", "3", "--allow-dirty"]) == 0
    run_dir = tmp_path / "runs" / "ptb" / "lstm-lm-seed1234"
    (record,) = json.loads((tmp_path / "results" / "ptb.json").read_text())
    (sitting,) = record["sittings"]
    patch = (run_dir / sitting["dirty_diff"]).read_bytes()
    assert sitting["dirty_diff"] == f"source-{sitting['dirty_diff_sha256'][:12]}.diff"
    assert hashlib.sha256(patch).hexdigest() == sitting["dirty_diff_sha256"]
    assert record["commit"] == sitting["commit"] == git("rev-parse", "HEAD").strip()
    assert record["commit_dirty"] is True and sitting["dirty"] is True
    assert f"kept as {run_dir / sitting['dirty_diff']}, a patch on commit" in capsys.readouterr().err
    # the record's commit and patch give back the code that trained: textvae/ and scripts/, nothing else
    again = tmp_path / "again"
    git("worktree", "add", "-q", str(again), record["commit"])
    subprocess.run(["git", "apply", str(run_dir / sitting["dirty_diff"])], cwd=again, check=True)
    for name in ("textvae/model.py", "scripts/new.py"):
        assert (again / name).read_text() == (repo / name).read_text()
    assert (again / "docs" / "a.md").read_text() == "a\n"

    # without the flag: a trained run is still evaluated, but not trained on (--extend)
    assert script.main([*argv, "--max-steps", "3", "--iw-samples", "3"]) == 0
    assert json.loads((tmp_path / "results" / "ptb.json").read_text())[0]["iw_samples"] == 3
    state = (run_dir / "reproduce.json").read_text()
    assert script.main([*argv, "--max-steps", "5", "--extend"]) == 1
    assert "[lstm-lm-seed1234] not trained: the textvae source" in capsys.readouterr().err
    assert (run_dir / "reproduce.json").read_text() == state  # untouched, still finished


def test_rows_finishing_at_once_keep_each_others_records(script, tmp_path):
    """Processes run side by side each read the table's json, add their record and write it back (the
    runner's table_lock around run_row's merge); writers that overlap must neither fail nor drop a record."""
    import threading

    path, errors = tmp_path / "results" / "t.json", []

    def finish_rows(worker):
        try:
            for i in range(15):
                with script.table_lock(path.parent, "t"):
                    records = script.load_records(path)
                    time.sleep(0.001)  # another writer would come in here without the lock
                    records[f"w{worker}-{i}"] = {"row": f"w{worker}-{i}"}
                    script.write_json(path, list(records.values()))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=finish_rows, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(script.load_records(path)) == 6 * 15
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_a_run_another_process_is_training_is_left_to_it(script, ptb_dir, tmp_path, capsys):
    """`--missing` beside a running chain lists the runs in progress too: the runner must not train one of
    them a second time into the same directory."""
    run_dir = tmp_path / "runs" / "ptb" / "bn-vae-seed1234"
    with script.run_lock(run_dir):  # as the process training it holds it
        assert run(script, ptb_dir, tmp_path, rows="bn-vae-seed1234") == script.BUSY_EXIT
    err = capsys.readouterr().err
    assert f"[bn-vae-seed1234] another process is training or evaluating {run_dir}" in err
    assert "left to another process that is training or evaluating them: bn-vae-seed1234 (--status" in err
    assert "failed" not in err  # nothing to fix: the command is to be run again later
    assert not run_dir.exists() and not (tmp_path / "results" / "ptb.json").exists()


@pytest.mark.integration  # rows in subprocesses
def test_jobs_with_extend_give_a_run_stopped_at_its_budget_one_sitting_not_two(script, ptb_dir, tmp_path, capsys):
    # each row process trains its runs; the parent only records them, even under --extend
    assert script.main([str(PTB), "--data-dir", str(ptb_dir), "--rows", "lstm-lm-seed1234,bn-vae-seed1234",
                        "--jobs", "2", "--out-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
                        "--max-minutes", "1e-6", "--extend", "--iw-samples", "2", "--eval-sentences", "4",
                        *SMALL, *ANY_TREE]) == 0
    for r in json.loads((tmp_path / "results" / "ptb.json").read_text()):
        assert r["stopped"] == "time" and len(r["sittings"]) == 1, r["row"]
    assert "training on from its newest checkpoint" not in capsys.readouterr().err


def test_a_table_json_that_does_not_read_is_an_error_not_an_empty_table(script, tmp_path):
    assert script.load_records(tmp_path / "none.json") == {}
    path = tmp_path / "ptb.json"
    path.write_text('[{"row": "lstm-lm-seed1"}, {"row": "vae')  # cut short, or a merge conflict
    with pytest.raises(TextVAEError, match=r"ptb.json does not read as the table's json .*restore it"):
        script.load_records(path)


@pytest.mark.integration  # the runner trains and evaluates rows end to end
def test_a_new_yaml_row_is_run_and_rendered_with_no_python_change(script, report, ptb_dir, tmp_path, capsys):
    folder = tmp_path / "experiments" / "ptb"
    shutil.copytree(PTB, folder)
    (folder / "beta-vae-0.2.yaml").write_text(
        "name: beta-vae-0.2\norder: 96\nmethod: beta-VAE (beta 0.2)\n"
        "paper: Higgins et al. (2017), beta-VAE, in the setting of He et al. (2019), Table 1\n"
        "overrides: [objective.kl_schedule=constant, objective.kl_weight=0.2]\nseeds: [7]\n"
        "reference: {ppl: 999, source: a made-up source for this test, status: none, differs: everything}\n")
    assert script.main([str(folder), "--list"]) == 0
    assert "beta-vae-0.2" in capsys.readouterr().out
    assert run(script, ptb_dir, tmp_path, rows="beta-vae-0.2", experiments=folder) == 0
    (record,) = json.loads((tmp_path / "results" / "ptb.json").read_text())
    assert record["row"] == "beta-vae-0.2" and record["seed"] == 7
    assert record["config"]["objective"]["kl_weight"] == 0.2 and record["config"]["train"]["seed"] == 7
    md = (tmp_path / "results" / "ptb.md").read_text()
    line = next(x for x in md[md.index("Every run:"):].splitlines() if x.startswith("| beta-vae-0.2 ◊ |"))
    assert "beta-VAE (beta 0.2)" in line and "PPL 999 (a made-up source for this test)" in line
    runs = md[md.index("Every run:"):]
    assert runs.index("| vae-plain |") < runs.index("| beta-vae-0.2 ◊ |")  # its order: after vae-plain
    # the report step alone renders the same page from the json
    (tmp_path / "results" / "ptb.md").unlink()
    assert report.main([str(folder), "--results", str(tmp_path / "results")]) == 0
    assert (tmp_path / "results" / "ptb.md").read_text() == md


@pytest.mark.integration  # the runner trains and evaluates rows end to end
def test_several_seeds_are_one_run_each(script, ptb_dir, tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "table.yaml").write_text("table: tiny\ntitle: A tiny table\npreset: ptb-li2019\n"
                                       "evaluation: {iw_samples: 2, samples: 1, homotopy_steps: 0, "
                                       "diversity_samples: 7}\n")
    (folder / "lm.yaml").write_text("name: lm\nmethod: LM\npaper: none\noverrides: [model.latent_dim=0]\n"
                                    "seeds: [1, 2]\n")
    assert script.main([str(folder), "--data-dir", str(ptb_dir), "--out-dir", str(tmp_path / "results"),
                        "--runs-dir", str(tmp_path / "runs"), "--max-steps", "2", "--eval-sentences", "4",
                        *SMALL, *ANY_TREE]) == 0
    records = json.loads((tmp_path / "results" / "tiny.json").read_text())
    assert [(r["row"], r["experiment"], r["seed"]) for r in records] == [("lm-seed1", "lm", 1), ("lm-seed2", "lm", 2)]
    assert records[0]["iw_samples"] == 2 and len(records[0]["samples"]) == 1
    assert records[0]["n_samples"] == 7 and 0 <= records[0]["self_bleu"] <= 100  # diversity of 7 prior samples
    assert records[0]["train_tokens_per_s"] > 0  # the median of the run's training-speed records
    assert records[0]["nll_iw"] != records[1]["nll_iw"]  # two seeds, two models
    assert (tmp_path / "runs" / "tiny" / "lm-seed2" / "config.json").is_file()


@pytest.mark.integration
def test_a_row_given_more_seeds_keeps_its_run_and_trains_only_the_new_seeds(script, ptb_dir, tmp_path):
    folder, out, runs = tmp_path / "t", tmp_path / "results", tmp_path / "runs"
    folder.mkdir()
    (folder / "table.yaml").write_text("table: tiny\ntitle: A tiny table\npreset: ptb-li2019\n"
                                       "evaluation: {iw_samples: 2, samples: 1, homotopy_steps: 0}\n")
    row = "name: lm\nmethod: LM\npaper: none\noverrides: [model.latent_dim=0]\nseeds: [{}]\n"
    common = ["--data-dir", str(ptb_dir), "--out-dir", str(out), "--runs-dir", str(runs), "--max-steps", "2",
              "--eval-sentences", "4", *SMALL, *ANY_TREE]
    (folder / "lm.yaml").write_text(row.format("1"))
    assert script.main([str(folder), *common]) == 0
    first = json.loads((out / "tiny.json").read_text())[0]
    assert first["row"] == "lm" and first["seed"] == 1

    (folder / "lm.yaml").write_text(row.format("1, 2, 3"))
    assert script.main([str(folder), "--rows", "lm-seed2", *common]) == 0  # one run of the row, by its name
    records = {r["row"]: r for r in json.loads((out / "tiny.json").read_text())}
    assert set(records) == {"lm-seed1", "lm-seed2"}  # the one-seed record is seed 1's run now
    assert records["lm-seed1"]["nll_iw"] == first["nll_iw"] and not (runs / "tiny" / "lm-seed3").exists()
    assert "| lm-seed3 | LM | not run yet |" in (out / "tiny.md").read_text()

    assert script.main([str(folder), "--rows", "lm-seed1", *common]) == 0
    assert not (runs / "tiny" / "lm").exists()  # moved, not trained again: still one sitting
    assert len(json.loads((runs / "tiny" / "lm-seed1" / "reproduce.json").read_text())["sittings"]) == 1
    assert script.main([str(folder), "--rows", "lm-seed9", *common]) == 2  # names the runs it knows


def test_a_run_of_a_row_that_had_no_seeds_is_named_after_the_seed_its_config_trained(report, table):
    # lstm-lm lists seeds 1234, 1, 2; its run from when it listed none trained the preset's seed, 1234:
    # that run is lstm-lm-seed1234, not a second record of the same model beside it
    _, rows = table
    old = {"row": "lstm-lm", "experiment": "lstm-lm", "seed": None, "config": {"train": {"seed": 1234}}}
    assert [(r["row"], r["seed"]) for r in report.seeded_names(rows, [old])] == [("lstm-lm-seed1234", 1234)]
    other = {**old, "config": {"train": {"seed": 99}}}  # a seed the row no longer lists: left as it is
    assert report.seeded_names(rows, [other]) == [other]


def test_the_page_names_every_sittings_commit_and_which_ran_with_uncommitted_changes(report, table):
    t, rows = table
    base = {"method": "m", "paper": "p", "overrides": list(t.recipe), "nll_iw": 1.0, "ppl_iw": 2.0, "kl": 0.0,
            "mi_full": 0.0, "au": 0, "elbo": 1.0, "ppl_elbo": 2.0, "epochs": 1, "stopped": "early",
            "train_seconds": 1.0, "device": "CPU", "samples": []}
    records = [{**base, "row": "bn-vae", "commit": "b" * 40, "commit_dirty": True,
                "sittings": [{"commit": "a" * 40, "dirty": True, "seconds": 1.0, "device": "CPU"},
                             {"commit": "b" * 40, "dirty": False, "seconds": 1.0, "device": "CPU"}]},
               {**base, "row": "vae-plain", "commit": "c" * 40, "commit_dirty": False}]  # no sittings kept
    line = next(x for x in report.render(t, rows, records).splitlines() if x.startswith("Commits"))
    assert line == ("Commits of the training sittings: aaaaaaaaaaaa (with uncommitted changes: bn-vae), "
                    "bbbbbbbbbbbb, cccccccccccc.")


def test_experiment_files_are_checked(tmp_path):
    bad = tmp_path / "row.yaml"
    bad.write_text("name: x\nmethod: m\npaper: p\noverides: [model.latent_dim=0]\n")  # misspelt key
    with pytest.raises(ConfigError, match="unknown key 'overides'"):
        load_experiment(bad)
    bad.write_text("name: x\nmethod: m\n")
    with pytest.raises(ConfigError, match="missing key 'paper'"):
        load_experiment(bad)
    bad.write_text("name: x\nmethod: m\npaper: p\nreference: {ppl: 116}\n")
    with pytest.raises(ConfigError, match="reference needs a source"):
        load_experiment(bad)
    bad.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_experiment(bad)
    with pytest.raises(ConfigError, match="has no table.yaml"):
        load_table(tmp_path)


def test_every_ptb_row_file_builds_its_config(table):
    t, rows = table
    assert [r.name for r in rows][:9] == ["lstm-lm", "vae-bowman", "vae-inputless", "vae-cyclical", "vae-free-bits",
                                          "vae-aggressive", "vae-pretrain-fb", "bn-vae", "vae-plain"]
    for row in rows:
        cfg = load_config(row.preset or t.preset, overrides=row_overrides(t, row, 1234, [], []))
        assert cfg.train.optimizer == "adam" and cfg.train.seed == 1234
    beta = next(r for r in rows if r.name == "beta-vae-0.4")
    cfg = load_config(t.preset, overrides=row_overrides(t, beta, 1234, [], []))
    assert cfg.objective.kl_weight == 0.4 and cfg.objective.kl_schedule == "constant"


def test_the_old_script_name_still_runs_with_a_deprecation_message(capsys):
    old = load_script("reproduce_ptb")
    assert old.main(["--list"]) == 0
    out = capsys.readouterr()
    assert "deprecated" in out.err and "run_experiments.py experiments/ptb --list" in out.err
    assert "vae-free-bits" in out.out


def test_seed_summary_and_comparison_beyond_two_pooled_sd(report, tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "table.yaml").write_text("table: t\ntitle: T\nsummary: [mig, kl]\n"
                                       "compare: [{metric: mig, baseline: a, better: higher}]\n")
    for name in "abc":
        (folder / f"{name}.yaml").write_text(f"name: {name}\nmethod: {name.upper()}\npaper: p\nseeds: [1, 2, 3]\n")
    t, rows = load_table(folder)

    def record(row, seed, mig):
        return {"row": f"{row}-seed{seed}", "experiment": row, "method": row, "paper": "p", "mig": mig, "kl": 5.0, "nll_iw": 1.0,
                "ppl_iw": 2.0, "mi_full": 0.0, "au": 3, "elbo": 1.0, "ppl_elbo": 2.0, "bleu_rec": None, "epochs": 1,
                "stopped": "early", "train_seconds": 1.0, "device": "CPU", "samples": [], "overrides": []}

    records = ([record("a", s, m) for s, m in zip((1, 2, 3), (0.10, 0.12, 0.11))]
               + [record("b", s, m) for s, m in zip((1, 2, 3), (0.30, 0.31, 0.29))]  # far above a
               + [record("c", s, m) for s, m in zip((1, 2, 3), (0.09, 0.13, 0.12))])  # within a's noise
    assert report.mean_sd([0.10, 0.12, 0.11]) == pytest.approx((0.11, 0.01))
    assert report.pooled_sd([0.10, 0.12, 0.11], [0.30, 0.31, 0.29]) == pytest.approx(0.01)
    md = report.render(t, rows, records)
    assert "| a | A | 3 | 0.110 ± 0.010 | 5.00 ± 0.00 |" in md
    one_seed = report.render(t, rows, records[:1])  # one seed has no sd: no "± 0.000"
    assert "| a | A | 1 | 0.100 | 5.00 |" in one_seed
    records[1]["kl"] = None  # a metric some seeds lack says over how many it is
    assert "| a | A | 3 | 0.110 ± 0.010 | 5.00 ± 0.00 (2 of 3 seeds) |" in report.render(t, rows, records)
    records[1]["kl"] = 5.0
    assert "b +0.190 (pooled sd 0.010): **better** (beyond 2 pooled sd)" in md
    assert "c +0.003 (pooled sd 0.016): within 2 pooled sd" in md
    assert md.index("Mean ± sd") < md.index("Every run:")


def test_the_docs_page_of_a_table_gets_its_summary_between_the_markers_and_nothing_else(report, tmp_path):
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "table.yaml").write_text("table: t\ntitle: T\nsummary: [kl]\ndocs: docs/t.md\n")
    (folder / "a.yaml").write_text("name: a\nmethod: A\npaper: p\n")
    t, rows = load_table(folder)
    page = tmp_path / "docs" / "t.md"
    page.parent.mkdir()
    page.write_text("# T\n\nintro\n\nafter\n")
    records = [{"row": "a", "experiment": "a", "kl": 7.5}]
    with pytest.raises(TextVAEError, match=r"(?s)t\.md lacks the lines where the t table's summary goes.*"
                                           r"<!-- from here to the end marker"):
        report.write_docs(t, rows, records, repo=tmp_path)
    begin, end = report.docs_markers(t)
    page.write_text(f"# T\n\nintro\n\n{begin}\nstale | 1.00 |\n{end}\n\nafter\n")
    assert report.write_docs(t, rows, records, repo=tmp_path) == page
    text = page.read_text()
    assert text.startswith(f"# T\n\nintro\n\n{begin}\n\nMean ± sd") and text.endswith(f"{end}\n\nafter\n")
    assert "| a | A | 1 | 7.50 |" in text and "stale" not in text and "[results/t.md](../results/t.md)" in text
    report.write_docs(t, rows, records, repo=tmp_path)
    assert page.read_text() == text  # written again: the same page


def test_a_seed_set_for_every_run_of_a_seeded_row_is_refused(script, tmp_path, capsys):
    # three runs named -seed1234, -seed1, -seed2 that all trained seed 5
    with pytest.raises(SystemExit):
        script.parse_args([str(PTB), "--set", "train.seed=5"])
    assert "would give every run of a row that one seed" in capsys.readouterr().err
    (tmp_path / "a.yaml").write_text("name: a\nmethod: A\npaper: p\nseeds: [1, 2]\noverrides: [train.seed=7]\n")
    with pytest.raises(ConfigError, match=r"a\.yaml: overrides set train.seed, which would replace every seed"):
        load_experiment(tmp_path / "a.yaml")


def test_to_early_stop_is_true_or_false(tmp_path):
    (tmp_path / "table.yaml").write_text("table: t\ntitle: T\nto_early_stop: yes please\n")
    with pytest.raises(ConfigError, match="to_early_stop must be true or false, got 'yes please'"):
        load_table(tmp_path)
    assert load_table(PTB)[0].to_early_stop is True  # the PTB table's runs train to their early stop (#24)


def test_compare_entries_are_checked(tmp_path):
    (tmp_path / "table.yaml").write_text("table: t\ntitle: T\ncompare: [{metric: mig, baseline: a, better: up}]\n")
    with pytest.raises(ConfigError, match="better: higher or lower"):
        load_table(tmp_path)
    (tmp_path / "a.yaml").write_text("name: a\nmethod: A\npaper: p\n")
    (tmp_path / "table.yaml").write_text("table: t\ntitle: T\n"
                                         "compare: [{metric: mig, baseline: a, better: higher, rows: [b]}]\n")
    with pytest.raises(ConfigError, match="compare names row.s. b that no file"):
        load_table(tmp_path)


def test_a_compare_entry_with_rows_compares_only_those(report, tmp_path):
    # a sweep pairs each beta-TCVAE row with the VAE trained under its own recipe change
    (tmp_path / "table.yaml").write_text("table: t\ntitle: T\nsummary: [mig]\ncompare:\n"
                                         "  - {metric: mig, baseline: a, better: higher, rows: [b]}\n"
                                         "  - {metric: mig, baseline: c, better: higher, rows: [d]}\n")
    for name in "abcd":
        (tmp_path / f"{name}.yaml").write_text(f"name: {name}\nmethod: {name.upper()}\npaper: p\nseeds: [1, 2]\n")
    t, rows = load_table(tmp_path)
    records = [{"row": f"{r}-seed{s}", "experiment": r, "method": r, "paper": "p", "mig": m + 0.01 * s, "kl": 5.0,
                "nll_iw": 1.0, "ppl_iw": 2.0, "mi_full": 0.0, "au": 3, "elbo": 1.0, "ppl_elbo": 2.0, "bleu_rec": None,
                "epochs": 1, "stopped": "early", "train_seconds": 1.0, "device": "CPU", "samples": [], "overrides": []}
               for r, m in zip("abcd", (0.1, 0.2, 0.3, 0.4)) for s in (1, 2)]
    lines = [line for line in report.compare_section(t, rows, records) if line]
    assert len(lines) == 2
    assert "against a" in lines[0] and "b +0.100" in lines[0] and "c +" not in lines[0] and "d +" not in lines[0]
    assert "against c" in lines[1] and "d +0.100" in lines[1] and "a " not in lines[1] and "b +" not in lines[1]


@pytest.mark.integration  # the runner trains and evaluates a row end to end
def test_a_disentanglement_row_records_the_decomposition_and_mig(script, tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "table.yaml").write_text(
        "table: d\ntitle: D\npreset: tiny\nsummary: [mig, decomposition_tc]\n"
        "evaluation: {iw_samples: 2, samples: 1, homotopy_steps: 0, disentanglement: true}\n")
    (folder / "tc.yaml").write_text("name: tc\nmethod: TC\npaper: p\noverrides: [objective.tc_beta=4]\n")
    assert script.main([str(folder), "--out-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
                        "--max-steps", "3", "--set", "train.progress=false", *ANY_TREE]) == 0
    (r,) = json.loads((tmp_path / "results" / "d.json").read_text())
    assert set(r["mig_per_factor"]) == {"topic", "tense", "sentiment", "length"} and 0 <= r["mig"] <= 1
    terms = r["decomposition_mi"] + r["decomposition_tc"] + r["decomposition_dimwise_kl"]
    assert terms == pytest.approx(r["decomposition_kl"], abs=0.5 + 0.2 * r["decomposition_kl"])
    assert "| tc | TC | 1 |" in (tmp_path / "results" / "d.md").read_text()  # its budget is the table's


@pytest.mark.integration  # the runner trains a row, is stopped while evaluating it, then goes on
def test_a_signal_while_the_runner_evaluates_saves_the_pass_and_exits_130(script, tmp_path, capsys, monkeypatch):
    import signal

    import textvae.metrics as metrics

    folder = tmp_path / "e"
    folder.mkdir()
    (folder / "table.yaml").write_text("table: e\ntitle: E\npreset: tiny\n"
                                       "evaluation: {iw_samples: 2, samples: 1, homotopy_steps: 0}\n")
    (folder / "vae.yaml").write_text("name: vae\nmethod: VAE\npaper: p\n")
    argv = [str(folder), "--out-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
            "--max-steps", "3", "--set", "train.progress=false", *ANY_TREE]
    original = metrics.iw_log_likelihood
    monkeypatch.setattr(metrics, "iw_log_likelihood", signal_on_call(original, 1))  # the split is one batch
    assert script.main(argv) == 130
    err = capsys.readouterr().err
    partial = tmp_path / "runs" / "e" / "vae" / script.PARTIAL_EVALUATION
    assert "[vae] interrupted (SIGTERM received during the evaluation: 0 of 1 batches saved in " in err, err
    assert f"saved in {partial}; run the same command again to continue from there); run the same " in err
    assert partial.exists() and not (tmp_path / "results" / "e.json").exists()
    monkeypatch.setattr(metrics, "iw_log_likelihood", original)
    # again, now stopped once the pass is done (its saved state removed), while the samples are drawn:
    # the numbers are written to the run's state first
    from textvae.model import TextVAE

    sample = TextVAE.sample
    monkeypatch.setattr(TextVAE, "sample", signal_on_call(sample, 1, signal.SIGINT))
    assert script.main(argv) == 130
    err = capsys.readouterr().err
    assert "continuing a saved evaluation after 0 batches" in err and not partial.exists()
    assert "[vae] interrupted (SIGINT received during the evaluation of vae)" in err, err
    assert json.loads((partial.parent / script.STATE).read_text())["evaluation"]["nll_iw"] > 0
    monkeypatch.setattr(TextVAE, "sample", sample)
    assert script.main(argv) == 0
    assert "evaluating on" not in capsys.readouterr().err  # the numbers were kept
    (record,) = json.loads((tmp_path / "results" / "e.json").read_text())
    assert math.isfinite(record["nll_iw"])


def test_missing_picks_the_runs_without_a_current_record(script, table, tmp_path):
    t, rows = table
    out = tmp_path / "results"
    out.mkdir()
    recorded = {"sittings": [{"command": "c", "seconds": 1.0}], "eval_command": "c"}
    current = {"overrides": list(t.recipe), **recorded}
    records = [{"row": "lstm-lm-seed1234", **current}, {"row": "lstm-lm-seed1", **current},
               {"row": "bn-vae-seed1234", **current},
               {"row": "vae-free-bits-seed1", **current, "epochs": 3, "stopped": "time"},  # ◊ : a budget stop
               {"row": "vae-free-bits-seed2", "experiment": "vae-free-bits", **current, "iw_samples": 5},  # ◊ : evaluated with another k
               {"row": "vae-plain", **current, "overrides": list(t.recipe[:-1])},  # † : an earlier recipe
               {"row": "vae-cyclical", **current, "eval_command": None},  # its commands were not recorded
               {"row": "vae-bowman", **current, "sittings": [{"command": None, "seconds": 1.0},
                                                             {"command": "c", "seconds": 1.0}]}]  # one was not
    (out / "ptb.json").write_text(json.dumps(records))
    args = script.parse_args([str(PTB), "--missing", "--out-dir", str(out)])
    picked = {row.name: sorted(args.only_runs[row.name]) for row in script.select(args)[0][2]}
    assert picked["lstm-lm"] == ["lstm-lm-seed2"] and picked["bn-vae"] == ["bn-vae-seed1", "bn-vae-seed2"]
    assert picked["vae-plain"] == ["vae-plain"]  # its record is †
    assert picked["vae-cyclical"] == ["vae-cyclical"] and picked["vae-bowman"] == ["vae-bowman"]  # not on record
    assert picked["vae-free-bits"] == ["vae-free-bits-seed1", "vae-free-bits-seed1234", "vae-free-bits-seed2"]
    # with --rows: what is missing of what it names; a row with nothing missing is not run
    args = script.parse_args([str(PTB), "--missing", "--out-dir", str(out), "--rows", "lstm-lm,bn-vae-seed1234"])
    chosen = script.select(args)[0][2]
    assert [row.name for row in chosen] == ["lstm-lm"] and args.only_runs["lstm-lm"] == {"lstm-lm-seed2"}
    command = script.row_command(args, t, "lstm-lm", tmp_path)
    assert command[command.index("--rows") + 1] == "lstm-lm-seed2"  # what --jobs runs for that row


def test_a_ratio_compare_entry_gives_the_cost_of_a_row_as_a_ratio_of_times(report, tmp_path):
    # the aggressive row's total training time against the plain VAE's (#24)
    (tmp_path / "table.yaml").write_text("table: t\ntitle: T\ncompare:\n  - {metric: train_seconds, baseline: a, "
                                         "better: lower, rows: [b], ratio: true}\n")
    for name in "ab":
        (tmp_path / f"{name}.yaml").write_text(f"name: {name}\nmethod: {name.upper()}\npaper: p\n")
    t, rows = load_table(tmp_path)
    records = [{"row": r, "experiment": r, "method": r, "paper": "p", "train_seconds": s}
               for r, s in (("a", 7200.0), ("b", 10800.0))]
    (line,) = [line for line in report.compare_section(t, rows, records) if line]
    assert "ratio of the means over seeds" in line
    assert ("b 1.50x (3h 00m against 2h 00m; machine load during training: b not recorded, a not recorded): "
            "one seed: no verdict") in line
    records[0].update(train_load=1.96, cpu_cores=2)  # a ratio of times means little under different loads
    (line,) = [line for line in report.compare_section(t, rows, records) if line]
    assert "b 1.50x (3h 00m against 2h 00m; machine load during training: b not recorded, a load 2.0 on 2 cores)" in line
    records.append({**records[0], "row": "a-seed2", "train_load": None})  # one of a's runs was not measured
    (line,) = [line for line in report.compare_section(t, rows, records) if line]
    assert "a not recorded for 1 of 2 runs" in line
    (tmp_path / "table.yaml").write_text("table: t\ntitle: T\n"
                                         "compare: [{metric: train_seconds, baseline: a, better: lower, ratio: 2}]\n")
    with pytest.raises(ConfigError, match="ratio: true or false"):
        load_table(tmp_path)


def test_each_runs_collapse_strategy_phase_is_listed_under_the_table(report):
    phase = {"phase": "aggressive", "steps": 528, "ended": True, "mi_checks": 8, "mi_first": 2.227,
             "mi_peak": 3.529, "mi_last": 3.527, "encoder_updates_per_step": 40.04}
    records = [{"row": "a", "steps": 36848, "phases": [phase]}, {"row": "b", "steps": 10, "phases": []},
               {"row": "c", "steps": 10}]  # a record from before phases were kept
    assert report.phases_section(records) == [
        "", "Collapse-strategy phases, read from each run's metrics.jsonl:", "",
        "- a: aggressive training for the first 528 of 36,848 steps (1.4%), 40.0 encoder updates per step; "
        "validation MI 2.227 at the first of 8 checks, peak 3.529, switched off when it fell to 3.527."]
    assert report.phases_section(records[1:]) == []


def test_a_sitting_is_on_record_while_it_trains_so_a_killed_one_still_counts(script, tmp_path, monkeypatch):
    loads = iter([0.0] + [2.0] * 1000)  # the machine's 1-minute load average at each rewrite
    monkeypatch.setattr(script.os, "getloadavg", lambda: (next(loads), 0.0, 0.0), raising=False)
    run = tmp_path / "run"
    run.mkdir()
    earlier = {"started": "2026-01-01T00:00:00+00:00", "seconds": 5.0, "completed": True, "command": "first"}
    script.write_json(run / script.STATE, {"finished": False, "sittings": [earlier]})
    sitting = {"started": "2026-01-02T00:00:00+00:00", "seconds": 0.0, "completed": False, "command": "second"}
    with script.SittingRecord(run, sitting, every=0.02) as record:
        time.sleep(0.2)
        # what a SIGKILL here would leave behind: the sitting, its command and most of its seconds
        seen = script.read_state(run)["sittings"]
        assert [s["command"] for s in seen] == ["first", "second"]
        assert seen[1]["seconds"] > 0.05 and not seen[1]["completed"]
        record.completed()
    final = script.read_state(run)["sittings"]
    assert final[0] == earlier and len(final) == 2  # rewritten in place, not appended once per beat
    assert final[1]["completed"] and final[1]["seconds"] >= seen[1]["seconds"]
    # the mean of the load averages read so far (0 first, then 2s), not the last one read
    assert 1.0 <= final[1]["load"] < 2.0 and final[1]["cpu_cores"] == os.cpu_count()


def test_a_runs_load_is_the_time_weighted_mean_of_its_sittings_and_shown_with_its_device(script, report):
    sittings = [{"seconds": 3600.0, "load": 1.0, "cpu_cores": 2}, {"seconds": 1200.0, "load": 2.0, "cpu_cores": 2},
                {"seconds": 600.0}]  # recorded before the load was: left out, not counted as 0
    assert script.training_load(sittings) == {"train_load": 1.25, "cpu_cores": 2, "train_load_share": 0.889}
    assert script.training_load([{"seconds": 60.0}]) == {}
    record = {"device": "CPU AMD EPYC, 1 thread", "concurrent_rows": 1, "train_load": 1.96, "cpu_cores": 2,
              "train_load_share": 1.0}
    assert report.device(record) == "CPU AMD EPYC, 1 thread, load 2.0 on 2 cores"
    record["train_load_share"] = 0.4  # the run's first sittings came before the load was recorded
    assert report.device(record) == "CPU AMD EPYC, 1 thread, load 2.0 on 2 cores over 40% of its training"
    assert report.device({"device": "CPU AMD EPYC, 2 threads", "concurrent_rows": 2}) == "CPU AMD EPYC, 2 threads, 2 rows at once"


def test_a_sitting_whose_time_was_estimated_afterwards_says_so(report):
    sittings = [{"command": "a", "device": "CPU", "seconds": 60.0, "completed": False},
                {"command": "b", "device": "CPU", "seconds": 5596.0, "completed": False, "estimated": "from its logs"}]
    (line,) = [x for x in report.commands_section([{"row": "r", "sittings": sittings, "eval_command": "c"}])
               if x.startswith("- r")]
    assert "`a` (CPU, 1m, interrupted)" in line
    assert "`b` (CPU, ≈1h 33m, interrupted, time estimated from its logs)" in line


def test_status_says_where_each_run_stands(script, table, tmp_path):
    import torch

    from textvae.checkpoint import STATE_JSON, STATE_PT
    from textvae.eval_checkpoint import PassCheckpoint, PassState

    t, _ = table
    assert script.run_status(tmp_path / "nothing") == "not started"
    record = {"row": "x", "overrides": list(t.recipe), "ppl_iw": 99.5, "stopped": "early"}
    assert script.run_status(tmp_path / "nothing", record, t).startswith("recorded in ptb.json (its run directory")
    old = {**record, "overrides": list(t.recipe[:-1])}
    assert "†, trained under an earlier recipe" in script.run_status(tmp_path / "nothing", old, t)
    assert script.run_status(tmp_path / "nothing", record, t).endswith(
        "stopped: early; commands not recorded (--missing trains it again)")
    on_record = {**record, "sittings": [{"command": "c", "seconds": 1.0}], "eval_command": "c"}
    assert script.run_status(tmp_path / "nothing", on_record, t).endswith("stopped: early")

    run = tmp_path / "run"
    step = run / "checkpoints" / "step-00000658"
    step.mkdir(parents=True)
    (step / STATE_JSON).write_text("{}")
    (step / STATE_PT).write_bytes(b"")
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "valid", "step": 658, "epoch": 0, "elbo": 142.3,
                                                   "lr": 0.002}) + "\n" + json.dumps({"kind": "train", "step": 700}))
    sitting = {"started": "s", "seconds": 3600.0, "command": "c", "device": "CPU"}
    script.write_json(run / script.STATE, {"finished": False, "sittings": [sitting]})
    assert script.run_status(run) == ("training: newest checkpoint step-00000658; last validation at step 658 "
                                      "(epoch 0): elbo 142.30, lr 0.002; 1h 00m in 1 sitting(s)")

    (run / "metrics.jsonl").write_text(json.dumps({"kind": "valid", "step": 658}) + "\n")  # an old record, no lr
    assert "last validation at step 658 (epoch ?): elbo" in script.run_status(run) and "lr ?" in script.run_status(run)
    script.write_json(run / script.STATE, {"finished": True, "sittings": [sitting], "train_result": {}})
    assert script.run_status(run).endswith("evaluation not started")
    state = PassState.fresh(4, 2)
    state.done, state.batches, state.seconds = 3, 59, 120.0
    PassCheckpoint(run / script.PARTIAL_EVALUATION, {"k": 1}).save(state, torch.Generator())
    assert script.run_status(run) == "trained (1h 00m in 1 sitting(s)); evaluating: 3 of 59 batches saved after 2m"

    script.write_json(run / script.STATE, {"finished": True, "sittings": [sitting], "evaluation": {"ppl_iw": 99.1,
                      "kl": 7.6, "au": 32}, "train_result": {"stopped": "early", "epoch": 31}})
    assert script.run_status(run) == ("done: PPL (IW) 99.10, KL 7.60, AU 32; stopped: early at epoch 31; "
                                      "trained 1h 00m in 1 sitting(s)")


def test_the_page_is_rendered_by_the_report_code_on_disk_when_the_run_ends(script, table, tmp_path, monkeypatch):
    # a runner lasts hours; report.py may change meanwhile, and the page must be what it renders now
    copy = tmp_path / "scripts" / "here" / "report.py"
    copy.parent.mkdir(parents=True)
    copy.write_text((REPO / "scripts" / "report.py").read_text(encoding="utf-8"), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("report", copy)
    started_with = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(started_with)
    monkeypatch.setitem(sys.modules, "report", started_with)
    monkeypatch.syspath_prepend(str(copy.parent))  # where a reload finds "report" first, as scripts/ is for the runner
    monkeypatch.setattr(script, "report", started_with)
    t, rows = table
    record = {"row": "lstm-lm-seed1234", "experiment": "lstm-lm", "seed": 1234, "method": "LSTM-LM", "paper": "p",
              "overrides": list(t.recipe), "nll_iw": 101.0, "ppl_iw": 100.5, "kl": 0.0, "mi_full": 0.0, "au": 0,
              "elbo": 101.0, "ppl_elbo": 100.5, "epochs": 3, "stopped": "early", "train_seconds": 1.0,
              "device": "CPU", "samples": []}
    out = tmp_path / "results"
    out.mkdir()
    copy.write_text(copy.read_text(encoding="utf-8").replace(
        'def render(table, rows, records', 'EDITED = "rendered by the edited report.py"\n\n\ndef render(table, rows, records')
        .replace('    return "\\n".join(', '    return EDITED + "\\n" + "\\n".join(', 1), encoding="utf-8")
    script.write_outputs(out, t, rows, {record["row"]: record})
    assert (out / "ptb.md").read_text(encoding="utf-8").startswith("rendered by the edited report.py")
    # an edit in progress that does not load: the loaded code renders, nothing is lost
    copy.write_text("def render(:\n", encoding="utf-8")
    record["nll_iw"] = 100.5
    script.write_outputs(out, t, rows, {record["row"]: record})
    assert json.loads((out / "ptb.json").read_text())[0]["nll_iw"] == 100.5
    assert (out / "ptb.md").read_text(encoding="utf-8").startswith("rendered by the edited report.py")
