"""Few-label classification: label draws, their bad inputs, M1 and the baselines (textvae.semisup), and
the table script (scripts/semisup.py): what it trains from and records."""
import collections
import hashlib
import json
import subprocess

import numpy as np
import pytest

from helpers import expect_error, load_script, write_corpus, write_lines
from textvae.errors import DataError
from textvae.semisup import (bag_of_words_lr, check_test_labels, draw_labelled, majority, score, tfidf_lr)

LABELS = ["a"] * 10 + ["b"] * 4 + [""] * 3 + ["c"] * 7
# the tests train from this checkout, which has uncommitted changes while someone works in it (CI's fresh
# clone has none): the script trains from such a tree only when told to
ANY_TREE = ["--allow-dirty"]
# the smallest table: one VAE, one AE and one M2 run of two steps, one draw of one label per class
TINY_TABLE = ["--preset", "tiny", "--sizes", "1", "--draws", "1", "--m2-sizes", "all", "--scratch-steps", "2",
              "--fidelity-samples", "1", "--set", "train.max_steps=2", "data.builtin_size=300", "train.progress=false"]


def test_draws_are_stratified_and_deterministic_per_seed():
    d = draw_labelled(LABELS, 3, seed=5)
    assert collections.Counter(LABELS[i] for i in d) == {"a": 3, "b": 3, "c": 3}
    assert d.tolist() == draw_labelled(LABELS, 3, seed=5).tolist()
    assert any(draw_labelled(LABELS, 3, seed=s).tolist() != d.tolist() for s in range(1, 6))
    assert "" not in {LABELS[i] for i in draw_labelled(LABELS, None, seed=0)}
    assert len(draw_labelled(LABELS, None, seed=0)) == 21


def test_a_class_draw_does_not_depend_on_the_other_classes():
    more = LABELS + ["d"] * 5
    a = [i for i in draw_labelled(LABELS, 2, seed=1) if LABELS[i] == "a"]
    assert a == [i for i in draw_labelled(more, 2, seed=1) if more[i] == "a"]


def test_more_labels_than_a_class_has_names_the_class():
    with pytest.raises(DataError, match=r"5 labelled examples per class .* 'b' has 4; ask for at most 4"):
        draw_labelled(LABELS, 5, seed=0, what="train.txt")


def test_a_class_without_labelled_example_is_an_error():
    with pytest.raises(DataError, match=r"\['d'\] have no labelled example"):
        draw_labelled(LABELS, 1, seed=0, classes=["a", "b", "c", "d"])


def test_a_test_label_unseen_in_training_names_file_and_line(tmp_path):
    write_lines(tmp_path / "test.labels.txt", ["a", "b", "zebra", "a"])
    with pytest.raises(DataError, match=r"test.labels.txt:3: test label 'zebra' never occurs"):
        check_test_labels(["a", "b"], ["a", "b", "zebra", "a"], labels_file=tmp_path / "test.labels.txt")
    check_test_labels(["a", "b"], ["a", "", "b"])  # an unlabelled test example is no error


def test_a_test_split_without_any_label_is_refused_before_scoring():
    # before: every method was fitted, then score() failed in scikit-learn ("Found empty input array")
    with pytest.raises(DataError, match="the test split has no labelled example to score"):
        check_test_labels(["a", "b"], ["", "", ""])
    with pytest.raises(DataError, match="no labelled example"):
        check_test_labels(["a", "b"], [])


def test_labels_file_with_a_different_line_count_is_refused_before_m2_trains(tmp_path, capsys):
    data = write_corpus(tmp_path / "c", {"train": ["a b c", "b c d", "c d e"] * 5, "valid": ["a b"] * 3,
                                         "test": ["b c"] * 3})
    write_lines(data / "train.labels.txt", ["x", "y"] * 7)  # 14 labels, 15 lines
    expect_error(capsys, ["train", "--preset", "tiny", "--no-summary", "--data", data, "--out", tmp_path / "r",
                          "model.conditional=true", "model.classifier=true"], "train.labels.txt has 14 lines",
                 "has 15")
    assert not (tmp_path / "r" / "best").exists()


