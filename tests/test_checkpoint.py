"""Checkpoints and resume: one atomic writer, complete-or-absent directories, damaged checkpoints
skipped, weight and state files holding malicious pickles refused without running them,
SIGKILL/SIGTERM at random points then --resume equal to an uninterrupted run, and runs written by
textvae 0.1.0 (tests/fixtures/v0.1.0) resuming."""

import io
import json
import os
import pathlib
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import TINY, cli, expect_error, records, same_weights, tiny_cfg, torch_threads, weights, without_speed
from textvae import checkpoint
from textvae.checkpoint import atomic_write, commit_dir, list_checkpoints, read_checkpoint
from textvae.cli import main
from textvae.config import FORMAT_VERSION
from textvae.config_files import load_config
from textvae.train import Trainer, train

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "v0.1.0"

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- the atomic writer


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "f.json"
    atomic_write(path, "héllo\n")
    assert path.read_bytes() == "héllo\n".encode("utf-8")
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.json"]


def test_atomic_write_that_fails_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    atomic_write(path, "old")

    def no_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, "new")
    assert path.read_text() == "old"


def test_commit_dir_replaces_a_directory_and_a_stop_between_renames_is_recoverable(tmp_path):
    final, tmp = tmp_path / "best", tmp_path / ".best.tmp"
    for content in ("one", "two"):
        tmp.mkdir()
        (tmp / "x").write_text(content)
        commit_dir(tmp, final, tmp_path / "best.old")
        assert (final / "x").read_text() == content and not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    os.rename(final, tmp_path / "best.old")  # as if stopped between the two renames
    checkpoint.restore_interrupted_commit(final, tmp_path / "best.old")
    assert (final / "x").read_text() == "two"


