"""Training throughput of each latent family at the same encoder/decoder shapes, side by side in one process.

Rows (matched capacity, as in issue #22): a 32-dimensional Gaussian; Gumbel-softmax with M = 8
variables of K = 256 classes, each class a learned 4-vector to the decoder (soft and straight-through); VQ with M = 8 vectors of D = 4 (32 numbers,
like the Gaussian) and a K = 256 codebook (gradient codebook with dead-code restart; EMA). Each row
runs textvae's real training step (``Trainer.step``: forward, loss, backward, clipping, optimiser
step) on the same training batches of the chosen corpus. Rounds alternate the rows so machine noise
hits all alike; each figure is the median over rounds after one warm-up round. Tokens = words + EOS.

    python scripts/benchmark_latents.py [--preset default] [--rounds 5] [--steps 20] [--data-dir DIR] \
        [--out results/benchmark_latents.json]
"""

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time

import torch

from textvae.config_files import load_config
from textvae.train import Trainer

ROWS = {
    "gaussian-z32": ["model.latent=gaussian", "model.latent_dim=32"],
    "gumbel-8x256": ["model.latent=gumbel", "model.latent_vars=8", "model.latent_classes=256", "model.code_dim=4"],
    "gumbel-8x256-st": ["model.latent=gumbel", "model.latent_vars=8", "model.latent_classes=256", "model.code_dim=4",
                        "model.gumbel_hard=true"],
    "vq-8x256-d4": ["model.latent=vq", "model.latent_vars=8", "model.latent_classes=256", "model.code_dim=4"],
    "vq-8x256-d4-ema": ["model.latent=vq", "model.latent_vars=8", "model.latent_classes=256", "model.code_dim=4",
                        "model.vq_ema=true"],
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--data-dir", help="corpus folder (default: the built-in corpus)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="training steps per row per round")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma list of " + ", ".join(ROWS))
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    names = args.rows.split(",")
    trainers, batches = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            extra = [f"data.data_dir={args.data_dir}"] if args.data_dir else []
            cfg = load_config(preset=args.preset, overrides=[*extra, *ROWS[name], "train.progress=false"])
            tr = Trainer(cfg, f"{tmp}/{name}", log=lambda m: None)
            if batches is None:
                order = tr.sampler.global_batches(0)[:args.steps]
            batches = [tr.shard(b) for b in order]
            tr.model.train()
            trainers[name] = (tr, batches)
        speed = {name: [] for name in names}
        for r in range(args.rounds + 1):
            for name in names:
                tr, bs = trainers[name]
                start, tokens = time.perf_counter(), 0
                for batch, offset, size in bs:
                    tr.step(batch, offset, size)
                    tokens += batch.num_tokens
                if r > 0:  # round 0 warms up
                    speed[name].append(tokens / (time.perf_counter() - start))
    base = statistics.median(speed[names[0]])
    result = {"preset": args.preset, "steps": args.steps, "rounds": args.rounds, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "tokens_per_s": {n: statistics.median(v) for n, v in speed.items()},
              "relative_to_first": {n: statistics.median(v) / base for n, v in speed.items()}}
    for n in names:
        print(f"{n:<18} {result['tokens_per_s'][n]:10.0f} tokens/s  {result['relative_to_first'][n]:.3f}x")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