def test_m2_asks_for_more_labels_than_a_class_has_before_training(tmp_path, capsys):
    data = write_corpus(tmp_path / "c", {"train": ["a b c", "b c d", "c d e"] * 5, "valid": ["a b"] * 2,
                                         "test": ["b c"] * 2})
    write_lines(data / "train.labels.txt", ["x"] * 12 + ["y"] * 3)
    for split in ("valid", "test"):
        write_lines(data / f"{split}.labels.txt", ["x", "y"])
    expect_error(capsys, ["train", "--preset", "tiny", "--no-summary", "--data", data, "--out", tmp_path / "r",
                          "model.conditional=true", "model.classifier=true", "data.labelled_per_class=4"],
                 "'y' has 3", "data.labelled_per_class")
    assert not (tmp_path / "r" / "best").exists()


def test_baselines_read_a_label_that_decides_the_words():
    rng = np.random.default_rng(0)
    words = {0: ["cat", "dog", "bird"], 1: ["rain", "snow", "wind"]}
    y = rng.integers(0, 2, 60)
    texts = [" ".join(rng.choice(words[int(k)], 3)) + " now" for k in y]
    vocab = {w: i for i, w in enumerate(["now", *words[0], *words[1]])}  # str hash() differs per process
    ids = [np.array([vocab[w] for w in t.split()]) for t in texts]
    train, test = np.arange(20), np.arange(20, 60)
    assert score(tfidf_lr([texts[i] for i in train], y[train], [texts[i] for i in test]), y[test], 2)["accuracy"] == 1
    bow = bag_of_words_lr([ids[i] for i in train], y[train], [ids[i] for i in test], 2)
    assert score(bow, y[test], 2)["accuracy"] == 1
    maj = score(majority(y[train], 40), y[test], 2)
    assert maj["accuracy"] < 0.8 and maj["macro_f1"] < maj["accuracy"]


@pytest.mark.slow
def test_the_table_script_trains_in_parallel_and_writes_json_and_markdown(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, str(root / "scripts/semisup.py"), "t", "--preset", "tiny", "--out-dir", tmp_path,
                    "--runs-dir", tmp_path / "runs", "--sizes", "1", "all", "--draws", "2", "--m2-sizes", "all",
                    "--scratch-steps", "5", "--fidelity-samples", "2", "--set", "train.max_epochs=1", "--jobs", "2",
                    "--factors", "topic", "sentiment", "--m2-factors", "topic", "sentiment", *ANY_TREE],
                   check=True, cwd=root, timeout=600)
    out = json.loads((tmp_path / "semisup_t.json").read_text())
    methods = {(s["method"], s["per_class"]) for s in out["summary"]}
    assert {("m1-vae", 1), ("m1-ae", 1), ("scratch", 1), ("tfidf-lr", "all"), ("m2", "all")} <= methods
    assert sorted({r["draw"] for r in out["runs"] if r["per_class"] == 1}) == [0, 1]
    assert out["label_fidelity"]["topic"]["samples_per_label"] == 2
    assert set(out["label_fidelity"]["sentiment"]["per_label"]) == {"positive", "negative"}
    m2 = {r["factor"]: r for r in out["runs"] if r["method"] == "m2"}
    assert m2["topic"]["classes"] == 5 and m2["sentiment"]["classes"] == 2  # each M2 read its own factor
    assert "| 1 | M1 (VAE) | 2 |" in (tmp_path / "semisup_t.md").read_text()
    for run in ("vae", "ae", "m2-all-d0", "m2-sentiment-all-d0"):  # each trained in its own process, which recorded the table's command
        state = json.loads((tmp_path / "runs" / run / "reproduce.json").read_text())
        assert state["finished"] and "--jobs 2" in state["sittings"][-1]["command"]
        assert "--only" not in state["sittings"][-1]["command"] and (tmp_path / "runs" / f"{run}.log").exists()


@pytest.fixture(scope="module")
def table_script():
    return load_script("semisup")


@pytest.fixture
def checkout(table_script, tmp_path, monkeypatch):
    """A git checkout with a committed textvae/ and scripts/, made the source the table script imports and
    runs; returns (its folder, a git command in it)."""
    repo = tmp_path / "checkout"

    def git(*a):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=repo, check=True,
                              capture_output=True, text=True).stdout

    for name, text in {"textvae/model.py": "x = 1\n", "scripts/semisup.py": "y = 1\n", "docs/a.md": "a\n"}.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    monkeypatch.setattr(table_script, "PACKAGE", repo / "textvae")
    monkeypatch.setattr(table_script, "SCRIPTS", repo / "scripts")
    return repo, git


