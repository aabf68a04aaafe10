"""What the repository tracks: source, docs and results, never a virtual environment, a link or a
corpus. A link committed from a worktree (``.venv -> ../main/.venv``) replaces the real folder it
shadows on the next checkout, so it fails here rather than in someone's environment."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_KB = 2048  # corpora live in ../shared/data, runs in runs/ (ignored)


def tracked() -> list[tuple[str, str]]:
    """(mode, path) for every file git tracks here."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-s", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [(entry.split(" ", 1)[0], entry.split("\t", 1)[1]) for entry in out.split("\0") if entry]


def test_no_link_and_no_environment_is_tracked():
    files = tracked()
    links = [path for mode, path in files if mode == "120000"]
    envs = [path for _, path in files if path.split("/")[0] in (".venv", "venv", ".venv-ci")]
    assert not links, f"symbolic links are tracked: {links}; untrack them (git rm --cached) and ignore them"
    assert not envs, f"a virtual environment is tracked: {envs[:5]}"


def test_no_large_file_or_corpus_copy_is_tracked():
    files = [path for _, path in tracked()]
    large = [p for p in files if (ROOT / p).is_file() and (ROOT / p).stat().st_size > MAX_KB * 1024]
    splits = [p for p in files if Path(p).name in ("train.txt", "valid.txt", "test.txt",
                                                   "ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")]
    assert not large, f"files over {MAX_KB} KB are tracked: {large}; corpora stay in ../shared/data, runs in runs/"
    assert not splits, f"corpus splits are tracked: {splits}; read them from ../shared/data"
