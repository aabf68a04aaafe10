"""Every example in README.md and docs/*.md runs.

Each ```python block runs in a fresh Python process and each command line of a ```bash block runs
through bash, in document order, all blocks of one file sharing one temporary working directory
(so "train, then sample" works). As in a checkout, ``data/`` and ``scripts/`` are the repository's and
``../shared`` holds the shared corpora, so paths such as ``../shared/data/tang5`` mean what they say
(a file whose examples read corpora that are not there, at ../shared or $TEXTVAE_SHARED, is skipped).

The documented small-size override keeps this fast: TEXTVAE_OVERRIDES is a space-separated list of
``key=value`` overrides that ``load_config`` applies after all others. Lines of a bash block that
install packages or run the test suite itself (``pip install``, ``python -m pytest``) are shown, not
run; every other line must run here, so a command that needs the internet or hours belongs in prose.
"""

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TEXTVAE_SHARED", ROOT.parent / "shared"))  # ../shared beside the checkout
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Few steps, a small built-in corpus and small layers: the examples are run for whether they run, so the
# presets' sizes (tang5/tang7: LSTM 256 over a 3,700-character vocabulary) would only add minutes.
SMALL = "train.max_steps=5 data.builtin_size=300 model.emb_dim=16 model.enc_hidden=16 model.dec_hidden=16"
NOT_RUN = ("pip install", "python -m pytest")  # shown to the user, not run by this test
TIMEOUT_S = 300  # one block; the whole file stays far below this

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)

@dataclass
class Block:
    kind: str  # "python" or "bash"
    code: str
    line: int  # 1-based line of the opening fence

    @property
    def first_line(self) -> str:
        return next((l for l in self.code.splitlines() if l.strip()), "").strip()


def blocks(text: str) -> list[Block]:
    """The ```python and ```bash blocks of a markdown text, in order."""
    return [Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1)
            for m in FENCE.finditer(text) if m.group(1) in ("python", "bash")]


def commands(bash: str) -> list[str]:
    """The command lines of a bash block that this test runs: comments dropped, ``\\`` continuations
    joined, and the parts of an ``a && b`` line that install packages or run the tests left out."""
    out = []
    for line in bash.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(" && ")]
        kept = [p for p in parts if not p.startswith(NOT_RUN)]
        if kept:
            out.append(" && ".join(kept))
    return out


def test_blocks_and_commands_are_extracted():
    text = "x\n```python\nprint(1)\n```\n```bash\n# c\npip install -e . && textvae train \\\n  --out r\n" \
           "python -m pytest -q\ntextvae presets  # list\n```\n```text\ntextvae nope\n```\n"
    found = blocks(text)
    assert [(b.kind, b.line) for b in found] == [("python", 2), ("bash", 5)]
    assert commands(found[1].code) == ["textvae train    --out r", "textvae presets  # list"]


def _env(site: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["TEXTVAE_OVERRIDES"] = SMALL
    env["TEXTVAE_DATA"] = str(SHARED / "data")  # where docs/poems.md's prepared corpora are, here
    env.setdefault("OMP_NUM_THREADS", "2")
    # the `textvae` on PATH must be this checkout's: run it through the interpreter running the tests
    bin_dir = site / "bin"
    bin_dir.mkdir(exist_ok=True)
    launcher = bin_dir / "textvae"
    launcher.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m textvae "$@"\n')
    launcher.chmod(0o755)
    env["PATH"] = f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.integration
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_examples_run(doc, tmp_path):
    found = blocks(doc.read_text(encoding="utf-8"))
    if not found:
        pytest.skip(f"{doc.name} has no python or bash blocks")
    needs = sorted({m for b in found for m in re.findall(r"\.\./shared/([\w./-]+)", b.code)}
                   | {f"data/{m}" for b in found for m in re.findall(r"\$\{TEXTVAE_DATA[^}]*\}/([\w./-]+)", b.code)})
    missing = [n for n in needs if not (SHARED / n).exists()]
    if missing:
        pytest.skip(f"{doc.name} reads {', '.join(missing)} under ../shared, not found at {SHARED} "
                    f"(set TEXTVAE_SHARED to the folder holding data/)")
    site = tmp_path / "site"
    site.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED, target_is_directory=True)
    for name in ("data", "scripts", "experiments"):  # the repository's, at the paths the docs give them
        (work / name).symlink_to(ROOT / name, target_is_directory=True)
    env = _env(site)
    where = doc.relative_to(ROOT)
    for block in found:
        if block.kind == "python":
            runs = [[sys.executable, "-c", block.code]]
        else:
            runs = [["bash", "-eo", "pipefail", "-c", c] for c in commands(block.code)]
        for argv in runs:
            try:
                r = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                r = None
            if r is None:
                pytest.fail(f"{where}:{block.line}: block starting {block.first_line!r} ran over {TIMEOUT_S} s "
                            f"(command {argv[-1][:200]!r}); keep documented examples small", pytrace=False)
            if r.returncode != 0:
                pytest.fail(f"{where}:{block.line}: block starting {block.first_line!r} failed "
                            f"(exit {r.returncode}) running {argv[-1][:300]!r}\n--- stdout\n{r.stdout[-4000:]}"
                            f"\n--- stderr\n{r.stderr[-4000:]}", pytrace=False)


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 160, "README.md is over 160 lines: move the detail to docs/"
    # the two quick-start commands; .ci/run runs the second one
    assert "pip install torch==2.13.0 -e . && textvae train --out runs/demo\n" in text
    assert 'pip install torch==2.13.0 -e ".[dev]" && python -m pytest -m "not slow" -n auto\n' in text
    assert 'pip install torch==2.13.0 -e ".[dev]" && python -m pytest -m "not slow" -n auto' in \
        (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_every_doc_page_is_linked_from_the_readme():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    unlinked = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"(docs/{p.name})" not in text]
    assert not unlinked, f"README.md links no docs page {', '.join(unlinked)}: add it to its Documentation list"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_fence_is_alone_on_its_line(doc):
    # a closing ``` with text after it does not close the block: markdown (and the block extractor
    # above) read on into the prose that follows
    bad = [f"{doc.name}:{i}: {line}" for i, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
           if line.lstrip().startswith("```") and not re.fullmatch(r"\s*```[\w-]*", line)]
    assert not bad, "a fence line carries text after its language tag:\n" + "\n".join(bad)


@pytest.mark.usefixtures("one_thread")
def test_every_key_evaluate_reports_is_defined_in_metrics_md(tiny_run, capsys):
    # the README's promise: "Every key is defined in docs/metrics.md"
    import json

    from textvae.cli import main

    assert main(["evaluate", "--model", str(tiny_run), "--json", "--iw-samples", "2", "--n-samples", "5",
                 "--disentanglement", "--form", "5x4"]) == 0
    keys = json.loads(capsys.readouterr().out)
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    undefined = [k for k in keys if f"`{k}`" not in text]
    assert not undefined, f"docs/metrics.md does not define {undefined}"
