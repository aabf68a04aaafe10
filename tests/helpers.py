"""Plain helpers shared by the test modules: running the CLI in-process, reading a run's files.

Imported as ``from helpers import ...``: pytest puts this folder on ``sys.path`` (rootdir-based
"prepend" import mode), from the repository root and from tests/ alike.
"""
import contextlib
import importlib.util
import json
import os
import pathlib
import signal

import torch
from safetensors.torch import load_file

from textvae.cli import main
from textvae.config_files import load_config
from textvae.train import Trainer

TINY = ["--preset", "tiny", "--no-summary"]  # the CLI's smallest training, without the end-of-run summary
SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"
# The shared corpora: ../shared/data beside the checkout, or $TEXTVAE_SHARED/data.
SHARED_DATA = pathlib.Path(os.environ.get("TEXTVAE_SHARED", SCRIPTS.parents[1] / "shared")) / "data"


def load_script(name: str):
    """``scripts/<name>.py`` imported as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli(capsys, argv, code=0):
    """Run ``textvae ARGV`` in-process; check the exit status; return (stdout, stderr)."""
    assert main([str(a) for a in argv]) == code, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return out, err


def expect_error(capsys, argv, *needles, code=2):
    """The command fails with ``code`` and one message containing every needle, no traceback."""
    _, err = cli(capsys, argv, code)
    for needle in needles:
        assert needle in err, f"{needle!r} not in:\n{err}"
    return err


def tiny_cfg(*overrides):
    """The tiny preset with ``overrides`` (``"section.key=value"`` strings)."""
    return load_config(preset="tiny", overrides=list(overrides))


def weights(model_dir):
    """The tensors of ``model_dir/model.safetensors`` by name."""
    return load_file(str(pathlib.Path(model_dir) / "model.safetensors"))


def same_weights(a, b) -> bool:
    """Whether two model directories hold exactly the same tensors under the same names."""
    a, b = weights(a), weights(b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def records(run, kind):
    """The ``metrics.jsonl`` records of one kind ("train", "valid", ...) of a run, in order."""
    lines = (pathlib.Path(run) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def without_speed(rs):
    """Records without their throughput, the one field that differs between identical runs."""
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rs]


def crash_after_checkpoint(monkeypatch, step):
    """Make training raise right after it saves the step-``step`` checkpoint; return the real
    save method, to be put back before resuming."""
    original = Trainer._save_checkpoint

    def save_then_crash(self):
        path = original(self)
        if self.progress.step == step:
            raise RuntimeError("simulated crash")
        return path

    monkeypatch.setattr(Trainer, "_save_checkpoint", save_then_crash)
    return original


def signal_on_call(function, call: int, sig=signal.SIGTERM):
    """``function`` wrapped so that its ``call``-th call first sends ``sig`` to this process, as
    ``kill`` or Ctrl-C would while that work runs (Python's handler runs before the call proceeds)."""
    calls = []

    def signalling(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), sig)
        return function(*args, **kwargs)

    return signalling


@contextlib.contextmanager
def torch_threads(n):
    """Run the block with ``n`` torch threads (on two busy cores one is faster for tiny models)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def write_lines(path, lines):
    """Write ``lines`` to ``path`` as UTF-8 text, one a line, each ending in a newline."""
    pathlib.Path(path).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def write_corpus(folder, splits, suffix=".txt"):
    """Write each split's lines to ``folder/<split><suffix>`` (creating the folder); return the folder."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in splits.items():
        write_lines(folder / f"{name}{suffix}", lines)
    return folder
