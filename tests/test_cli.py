"""The command line: every verb end to end on a small trained model, and usage errors (bad paths,
counts and sampling settings, empty sentences) as one message with exit status 2."""
import io
import json

import pytest

from helpers import TINY, expect_error
from textvae.cli import main
from textvae.errors import CheckpointError

FAST = ["train.max_steps=12", "data.builtin_size=400"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--preset", "tiny", "--out", str(out), *FAST]) == 0
    return out


@pytest.mark.integration  # a whole CLI training with its summary
def test_train_prints_table_samples_and_homotopy(run_dir, capsys):
    # the module fixture already trained; a second short run checks the summary output
    out = run_dir.parent / "again"
    assert main(["train", "--preset", "tiny", "--out", str(out), *FAST]) == 0
    text = capsys.readouterr().out
    assert "| split |" in text and "| test |" in text
    assert "samples from the prior:" in text and "homotopy" in text


def test_sample_prints_n_sentences(run_dir, capsys):
    assert main(["sample", "--model", str(run_dir), "-n", "5", "--seed", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all(l.strip() for l in lines)
    assert main(["sample", "--model", str(run_dir), "-n", "2", "--beam", "3"]) == 0
    assert main(["sample", "--model", str(run_dir), "-n", "2", "--top-p", "0.5", "--temperature", "0.7"]) == 0


def test_interpolate_prints_steps_plus_two(run_dir, capsys):
    assert main(["interpolate", "--model", str(run_dir), "--steps", "5", "the dog ran .", "it will rain ."]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 7
    assert main(["interpolate", "--model", str(run_dir), "--steps", "3", "--prior", "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[0].startswith("**") and lines[-1].endswith("**")


def test_reconstruct_from_args_and_stdin(run_dir, capsys, monkeypatch):
    assert main(["reconstruct", "--model", str(run_dir), "the dog ran .", "a cat ."]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("the dog ran .\n\nit rained .\n"))
    assert main(["reconstruct", "--model", str(run_dir)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_evaluate_json(run_dir, capsys):
    assert main(["evaluate", "--model", str(run_dir), "--split", "test", "--json", "--iw-samples", "5",
                 "--n-samples", "10"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("elbo", "rec", "kl", "ppl_elbo", "tokens", "sentences", "nll_iw", "ppl_iw"):
        assert key in result
    assert result["elbo"] == pytest.approx(result["rec"] + result["kl"], rel=1e-4)
    assert main(["evaluate", "--model", str(run_dir), "--split", "valid", "--iw-samples", "0",
                 "--n-samples", "5"]) == 0
    assert "elbo" in capsys.readouterr().out


def test_bad_inputs_give_clear_errors(tmp_path, capsys, run_dir):
    expect_error(capsys, ["train", "--out", str(tmp_path / "a"), "--data-dir", str(tmp_path / "nope")],
                 str(tmp_path / "nope"), "does not exist")
    data = tmp_path / "corpus"
    data.mkdir()
    (data / "train.txt").write_text("\n\n")
    (data / "valid.txt").write_text("a b\n")
    (data / "test.txt").write_text("a b\n")
    expect_error(capsys, ["train", "--out", str(tmp_path / "b"), "--data-dir", str(data)], "train.txt", "no examples")
    expect_error(capsys, ["train", "--preset", "nope", "--out", str(tmp_path / "c")], "unknown preset 'nope'", "tiny")
    expect_error(capsys, ["train", "--out", str(tmp_path / "d"), "train.max_stepz=3"], "train.max_stepz", "max_steps")
    expect_error(capsys, ["sample", "--model", str(tmp_path / "missing")], "does not exist")
    expect_error(capsys, ["interpolate", "--model", str(run_dir), "the dog .", "   "], "empty")
    with pytest.raises(SystemExit) as e:
        main(["sample", "--model", str(run_dir), "-n", "0"])
    assert e.value.code == 2
    assert "-n must be at least 1" in capsys.readouterr().err


def test_presets_verb(capsys):
    assert main(["presets"]) == 0
    assert "ptb-li2019" in capsys.readouterr().out


# --------------------------------------------------------------------------- usage errors

def test_unusable_paths_are_errors_not_tracebacks(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("x\n")
    expect_error(capsys, ["train", *TINY, "--out", a_file], f"--out {a_file} is a file")
    expect_error(capsys, ["train", *TINY, "--out", a_file / "run"], f"{a_file / 'run'}: Not a directory")
    expect_error(capsys, ["train", "--config", tmp_path, "--out", tmp_path / "o"], f"{tmp_path}: Is a directory")


def test_non_finite_sampling_settings(tiny_run, capsys):
    expect_error(capsys, ["sample", "--model", tiny_run, "--temperature", "nan"], "temperature=nan must be a finite")


@pytest.mark.parametrize("argv, needle", [
    (["sample", "-n", "-3"], "-n must be at least 1, got -3"),
    (["sample", "-n", "two"], "-n must be a whole number, got 'two'"),
    (["interpolate", "--steps", "0", "a .", "b ."], "--steps must be at least 1, got 0"),
    (["interpolate", "--steps", "-2", "a .", "b ."], "--steps must be at least 1, got -2"),
])
def test_bad_counts_are_usage_errors(tiny_run, capsys, argv, needle):
    with pytest.raises(SystemExit) as e:
        main([argv[0], "--model", str(tiny_run), *argv[1:]])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize("argv, needle", [
    (["interpolate", "", "the dog ran ."], "sentence 1 ('') is empty"),
    (["interpolate", "the dog ran ."], "interpolate needs exactly two sentences (got 1)"),
    (["reconstruct", "the dog ran .", " \t "], "sentence 2 (' \\t ') is empty"),
    (["reconstruct", ""], "sentence 1 ('') is empty"),
])
def test_empty_sentences_are_refused(tiny_run, capsys, argv, needle):
    expect_error(capsys, [argv[0], "--model", tiny_run, *argv[1:]], needle)


def test_reconstruct_with_only_blank_stdin(tiny_run, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("\n   \n"))
    expect_error(capsys, ["reconstruct", "--model", tiny_run], "no sentences given")


def test_debug_shows_the_traceback(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="does not exist"):
        main(["--debug", "sample", "--model", str(tmp_path / "missing")])
