"""The command line: every verb end to end on a small trained model, and usage errors (bad paths,
counts and sampling settings, empty sentences) as one message with exit status 2."""
import io
import json

import pytest

from helpers import TINY, cli, expect_error, signal_on_call
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


def test_evaluate_resume_file_continues_an_interrupted_pass(run_dir, tmp_path, capsys, monkeypatch):
    from textvae import eval_checkpoint

    argv = ["evaluate", "--model", str(run_dir), "--json", "--iw-samples", "5", "--n-samples", "10",
            "--batch-size", "4"]
    assert main(argv) == 0
    whole = json.loads(capsys.readouterr().out)
    state, original = tmp_path / "pass.safetensors", eval_checkpoint.PassCheckpoint.maybe_save

    def save_then_crash(self, acc, generator):
        self.every = 0.0
        original(self, acc, generator)
        if acc.done == 2:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(eval_checkpoint.PassCheckpoint, "maybe_save", save_then_crash)
    assert main([*argv, "--resume-file", str(state)]) == 130  # Ctrl-C's exit status
    assert state.exists()
    monkeypatch.setattr(eval_checkpoint.PassCheckpoint, "maybe_save", original)
    assert main([*argv, "--resume-file", str(state)]) == 0
    out = capsys.readouterr()
    resumed = json.loads(out.out.strip().splitlines()[-1])
    assert {k: v for k, v in resumed.items() if k != "seconds"} == {k: v for k, v in whole.items() if k != "seconds"}
    assert "continuing a saved evaluation after 2 batches" in out.err and not state.exists()


def test_a_signal_during_evaluate_resume_file_saves_and_exits_130(run_dir, tmp_path, capsys, monkeypatch):
    """SIGTERM while `textvae evaluate --resume-file` computes its second batch: exit status 130, a line
    saying what was saved where, no traceback; the same command then finishes the pass."""
    import textvae.metrics as metrics

    argv = ["evaluate", "--model", str(run_dir), "--json", "--iw-samples", "5", "--n-samples", "10",
            "--batch-size", "4"]
    state, original = tmp_path / "pass.safetensors", metrics.iw_log_likelihood
    monkeypatch.setattr(metrics, "iw_log_likelihood", signal_on_call(original, 2))
    assert main([*argv, "--resume-file", str(state)]) == 130
    err = capsys.readouterr().err
    assert "textvae evaluate: interrupted: SIGTERM received during the evaluation: 1 of " in err
    assert f"batches saved in {state}; run the same command again" in err and "Traceback" not in err
    monkeypatch.setattr(metrics, "iw_log_likelihood", original)
    assert main([*argv, "--resume-file", str(state)]) == 0
    assert "continuing a saved evaluation after 1 batches" in capsys.readouterr().err and not state.exists()


@pytest.mark.parametrize("verb", ["evaluate", "serve"])
def test_sigterm_ends_any_verb_as_ctrl_c_does(verb, run_dir, capsys, monkeypatch):
    """SIGTERM (``kill``, a scheduler's stop) while a verb without its own guard works: exit status 130
    and one line, like Ctrl-C, rather than the process dying with the shell's 143 and no word."""
    import signal
    from http.server import ThreadingHTTPServer

    import textvae.metrics as metrics

    def unguarded(signum, frame):  # reached only if the command installed no handler of its own
        raise RuntimeError("SIGTERM reached the handler outside the command")

    previous = signal.signal(signal.SIGTERM, unguarded)
    try:
        if verb == "evaluate":
            monkeypatch.setattr(metrics, "iw_log_likelihood", signal_on_call(metrics.iw_log_likelihood, 1))
            argv = ["evaluate", "--model", str(run_dir), "--iw-samples", "2", "--n-samples", "4"]
        else:
            monkeypatch.setattr(ThreadingHTTPServer, "serve_forever", signal_on_call(lambda self: None, 1))
            argv = ["serve", "--model", str(run_dir), "--port", "0"]
        assert main(argv) == 130
        err = capsys.readouterr().err
        assert f"textvae {verb}: interrupted: SIGTERM received during the command" in err and "Traceback" not in err
        assert signal.getsignal(signal.SIGTERM) is unguarded  # the command put the handler back
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    expect_error(capsys, ["train", "--config", tmp_path, "--out", tmp_path / "o"],
                 f"config file {tmp_path} is a folder, not a YAML or JSON file")


