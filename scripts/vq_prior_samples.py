"""Does a VQ model's fitted code prior (``textvae fit-prior``) give better samples than the uniform prior?

Draws N sentences from each prior (codes drawn, then decoded with ancestral sampling, the same seed)
and scores them with a held-out judge: a language model trained separately on the same corpus
(``model.latent_dim=0``), which never saw the VQ model's codes. Reports the judge's perplexity of the
samples (lower: more like the corpus), distinct-2 beside it (a degenerate sampler can have low
perplexity by repeating itself), and the VQ model's NLL bounds on the test split under both priors.

    python scripts/vq_prior_samples.py --vq RUN_WITH_PRIOR --lm LM_RUN [--n 1000] [--seed 0] [--out results/x.json]
"""

import argparse
import json
import math
import sys
import warnings

import torch

from textvae.code_metrics import evaluate_codes
from textvae.config import SampleConfig
from textvae.generate import generate
from textvae.metrics import model_split
from textvae.text_metrics import distinct_n
from textvae.model import TextVAE


def judge_ppl(lm, texts: list[str]) -> float:
    """exp(total NLL / total tokens) of ``texts`` under the language model ``lm`` (words + EOS)."""
    nll, tokens = 0.0, 0
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # unknown words are <unk> to the judge, as to any LM
        for i in range(0, len(texts), 100):
            t, n = lm._tokenize(texts[i:i + 100])
            nll -= float(lm.log_likelihood(t, n, None).double().sum())
            tokens += int((n - 1).sum())
    return math.exp(nll / tokens)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vq", required=True, help="run or model directory of a VQ model with a fitted prior")
    ap.add_argument("--lm", required=True, help="run or model directory of the judge language model")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    vq, lm = TextVAE.from_pretrained(args.vq), TextVAE.from_pretrained(args.lm)
    if vq.latent.prior is None:
        sys.exit(f"{args.vq} has no fitted code prior; run textvae fit-prior --model {args.vq} first")
    prior = vq.latent.prior
    test = model_split(vq, "test")
    result = {"n": args.n, "seed": args.seed}
    for name in ("uniform", "fitted"):
        object.__setattr__(vq.latent, "prior", prior if name == "fitted" else None)
        g = torch.Generator().manual_seed(args.seed)
        ids = generate(vq, vq.prior_sample(args.n, g), SampleConfig(), generator=g)
        texts = [vq.tokenizer.decode(s) for s in ids]
        ev = evaluate_codes(vq, test, n_samples=0)
        bound = "nll_bound_prior" if name == "fitted" else "nll_bound_uniform"
        result[name] = {"judge_ppl": judge_ppl(lm, texts), "distinct_2": distinct_n(texts, 2),
                        "test_nll_bound": ev[bound], "examples": texts[:5]}
        print(f"{name:<8} judge PPL {result[name]['judge_ppl']:8.2f}  distinct-2 {result[name]['distinct_2']:.3f}  "
              f"test NLL bound {ev[bound]:.3f}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
