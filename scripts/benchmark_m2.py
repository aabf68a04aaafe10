"""What an unlabelled M2 step costs against conditional-VAE steps (issue 21's acceptance: an enumerated
step over K labels at most 1.1 x K conditional-VAE steps, a Gumbel-softmax step at most 1.5 x one).

    OMP_NUM_THREADS=1 python scripts/benchmark_m2.py --labels 5 --batch 64 --repeats 20

One training step = forward, loss, backward, Adam update, on one batch of unlabelled built-in-corpus
sentences with the default preset's shapes. The conditional VAE step gets the true labels (one decoder
pass of B rows); the enumerated M2 step runs the classifier and one decoder pass of K * B rows; the
Gumbel step the classifier and one pass of B rows. Median seconds of ``--repeats`` steps after 3
warm-up steps, printed as one JSON object. Times on a shared CPU are noisy: rerun before believing a ratio.
"""

import argparse
import json
import statistics
import time

import torch

from textvae.batching import collate_ids
from textvae.config_files import load_config
from textvae.corpus import builtin_corpus
from textvae.model import TextVAE
from textvae.objectives import vae_loss
from textvae.tokenizers import train_tokenizer


def step_seconds(model, tokens, lengths, y, objective, repeats: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        loss = vae_loss(model(tokens, lengths, None, y), 1.0, objective)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", type=int, default=5, help="K (the built-in corpus's topics: 5)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = load_config(preset="default")
    rows = builtin_corpus(2000)["train"][:args.batch]
    tok = train_tokenizer(cfg.tokenizer, [r["text"] for r in builtin_corpus(2000)["train"]])
    tokens, lengths = collate_ids([tok.encode(r["text"]) for r in rows], tok.bos_id, tok.eos_id)
    labels = [f"label{k}" for k in range(args.labels)]
    y = torch.arange(args.batch) % args.labels
    out = {"labels": args.labels, "batch": args.batch, "threads": torch.get_num_threads()}
    cfg.model.vocab_size = tok.vocab_size
    base = dict(vars(cfg.model), conditional=True)
    for name, extra, ys in (("conditional_vae", {}, y),
                            ("m2_enumerate", {"classifier": True}, torch.full_like(y, -1)),
                            ("m2_gumbel", {"classifier": True, "unlabelled": "gumbel"}, torch.full_like(y, -1))):
        mcfg = type(cfg.model)(**{**base, **extra, "id2label": None})
        model = TextVAE(mcfg, tok, labels).train()
        out[f"{name}_s"] = step_seconds(model, tokens, lengths, ys, cfg.objective, args.repeats)
    out["enumerate_over_K_vae_steps"] = out["m2_enumerate_s"] / (args.labels * out["conditional_vae_s"])
    out["gumbel_over_one_vae_step"] = out["m2_gumbel_s"] / out["conditional_vae_s"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
