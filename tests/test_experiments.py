"""scripts/reproduce_ptb.py end to end on a tiny PTB-shaped corpus: three rows of a few steps each,
then the outputs, then a second sitting that must reuse the runs instead of retraining."""
import importlib.util
import json
import math
import subprocess
from pathlib import Path

import pytest

from textvae.corpus import builtin_corpus

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_ptb.py"
ROWS = "lstm-lm,vae-pretrain-fb,bn-vae"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("reproduce_ptb", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def ptb_dir(tmp_path):
    corpus = builtin_corpus(300)
    d = tmp_path / "ptb"
    d.mkdir()
    for split, examples in corpus.items():  # PTB's own file names: ptb.train.txt, ...
        (d / f"ptb.{split}.txt").write_text("".join(e["text"] + "\n" for e in examples))
    return d


def run(script, ptb_dir, tmp_path, *extra, rows=ROWS):
    return script.main(["--data-dir", str(ptb_dir), "--rows", rows, "--out-dir", str(tmp_path / "results"),
                        "--runs-dir", str(tmp_path / "runs"), "--max-epochs", "1", "--max-steps", "4",
                        "--iw-samples", "3", "--eval-sentences", "8",
                        "--set", "model.emb_dim=16", "--set", "model.enc_hidden=16", "--set", "model.dec_hidden=16",
                        "--set", "train.progress=false", *extra])


def test_rows_train_evaluate_and_write_the_table(script, ptb_dir, tmp_path, capsys):
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
    assert len(bn["homotopy"]) == 7 and bn["config"]["model"]["bn_gamma"] == 0.6
    assert bn["nll_iw"] <= bn["elbo"] + 1e-3  # the IW bound is at least as tight as the ELBO (k >= 1)

    md = (tmp_path / "results" / "ptb.md").read_text()
    assert md.count("not run yet") == len(script.ROWS) - 3
    assert "`train.max_epochs=1` `train.max_steps=4`" in md  # the budget is stated, not hidden
    settings = next(line for line in md.splitlines() if line.startswith("Settings given on the command line"))
    assert "train.optimizer" not in settings and "eval_every" not in settings  # the recipe is not a budget
    assert "| lstm-lm | LSTM-LM |" in md and "116 (Bowman et al. 2016)" in md
    order = [md.index(f"| {name} |") for name in script.ROW_NAMES]
    assert order == sorted(order)  # pending rows stand in their place, not at the end

    # a second sitting reuses the finished runs and their cached evaluation: same numbers, no training
    capsys.readouterr()
    assert run(script, ptb_dir, tmp_path) == 0
    err = capsys.readouterr().err
    assert err.count("not retrained") == 3 and "evaluating" not in err
    assert json.loads((tmp_path / "results" / "ptb.json").read_text()) == records


def test_command_line_settings_leave_out_recipe_and_derived_values_only(script):
    derived = ["train.eval_every=658", "objective.pretrain_ae_steps=26300"]
    row = next(r for r in script.ROWS if r["name"] == "vae-pretrain-fb")
    cli = ['data.data_dir="/x"', "train.eval_every=0", "train.lr=1"]
    record = {"row": row["name"], "overrides": [*script.RECIPE, *derived, *row["overrides"], *cli]}
    assert script.command_line_settings(record) == ["train.eval_every=0", "train.lr=1"]


def test_missing_data_dir_is_a_clear_error(script, tmp_path, capsys):
    assert script.main(["--data-dir", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "ptb.json").exists()


def test_jobs_run_rows_in_parallel_processes_then_write_one_table(script, ptb_dir, tmp_path, capsys):
    rows = "lstm-lm,bn-vae"
    assert script.main(["--data-dir", str(ptb_dir), "--rows", rows, "--jobs", "2",
                        "--out-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
                        "--max-epochs", "1", "--max-steps", "3", "--iw-samples", "3", "--eval-sentences", "8",
                        "--set", "model.emb_dim=16", "--set", "model.enc_hidden=16", "--set", "model.dec_hidden=16",
                        "--set", "train.progress=false"]) == 0
    err = capsys.readouterr().err
    assert "[lstm-lm] started (process" in err and "[bn-vae] done in" in err
    assert err.count("not retrained") == 2 and "evaluating" not in err  # the parent only reads the runs
    records = json.loads((tmp_path / "results" / "ptb.json").read_text())
    assert [r["row"] for r in records] == rows.split(",")
    for r in records:
        assert r["concurrent_rows"] == 2 and r["stopped"] == "max_steps" and r["steps"] == 3
        assert r["sittings"][0]["concurrent_rows"] == 2 and r["nll_iw"] > 0
        assert "nll_iw" in (tmp_path / "runs" / f"{r['row']}.log").read_text()  # each process's own log
    md = (tmp_path / "results" / "ptb.md").read_text()
    assert md.count("2 rows at once") == 2 and md.count("(step limit)") == 2
    for r in records:  # each row process records the command the user typed, not its own
        assert "--jobs 2" in r["sittings"][0]["command"] and r["eval_command"] == r["sittings"][0]["command"]


def test_stop_reason_of_runs_that_did_not_record_it(script):
    config = {"train": {"max_epochs": 10, "max_steps": None}}
    assert script.stop_reason({"epoch": 8, "step": 100, "stopped": "time"}, config) == "time"
    assert script.stop_reason({"epoch": 8, "step": 100}, config) == "early"
    assert script.stop_reason({"epoch": 10, "step": 100}, config) == "max_epochs"
    assert script.stop_reason({"epoch": 0, "step": 4}, {"train": {"max_epochs": 1, "max_steps": 4}}) == "max_steps"


def test_rows_from_an_earlier_recipe_are_marked_and_compared_only_with_their_own_lm(script):
    def record(name, recipe, ppl, kl, au):
        return {"row": name, "method": name, "paper": "p", "overrides": [*recipe, "train.eval_every=9"],
                "nll_iw": ppl / 10, "ppl_iw": ppl, "kl": kl, "mi_full": 0.0, "au": au, "elbo": 1.0, "ppl_elbo": ppl,
                "bleu_rec": None, "epochs": 3, "stopped": "early", "train_seconds": 1.0, "device": "CPU",
                "samples": []}
    old = script.RECIPE[:-1]  # as if the recipe's last item had been added after these rows ran
    records = [record("lstm-lm", script.RECIPE, 120.0, 0.0, 0), record("vae-free-bits", script.RECIPE, 118.5, 7.5, 32),
               record("bn-vae", script.RECIPE, 121.0, 6.1, 32), record("vae-cyclical", script.RECIPE, 110.0, 0.6, 2),
               record("vae-plain", old, 100.0, 9.0, 32)]
    assert script.recipe_gaps(records[0]) == [] and script.recipe_gaps(records[-1]) == [script.RECIPE[-1]]
    key = script.RECIPE[-1].split("=")[0]  # an item given, then undone by --set: not the recipe either
    undone = record("vae-plain", [*script.RECIPE, f"{key}=0.5"], 100.0, 9.0, 32)
    assert script.recipe_gaps(undone) == [script.RECIPE[-1]]
    lines = script.lm_comparison(records)
    # the collapsed row (KL 0.6) and the earlier-recipe row are not compared, however low their perplexity
    assert [line.split(":")[0] for line in lines] == ["vae-free-bits", "bn-vae"]
    assert "below the LM's 120.00 (-1.50; NLL -0.150 nats per sentence)" in lines[0]
    assert "not below the LM's 120.00 (+1.00; NLL +0.100 nats per sentence)" in lines[1]
    md = script.render_markdown(records, [])
    assert "| vae-plain † |" in md and "| bn-vae |" in md
    assert f"without `{script.RECIPE[-1]}`: vae-plain." in md
    assert script.lm_comparison(records[1:]) == []  # no LM row, nothing to compare with


@pytest.fixture(scope="module")
def seed_noise_script():
    spec = importlib.util.spec_from_file_location("iw_seed_noise", SCRIPT.parent / "iw_seed_noise.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_iw_seed_noise_of_a_trained_row(script, seed_noise_script, ptb_dir, tmp_path, capsys):
    assert run(script, ptb_dir, tmp_path) == 0
    capsys.readouterr()
    runs = tmp_path / "runs"
    argv = ["--data-dir", str(ptb_dir), "--sentences", "12", "-k", "4", "--json"]
    assert seed_noise_script.main([str(runs / "bn-vae"), *argv]) == 0
    out = json.loads(capsys.readouterr().out)
    n_test = len((ptb_dir / "ptb.test.txt").read_text().splitlines())
    assert out["sentences"] == 12 and out["split_sentences"] == n_test
    a, b = out["nll_per_seed"]
    assert a != b and out["sentence_sd"] > 0  # two seeds, two different estimates
    assert out["split_se_nats"] == pytest.approx(out["sentence_sd"] / n_test ** 0.5)
    with pytest.raises(SystemExit):  # one seed twice measures nothing: a usage error
        seed_noise_script.main([str(runs / "bn-vae"), *argv, "--seeds", "3,3"])
    # the LM's NLL is exact: nothing to measure, said so
    assert seed_noise_script.main([str(runs / "lstm-lm"), *argv]) == 2
    assert "exact" in capsys.readouterr().err
    assert seed_noise_script.main([str(tmp_path / "nowhere"), *argv]) == 2
    assert "config.json not found" in capsys.readouterr().err
    no_weights = tmp_path / "no-weights"  # a config but no model: an error message, not a traceback
    no_weights.mkdir()
    (no_weights / "config.json").write_text((runs / "bn-vae" / "config.json").read_text())
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


def test_extend_trains_a_row_on_after_its_time_budget_and_evaluates_it_again(script, ptb_dir, tmp_path, capsys):
    def lm(*extra):
        return script.main(["--data-dir", str(ptb_dir), "--rows", "lstm-lm", "--out-dir", str(tmp_path / "results"),
                            "--runs-dir", str(tmp_path / "runs"), "--max-steps", "6", "--iw-samples", "2",
                            "--eval-sentences", "8", "--set", "model.emb_dim=16", "--set", "model.dec_hidden=16",
                            "--set", "train.progress=false", *extra])

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
    assert lm("--extend") == 0  # a row that did not stop at a budget is not trained on
    assert "not retrained" in capsys.readouterr().err and record() == second
    # each sitting keeps the command that ran it, and the table lists them: how to redo the row
    commands = [s["command"] for s in second["sittings"]]
    assert commands[0].endswith("--max-minutes 1e-6") and commands[1].endswith("--extend")
    assert all(c.startswith(("python scripts/reproduce_ptb.py --data-dir", "OMP_NUM_THREADS=")) for c in commands)
    assert second["eval_command"] == commands[1]
    md = (tmp_path / "results" / "ptb.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("- lstm-lm: "))
    assert line.index(commands[0]) < line.index(commands[1]) < line.index("evaluated by")


def test_the_recorded_command_can_be_typed_again(script, monkeypatch):
    monkeypatch.delenv(script.COMMAND_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert script.invocation(["--rows", "bn-vae", "--data-dir", "my ptb"]) == \
        "python scripts/reproduce_ptb.py --rows bn-vae --data-dir 'my ptb'"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert script.invocation(["--rows", "lstm-lm"]) == "OMP_NUM_THREADS=1 python scripts/reproduce_ptb.py --rows lstm-lm"
    monkeypatch.setenv(script.COMMAND_ENV, "python scripts/reproduce_ptb.py --jobs 7")  # a --jobs row process
    assert script.invocation(["--rows", "lstm-lm", "--out-dir", "/tmp/x"]) == "python scripts/reproduce_ptb.py --jobs 7"


def test_a_row_run_on_its_own_keeps_rows_another_process_wrote_meanwhile(script, ptb_dir, tmp_path, monkeypatch):
    # e.g. `--rows bn-vae` evaluating while `--rows vae-free-bits` trains in a second shell
    assert run(script, ptb_dir, tmp_path) == 0
    path = tmp_path / "results" / "ptb.json"
    evaluate = script.evaluate_row

    def other_process_writes_first(row, *a, **kw):
        records = json.loads(path.read_text())
        records[0]["nll_iw"] = 1.25  # lstm-lm's row, rewritten after this command read ptb.json
        path.write_text(json.dumps(records))
        return evaluate(row, *a, **kw)

    monkeypatch.setattr(script, "evaluate_row", other_process_writes_first)
    assert run(script, ptb_dir, tmp_path, rows="bn-vae") == 0
    records = {r["row"]: r for r in json.loads(path.read_text())}
    assert records["lstm-lm"]["nll_iw"] == 1.25 and set(records) == set(ROWS.split(","))


def test_the_scripts_own_results_do_not_make_a_sitting_dirty(script, tmp_path):
    def git(*a):
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "ptb.json").write_text("[]\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    commit, dirty = script.git_commit(tmp_path)
    assert len(commit) == 40 and not dirty
    (tmp_path / "results" / "ptb.json").write_text("[{}]\n")  # a row's evaluation rewrote the table
    assert script.git_commit(tmp_path) == (commit, False)
    (tmp_path / "code.py").write_text("x = 2\n")  # the code that trains changed: that is dirty
    assert script.git_commit(tmp_path) == (commit, True)
