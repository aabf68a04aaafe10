"""Test setup (no network, a private datasets cache) and the fixtures several test modules share."""
import os
import shutil

import pytest
import torch
from hypothesis import settings

from helpers import TINY, torch_threads
from textvae.checkpoint import list_checkpoints
from textvae.cli import main

# Under pytest-xdist (`-n auto`, the README's test command) each worker has one core: one torch and
# OpenMP thread for the worker and every process it starts. Two threads per worker on two cores
# oversubscribe them, and tiny models then run several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Property tests draw the same examples on every run (CI must not pass or fail by chance); to explore
# new ones, run with TEXTVAE_HYPOTHESIS=random in the environment.
settings.register_profile("textvae", derandomize=True, database=None)
if os.environ.get("TEXTVAE_HYPOTHESIS") != "random":
    settings.load_profile("textvae")


@pytest.fixture(autouse=True)
def _private_hf_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "hf_datasets_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache, raising=False)


@pytest.fixture
def one_thread():
    """One torch thread for the test: two threads on two busy cores are slower for tiny models."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A real run of the tiny preset: checkpoints step-0 and step-4, best/, config.json.
    Shared by every module: read it, or damage a ``run_copy``."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    with torch_threads(1):
        assert main(["train", *TINY, "--out", str(out), "train.max_steps=4"]) == 0
    assert [c.name for c in list_checkpoints(out)] == ["step-00000000", "step-00000004"]
    return out


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A private copy of ``tiny_run`` a test may damage."""
    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst)
    return dst


def pytest_collection_modifyitems(config, items):
    """The end-to-end tests (marked integration; the longest are among them) run first: under `-n auto`
    they then start early, instead of one worker running the last of them alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("integration") is None)