def test_every_file_a_run_writes_goes_through_the_atomic_writer(tmp_path, monkeypatch):
    written = []
    original = checkpoint.atomic_write

    def spy(path, data):
        written.append(pathlib.Path(path).name)
        return original(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write", spy)
    monkeypatch.setattr("textvae.tokenizers.atomic_write", spy)
    train(load_config(preset="tiny", overrides=["train.max_steps=2", "data.builtin_size=100"]), tmp_path / "r",
          log=lambda m: None)
    assert {"trainer_state.json", "tokenizer.json"} <= set(written)


def test_list_checkpoints_ignores_temporary_bad_and_incomplete_directories(run_copy):
    d = run_copy / "checkpoints"
    for name in (".step-00000009.tmp", "bad-step-00000008", "step-00000007.old"):
        shutil.copytree(d / "step-00000004", d / name)
    (d / "step-00000006").mkdir()  # no trainer state: incomplete
    assert [c.name for c in list_checkpoints(run_copy)] == ["step-00000000", "step-00000004"]


# --------------------------------------------------------------------------- runs of textvae 0.1.0


def test_a_run_written_by_0_1_0_resumes_for_more_steps(tmp_path):
    """The v0.1.0 fixture (format 1: strategy state inside progress) resumes from its step-6
    checkpoint and trains on; its metrics up to step 6 are kept."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURE / "run", run)
    cfg = load_config(config_file=str(run / "config.json"), overrides=["train.max_steps=9"])
    logs = []
    tr = Trainer(cfg, run, resume=True, log=logs.append)
    assert tr.progress.step == 6 and tr.progress.epoch == 1 and tr.progress.best_step == 6
    assert any(f"resuming from {run / 'checkpoints' / 'step-00000006'}" in line for line in logs)
    before = weights(run / "checkpoints" / "step-00000006")
    result = tr.fit()
    assert result["step"] == 9 and result["stopped"] == "max_steps"
    assert list_checkpoints(run)[-1].name == "step-00000009"
    assert not same_weights(run / "checkpoints" / "step-00000006", run / "checkpoints" / "step-00000009")
    from textvae.model import shared_weights, upgrade_state_dict

    upgraded = set(upgrade_state_dict(dict(before), tr.cfg.model)) - set(shared_weights(tr.cfg.model))
    assert "posterior.weight" in before and set(weights(run / "checkpoints" / "step-00000009")) == upgraded
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[:8] == [0, 1, 2, 3, 4, 5, 6, 6] and steps[-1] == 9
    meta = json.loads((run / "checkpoints" / "step-00000009" / "trainer_state.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["progress"]["step"] == 9


def test_format_1_strategy_state_is_read_back(tmp_path):
    """aggressive / mi_prev / pretrain_end saved in progress by 0.1.0 reach the strategies."""
    from textvae import collapse
    from textvae.config import ObjectiveConfig

    saved = json.loads((FIXTURE / "run" / "checkpoints" / "step-00000006" / "trainer_state.json").read_text())
    progress = {**saved["progress"], "aggressive": True, "mi_prev": 0.25, "pretrain_end": 4}
    aggressive, pretrain = (collapse.strategies_for(ObjectiveConfig(aggressive=True, pretrain_ae_steps=3))[::-1])
    aggressive.load_state(progress)
    pretrain.load_state(progress)
    assert (aggressive.on, aggressive.mi_prev, pretrain.kl_schedule_start) == (True, 0.25, 4)
    assert checkpoint.Progress.from_dict(progress).step == 6


# --------------------------------------------------------------------------- malicious pickles never run

class Evil:
    """Unpickling this creates ``marker``: the proof that a loader executed pickled code."""

    marker: pathlib.Path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def evil_payload(kind: str, marker: pathlib.Path) -> bytes:
    Evil.marker = marker
    if kind == "pickle":
        return pickle.dumps(Evil())
    buf = io.BytesIO()  # a torch.save zip archive, which is what trainer_state.pt normally is
    torch.save({"optimizer": Evil(), "weights": torch.zeros(3)}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_malicious_pickle_in_every_weight_and_state_file_never_runs(run_copy, tmp_path, capsys, kind):
    marker = tmp_path / "pwned"
    payload = evil_payload(kind, marker)
    pickle.loads(payload) if kind == "pickle" else torch.load(io.BytesIO(payload), weights_only=False)
    assert marker.exists(), "the payload must be live for the test to mean anything"
    marker.unlink()

    replaced = [p for p in run_copy.rglob("*") if p.name in ("model.safetensors", "trainer_state.pt")]
    assert len(replaced) == 5  # best/ + two checkpoints x (weights, optimiser state)
    for p in replaced:
        p.write_bytes(payload)

    for model in (run_copy, run_copy / "best", run_copy / "checkpoints" / "step-00000004"):
        expect_error(capsys, ["sample", "--model", model, "-n", "2"],
                     "model.safetensors is not a valid safetensors file", "never unpickles")
    expect_error(capsys, ["evaluate", "--model", run_copy, "--iw-samples", "0"], "not a valid safetensors file")
    err = expect_error(capsys, ["train", *TINY, "--out", run_copy, "--resume", "train.max_steps=8"],
                       "no usable checkpoint", "step-00000004/trainer_state.pt", "step-00000000/trainer_state.pt",
                       "pickled Python objects", "refused")
    assert "add_safe_globals" not in err  # torch's advice to allowlist the code is not passed on
    assert not marker.exists()


def test_malicious_weights_alone_are_refused_by_resume(tiny_run, tmp_path, capsys):
    """Weights replaced, optimiser state untouched: safetensors refuses them on resume as well."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    marker = tmp_path / "pwned"
    for p in run.rglob("model.safetensors"):
        p.write_bytes(evil_payload("pickle", marker))
    expect_error(capsys, ["train", *TINY, "--out", run, "--resume", "train.max_steps=8"],
                 "no usable checkpoint", "step-00000004/model.safetensors", "SafetensorError")
    assert not marker.exists()


# --------------------------------------------------------------------------- damaged checkpoints, kills, resume

def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(run_copy, capsys):
    """A damaged step-4 (after its rename) is skipped, named, moved aside; resuming from step 0
    reproduces the step-4 weights exactly."""
    ckpts = run_copy / "checkpoints"
    original = {k: v.clone() for k, v in weights(ckpts / "step-00000004").items()}  # not views of the file
    bad = ckpts / "step-00000004" / "model.safetensors"
    bad.write_bytes(bad.read_bytes()[:1000])  # truncated
    _, err = cli(capsys, ["train", *TINY, "--out", run_copy, "--resume", "train.max_steps=4"])
    assert re.search(r"skipped checkpoint \S+step-00000004: \S+model.safetensors is damaged", err), err
    assert f"resuming from {ckpts / 'step-00000000'}" in err
    assert (ckpts / "bad-step-00000004").is_dir()  # kept for inspection, never resumed from
    again = weights(ckpts / "step-00000004")
    assert all(torch.equal(original[k], again[k]) for k in original)


def test_garbage_tokenizer_in_newest_checkpoint_falls_back(run_copy, capsys):
    (run_copy / "checkpoints" / "step-00000004" / "tokenizer.json").write_text("{not json")
    _, err = cli(capsys, ["train", *TINY, "--out", run_copy, "--resume", "train.max_steps=4"])
    assert "skipped checkpoint" in err and "tokenizer.json: invalid JSON" in err
    assert "resuming from" in err and "step-00000000" in err


def test_resume_refuses_newer_trainer_state_and_garbage_run_config(run_copy, capsys):
    state = run_copy / "checkpoints" / "step-00000004" / "trainer_state.json"
    meta = json.loads(state.read_text())
    state.write_text(json.dumps({**meta, "format_version": 99}))
    expect_error(capsys, ["train", *TINY, "--out", run_copy, "--resume"],
                 str(state), "format_version 99", "upgrade textvae")
    (run_copy / "config.json").write_text("{oops")
    expect_error(capsys, ["train", *TINY, "--out", run_copy, "--resume"],
                 f"{run_copy / 'config.json'}: invalid JSON at line 1")


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_over(run_copy, capsys):
    """A run that died during its first save has metrics but no checkpoint: --resume starts again
    (otherwise neither --resume nor a fresh start would accept the directory)."""
    shutil.rmtree(run_copy / "checkpoints")
    (run_copy / "checkpoints").mkdir()
    (run_copy / "checkpoints" / ".step-00000000.tmp").mkdir()  # the half-written save
    expect_error(capsys, ["train", *TINY, "--out", run_copy], "already holds a run", "--resume")
    _, err = cli(capsys, ["train", *TINY, "--out", run_copy, "--resume", "train.max_steps=4"])
    assert "no complete checkpoint yet" in err and "starting it again from step 0" in err
    assert [r["step"] for r in records(run_copy, "valid")] == [0, 4]  # not logged twice


def test_resume_restores_best_after_a_stop_between_its_two_renames(run_copy, capsys):
    """_save_best renames best -> best.old, then .best.tmp -> best; stopped in between, resume
    puts best.old back (sample --model RUN uses best.old meanwhile)."""
    os.rename(run_copy / "best", run_copy / "best.old")
    cli(capsys, ["sample", "--model", run_copy, "-n", "1"])
    cli(capsys, ["train", *TINY, "--out", run_copy, "--resume", "train.max_steps=4"])
    assert (run_copy / "best" / "model.safetensors").is_file() and not (run_copy / "best.old").exists()

# The killed runs save slowly so that "kill during a save" is a real, reliably hit window.
SLOW_SAVES = """
import sys, time
import textvae.checkpoint as c
fsync_tree = c.fsync_tree
def slow(path):
    fsync_tree(path)
    time.sleep(0.15)  # every checkpoint and best/ save stays half-done (a .tmp directory) this long
c.fsync_tree = slow
from textvae.cli import main
sys.exit(main(sys.argv[1:]))
"""
KILL_ARGS = ["train", "--preset", "tiny", "--no-summary", "train.checkpoint_every=3", "data.builtin_size=600"]


def _env():
    # one thread: fast on a busy 2-core machine, and the same arithmetic in every process
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0", HF_DATASETS_OFFLINE="1")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference run; call it to get it. It trains in this process, on one thread, when first called:
    a process of its own would spend more time importing torch and datasets than training."""
    out = tmp_path_factory.mktemp("ref") / "run"

    def run():
        if not out.exists():
            with torch_threads(1):
                assert main([*KILL_ARGS, "--out", str(out)]) == 0
        return out

    return run


def _tmp_saves(run):
    d = run / "checkpoints"
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp")) if d.is_dir() else []


def _step(name: str) -> int:
    return int(re.search(r"step-(\d+)", name).group(1))


def _records(run, kind):
    return without_speed(records(run, kind))


@pytest.mark.integration  # training processes killed and resumed
def test_sigkill_and_sigterm_at_random_points_then_resume_matches_uninterrupted(tmp_path, uninterrupted):
    """Kill -9 during the first save, during a later save and at a random moment, SIGTERM at a random
    moment, each time --resume: the losses and final weights equal the uninterrupted run's."""
    rng = random.Random(2016)
    run = tmp_path / "killed"
    stderr_path = tmp_path / "stderr.txt"
    base = [sys.executable, "-c", SLOW_SAVES, *KILL_ARGS, "--out", str(run)]

    def start(resume: bool):
        fh = open(stderr_path, "w")
        proc = subprocess.Popen(base + (["--resume"] if resume else []), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=fh)
        fh.close()
        return proc

    def wait_until(proc, ready, timeout=90):
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.002)

    def done_steps():
        return [_step(c.name) for c in list_checkpoints(run)]

    # 1. SIGKILL in the middle of the very first save: nothing complete on disk
    proc = start(resume=False)
    wait_until(proc, lambda: ".step-00000000.tmp" in _tmp_saves(run))
    proc.kill()
    proc.wait()
    assert done_steps() == []

    # 2. SIGKILL during a later save; the previous checkpoint stays complete and readable
    proc = start(resume=True)
    wait_until(proc, lambda: any(_step(n) >= 6 for n in _tmp_saves(run)))
    proc.kill()
    proc.wait()
    assert "starting it again from step 0" in stderr_path.read_text()
    in_progress = max(_step(n) for n in _tmp_saves(run))
    assert done_steps() and max(done_steps()) < in_progress
    for ckpt in list_checkpoints(run):
        read_checkpoint(ckpt)  # every complete checkpoint reads back

    # 3. SIGTERM at a random moment once training is under way: checkpoint, exit 130, say where
    proc = start(resume=True)
    last = max(done_steps())
    wait_until(proc, lambda: max(done_steps()) > last)
    time.sleep(rng.uniform(0.0, 0.6))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    err = stderr_path.read_text()
    m = re.search(r"interrupted: SIGTERM received at step (\d+): checkpoint saved in (\S+); continue with "
                  r"--resume", err)
    assert m, err
    term_step = int(m.group(1))
    assert pathlib.Path(m.group(2)) == list_checkpoints(run)[-1] and _step(m.group(2)) == term_step
    assert f"resuming from {run / 'checkpoints'}" in err

    # 4. SIGKILL at a random moment
    proc = start(resume=True)
    time.sleep(rng.uniform(3.0, 5.0))  # python + torch start-up is about 3 s
    proc.kill()
    proc.wait()

    # 5. run to the end
    proc = start(resume=True)
    assert proc.wait(timeout=120) == 0, stderr_path.read_text()
    assert "resuming from" in stderr_path.read_text()

    ref = uninterrupted()
    assert same_weights(list_checkpoints(ref)[-1], list_checkpoints(run)[-1])
    assert same_weights(ref / "best", run / "best")
    assert _records(ref, "valid") == _records(run, "valid")  # the same losses at every evaluation
    # Train records average the losses since the last one; the SIGTERM checkpoint wrote one off
    # schedule (at term_step), so the window up to the next scheduled record differs. All others match.
    window_end = min(r["step"] for r in _records(run, "train") if r["step"] > term_step)
    outside = lambda rs: [r for r in rs if not term_step <= r["step"] <= window_end]  # noqa: E731
    assert outside(_records(ref, "train")) == outside(_records(run, "train"))
    assert len(outside(_records(run, "train"))) >= len(_records(run, "train")) - 2


