"""How far beta-TCVAE's minibatch estimate of the total correlation falls from the data set's, with and
without a queue of earlier posteriors (``objective.tc_queue``), for trained models.

For each run, the posteriors of its training sentences are computed once. The reference value is
the whole-set estimator of textvae.decomposition.kl_decomposition over ``--full`` of them (Chen et
al.'s ``elbo_decomposition``; O(N^2 Z), so a subsample). The minibatch estimates average
``--repeats`` random batches of ``--batch`` sentences: the batch alone (what beta-TCVAE trains with
by default), and the batch with ``--queue`` other posteriors for the joint log q(z), the newest
``--queue-marginals`` of them for the marginals (what ``objective.tc_queue`` trains with). The
queue here holds current posteriors; in training it holds those of the last steps' encoder.
``tc_bucketed`` is the batch alone again, but on batches drawn as training draws them
(textvae.batching.BucketBatchSampler: sentences of about one length per batch) instead of uniformly:
the minibatch estimators assume the batch's other sentences are uniform draws from the data set.

    OMP_NUM_THREADS=1 python scripts/tc_estimator_bias.py runs/disentangle_builtin/vae-n24k-seed9 \
        runs/disentangle_builtin/beta-tcvae-6-n24k-seed9
"""

import argparse
import json
import math
import statistics

import torch

from textvae.batching import BucketBatchSampler
from textvae.decomposition import kl_decomposition, minibatch_log_qz
from textvae.metrics import model_data, model_split, posterior_parameters
from textvae.model import TextVAE


def minibatch_tc(mu, logvar, latent, batch: int, queue: int, marginals: int, repeats: int,
                 g: torch.Generator, batches: list | None = None) -> float:
    """Mean over ``repeats`` batches of the minibatch TC estimate (nats), the data set being all of mu:
    uniform draws, or the first ``repeats`` of ``batches`` (index arrays; no queue)."""
    n, values = mu.size(0), []
    for r in range(repeats):
        idx = torch.randperm(n, generator=g)[:batch + queue] if batches is None else torch.as_tensor(batches[r])
        b = idx[:batch]
        z = mu[b] + torch.randn(mu[b].shape, generator=g) * (0.5 * logvar[b]).exp()
        ref = (mu[idx[batch:]], logvar[idx[batch:]]) if queue else None
        log_qz, log_marg = minibatch_log_qz(z, (mu[b], logvar[b]), latent, n, "mws", ref, marginals)
        values.append((log_qz - log_marg).mean().item())
    return statistics.fmean(values)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories (their best model, on its own training split)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--queue", type=int, default=1024)
    ap.add_argument("--queue-marginals", type=int, default=192)
    ap.add_argument("--full", type=int, default=6000, help="sentences for the whole-set reference")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for run in args.runs:
        model = TextVAE.from_pretrained(f"{run}/best")
        split = model_split(model, "train", data=model_data(model))
        mu, logvar = posterior_parameters(model, split)
        bucketed = [b for b in BucketBatchSampler(split.lengths, args.batch, seed=args.seed).global_batches(0)
                    if len(b) == args.batch][:args.repeats]
        g = torch.Generator().manual_seed(args.seed)
        sub = torch.randperm(len(mu), generator=g)[:args.full]
        full = kl_decomposition(mu[sub], logvar[sub], model.latent, generator=g)
        row = {"run": run, "sentences": len(mu), "full_subsample": len(sub), "tc_full": full["tc"],
               "mi_full": full["mi"],
               "tc_batch": minibatch_tc(mu, logvar, model.latent, args.batch, 0, 0, args.repeats, g),
               "tc_queue": minibatch_tc(mu, logvar, model.latent, args.batch, args.queue, args.queue_marginals,
                                        args.repeats, g),
               "tc_bucketed": minibatch_tc(mu, logvar, model.latent, args.batch, 0, 0, len(bucketed), g, bucketed),
               "batch": args.batch, "queue": args.queue, "queue_marginals": args.queue_marginals}
        print(json.dumps({k: round(v, 3) if isinstance(v, float) and math.isfinite(v) else v for k, v in row.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
