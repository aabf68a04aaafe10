"""What the whole-split KL decomposition in ``evaluate --disentanglement`` costs against the split's size.

``textvae.decomposition.kl_decomposition`` estimates q(z) as the average of all N posteriors at one
z per sentence: O(N^2 Z) time, memory bounded by its chunk. This times it on random Gaussian
posteriors (z 16 by default: the built-in presets' size) at several N, median of ``--rounds``.

    python scripts/benchmark_decomposition.py                 # N = 300, 1000, 3000
    python scripts/benchmark_decomposition.py --sizes 700,12341 --rounds 1
"""

import argparse
import json
import platform
import statistics
import time

import torch

from textvae.decomposition import kl_decomposition
from textvae.latents.gaussian import GaussianLatent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="300,1000,3000", help="comma-separated split sizes N")
    ap.add_argument("--dim", type=int, default=16, help="latent dimensions Z")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per size (the median is reported)")
    args = ap.parse_args(argv)
    latent = GaussianLatent(8, args.dim)
    g = torch.Generator().manual_seed(0)
    out = {"dim": args.dim, "threads": torch.get_num_threads(), "machine": platform.machine(), "seconds": {}}
    for n in (int(s) for s in args.sizes.split(",")):
        mu, logvar = torch.randn(n, args.dim, generator=g), torch.randn(n, args.dim, generator=g) * 0.1 - 1
        times = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            kl_decomposition(mu, logvar, latent, generator=g)
            times.append(time.perf_counter() - t0)
        out["seconds"][n] = statistics.median(times)
        print(f"N = {n:>6}: {out['seconds'][n]:.2f} s (median of {args.rounds}, {out['threads']} threads)")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
