"""Which code a training runs: the git checkout whose ``textvae/`` is the imported package, its commit,
and the uncommitted changes to ``textvae/`` and ``scripts/`` (``SOURCE_PATHS``) that would make a record
name a commit that is not the code that trained it. ``scripts/run_experiments.py`` and
``scripts/semisup.py`` refuse to train from such code (``check_source``) unless ``--allow-dirty``: then
the sitting keeps the changes in the run directory as a patch on the commit (``keep_diff``).
"""

import dataclasses
import hashlib
import os
import subprocess
from pathlib import Path

import textvae
from textvae.checkpoint import atomic_write
from textvae.errors import TextVAEError

SOURCE_PATHS = ("textvae", "scripts")  # the code a run executes; docs/, results/, tests/ do not change a record
PACKAGE = Path(textvae.__file__).resolve().parent  # the textvae this process imported


@dataclasses.dataclass(frozen=True)
class Source:
    """The code this process runs: ``checkout``, the git checkout whose ``textvae/`` is the imported package
    (None: installed from a wheel, so no commit to name), its HEAD ``commit``, the files under
    ``SOURCE_PATHS`` that differ from it (``changed``: staged or not; ``untracked``: new files git does not
    ignore), ``scripts``, where this script is when that is not the checkout's ``scripts/``, and ``diff``,
    the changes as a patch (``source_diff``) where they were asked for."""
    checkout: Path | None = None
    commit: str | None = None
    changed: tuple[str, ...] = ()
    untracked: tuple[str, ...] = ()
    scripts: Path | None = None
    diff: bytes | None = None

    @property
    def uncommitted(self) -> list[str]:
        return sorted({*self.changed, *self.untracked}, key=lambda f: (not f.startswith("textvae/"), f))


def git(repo: Path, *argv: str) -> bytes:
    return subprocess.run(["git", *argv], cwd=repo, capture_output=True, check=True).stdout


def source_state(package: Path, scripts: Path, with_diff: bool = False) -> Source:
    """The state of the code a process imported (``package``, its textvae folder) and runs (``scripts``,
    the running script's folder), read once at the start of a command: a sitting runs the code loaded
    then, whatever is edited while it trains. ``with_diff``: with the uncommitted changes as a patch,
    when there are any."""
    try:
        top = Path(os.fsdecode(git(package, "rev-parse", "--show-toplevel").strip())).resolve()
        if package != top / "textvae":  # installed into an ignored folder of some checkout (a .venv)
            return Source()
        commit = git(top, "rev-parse", "--verify", "HEAD").decode().strip()
        changed = git(top, "diff", "HEAD", "--name-only", "-z", "--", *SOURCE_PATHS)
        untracked = git(top, "ls-files", "--others", "--exclude-standard", "-z", "--", *SOURCE_PATHS)
    except (OSError, subprocess.CalledProcessError):  # no git, not a checkout, or one without a commit yet
        return Source()
    names = lambda out: tuple(os.fsdecode(n) for n in out.split(b"\0") if n)  # noqa: E731
    source = Source(top, commit, names(changed), names(untracked), None if scripts == top / "scripts" else scripts)
    return dataclasses.replace(source, diff=source_diff(source)) if with_diff and source.uncommitted else source


def source_diff(source: Source) -> bytes:
    """A patch of ``source``'s uncommitted changes: ``git diff HEAD`` of ``SOURCE_PATHS`` (staged and
    unstaged), then each untracked file as a new one. ``git apply`` of it on a checkout of the commit gives
    the code that ran."""
    patch = git(source.checkout, "diff", "HEAD", "--binary", "--", *SOURCE_PATHS)
    for name in source.untracked:  # --no-index exits 1 when the files differ, as a new file always does
        new = subprocess.run(["git", "diff", "--no-index", "--binary", "--", os.devnull, name],
                             cwd=source.checkout, capture_output=True)
        if new.returncode > 1:
            raise subprocess.CalledProcessError(new.returncode, new.args, new.stdout, new.stderr)
        patch += new.stdout
    return patch


class UncommittedSource(TextVAEError):
    """The code a run would train with is not a commit, so its record could not be trained again."""


def check_source(source: Source, allow_dirty: bool, script: str) -> None:
    """Raise UncommittedSource when ``source`` cannot be named by a commit: uncommitted changes (unless
    ``allow_dirty``: then the sitting keeps them as a patch), or the running script, ``scripts/<script>``,
    from another checkout than the textvae it imports (which no patch describes)."""
    if source.scripts is not None:
        raise UncommittedSource(
            f"this script is in {source.scripts}, but the textvae it imports is {source.checkout / 'textvae'}: "
            f"a record names one commit, and the code of two checkouts would train. Run "
            f"{source.checkout / 'scripts' / script} instead, or import this checkout's textvae "
            f"(PYTHONPATH={source.scripts.parent} python scripts/{script} ..., or pip install -e "
            f"{source.scripts.parent} in a virtual environment of its own); --allow-dirty does not cover this")
    files = source.uncommitted
    if files and not allow_dirty:
        shown = ", ".join(files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")
        raise UncommittedSource(
            f"the textvae source in {source.checkout} has uncommitted changes ({shown}). Its record would name "
            f"commit {source.commit[:12]}, but the code that trained it would not be that commit, so the run could "
            f"not be reproduced from its record. Commit the changes; or train from a clean checkout "
            f"(git worktree add ../textvae-clean HEAD, then in it: PYTHONPATH=. python scripts/{script} "
            f"...); or pass --allow-dirty to train anyway, keeping the changes as a patch in the run directory "
            f"(source-<hash>.diff, its sha256 in the sitting's record)")


def keep_diff(source: Source, run: Path) -> dict:
    """Write ``source``'s uncommitted changes into ``run`` as ``source-<sha12>.diff``, named by the patch's
    sha256; returns the sitting's record of it: ``dirty_diff`` (the file's name) and ``dirty_diff_sha256``."""
    diff = source_diff(source) if source.diff is None else source.diff
    digest = hashlib.sha256(diff).hexdigest()
    kept = {"dirty_diff": f"source-{digest[:12]}.diff", "dirty_diff_sha256": digest}
    atomic_write(run / kept["dirty_diff"], diff)
    return kept
