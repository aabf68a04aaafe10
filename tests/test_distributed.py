"""DistributedDataParallel on CPU: 2 gloo processes == 1 process with the same global batch."""
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from helpers import torch_threads
from textvae.checkpoint import list_checkpoints
from textvae.cli import main

# No dropout of any kind, so the only randomness is the reparameterisation noise, which the
# trainer draws per global batch from a generator shared by all ranks.
ARGS = ["--preset", "tiny", "--no-summary", "train.max_steps=8", "train.batch_size=16", "data.builtin_size=300",
        "model.word_dropout=0", "model.emb_dropout=0", "train.checkpoint_every=4"]


# a VQ latent whose codebook changes outside the gradient: EMA updates and dead-code restarts every 2 steps.
# SGD: Adam's first steps turn a word's near-zero gradient (float noise of the summation order) into a
# step of up to lr, which made one rarely seen word's embedding differ by 1.5e-4 between the two runs.
VQ = ["model.latent=vq", "model.latent_vars=2", "model.latent_classes=16", "model.code_dim=4", "model.vq_ema=true",
      "model.vq_restart_window=2", "train.optimizer=sgd", "train.lr=0.5"]


@pytest.mark.integration  # torchrun starts gloo processes
@pytest.mark.parametrize("latent", [[], VQ], ids=["gaussian", "vq"])
def test_two_gloo_processes_match_one_process(tmp_path, latent):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    log = tmp_path / "ddp.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                 "2", "-m", "textvae", "train", "--out", str(ddp), *ARGS, *latent],
                                env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        # the one-process run here, while torchrun starts: a process of its own would add a torch import
        with torch_threads(1):
            assert main(["train", "--out", str(single), *ARGS, *latent]) == 0
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.terminate()  # torchrun passes SIGTERM on to its processes
            proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()[-3000:]
    a = load_file(str(list_checkpoints(single)[-1] / "model.safetensors"))
    b = load_file(str(list_checkpoints(ddp)[-1] / "model.safetensors"))
    assert list_checkpoints(ddp)[-1].name == "step-00000008"
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5, rtol=1e-4), k
    # and the run really moved away from its initialisation
    first = load_file(str(sorted((ddp / "checkpoints").glob("step-*"))[0] / "model.safetensors"))
    assert any(not torch.allclose(first[k], b[k]) for k in b)


@pytest.mark.integration  # torchrun starts gloo processes
def test_time_budget_stops_every_process_at_the_same_step(tmp_path):
    # rank 0 decides and broadcasts: a rank that stopped alone would leave the other waiting in DDP
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [a for a in ARGS if not a.startswith("train.max_steps=")] + ["train.max_epochs=1000",
                                                                         "train.max_minutes=0.02"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "textvae", "train", "--out", str(tmp_path / "ddp"), *args],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "time budget train.max_minutes=0.02 reached" in proc.stdout + proc.stderr
    assert list_checkpoints(tmp_path / "ddp")


def test_one_process_needs_no_process_group(monkeypatch):
    from textvae import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    procs = distributed.setup("cpu")
    assert (procs.rank, procs.world, procs.is_main, procs.owns_group) == (0, 1, True, False)
    model = torch.nn.Linear(2, 2)
    assert procs.wrap(model) is model and procs.gather("x") == ["x"] and procs.main_decides(True)
    assert procs.all_sum([1.5, 2.0]) == [1.5, 2.0]
    procs.barrier()
    procs.close()


def test_deadline_is_checked_against_the_clock(monkeypatch):
    import time

    from textvae import distributed

    clock = iter([0.0, 30.0, 61.0, 62.0])
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    d = distributed.Deadline(1.0, distributed.setup("cpu"))
    assert not d.check() and d.check() and d.check() and d.passed
    assert not distributed.Deadline(None, distributed.setup("cpu")).check()


@pytest.mark.integration  # torchrun starts gloo processes
def test_each_process_keeps_and_checkpoints_its_own_tc_queue(tmp_path):
    from textvae.checkpoint import read_checkpoint

    env = dict(os.environ, OMP_NUM_THREADS="1")
    tc = ["objective.tc_beta=4", "objective.tc_queue=40", "objective.tc_queue_marginals=8"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "textvae", "train", "--out", str(tmp_path / "ddp"), *ARGS, *tc],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, state, _ = read_checkpoint(list_checkpoints(tmp_path / "ddp")[-1])
    ranks = state["tc_queue_ranks"]
    assert len(ranks) == 2 and all(r["param0"].shape == (40, 4) for r in ranks)  # 8 steps x 8 rows, newest 40
    assert not torch.equal(ranks[0]["param0"], ranks[1]["param0"])  # each rank queues its own share


# rank 1 alone receives SIGTERM while it computes step 6 (torchrun forwards a signal to each worker in turn)
ONE_RANK_SIGNALLED = """
import os, signal, sys
from textvae.train import Trainer
step = Trainer.step
def step_then_signal(self, *args):
    out = step(self, *args)
    if self.procs.rank == 1 and self.progress.step == 5:
        os.kill(os.getpid(), signal.SIGTERM)
    return out
Trainer.step = step_then_signal
from textvae.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.integration  # torchrun starts gloo processes
def test_a_signal_that_reaches_one_process_stops_all_at_the_same_step(tmp_path):
    """Every process stops after the step in progress and joins the checkpoint of that step; a rank that
    stopped alone would wait in the checkpoint for the others, which wait for it in the next step."""
    script, run = tmp_path / "one_rank_signalled.py", tmp_path / "ddp"
    script.write_text(ONE_RANK_SIGNALLED)
    args = [a for a in ARGS if not a.startswith("train.max_steps=")] + ["train.max_steps=12"]
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), "train", "--out", str(run), *args], env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun passes SIGTERM on to its processes, then kills those that hang
        out, _ = proc.communicate(timeout=120)
        pytest.fail("the processes did not stop together:\n" + out[-3000:])
    assert f"SIGTERM received at step 6: checkpoint saved in {run / 'checkpoints' / 'step-00000006'}" in out, out[-3000:]
    assert [c.name for c in list_checkpoints(run)][-1] == "step-00000006"