@pytest.mark.parametrize("resume", [[], ["--resume"]])
def test_a_model_directory_is_not_a_run_directory_to_train_into(tiny_run, tmp_path, capsys, resume):
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_run / "best", model_dir)
    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    expect_error(capsys, ["train", *TINY, "--out", model_dir, *resume, "train.max_steps=2"],
                 f"--out {model_dir} is a model directory", "new --out")
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before


@pytest.mark.parametrize("content", ["[1, 2]", "5", '{"elbo": "x", "seconds": 3}'])
def test_push_metrics_without_a_number_for_the_card_is_refused(tiny_run, tmp_path, capsys, content):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(content)
    expect_error(capsys, ["push", "--model", tiny_run, "--dry-run", tmp_path / "dry", "--metrics", metrics],
                 f"--metrics {metrics}", "textvae evaluate --model R --json > metrics.json")
    assert not (tmp_path / "dry").exists()


def test_serve_on_a_port_in_use_names_the_address_not_paths(tiny_run, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = expect_error(capsys, ["serve", "--model", tiny_run, "--port", port],
                           f"cannot listen on 127.0.0.1 port {port}", "another --port (0: any free one)")
    assert "check the paths" not in err


def test_non_finite_sampling_settings(tiny_run, capsys):
    expect_error(capsys, ["sample", "--model", tiny_run, "--temperature", "nan"], "temperature=nan must be a finite")


@pytest.mark.parametrize("argv, needle", [
    (["sample", "-n", "-3"], "-n must be at least 1, got -3"),
    (["sample", "-n", "two"], "-n must be a whole number, got 'two'"),
    (["interpolate", "--steps", "0", "a .", "b ."], "--steps must be at least 1, got 0"),
    (["interpolate", "--steps", "-2", "a .", "b ."], "--steps must be at least 1, got -2"),
    # seeds and ports: torch, numpy and scikit-learn each reject some of these with a traceback of their own
    (["sample", "--seed", str(2**64)], f"--seed must be at most 4294967295, got {2**64}"),
    (["interpolate", "--prior", "--seed", str(2**64)], "--seed must be at most 4294967295"),
    (["interpolate", "--seed", "-1", "a .", "b ."], "--seed must be at least 0, got -1"),
    (["reconstruct", "--seed", "-1", "a ."], "--seed must be at least 0, got -1"),
    (["probe", "--n", "20", "--seed", "-1"], "--seed must be at least 0, got -1"),
    (["traverse", "--factors", "--seed", "-1"], "--seed must be at least 0, got -1"),
    (["evaluate", "--disentanglement", "--seed", str(2**32)], "--seed must be at most 4294967295"),
    (["serve", "--port", "99999"], "--port must be at most 65535, got 99999"),
])
def test_bad_counts_seeds_and_ports_are_usage_errors(tiny_run, capsys, argv, needle):
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


SEEDED = {"reconstruct": ["reconstruct", "the dog ran .", "a cat sat .", "it will rain ."],
          "interpolate": ["interpolate", "--steps", "4", "the dog ran .", "it will rain ."],
          "interpolate-prior": ["interpolate", "--steps", "4", "--prior"]}


@pytest.mark.parametrize("argv", SEEDED.values(), ids=SEEDED)
def test_sampled_decoding_follows_the_seed(tiny_run, capsys, argv):
    # as `textvae sample --seed`: the same seed gives the same text, another seed other text
    def run(*seed):
        return cli(capsys, [argv[0], "--model", tiny_run, "--sample", *seed, *argv[1:]])[0]

    assert run("--seed", "3") == run("--seed", "3")
    assert run("--seed", "3") != run("--seed", "4")
    assert run() == run("--seed", "0")


def test_interpolate_prior_draws_the_ends_then_the_decoding_noise(tiny_run, capsys):
    # one generator seeded with --seed, as TextVAE.sample: the two prior codes first, then the sampling
    import torch

    from textvae.config import SampleConfig
    from textvae.model import TextVAE

    model = TextVAE.from_pretrained(tiny_run)
    g = torch.Generator().manual_seed(5)
    want = model.decode(model.latent.interpolate(*model.prior_sample(2, g), 3), SampleConfig(), generator=g)
    out = cli(capsys, ["interpolate", "--model", tiny_run, "--prior", "--sample", "--steps", "3", "--seed", "5"])[0]
    assert out.splitlines() == want


@pytest.mark.parametrize("seed", ["0", "7"])
def test_greedy_reconstructions_and_homotopies_ignore_the_seed(tiny_run, capsys, seed):
    import torch

    from textvae.config import SampleConfig
    from textvae.model import TextVAE

    model = TextVAE.from_pretrained(tiny_run)
    a, b = "the dog ran .", "it will rain ."
    ends = model.prior_sample(2, torch.Generator().manual_seed(int(seed)))
    for argv, want in ((["reconstruct", a, b], model.reconstruct([a, b])),
                       (["interpolate", "--steps", "3", a, b], model.interpolate(a, b, 3)),
                       (["interpolate", "--steps", "3", "--path", "line", "--prior"],
                        model.decode(model.latent.interpolate(ends[0], ends[1], 3), SampleConfig(greedy=True)))):
        out = cli(capsys, [argv[0], "--model", tiny_run, "--seed", seed, *argv[1:]])[0]
        assert out.splitlines() == want, argv


@pytest.mark.parametrize("verb", ["reconstruct", "classify"])
def test_stdin_that_is_not_utf8_is_named_whatever_the_locale(tiny_run, capsys, monkeypatch, verb):
    # a UTF-8 locale reads stdin strictly (a UnicodeDecodeError), the C locale with surrogate escapes
    for errors in ("strict", "surrogateescape"):
        stdin = io.TextIOWrapper(io.BytesIO(b"the dog ran .\n\nit \xff rained .\n"), encoding="utf-8", errors=errors)
        monkeypatch.setattr("sys.stdin", stdin)
        expect_error(capsys, [verb, "--model", tiny_run], "stdin line 3: invalid UTF-8 (byte 0xff at column 4",
                     "convert the input to UTF-8")


def test_stdin_utf8_with_a_byte_order_mark_and_crlf(tiny_run, capsys, monkeypatch):
    text = "the dog ran .\r\nit rained .\r\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(("\ufeff" + text).encode()), encoding="utf-8"))
    out, err = cli(capsys, ["reconstruct", "--model", tiny_run])
    assert len(out.splitlines()) == 2 and "unknown word" not in err


def test_evaluate_disentanglement_of_a_language_model_is_refused(tmp_path, capsys):
    lm = tmp_path / "lm"
    cli(capsys, ["train", *TINY, "--out", lm, "model.latent_dim=0", "train.max_steps=2"])
    expect_error(capsys, ["evaluate", "--model", lm, "--disentanglement", "--iw-samples", "0", "--n-samples", "2"],
                 "--disentanglement", "language model (latent_dim=0)")


def test_debug_shows_the_traceback(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="does not exist"):
        main(["--debug", "sample", "--model", str(tmp_path / "missing")])


# --------------------------------------------------------------------------- version, help, pipes, overrides, input warnings

def test_version_and_defaults_in_every_help(capsys):
    from textvae.cli import VERBS
    from textvae.version import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"textvae {__version__}"
    for verb in set(VERBS) - {"presets"}:  # presets has no options
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        assert "(default: " in capsys.readouterr().out, verb
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 500)" in text and "(default: auto)" in text and "(default: test)" in text


