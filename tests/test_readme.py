"""Every example in README.md and docs/*.md runs.

Each ```python block runs in a fresh Python process and each command line of a ```bash block runs
through bash, in document order, all blocks of one file sharing one temporary working directory
(so "train, then sample" works). As in a checkout, ``data/`` and ``scripts/`` are the repository's and
``../shared`` holds the shared corpora, so paths such as ``../shared/data/tang5`` mean what they say
(a file whose examples read corpora that are not there, at ../shared or $TEXTVAE_SHARED, is skipped).

``textvae`` commands are forked from a server that has imported textvae once per file, in the state a fresh
``python -m textvae`` has before it runs textvae/__main__.py (see LAUNCHER and SERVER below). The
documented small-size override keeps this fast too: TEXTVAE_OVERRIDES is a space-separated list of
``key=value`` overrides that ``load_config`` applies after all others. Lines of a bash block that
install packages or run the test suite itself (``pip install``, ``python -m pytest``) are shown, not
run; every other line must run here, so a command that needs the internet or hours belongs in prose.
"""

import contextlib
import os
import re
import select
import shlex
import signal
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
SERVED = sys.platform == "linux"  # textvae commands forked from a server (textvae_server below)

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


# The `textvae` on PATH is this checkout's, run by the interpreter running the tests. A fresh `python -m
# textvae` spends 3-4 s of CPU importing torch and datasets before main(), which was over half of these
# tests' time. So a server started once per page, in its working directory and with its environment, does
# what `python -m textvae` does before it runs textvae/__main__.py (puts the directory first on sys.path,
# imports textvae), and for each `textvae` command run there with that environment it forks a copy of
# itself, which runs textvae/__main__.py as `python -m textvae` does, on the command's stdin, stdout and
# stderr, and exits with its status once its exit handlers have run. The client below sends it the
# command; a command in another directory or environment, or with no server, gets a fresh process.
CLIENT = """import json, os, socket, sys

try:
    s = socket.socket(socket.AF_UNIX)
    s.connect({socket!r})
except OSError:
    s = None
if s is not None:
    request = json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}).encode()
    socket.send_fds(s, [len(request).to_bytes(8, "big") + request], [0, 1, 2])
    reply = b""
    while chunk := s.recv(64):
        reply += chunk
    if reply != b"fresh":
        if not reply:
            print("textvae: the docs test server's copy ended without an exit status", file=sys.stderr)
        sys.exit(int(reply) if reply else 1)
os.execv({python!r}, [{python!r}, "-m", "textvae", *sys.argv[1:]])
"""
SERVER = """
import atexit, json, os, runpy, socket, sys

sys.path[0] = os.getcwd()  # as `python -m` does
import textvae  # noqa: E402  (what `python -m textvae` imports before it runs textvae/__main__.py)

SHELL = ("_", "PWD", "OLDPWD", "SHLVL", "PS1", "PS2")  # what bash sets or unsets for the commands it runs
same_env = lambda env: {k: v for k, v in env.items() if k not in SHELL} == {
    k: v for k, v in os.environ.items() if k not in SHELL}
server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1])
server.listen()
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    head, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    while len(head) < 8 + int.from_bytes(head[:8], "big"):
        head += conn.recv(1 << 16)
    request = json.loads(head[8:])
    served = request["cwd"] == os.getcwd() and same_env(request["env"]) and len(fds) == 3
    if served:
        with open(sys.argv[2], "a") as log:  # the commands served, one a line
            print(json.dumps(request["argv"]), file=log)
    if served and os.fork() == 0:
        break
    if not served:
        conn.sendall(b"fresh")
    conn.close()
    for fd in fds:
        os.close(fd)
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:  # the copies that have ended
            pass
    except ChildProcessError:
        pass

# the copy: the command
server.close()
for target, fd in enumerate(fds):
    os.dup2(fd, target)
    os.close(fd)
os.environ.clear()
os.environ.update(request["env"])
status = 0


def reply():  # registered first, so it runs after every other exit handler
    global status
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        status = 120  # as the interpreter's own flush at exit would
    conn.sendall(str(status).encode())
    os._exit(status)  # without the interpreter's teardown, which in a copy would touch every page of it


atexit.register(reply)
sys.argv = ["-m", *request["argv"]]
try:
    runpy.run_module("textvae", run_name="__main__", alter_sys=True)
except SystemExit as e:  # the interpreter's rules for sys.exit(code)
    status = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    if e.code is not None and not isinstance(e.code, int):
        print(e.code, file=sys.stderr)
except BaseException:
    sys.excepthook(*sys.exc_info())
    status = 1
sys.exit(status)
"""