def test_the_table_script_trains_nothing_from_uncommitted_code(table_script, checkout, tmp_path):
    repo, _ = checkout
    (repo / "textvae" / "model.py").write_text("x = 2\n")
    argv = ["t", "--out-dir", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"), *TINY_TABLE]
    for extra in ([], ["--only", "ae"], ["--jobs", "2"]):
        with pytest.raises(SystemExit) as e:
            table_script.main([*argv, *extra])
        msg = str(e.value)
        runs = "ae" if extra[:1] == ["--only"] else "vae, ae, m2-all-d0"
        assert msg.startswith(f"not trained ({runs}): the textvae source in {repo} has uncommitted changes "
                              f"(textvae/model.py)"), msg
        assert "could not be reproduced from its record" in msg and "PYTHONPATH=. python scripts/semisup.py" in msg
        assert "pass --allow-dirty" in msg
        assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()  # before anything started


def test_the_jobs_processes_are_allowed_what_the_command_is(table_script, checkout, tmp_path, monkeypatch):
    repo, _ = checkout
    (repo / "scripts" / "new.py").write_text("n = 1\n")
    started = []

    def run_processes(commands, jobs, env, log):
        started.extend(argv for argv, _ in commands.values())
        return None  # as if interrupted: the table stops before training in this process

    monkeypatch.setattr(table_script, "run_processes", run_processes)
    argv = ["t", "--out-dir", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"), *TINY_TABLE, "--jobs", "2"]
    with pytest.raises(SystemExit, match="interrupted"):
        table_script.main([*argv, "--allow-dirty"])
    assert len(started) == 3 and all("--allow-dirty" in argv for argv in started)


@pytest.mark.integration  # trains a tiny table from uncommitted code, then scores it and trains on from a commit
def test_the_table_records_the_code_each_model_trained_from(table_script, checkout, tmp_path, capsys):
    repo, git = checkout
    (repo / "textvae" / "model.py").write_text("x = 2\n")
    runs, out = tmp_path / "runs", tmp_path / "out"
    argv = ["t", "--out-dir", str(out), "--runs-dir", str(runs), *TINY_TABLE]
    assert table_script.main([*argv, "--allow-dirty"]) == 0
    table = json.loads((out / "semisup_t.json").read_text())
    head = git("rev-parse", "HEAD").strip()
    assert table["commit"] == head and table["dirty"] is True
    assert set(table["models"]) == {"vae", "ae", "m2-all-d0"}
    for name, model in table["models"].items():
        (sitting,) = model["sittings"]
        assert model["commit"] == sitting["commit"] == head and model["commit_dirty"] is True and sitting["dirty"]
        patch = (runs / name / sitting["dirty_diff"]).read_bytes()  # the patch on the commit, named by its hash
        assert sitting["dirty_diff"] == f"source-{sitting['dirty_diff_sha256'][:12]}.diff"
        assert hashlib.sha256(patch).hexdigest() == sitting["dirty_diff_sha256"] and b"+x = 2" in patch
    assert {(r["method"], r["model"]) for r in table["runs"]} == {
        ("majority", None), ("bow-lr", None), ("tfidf-lr", None), ("scratch", None), ("m1-vae", "vae"),
        ("m1-ae", "ae"), ("m2", "m2-all-d0")}

    # without the flag: the trained models are scored again, not refused; one still to train is refused
    assert table_script.main([*argv, "--scratch-steps", "3"]) == 0
    assert json.loads((out / "semisup_t.json").read_text())["models"] == table["models"]
    with pytest.raises(SystemExit, match=r"^not trained \(m2-1-d0\): the textvae source"):
        table_script.main([*argv, "--m2-sizes", "1", "all"])
    # committed: it trains, and its record names the new commit, clean
    git("commit", "-q", "-am", "x = 2")
    assert table_script.main([*argv, "--m2-sizes", "1", "all"]) == 0
    table = json.loads((out / "semisup_t.json").read_text())
    assert table["commit"] == git("rev-parse", "HEAD").strip() != head and table["dirty"] is False
    m2 = table["models"]["m2-1-d0"]
    assert m2["commit"] == table["commit"] and m2["commit_dirty"] is False and "dirty_diff" not in m2["sittings"][0]
    assert table["models"]["vae"]["commit"] == head and table["models"]["vae"]["commit_dirty"] is True
