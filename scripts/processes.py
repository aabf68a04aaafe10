"""Commands run side by side, each in its own process with its own log, at most N at once: how
``scripts/run_experiments.py --jobs N`` trains table rows and ``scripts/semisup.py --jobs N`` its runs.

Each process learns from its environment how many share the machine (``CONCURRENT_ENV``, recorded with
its runs) and the command the user typed (``COMMAND_ENV``, recorded instead of its own); on a CPU each
gets an equal share of the cores unless ``OMP_NUM_THREADS`` is set. SIGINT or SIGTERM reaches the running
processes, which save a checkpoint, and are waited for.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import duration  # noqa: E402  (scripts/report.py)

CONCURRENT_ENV = "TEXTVAE_CONCURRENT_ROWS"  # how many processes share the machine
COMMAND_ENV = "TEXTVAE_REPRODUCE_COMMAND"  # the command the user typed
BUSY_EXIT = 75  # a process whose runs were all left to another process (EX_TEMPFAIL: try again later)


def parallel_env(jobs: int, processes: int, command: str, on_cpu: bool) -> dict:
    """The environment of processes that run ``min(jobs, processes)`` at once: the typed command and
    how many share the machine (recorded by each run), and on a CPU one share of the cores each
    unless OMP_NUM_THREADS is set."""
    at_once = min(jobs, processes)
    env = dict(os.environ, **{CONCURRENT_ENV: str(at_once), COMMAND_ENV: command})
    if on_cpu and "OMP_NUM_THREADS" not in os.environ:  # share the cores instead of oversubscribing them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // at_once))
    return env


def run_processes(commands: dict[str, tuple[list[str], Path]], jobs: int, env: dict, log,
                  on_done=None, busy: list | None = None) -> list[str] | None:
    """Run the named commands (argument list, log file) up to ``jobs`` at once, in order, each one's
    output appended to its log; ``on_done(name)`` is called as each one succeeds. Returns the names that
    failed (those that left their runs to another process also go into ``busy``), or None when
    interrupted (SIGINT/SIGTERM reach the running processes, which checkpoint, and are waited for)."""
    waiting, running, failed = list(commands), {}, []

    def on_term(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                name = waiting.pop(0)
                argv, logpath = commands[name]
                logpath.parent.mkdir(parents=True, exist_ok=True)
                logfile = open(logpath, "a", encoding="utf-8")
                proc = subprocess.Popen(argv, stdout=logfile, stderr=subprocess.STDOUT, env=env)
                running[name] = (proc, logfile, time.perf_counter(), logpath)
                log(f"[{name}] started (process {proc.pid}); log: {logpath}")
            time.sleep(1.0)
            for name, (proc, logfile, started, logpath) in list(running.items()):
                if proc.poll() is None:
                    continue
                logfile.close()
                del running[name]
                took = duration(time.perf_counter() - started)
                if proc.returncode == 130:
                    log(f"[{name}] interrupted after {took}; run the same command again to resume it")
                    failed.append(name)
                elif proc.returncode == BUSY_EXIT:
                    log(f"[{name}] left to another process that is training or evaluating its runs; see {logpath}")
                    failed.append(name)
                    if busy is not None:
                        busy.append(name)
                elif proc.returncode:
                    log(f"[{name}] failed after {took} (exit status {proc.returncode}); see {logpath}")
                    failed.append(name)
                else:
                    log(f"[{name}] done in {took}")
                    if on_done is not None:
                        on_done(name)
    except KeyboardInterrupt:
        log(f"interrupted: waiting for {', '.join(running)} to save a checkpoint")
        for proc, *_ in running.values():
            proc.terminate()
        for proc, logfile, *_ in running.values():
            proc.wait()
            logfile.close()
        return None
    finally:
        signal.signal(signal.SIGTERM, previous)
    return failed
