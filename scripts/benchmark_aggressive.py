"""Aggressive training's total cost (He et al. 2019) against the plain VAE's, trained side by side.

Two ``textvae train`` processes with the same preset, corpus and overrides, one with
``objective.aggressive=true``, run at the same time (one CPU thread each unless --threads), so machine
noise hits both alike; each trains to its own stop (early stop or the epoch cap, the same for both).
Reported: wall time of each run, the ratio, how each stopped, the epochs aggressive training stayed
on (it ends when validation MI stops rising, checked after every epoch or every
``objective.aggressive_mi_every`` steps), and its mean encoder updates per step while on. He et al. report
aggressive training costing 2.2x to 3.7x the plain VAE in total time; textvae's target is 2x.
Writes results/benchmark_aggressive.json (or --out).

    python scripts/benchmark_aggressive.py                         # the default preset, built-in corpus
    python scripts/benchmark_aggressive.py --set train.max_epochs=200  # both to their early stop
    python scripts/benchmark_aggressive.py --set train.max_epochs=200 --set objective.aggressive_mi_every=20
    python scripts/benchmark_aggressive.py --preset ptb-li2019 --set data.data_dir=../shared/data/ptb
    python scripts/benchmark_aggressive.py --inner-update --preset ptb-li2019 --vocab 10002

``--inner-update`` times only one encoder-only update (forward and backward on a random batch of
``--batch`` sentences of ``--length`` tokens) with the decoder's own weights out of the graph, as
aggressive training does on one process, against the same update with them in it; median of the
per-round ratios, printed, nothing written.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from textvae.plot import read_metrics
from textvae.run_summary import strategy_phases

REPO = Path(__file__).resolve().parents[1]


def inner_update(args) -> int:
    """Frozen-decoder encoder update time over the full one (see the module docstring)."""
    import statistics

    import torch

    from textvae.collapse import frozen_decoder
    from textvae.config_files import load_config
    from textvae.model import TextVAE

    torch.manual_seed(0)
    cfg = load_config(preset=args.preset, overrides=args.set)
    cfg.model.vocab_size = args.vocab
    model = TextVAE(cfg.model)
    tokens = torch.randint(4, args.vocab, (args.batch, args.length))
    lengths = torch.full((args.batch,), args.length)

    def seconds(freeze: bool) -> float:
        t0 = time.perf_counter()
        for _ in range(5):
            frozen = frozen_decoder(model) if freeze else []
            out = model(tokens, lengths)
            (out.rec.mean() + out.kl.sum(1).mean()).backward()
            model.zero_grad(set_to_none=True)
            for p in frozen:
                p.requires_grad_(True)
        return time.perf_counter() - t0

    seconds(False)  # warm-up
    ratios = [seconds(True) / seconds(False) for _ in range(args.rounds)]
    print(f"encoder-only update, decoder frozen / in the graph: {statistics.median(ratios):.2f} "
          f"(median of {args.rounds} rounds; {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"{torch.get_num_threads()} threads)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides for both")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each run (they run at once)")
    ap.add_argument("--runs-dir", type=Path, help="keep the two runs here (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmark_aggressive.json")
    ap.add_argument("--inner-update", action="store_true", help="time one encoder-only update, decoder frozen "
                    "or not (see above)")
    ap.add_argument("--vocab", type=int, default=10002, help="--inner-update: vocabulary size")
    ap.add_argument("--batch", type=int, default=32, help="--inner-update: sentences per batch")
    ap.add_argument("--length", type=int, default=24, help="--inner-update: tokens per sentence")
    ap.add_argument("--rounds", type=int, default=7, help="--inner-update: rounds of 5 updates each way")
    args = ap.parse_args(argv)
    if args.inner_update:
        return inner_update(args)

    common = list(dict.fromkeys([*args.set, "train.progress=false"]))  # each setting once
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.runs_dir or Path(tmp)
        procs, started, seconds = {}, time.perf_counter(), {}
        for name, extra in (("plain", []), ("aggressive", ["objective.aggressive=true"])):
            argv_ = [sys.executable, "-m", "textvae", "train", "--out", str(root / name), "--preset", args.preset,
                     "--summary-iw", "0", *common, *extra]
            procs[name] = subprocess.Popen(argv_, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while procs:
            for name, p in list(procs.items()):
                if p.poll() is not None:
                    seconds[name] = time.perf_counter() - started
                    if p.returncode:
                        sys.exit(f"the {name} run failed (exit {p.returncode}):\n{p.stderr.read()[-3000:]}")
                    del procs[name]
                    print(f"{name}: {seconds[name]:.0f} s", file=sys.stderr)
            time.sleep(1)
        result = {"preset": args.preset, "overrides": common, "threads_each": args.threads,
                  "machine": f"{platform.processor() or platform.machine()}, 2 runs at once"}
        for name in ("plain", "aggressive"):
            last = sorted((root / name / "checkpoints").glob("step-*/trainer_state.json"))[-1]
            p = json.loads(last.read_text())["progress"]
            result[name] = {"seconds": seconds[name], "stopped": "early stop" if p["stopped_early"] else "limit",
                            "epochs": p["epoch"], "steps": p["step"], "best_valid_elbo": p["best_elbo"],
                            "au": p["last_valid"]["au"]}
        # the aggressive phase: until the MI check that switched it off (or the whole run)
        run = result["aggressive"]
        phase = strategy_phases(read_metrics(root / "aggressive"), run["steps"])[0]
        run["aggressive_steps"] = phase["steps"]
        run["aggressive_epochs"] = run["aggressive_steps"] * run["epochs"] / max(run["steps"], 1)  # mean epoch length
        run["encoder_updates_per_step"] = phase["encoder_updates_per_step"] or 0.0
    result["ratio"] = result["aggressive"]["seconds"] / result["plain"]["seconds"]
    result["command"] = "python " + " ".join([f"scripts/{Path(__file__).name}", *(argv or sys.argv[1:])])
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
