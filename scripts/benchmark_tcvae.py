"""What beta-TCVAE's minibatch estimator costs per training step, against the plain VAE step.

Two trainers with the same shapes and data, one with ``objective.tc_beta`` set (the minibatch
weighted or stratified estimate of log q(z) over the batch, O(B^2 Z) per step, Chen et al. 2018),
run rounds of ``--steps`` real steps in alternation, so machine noise hits both alike; the figures are
medians over ``--rounds`` rounds after a warm-up round, and the ratio is the median of the per-round
ratios. Writes results/benchmark_tcvae.json.

    python scripts/benchmark_tcvae.py                       # the default preset on the built-in corpus
    python scripts/benchmark_tcvae.py --preset ptb-li2019 --set data.data_dir=../shared/data/ptb
    python scripts/benchmark_tcvae.py --queue 2048 --set data.builtin_size=24000   # objective.tc_queue
"""

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from textvae.batching import collate
from textvae.config_files import load_config
from textvae.train import Trainer

REPO = Path(__file__).resolve().parents[1]


def seconds_per_step(trainer: Trainer, batches: list, start: int, steps: int) -> float:
    t0 = time.perf_counter()
    for i in range(start, start + steps):
        idx = batches[i % len(batches)].tolist()
        trainer.step(collate(trainer.train_data, idx), 0, len(idx))
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides for both")
    ap.add_argument("--tc-beta", type=float, default=6.0)
    ap.add_argument("--estimator", choices=("mws", "mss"), default="mws")
    ap.add_argument("--queue", type=int, default=0, help="objective.tc_queue for the beta-TCVAE trainer")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmark_tcvae.json")
    args = ap.parse_args(argv)

    common = [*args.set, "train.progress=false"]
    tc = [f"objective.tc_beta={args.tc_beta}", f"objective.tc_estimator={args.estimator}"]
    tc += [f"objective.tc_queue={args.queue}"] if args.queue else []
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: Trainer(load_config(preset=args.preset, overrides=common + extra), Path(tmp) / name,
                                  log=lambda m: None) for name, extra in (("plain", []), ("tcvae", tc))}
        batches = [b for e in range(3) for b in trainers["plain"].sampler.global_batches(e)]
        times = {name: [] for name in trainers}
        for r in range(args.rounds + 1):  # round 0 warms up
            step = {}
            for name, tr in trainers.items():
                tr.model.train()
                step[name] = seconds_per_step(tr, batches, r * args.steps, args.steps)
                if r:
                    times[name].append(step[name])
            print(f"round {r}: plain {1e3 * step['plain']:.1f} ms, tcvae {1e3 * step['tcvae']:.1f} ms per step",
                  file=sys.stderr)
    ratio = statistics.median(t / p for t, p in zip(times["tcvae"], times["plain"]))
    result = {"preset": args.preset, "overrides": common, "tc": tc, "rounds": args.rounds, "steps": args.steps,
              "batch_size": trainers["plain"].cfg.train.batch_size,
              "plain_ms_per_step": 1e3 * statistics.median(times["plain"]),
              "tcvae_ms_per_step": 1e3 * statistics.median(times["tcvae"]), "ratio": ratio,
              "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "command": "python " + " ".join([f"scripts/{Path(__file__).name}", *(argv or sys.argv[1:])])}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("plain_ms_per_step", "tcvae_ms_per_step", "ratio")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
