"""The training loop (textvae.train): learning, resume after a crash or a kill, the non-finite guard,
LR decay and early stopping, the time budget, evaluation, the end-of-run summary and SIGINT."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from helpers import (TINY, cli, crash_after_checkpoint, expect_error, records, tiny_cfg, weights,
                     without_speed)
from textvae.batching import BucketBatchSampler
from textvae.checkpoint import Progress, list_checkpoints, read_checkpoint
from textvae.cli import main
from textvae.errors import ConfigError, DataError, TrainingError
from textvae.model import TextVAE
from textvae.optim import improves_best, plateau, record_score
from textvae.train import Trainer, train

def test_training_lowers_valid_elbo_and_logs_it(tmp_path):
    run = tmp_path / "run"
    result = train(tiny_cfg("train.max_epochs=3"), run)
    valid = records(run, "valid")
    assert valid[0]["step"] == 0 and valid[-1]["step"] == result["step"] > 0
    assert valid[-1]["elbo"] < valid[0]["elbo"] - 5  # a real drop, not noise
    train_logs = records(run, "train")
    assert train_logs and all({"loss", "rec", "kl", "kl_weight", "lr", "tokens_per_s"} <= set(r) for r in train_logs)
    # kl_weight follows the linear schedule of the tiny preset (warm-up 40 steps from 0)
    assert train_logs[0]["kl_weight"] < train_logs[-1]["kl_weight"] <= 1.0
    model = TextVAE.from_pretrained(run)
    assert (run / "best" / "config.json").is_file() and model.config.latent_dim == 4


def test_out_dir_with_a_run_needs_resume(tmp_path):
    run = tmp_path / "run"
    train(tiny_cfg("train.max_steps=3"), run)
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny_cfg("train.max_steps=3"), run)
    with pytest.raises(ConfigError, match="model.latent_dim"):
        train(tiny_cfg("train.max_steps=6", "model.latent_dim=5"), run, resume=True)


def test_checkpoint_minutes_saves_when_the_time_has_passed(tmp_path, monkeypatch):
    saved, original = [], Trainer._save_checkpoint

    def spy(self):
        saved.append(self.progress.step)
        return original(self)

    monkeypatch.setattr(Trainer, "_save_checkpoint", spy)
    train(tiny_cfg("train.max_steps=6", "train.checkpoint_minutes=60"), tmp_path / "hour")
    assert saved == [0, 6]  # the first validation's and the last; an hour never passed
    saved.clear()
    minute = time.monotonic()
    monkeypatch.setattr("textvae.distributed.time.monotonic", lambda: minute)
    tr = Trainer(tiny_cfg("train.max_steps=7", "train.checkpoint_minutes=0.5"), tmp_path / "clock")

    def step_then_tick(*a, _step=tr.step):  # every step takes 20 s of the patched clock
        nonlocal minute
        minute += 20.0
        return _step(*a)

    tr.step = step_then_tick
    tr.fit()
    assert saved == [0, 2, 4, 6, 7]  # 30 s from each save: after its second step of 20 s; then the last
    with pytest.raises(ConfigError, match=r"train.checkpoint_minutes=0(\.0)? must be > 0"):
        tiny_cfg("train.checkpoint_minutes=0")


@pytest.mark.integration  # three whole trainings: uninterrupted, crashed, resumed
def test_resume_after_crash_is_exact(tmp_path, monkeypatch):
    cfg = ("train.checkpoint_every=7", "train.max_epochs=2", "model.emb_dropout=0.1")
    full = tmp_path / "full"
    train(tiny_cfg(*cfg), full)

    # Crash right after the step-14 checkpoint (mid-epoch), then resume.
    crashed = tmp_path / "crashed"
    original = crash_after_checkpoint(monkeypatch, 14)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_cfg(*cfg), crashed)
    monkeypatch.setattr(Trainer, "_save_checkpoint", original)
    train(tiny_cfg(*cfg), crashed, resume=True)

    a, b = weights(list_checkpoints(full)[-1]), weights(list_checkpoints(crashed)[-1])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert without_speed(records(full, "valid")) == without_speed(records(crashed, "valid"))
    assert without_speed(records(full, "train")) == without_speed(records(crashed, "train"))


@pytest.mark.integration  # three whole trainings, as above, with beta-TCVAE's queue of posteriors
def test_resume_restores_the_tc_queue_exactly(tmp_path, monkeypatch):
    cfg = ("train.checkpoint_every=7", "train.max_epochs=2", "objective.tc_beta=4", "objective.tc_queue=100",
           "objective.tc_queue_marginals=40")
    full = tmp_path / "full"
    train(tiny_cfg(*cfg), full)
    crashed = tmp_path / "crashed"
    original = crash_after_checkpoint(monkeypatch, 14)  # the queue is full by then (14 x 32 > 100)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_cfg(*cfg), crashed)
    _, state, _ = read_checkpoint(list_checkpoints(crashed)[-1])
    assert state["tc_queue_ranks"][0]["param0"].shape == (100, 4)
    monkeypatch.setattr(Trainer, "_save_checkpoint", original)
    train(tiny_cfg(*cfg), crashed, resume=True)
    a, b = weights(list_checkpoints(full)[-1]), weights(list_checkpoints(crashed)[-1])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert without_speed(records(full, "train")) == without_speed(records(crashed, "train"))


@pytest.mark.integration  # training processes killed and resumed
@pytest.mark.slow  # test_checkpoint.py kills at several points, including mid-save
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    """A real SIGKILL of a training process, then --resume: same final weights as no kill."""
    args = ["--preset", "tiny", "--no-summary", "train.checkpoint_every=5", "train.max_epochs=2",
            "data.builtin_size=900"]
    env = dict(os.environ, PYTHONHASHSEED="0")
    cmd = [sys.executable, "-m", "textvae", "train"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(cmd + ["--out", str(full)] + args, check=True, env=env, capture_output=True)

    proc = subprocess.Popen(cmd + ["--out", str(killed)] + args, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not any(c.name >= "step-00000010" for c in list_checkpoints(killed)):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list_checkpoints(killed), "training was killed before its first checkpoint"
    subprocess.run(cmd + ["--out", str(killed), "--resume"] + args, check=True, env=env, capture_output=True)
    a, b = weights(list_checkpoints(full)[-1]), weights(list_checkpoints(killed)[-1])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_with_message_and_best_still_loads(tmp_path, monkeypatch):
    run = tmp_path / "run"
    original = TextVAE.forward

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.training and poisoned.calls >= 5:
            out.rec = out.rec * float("nan")
        poisoned.calls += 1
        return out

    poisoned.calls = 0
    monkeypatch.setattr(TextVAE, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite reconstruction at step 5.*last good checkpoint"):
        train(tiny_cfg(), run)
    monkeypatch.setattr(TextVAE, "forward", original)
    assert TextVAE.from_pretrained(run).config.latent_dim == 4


def test_skip_policy_skips_nonfinite_steps(tmp_path, monkeypatch):
    original = TextVAE.forward
    calls = {"n": 0}

    def sometimes_nan(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if self.training and calls["n"] == 3:
            out.kl = out.kl * float("inf")
        return out

    monkeypatch.setattr(TextVAE, "forward", sometimes_nan)
    logs = []
    result = train(tiny_cfg("train.nonfinite=skip", "train.max_steps=6"), tmp_path / "r", log=logs.append)
    assert result["step"] == 6 and any("step skipped" in l and "KL" in l for l in logs)


def test_resume_goes_on_counting_the_nonfinite_steps_in_a_row(tmp_path, monkeypatch):
    """train.nonfinite=skip stops at MAX_SKIPS non-finite steps in a row. The count is checkpointed: resumed
    within such a row, a run stops where the uninterrupted one does instead of counting again from 0. A
    checkpoint without the count (written before it was saved) still loads, counting from 0."""
    monkeypatch.setattr(sys.modules[Trainer.__module__], "MAX_SKIPS", 3)  # textvae.train, the module
    original = Trainer.loss

    def nan_in_steps_3_to_5(self, *args):
        loss, rec, kl, beta = original(self, *args)
        if 3 <= self.progress.step <= 5:
            return loss * math.nan, rec * math.nan, kl, beta
        return loss, rec, kl, beta

    monkeypatch.setattr(Trainer, "loss", nan_in_steps_3_to_5)
    cfg = tiny_cfg("train.nonfinite=skip", "train.checkpoint_every=4", "train.max_steps=8")
    with pytest.raises(TrainingError, match="non-finite reconstruction at step 5"):  # the third in a row
        train(cfg, tmp_path / "whole")
    run, old = tmp_path / "run", tmp_path / "old"
    save = crash_after_checkpoint(monkeypatch, 4)  # one skipped step (3) before it, two after
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, run)
    monkeypatch.setattr(Trainer, "_save_checkpoint", save)
    state = list_checkpoints(run)[-1] / "trainer_state.json"
    meta = json.loads(state.read_text())
    assert meta["progress"]["nonfinite_skips"] == 1
    shutil.copytree(run, old)
    with pytest.raises(TrainingError, match="non-finite reconstruction at step 5"):
        train(cfg, run, resume=True)
    del meta["progress"]["nonfinite_skips"]
    (old / state.relative_to(run)).write_text(json.dumps(meta))
    assert train(cfg, old, resume=True)["step"] == 8  # two skips in a row from 0: under MAX_SKIPS


def test_a_split_too_small_for_one_batch_per_process_is_refused(tmp_path, monkeypatch):
    """With fewer examples than processes (torchrun on a tiny split) the sampler gives no batch: every
    epoch ended at once and the run finished at step 0, its model untrained, as if it had converged."""
    one_example = lambda split, t, world, rank, **kw: BucketBatchSampler(split.lengths[:1], t.batch_size,
                                                                       num_replicas=2)
    monkeypatch.setattr(sys.modules[Trainer.__module__], "batch_sampler", one_example)  # 1 example, 2 processes
    with pytest.raises(DataError, match=r"too few for one batch shared by .*fewer processes"):
        train(tiny_cfg("train.max_steps=4"), tmp_path / "r")


def test_early_stopping_after_max_decays(tmp_path):
    # lr 0 -> no improvement ever; patience 0 -> decay at every evaluation; stop after 1 decay.
    result = train(tiny_cfg("train.lr=1e-12", "train.lr_patience=0", "train.max_decays=1",
                            "train.eval_every=2", "train.max_epochs=20"), tmp_path / "r")
    assert result["step"] < 20
    valid = records(tmp_path / "r", "valid")
    assert valid[-1]["lr"] < valid[0]["lr"]


def test_time_budget_stops_validates_and_resumes(tmp_path, monkeypatch):
    # A clock that advances 1 s per reading: train.max_minutes=0.1 (6 s) ends the sitting after a
    # few of the trainer's checks (one per step), long before the 20 planned epochs.
    clock = iter(range(10 ** 6))
    monkeypatch.setattr(time, "monotonic", lambda: float(next(clock)))
    run = tmp_path / "r"
    cfg = tiny_cfg("train.max_epochs=20", "train.max_minutes=0.1")
    trainer = Trainer(cfg, run)
    result = trainer.fit()
    assert result["stopped"] == "time"
    assert 0 < result["step"] < trainer.total_steps
    assert records(run, "valid")[-1]["step"] == result["step"]  # validated where it stopped
    assert list_checkpoints(run)[-1].name == f"step-{result['step']:08d}"
    # the next sitting gets a budget of its own and goes on from there
    again = train(cfg, run, resume=True)
    assert again["stopped"] == "time" and again["step"] > result["step"]
    assert train(tiny_cfg("train.max_steps=3"), tmp_path / "short")["stopped"] == "max_steps"


def test_resume_after_a_step_budget_between_validations_is_exact(tmp_path):
    """A stop by train.max_steps mid-epoch validates for best/, but that validation is not one of the
    plateau's: with lr_patience=1 and a learning rate too small to improve anything, the uninterrupted run
    decays once (at its step-36 validation); stopped at step 18 and resumed, it must decay there too."""
    cfg = ("data.builtin_size=400", "train.lr_patience=1", "train.max_epochs=3", "train.lr=1e-9")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(tiny_cfg(*cfg, "train.max_steps=36"), whole)
    first = train(tiny_cfg(*cfg, "train.max_steps=18"), parts)
    assert first["stopped"] == "max_steps" and records(parts, "valid")[-1]["step"] == 18  # validated at its stop
    train(tiny_cfg(*cfg, "train.max_steps=36"), parts, resume=True)
    a, b = weights(list_checkpoints(whole)[-1]), weights(list_checkpoints(parts)[-1])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    scheduled = [r for r in records(parts, "valid") if r["step"] != 18]
    assert [r["lr"] for r in records(whole, "valid")] == [r["lr"] for r in scheduled]
    assert without_speed(records(whole, "train")) == without_speed(records(parts, "train"))
    state = lambda run: json.loads((list_checkpoints(run)[-1] / "trainer_state.json").read_text())["progress"]  # noqa: E731
    assert state(whole) == state(parts)


def test_time_budget_must_be_positive():
    with pytest.raises(ConfigError, match="train.max_minutes"):
        tiny_cfg("train.max_minutes=0")


def test_model_selection_plateau_and_early_stopping_are_separate_steps():
    t = tiny_cfg("train.lr_patience=1", "train.max_decays=1").train
    p = Progress(step=1)
    assert record_score(p, 10.0) and p.plateau_best == 10.0 and p.best_step == -1  # best/ is improves_best's
    assert improves_best(p, 10.0) and (p.best_elbo, p.best_step) == (10.0, 1) and not improves_best(p, 10.0)
    assert not record_score(p, 10.0) and p.bad_evals == 1 and plateau(p, t) is None  # patience 1
    assert not record_score(p, 11.0) and plateau(p, t) == "decay" and p.bad_evals == 0
    p.decays = 1
    record_score(p, 12.0), record_score(p, 12.0)
    assert plateau(p, t) == "stop"


def test_evaluate_returns_numbers_and_leaves_the_run_alone(tmp_path):
    tr = Trainer(tiny_cfg(), tmp_path / "run", log=lambda m: None)
    lr, best = tr.lr(), tr.progress.best_elbo
    v = tr.evaluate()
    assert {"rec", "kl", "elbo", "ppl_elbo", "au"} <= set(v) and v["elbo"] > 0
    assert tr.lr() == lr and tr.progress.best_elbo == best and not (tmp_path / "run" / "best").exists()
    tr.after_validation(v)
    assert tr.progress.best_elbo == pytest.approx(v["elbo"]) and (tmp_path / "run" / "best").is_dir()


@pytest.mark.integration  # a whole CLI training with its summary
def test_summary_is_elbo_based_unless_importance_weighting_is_asked_for(tmp_path, capsys):
    args = ["train", "--preset", "tiny", "train.max_steps=2", "data.builtin_size=200", "train.progress=true"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert "| split | elbo | rec | kl | ppl_elbo | au |" in out and "nll_iw" not in out
    assert "| test |" in out and "samples from the prior:" in out
    assert main([*args, "--out", str(tmp_path / "b"), "--summary-iw", "3"]) == 0
    out, err = capsys.readouterr()
    assert "nll_iw (k=3)" in out and "summary: test IW k=3" in err  # the progress bar names each pass


@pytest.mark.integration  # a whole CLI training with its summary
def test_summary_valid_row_is_the_best_models_own_validation(tmp_path, capsys):
    """The valid row is not computed again: it is the validation that selected the best model, and
    equals a fresh pass of textvae.metrics.validate over the best model."""
    from textvae.metrics import model_split, validate

    run = tmp_path / "a"
    argv = ["train", "--preset", "tiny", "train.max_steps=6", "data.builtin_size=200", "train.progress=true",
            "--out", str(run)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "summary: test ELBO" in err and "summary: valid ELBO" not in err
    valid_row = next(line for line in out.splitlines() if line.startswith("| valid |"))
    model = TextVAE.from_pretrained(run)
    cfg = tiny_cfg("train.max_steps=6", "data.builtin_size=200")
    v = validate(model, model_split(model, "valid", data=cfg.data), batch_size=64, seed=cfg.train.seed)
    assert valid_row.split("|")[2].strip() == f"{v['elbo']:.2f}"


@pytest.mark.integration  # a CLI training interrupted, then resumed
def test_sigint_checkpoints_exits_130_and_resume_continues(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    original = TextVAE.forward
    calls = {"n": 0}

    def interrupt_at_third_step(self, *args, **kwargs):
        if self.training:
            calls["n"] += 1
            if calls["n"] == 3:
                os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would, while a step runs
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TextVAE, "forward", interrupt_at_third_step)
    _, err = cli(capsys, ["train", *TINY, "--out", run, "train.max_steps=6"], code=130)
    ckpt = run / "checkpoints" / "step-00000003"
    assert f"interrupted: SIGINT received at step 3: checkpoint saved in {ckpt}; continue with --resume" in err
    monkeypatch.setattr(TextVAE, "forward", original)
    out, err = cli(capsys, ["train", *TINY, "--out", run, "--resume", "train.max_steps=6"])
    assert f"resuming from {ckpt}" in err and "trained to step 6" in out


# --------------------------------------------------------------------------- numerical guard (CLI)

@pytest.mark.parametrize("term, field", [("reconstruction", "rec"), ("KL", "kl")])
def test_nan_stops_training_with_step_and_term_and_best_still_loads(tmp_path, capsys, monkeypatch, term, field):
    run = tmp_path / "run"
    original = TextVAE.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.training:
            calls["n"] += 1
            if calls["n"] > 5:  # steps 0-4 are fine, step 5 is not
                setattr(out, field, getattr(out, field) * float("nan"))
        return out

    monkeypatch.setattr(TextVAE, "forward", poisoned)
    err = expect_error(capsys, ["train", *TINY, "--out", run, "train.checkpoint_every=2"],
                       f"non-finite {term} at step 5 (epoch 0)", "Training stopped",
                       f"the last good checkpoint is {run / 'checkpoints' / 'step-00000004'}",
                       f"the best model is in {run / 'best'}", "train.nonfinite=skip")
    assert "nan" in err
    monkeypatch.setattr(TextVAE, "forward", original)
    out, _ = cli(capsys, ["sample", "--model", run, "-n", "2"])
    assert len(out.splitlines()) == 2
    read_checkpoint(run / "checkpoints" / "step-00000004")


def test_a_training_step_runs_under_bf16_autocast(tmp_path):
    # train.precision=bf16 is refused on the CPU (a GPU option), but the step it runs, the forward
    # pass under torch.autocast(bfloat16) with the scaler off, is the same code: run it on the CPU
    # wherever this torch has CPU bf16 autocast
    from textvae.precision import autocast

    if not getattr(torch.amp, "is_autocast_available", lambda device: False)("cpu"):
        pytest.skip("this torch has no CPU autocast")
    trainer = Trainer(tiny_cfg("data.builtin_size=300"), tmp_path / "run")
    trainer.cfg.train.precision = "bf16"  # what check_precision refuses on the CPU, set after it
    batch, offset, size = trainer.shard(trainer.sampler.global_batches(0)[0])
    with autocast(trainer.device, "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    before = [p.detach().clone() for p in trainer.model.parameters()]
    terms = trainer.step(batch, offset, size)
    assert terms is not None and torch.isfinite(terms["loss"]) and terms["loss"].dtype == torch.float32
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))
    assert not trainer.scaler.is_enabled()  # fp16 only


# --------------------------------------------------------------------------- SIGINT/SIGTERM in every phase

# A subprocess runs `textvae train` with one function wrapped so that the process signals itself while
# that function runs: the phase is then certain, however fast or loaded the machine is.
PHASE_DRIVER = r"""
import importlib, os, signal, sys