def test_resume_accepts_a_run_whose_config_saved_a_relative_data_dir(tmp_path, monkeypatch):
    """Runs saved by earlier versions kept data.data_dir as typed; resuming from the same directory works."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = [f"the {a} {b} ran to the {c} ." for a in ("old", "red") for b in ("dog", "cat") for c in ("park", "lake")]
    for split in ("train", "valid", "test"):
        (corpus / f"{split}.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(preset="tiny", overrides=["data.data_dir=corpus", "train.max_steps=2", "train.max_epochs=5"])
    train(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["data_dir"] == str(corpus)  # stored absolute
    saved["data"]["data_dir"] = "corpus"  # as an older version wrote it
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    result = train(load_config(preset="tiny", overrides=["data.data_dir=corpus", "train.max_steps=3", "train.max_epochs=5"]),
                   tmp_path / "run", resume=True)
    assert result["step"] == 3


def test_resume_restores_a_checkpoint_stopped_between_the_two_renames_of_its_replacement(run_copy, capsys):
    """A step saved twice (checkpoint_every at an epoch's last step, then the epoch's validation) replaces
    its directory: step-N -> .step-N.old, then .step-N.tmp -> step-N. Stopped in between, with
    keep_checkpoints=1 no other checkpoint is left: resume puts it back instead of starting from step 0
    (and dropping metrics.jsonl)."""
    ckpts = run_copy / "checkpoints"
    shutil.rmtree(ckpts / "step-00000000")  # pruned by keep_checkpoints=1
    os.rename(ckpts / "step-00000004", ckpts / ".step-00000004.old")
    _, err = cli(capsys, ["train", *TINY, "--out", run_copy, "--resume", "train.max_steps=4"])
    assert f"resuming from {ckpts / 'step-00000004'}" in err and "from step 0" not in err
    assert [c.name for c in list_checkpoints(run_copy)] == ["step-00000004"]
    assert not (ckpts / ".step-00000004.old").exists()
    assert [r["step"] for r in records(run_copy, "valid")] == [0, 4]


def test_resume_removes_the_leftovers_of_a_save_or_a_prune_killed_part_way(run_copy, capsys):
    ckpts = run_copy / "checkpoints"
    shutil.copytree(ckpts / "step-00000004", ckpts / ".step-00000006.tmp")  # a save killed before its rename
    shutil.copytree(ckpts / "step-00000000", ckpts / ".step-00000002.del")  # a prune killed during its rmtree
    (ckpts / ".notes.tmp").mkdir()  # not a checkpoint's: left alone
    cli(capsys, ["train", *TINY, "--out", run_copy, "--resume", "train.max_steps=4"])
    assert not (ckpts / ".step-00000006.tmp").exists() and not (ckpts / ".step-00000002.del").exists()
    assert (ckpts / ".notes.tmp").is_dir()


def test_resume_hides_the_tensorboard_events_logged_after_its_checkpoint(tmp_path):
    """A sitting stopped after logging past its last checkpoint: --resume logs those steps again, so TensorBoard
    must drop the first copies (SummaryWriter's purge_step), as metrics.jsonl does, or every curve shows two
    overlapping lines. Without a checkpoint (a restart from step 0) it drops them all."""
    pytest.importorskip("tensorboard", reason="train.tensorboard=true needs the tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def scalars(run):  # {tag: [(step, value), ...]} as TensorBoard shows them, throughput aside
        acc = EventAccumulator(str(run / "tb"))
        acc.Reload()
        return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
                for tag in acc.Tags()["scalars"] if not tag.endswith("tokens_per_s")}

    cfg = tiny_cfg("train.tensorboard=true", "train.checkpoint_every=4", "train.keep_checkpoints=5",
                   "train.max_steps=8")
    whole, run = tmp_path / "whole", tmp_path / "run"
    train(cfg, whole)
    want = scalars(whole)
    assert {s for s, _ in want["train/loss"]} > {4} and {s for s, _ in want["valid/elbo"]} == {0, 8}
    train(cfg, run)
    checkpoint.remove_dir(list_checkpoints(run)[-1])  # stopped after step 8's logs, before its checkpoint
    train(cfg, run, resume=True)  # from step 4
    assert scalars(run) == want
    for ckpt in list_checkpoints(run):  # stopped before its first checkpoint
        checkpoint.remove_dir(ckpt)
    train(cfg, run, resume=True)  # from step 0
    assert scalars(run) == want


def test_every_rank_gets_back_its_own_cuda_random_state(tmp_path, monkeypatch):
    """Under torchrun on GPUs dropout draws from each rank's CUDA generator (seeded per rank): the
    checkpoint keeps one per rank and rank r resumes with its own, not rank 0's."""
    from textvae.distributed import Processes

    class TwoRanks(Processes):  # rank 1's states are rank 0's, told apart by a marker
        def gather(self, obj):
            return [obj, obj.flip(0) if obj.dtype == torch.uint8 and obj.numel() == 8 else obj.clone()]

        def barrier(self):
            pass

    gpu = torch.device("cuda", 0)
    own = torch.arange(8, dtype=torch.uint8)  # this process's CUDA generator state
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": own.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append(state.clone()))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: restored.append(seed))
    tr = Trainer(load_config(preset="tiny"), tmp_path / "run", log=lambda m: None)
    tr.procs, tr.device = TwoRanks(0, 2, gpu), gpu
    ckpt = checkpoint.save_trainer(tr)
    tr.procs, tr.is_main = TwoRanks(1, 2, gpu), False
    checkpoint.load_trainer(tr, ckpt)
    assert len(restored) == 1 and torch.equal(restored[0], own.flip(0))  # rank 1's, not rank 0's