def _pipe(args: str, reader: str, tmp_path):
    """``textvae ARGS | READER`` under bash with this checkout importable: (textvae's exit status,
    its stderr, the reader's output lines)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    err = tmp_path / "err"
    script = f'"{sys.executable}" -m textvae {args} 2>"{err}" | {reader}; echo "${{PIPESTATUS[0]}}"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=300).stdout
    return int(out.splitlines()[-1]), err.read_text(), out.splitlines()[:-1]


def test_a_closed_pipe_ends_quietly_with_status_141(run_dir, tmp_path):
    status, err, out = _pipe("presets", "head -1", tmp_path)
    assert status in (0, 141) and err == "" and len(out) == 1  # 0: all of it fit in the pipe before head left
    status, err, out = _pipe(f"sample --model {run_dir} -n 3000", "head -1", tmp_path)
    assert status == 141 and err == "" and len(out) == 1


def test_broken_pipe_in_process_returns_141_without_a_message(capsys, monkeypatch):
    class Closed:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("sys.stdout", Closed())
    assert main(["presets"]) == 141
    assert capsys.readouterr().err == ""


def test_overrides_are_accepted_anywhere_on_the_line(tmp_path, capsys):
    from textvae.cli import parse_args

    args = parse_args(["train", "--out", "R", "train.max_steps=5", "--preset", "tiny", "data.max_len=10",
                       "--no-summary", "train.max_steps=7"])
    assert args.overrides == ["train.max_steps=5", "data.max_len=10", "train.max_steps=7"]  # in order: last wins
    assert args.preset == "tiny" and args.out == "R" and args.no_summary
    args = parse_args(["reconstruct", "a b .", "--model", "R", "c d ."])
    assert args.sentences == ["a b .", "c d ."]
    with pytest.raises(SystemExit) as e:
        parse_args(["train", "--out", "R", "a=1", "--no-such-option"])
    assert e.value.code == 2 and "unrecognized arguments: --no-such-option" in capsys.readouterr().err
    out = tmp_path / "r"
    assert main(["train", "--out", str(out), "train.max_steps=2", "--preset", "tiny", "data.max_len=10",
                 "--no-summary", "data.builtin_size=300"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["max_steps"] == 2 and saved["data"]["max_len"] == 10
    err = capsys.readouterr().err
    assert "parameters; vocabulary" in err and "tokens (word tokenizer)" in err  # what training starts with


def test_several_bad_overrides_are_listed_at_once(tmp_path, capsys):
    expect_error(capsys, ["train", "--out", str(tmp_path / "r"), "train.lr=fast", "model.emb_dim=1.5",
                          "train.max_stepz=3", "model.cell=rnn"],
                 "4 problems", "'train.lr' expects float", "'model.emb_dim' expects int",
                 "'train.max_stepz'", "max_steps", "model.cell='rnn'")
    assert not (tmp_path / "r").exists()
    expect_error(capsys, ["train", "--out", str(tmp_path / "r"), "nonsense", "train.=3"],
                 "2 problems", "'nonsense' is not of the form", "'train.=3'")


def test_mixed_precision_on_the_cpu_is_a_config_error(tmp_path, capsys):
    for precision in ("bf16", "fp16"):
        expect_error(capsys, ["train", "--out", str(tmp_path / precision), "--preset", "tiny",
                              f"train.precision={precision}", "train.device=cpu"],
                     f"train.precision={precision} is for GPU training", "train.precision=fp32")
    expect_error(capsys, ["train", "--out", str(tmp_path / "x"), "train.precision=fp8"],
                 "train.precision='fp8' is not one of 'fp32', 'bf16', 'fp16'")


def test_unknown_words_and_overlong_input_are_named_on_stderr(run_dir, capsys):
    err = expect_error(capsys, ["reconstruct", "--model", str(run_dir), "the zorblax dog qwpx .", "the dog ."],
                       "textvae reconstruct: warning: unknown word(s) read as <unk> (the model was trained without "
                       "them): sentence 1: 'qwpx', 'zorblax'",
                       code=0)
    assert "sentence 2" not in err  # every word of "the dog ." is known
    long = " ".join(["the"] * 5000)
    err = expect_error(capsys, ["reconstruct", "--model", str(run_dir), long],
                       "textvae reconstruct: warning: cut to the model's maximum length, data.max_len=40: "
                       "sentence 1 (5000 tokens)", code=0)
    expect_error(capsys, ["interpolate", "--model", str(run_dir), "the dog .", "a flibbertigibbet ."],
                 "warning: unknown word(s) read as <unk>", "sentence 2: 'flibbertigibbet'", code=0)


def test_unknown_word_warnings_can_be_silenced_in_the_api(run_dir):
    import warnings

    from textvae.model import TextVAE

    model = TextVAE.from_pretrained(run_dir)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model.encode(["the zorblax ."])
    assert any("'zorblax'" in str(w.message) for w in seen)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message=".*unknown word")
        model.encode(["the zorblax ."])
    assert not seen


def test_device_option(run_dir, capsys):
    import torch

    assert main(["sample", "--model", str(run_dir), "-n", "2", "--device", "cpu"]) == 0
    capsys.readouterr()
    if not torch.cuda.is_available():
        expect_error(capsys, ["sample", "--model", str(run_dir), "--device", "cuda"],
                     "--device cuda: CUDA is not available", "--device cpu")
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--model", str(run_dir), "--device", "gpu"])
    assert e.value.code == 2 and "--device must be auto, cpu, cuda or cuda:N" in capsys.readouterr().err


def test_evaluate_prints_mi_full_with_its_standard_error(run_dir, capsys):
    assert main(["evaluate", "--model", str(run_dir), "--iw-samples", "0", "--n-samples", "2"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("mi_full"))
    assert "±" in line and "(standard error)" in line