def _env(site: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["TEXTVAE_OVERRIDES"] = SMALL
    env["TEXTVAE_DATA"] = str(SHARED / "data")  # where docs/poems.md's prepared corpora are, here
    env.setdefault("OMP_NUM_THREADS", "2")
    bin_dir = site / "bin"
    bin_dir.mkdir(exist_ok=True)
    client = site / "textvae_client.py"
    client.write_text(CLIENT.format(python=sys.executable, socket=str(site / "textvae.sock")))
    launcher = bin_dir / "textvae"
    launcher.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -SE {shlex.quote(str(client))} "$@"\n')
    launcher.chmod(0o755)
    env["PATH"] = f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@contextlib.contextmanager
def textvae_server(site: Path, work: Path, env: dict):
    """The server above, for the ``textvae`` commands run in ``work`` with ``env`` while the block runs.
    Linux only (elsewhere fork() after importing torch is not safe), and not where the socket's path would
    be too long for one. It lists the commands it ran in ``site/served.txt``."""
    sock = site / "textvae.sock"
    if not SERVED or len(str(sock)) > 100:  # a socket's path has at most 107 bytes
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(sock), str(site / "served.txt")], cwd=work, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        select.select([proc.stdout], [], [], TIMEOUT_S)  # until "ready"; should it fail, commands run fresh
        yield
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # with any copy that a timeout left running
        proc.wait()
        proc.stdout.close()


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
    with textvae_server(site, work, env):
        _run_blocks(doc.relative_to(ROOT), found, work, env)


def _run_blocks(where: Path, found: list[Block], work: Path, env: dict):
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


@pytest.mark.integration
def test_a_command_the_server_runs_prints_and_exits_as_a_fresh_process(tiny_run, tmp_path):
    """What the docs' tests rest on: a copy's exit status, stdout and stderr are the command's, it reads the
    command's stdin, and a command in another environment runs in a fresh process, with the same result."""
    import textvae

    if not SERVED:
        pytest.skip("the docs' commands run in fresh processes here")
    site, work = tmp_path / "site", tmp_path / "work"
    site.mkdir()
    work.mkdir()
    env = _env(site)

    def run(command):
        return subprocess.run(["bash", "-eo", "pipefail", "-c", command], cwd=work, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT_S)

    reconstruct = f"textvae reconstruct --model {tiny_run}"
    with textvae_server(site, work, env):
        version, nope, served, fresh = (run(c) for c in ("textvae --version", "textvae nope",
                                                         f"echo 'the dog ran .' | {reconstruct}",
                                                         f"echo 'the dog ran .' | ANOTHER=1 {reconstruct}"))
    assert (version.returncode, version.stdout) == (0, f"textvae {textvae.__version__}\n")
    assert nope.returncode == 2 and "invalid choice: 'nope'" in nope.stderr and "Traceback" not in nope.stderr
    assert served.returncode == 0 and served.stdout.strip()
    assert (served.returncode, served.stdout, served.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert (site / "served.txt").read_text().splitlines() == [
        '["--version"]', '["nope"]', f'["reconstruct", "--model", "{tiny_run}"]']


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
