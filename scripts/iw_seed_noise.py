"""How much a k-sample importance-weighted NLL moves with the random seed, for one trained run.

The IW estimate of log p(x) (``metrics.iw_log_likelihood``) is random: it averages k draws from
q(z|x). Before reading a small gap between two rows of a table (say a VAE 0.02 nats per sentence
below its LM), check that the gap is larger than the estimate's own seed noise. This scores the
first ``--sentences`` sentences of a split with two seeds, takes the spread of the per-sentence
differences, and scales it to the whole split: the standard error of the split's mean NLL (nats
per sentence) and of its perplexity (relative), over seeds. The LM has no latent (its NLL is
exact), so only VAE runs have noise to measure.

    python scripts/iw_seed_noise.py runs/ptb/bn-vae --data-dir ../shared/data/ptb --sentences 200
"""

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from textvae.config_files import load_config
from textvae.errors import TextVAEError
from textvae.batching import collate
from textvae.generate import eval_mode
from textvae.metrics import iw_log_likelihood, model_split
from textvae.model import TextVAE


def per_sentence_log_likelihood(model, split, n: int, k: int, seed: int, batch_size: int = 50) -> torch.Tensor:
    """IW log p(x) of the split's first n sentences, (n,) float64, from one seed's generator."""
    g, out = torch.Generator().manual_seed(seed), []  # CPU noise, as metrics.evaluate draws it
    with eval_mode(model), torch.no_grad():
        for i in range(0, n, batch_size):
            b = collate(split, list(range(i, min(i + batch_size, n)))).to(model.device)
            out.append(iw_log_likelihood(model, b.tokens, b.lengths, k, generator=g).double().cpu())
    return torch.cat(out)


def seed_noise(a: torch.Tensor, b: torch.Tensor, split_sentences: int, split_tokens: int) -> dict:
    """From two seeds' per-sentence estimates: one seed's per-sentence sd (sd of the differences / sqrt 2),
    the standard error of a whole split's mean NLL, and the same as a relative change of its perplexity."""
    sd = float((a - b).std() / math.sqrt(2))
    se = sd / math.sqrt(split_sentences)
    return {"sentence_sd": sd, "split_se_nats": se, "split_se_ppl_rel": math.exp(se * split_sentences / split_tokens) - 1}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a textvae run or model directory (config.json + best model)")
    p.add_argument("--data-dir", default=None, help="data.data_dir, when the run's own path is not valid here")
    p.add_argument("--split", default="test")
    p.add_argument("--sentences", type=int, default=200, help="how many of the split's sentences to score twice")
    p.add_argument("-k", type=int, default=500, help="importance samples")
    p.add_argument("--seeds", default="1,2", help="two seeds, comma-separated")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        p.error(f"--seeds needs two different seeds, got {args.seeds!r}")
    if args.sentences < 2:
        p.error("--sentences must be at least 2 (the spread needs two differences)")
    if not (args.run / "config.json").is_file():
        print(f"error: {args.run}/config.json not found: give a textvae run directory", file=sys.stderr)
        return 2
    try:
        overrides = [f"data.data_dir={json.dumps(args.data_dir)}"] if args.data_dir else []
        cfg = load_config(config_file=str(args.run / "config.json"), overrides=overrides)
        model = TextVAE.from_pretrained(args.run)
        split = model_split(model, args.split, data=cfg.data)
    except (TextVAEError, OSError, ValueError, KeyError) as e:  # bad config, checkpoint or data
        print(f"error: {e}", file=sys.stderr)
        return 2
    if model.is_lm:
        print(f"{args.run} is a language model: its NLL is exact, there is no seed noise to measure", file=sys.stderr)
        return 2
    n = min(args.sentences, len(split.ids))
    ll = [per_sentence_log_likelihood(model, split, n, args.k, s) for s in seeds]
    tokens = int(split.lengths.sum()) + len(split.ids)  # words + EOS, as the table's perplexities
    result = {"run": str(args.run), "split": args.split, "k": args.k, "seeds": seeds, "sentences": n,
              "nll_per_seed": [float(-x.mean()) for x in ll], "split_sentences": len(split.ids),
              "split_tokens": tokens, **seed_noise(ll[0], ll[1], len(split.ids), tokens)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{n} {args.split} sentences, k = {args.k}: mean NLL {result['nll_per_seed'][0]:.3f} (seed {seeds[0]}), "
              f"{result['nll_per_seed'][1]:.3f} (seed {seeds[1]}); per-sentence sd {result['sentence_sd']:.3f} nats")
        print(f"whole {args.split} split ({len(split.ids)} sentences): seed standard error "
              f"{result['split_se_nats']:.4f} nats per sentence, {100 * result['split_se_ppl_rel']:.3f}% of its perplexity")
    return 0


if __name__ == "__main__":
    sys.exit(main())
