"""How much of beta-TCVAE's minibatch estimate of q(z_i) comes from sentence i's own posterior.

Chen et al. (2018) estimate q(z_i) = (1/N) sum_n q(z_i|x_n) from one minibatch
(textvae.decomposition.minibatch_log_qz). If the other sentences' posteriors are nearly 0 at z_i, the
estimate is the own term q(z_i|x_i)/N and the total correlation penalty also penalises the index-code
mutual information. This prints, for trained models, the median share of the own term in the joint
estimate and in the per-dimension marginals, over one training minibatch, for both estimators:

    OMP_NUM_THREADS=1 python scripts/tc_own_share.py runs/disentangle_sweep/tcvae-2-seed1 ...
"""

import argparse
import random

import torch

from textvae.corpus import builtin_corpus
from textvae.decomposition import LOG_WEIGHTS
from textvae.model import TextVAE


def own_share(model: TextVAE, sentences: list[str], dataset_size: int, method: str,
              generator: torch.Generator) -> tuple[float, float]:
    """Median share of the own term in the joint and in the marginal estimates of q(z_i)."""
    with torch.no_grad():
        mu, logvar = model.encode(sentences)  # (B, Z)
        z = mu + torch.randn(mu.shape, generator=generator) * (0.5 * logvar).exp()
        per_dim = model.latent.log_q_per_dim(z.unsqueeze(1), (mu.unsqueeze(0), logvar.unsqueeze(0)))  # (B, B, Z)
        w = LOG_WEIGHTS[method](len(sentences), dataset_size)  # (B, B)
        joint = per_dim.sum(-1) + w
        marg = per_dim + w.unsqueeze(-1)
        own_joint = (joint.diagonal() - torch.logsumexp(joint, 1)).exp()  # (B,)
        own_marg = (marg.diagonal().T - torch.logsumexp(marg, 1)).exp()  # (B, Z)
    return own_joint.median().item(), own_marg.median().item()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories trained on the built-in corpus (their best model)")
    ap.add_argument("--batch", type=int, default=64, help="minibatch size (default: the default preset's 64)")
    ap.add_argument("--builtin-size", type=int, default=6000, help="data.builtin_size the runs trained with")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for run in args.runs:
        model = TextVAE.from_pretrained(f"{run}/best").eval()
        train = [r["text"] for r in builtin_corpus(args.builtin_size)["train"]]
        batch = random.Random(args.seed).sample(train, args.batch)
        for method in LOG_WEIGHTS:
            joint, marg = own_share(model, batch, len(train), method, torch.Generator().manual_seed(args.seed))
            print(f"{run}  {method}: own posterior's share of q(z_i) {joint:.3f} (median over the batch), "
                  f"of q(z_ij) {marg:.3f} (median over the batch and dimensions)")


if __name__ == "__main__":
    main()