module, name, call, sig = sys.argv[1], sys.argv[2], int(sys.argv[3]), getattr(signal, sys.argv[4])
loop, cli = importlib.import_module("textvae.train"), importlib.import_module("textvae.cli")
owner = {"train": loop, "checkpoint": importlib.import_module("textvae.checkpoint"), "Trainer": loop.Trainer,
         "run_summary": importlib.import_module("textvae.run_summary"),
         "data": importlib.import_module("textvae.data")}[module]
original, calls = getattr(owner, name), {"n": 0}

def signalling(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == call:
        print(f"sending {sys.argv[4]} during {name}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), sig)
    return original(*args, **kwargs)

setattr(owner, name, signalling)
sys.exit(cli.main(sys.argv[5:]))
"""

# (phase, function to signal in, which call, expected message); tiny, 6 steps of 2 epochs, eval every 3
PHASES = [
    ("data preparation", "data", "load_splits", 1,
     "received during start-up (data, tokenizer, model), before the first step; no checkpoint was saved"),
    ("model building", "train", "TextVAE", 1, "received during start-up"),
    ("first validation", "train", "validate", 1,
     "received before the first step: checkpoint saved in {run}/checkpoints/step-00000000"),
    ("a training step", "Trainer", "step", 2, "received at step 2: checkpoint saved in {run}/checkpoints/step-00000002"),
    ("a validation", "train", "validate", 2, "received at step 3: checkpoint saved in {run}/checkpoints/step-00000003"),
    ("checkpoint writing", "checkpoint", "save_trainer", 2,
     "received at step 3: checkpoint saved in {run}/checkpoints/step-00000003"),
    ("the last validation", "train", "validate", 3,
     "received at step 6: checkpoint saved in {run}/checkpoints/step-00000006"),
    ("the end-of-run summary", "run_summary", "print_summary", 1, "interrupted"),
]


@pytest.mark.integration
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase, module, name, call, message", PHASES, ids=[p[0] for p in PHASES])
def test_a_signal_in_any_phase_exits_130_with_a_message(tmp_path, phase, module, name, call, message, sig):
    run = tmp_path / "run"
    summary = [] if phase == "the end-of-run summary" else ["--no-summary"]
    argv = ["train", "--preset", "tiny", *summary, "--out", str(run), "train.max_steps=6", "train.eval_every=3",
            "data.builtin_size=200"]
    proc = subprocess.run([sys.executable, "-c", PHASE_DRIVER, module, name, str(call), sig, *argv],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONHASHSEED="0"))
    assert proc.returncode == 130, proc.stderr
    assert f"sending {sig}" in proc.stderr and "Traceback" not in proc.stderr
    assert "textvae train: interrupted" in proc.stderr
    assert message.format(run=run).replace("SIG", "") in proc.stderr, proc.stderr
    if "checkpoint saved" in message:
        assert f"{sig} {message.format(run=run)}" in proc.stderr and "continue with --resume" in proc.stderr
    if "checkpoint saved" in message and sig == "SIGTERM":  # SIGINT saves through the same path
        resumed = subprocess.run([sys.executable, "-m", "textvae", *argv, "--resume"], capture_output=True,
                                 text=True, timeout=120)
        assert resumed.returncode == 0 and "trained to step 6" in resumed.stdout, resumed.stderr


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_real_signal_while_training_saves_a_checkpoint(tmp_path, sig):
    """The user's case: a signal from outside once training has started (waited for on its log line)."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "textvae", "train", "--preset", "tiny", "--no-summary",
                             "--out", str(run), "train.max_epochs=1000", "data.builtin_size=200"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stderr:  # the first validation is logged just before the first step
        lines.append(line)
        if line.startswith("valid step 0 "):
            break
    time.sleep(0.5)
    proc.send_signal(sig)
    err = "".join(lines) + proc.stderr.read()
    assert proc.wait(timeout=60) == 130, err
    assert f"interrupted: {sig.name} received at step" in err and "Traceback" not in err
    assert list_checkpoints(run) and "continue with --resume" in err


def test_beta_tcvae_trains_and_its_loss_differs_from_the_elbo(tmp_path):
    """objective.tc_beta=6 reaches the step: the logged loss (rec + KL + 5 TC with the KL weight) is
    not the plain one, for the same run otherwise."""
    plain = train(tiny_cfg("train.max_steps=4", "train.eval_every=4"), tmp_path / "plain")
    tc = train(tiny_cfg("train.max_steps=4", "train.eval_every=4", "objective.tc_beta=6"), tmp_path / "tc")
    assert tc["step"] == plain["step"] == 4
    loss = {name: [r["loss"] for r in records(tmp_path / name, "train")] for name in ("plain", "tc")}
    assert loss["plain"] and all(math.isfinite(x) for x in loss["tc"]) and loss["tc"] != loss["plain"]


def test_beta_tcvae_trains_on_uniform_batches_and_other_objectives_on_length_buckets(tmp_path):
    """beta-TCVAE estimates q(z) from the batch, so its batches must sample the data set uniformly
    (textvae.objectives.uniform_batches); the other objectives keep the faster length buckets."""
    plain = Trainer(tiny_cfg("train.max_steps=1"), tmp_path / "plain")
    tc = Trainer(tiny_cfg("train.max_steps=1", "objective.tc_beta=6"), tmp_path / "tc")
    assert plain.sampler.by_length and not tc.sampler.by_length
    lengths = tc.train_data.lengths
    spread = lambda s: np.mean([np.ptp(lengths[b]) for b in s.global_batches(0)])
    assert spread(tc.sampler) > 3 * spread(plain.sampler)  # the tiny corpus's lengths mix within a batch


def test_a_run_resumes_on_the_batches_it_started_with(tmp_path):
    """A beta-TCVAE run checkpointed before batches were chosen by objective (no "batches" key: length
    buckets) resumes on length buckets, so resuming stays exact, and says so; a new one saves its kind."""
    cfg = ("train.max_steps=2", "train.checkpoint_every=2", "objective.tc_beta=6")
    train(tiny_cfg(*cfg), tmp_path / "new")
    state = list_checkpoints(tmp_path / "new")[-1] / "trainer_state.json"
    meta = json.loads(state.read_text())
    assert meta["batches"] == "uniform"
    del meta["batches"]
    state.write_text(json.dumps(meta))
    said = []
    resumed = Trainer(tiny_cfg(*cfg[1:], "train.max_steps=4"), tmp_path / "new", resume=True, log=said.append)
    assert resumed.sampler.by_length
    assert any("started on length batches and resumes on them" in m for m in said)
