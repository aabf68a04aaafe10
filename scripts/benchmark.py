"""Training throughput: textvae's real step vs. a hand-written floor, side by side in one process.

For each configuration (``ptb-li2019``; GRU 256 / emb 300 / z 16 / batch 32 with one embedding
table shared by encoder and decoder and z feeding only the initial state, as in the widely used
Sentence-VAE port), on PTB training sentences:

  real   textvae's own path: BucketBatchSampler -> collate -> Trainer.step (forward over packed
         sequences, loss, backward, clipping, optimiser step), exactly what ``Trainer.fit`` calls
         per step (its tqdm/logging bookkeeping runs every 50 steps and is not included).
  floor  the same encoder/decoder modules driven by a minimal hand-written step on the same
         sentences grouped by exact length: no padding, no packing, no framework code.

Rounds alternate real/floor so machine noise hits both alike; each figure is the median over
rounds after warm-up. Tokens = words + EOS. Also reports peak RSS and writes JSON.

    python scripts/benchmark.py --data-dir ../shared/data/ptb [--rounds 5] [--steps 40] [--out results/benchmark.json]
"""

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from textvae.config_files import load_config
from textvae.batching import collate
from textvae.latents.gaussian import gaussian_kl
from textvae.optim import make_optimizer
from textvae.train import Trainer

CONFIGS = {
    "ptb-li2019": ("ptb-li2019", []),
    "gru256-emb300-z16": ("ptb-li2019", ["model.cell=gru", "model.emb_dim=300", "model.enc_hidden=256",
                                         "model.dec_hidden=256", "model.latent_dim=16", "model.z_to_input=false",
                                         "model.share_embedding=true",
                                         "model.emb_dropout=0", "model.out_dropout=0", "train.optimizer=adam",
                                         "train.lr=0.001"]),
}


def exact_length_batches(split, batch_size: int) -> list[torch.Tensor]:
    """Sentences grouped by exact length, as (B, n + 2) token tensors: BOS x EOS, no padding."""
    by_len = defaultdict(list)
    for ids in split.ids:
        by_len[len(ids)].append(ids)
    batches = []
    for n, group in sorted(by_len.items()):
        for i in range(0, len(group), batch_size):
            chunk = group[i:i + batch_size]
            t = torch.empty(len(chunk), n + 2, dtype=torch.long)
            t[:, 0], t[:, -1] = 2, 3
            t[:, 1:-1] = torch.tensor([c.tolist() for c in chunk])
            batches.append(t)
    g = torch.Generator().manual_seed(0)
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


def floor_step(model, opt, tokens: torch.Tensor, clip: float) -> int:
    """The minimal VAE step on an exact-length batch; returns the tokens it predicted."""
    enc, dec = model.encoder, model.decoder
    B = tokens.size(0)
    _, h = enc.rnn(enc.dropout(enc.embedding(tokens)))
    h = h[0] if isinstance(h, tuple) else h
    mu, logvar = model.latent.head(h[-1]).chunk(2, dim=-1)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    out, _ = dec.rnn(dec.inputs(tokens[:, :-1], z), dec.init_state(z, B, tokens.device))
    logits = dec.logits(out)  # (B, n + 1, V)
    rec = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1), reduction="sum") / B
    loss = rec + gaussian_kl(mu, logvar).sum() / B
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return tokens.numel() - B  # n + 1 predictions per sentence


def bench_config(name: str, data_dir: str, rounds: int, steps: int, warmup: int) -> dict:
    preset, overrides = CONFIGS[name]
    cfg = load_config(preset=preset, overrides=overrides + [f"data.data_dir={data_dir}", "train.progress=false"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp) / "run", log=lambda m: None)
        model = trainer.model.train()
        split = trainer.train_data
        real_batches = [b for epoch in range(3) for b in trainer.sampler.global_batches(epoch)]
        floor_batches = exact_length_batches(split, cfg.train.batch_size)
        floor_opt = make_optimizer(cfg.train, model.parameters())  # same optimiser settings as the real step
        ri = fi = 0
        real_tps, floor_tps = [], []
        for r in range(rounds + warmup):
            t0, tokens = time.perf_counter(), 0
            for _ in range(steps):
                idx = real_batches[ri % len(real_batches)].tolist()
                ri += 1
                batch = collate(split, idx)
                trainer.step(batch, 0, len(idx))
                tokens += batch.num_tokens
            real = tokens / (time.perf_counter() - t0)
            t0, tokens = time.perf_counter(), 0
            for _ in range(steps):
                tokens += floor_step(model, floor_opt, floor_batches[fi % len(floor_batches)], cfg.train.grad_clip)
                fi += 1
            floor = tokens / (time.perf_counter() - t0)
            if r >= warmup:
                real_tps.append(real)
                floor_tps.append(floor)
            print(f"  {name} round {r}{' (warm-up)' if r < warmup else ''}: real {real:,.0f} tok/s, "
                  f"floor {floor:,.0f} tok/s", file=sys.stderr)
        pad_rows = sum(len(b) * (max(split.lengths[b]) + 1) for b in real_batches) / \
            sum(int(split.lengths[b].sum()) + len(b) for b in real_batches)
    return {"config": name, "overrides": overrides, "real_tokens_per_s": statistics.median(real_tps),
            "floor_tokens_per_s": statistics.median(floor_tps),
            "ratio": statistics.median(r / f for r, f in zip(real_tps, floor_tps)),
            "padded_positions_per_real_token": pad_rows, "rounds": rounds, "steps_per_round": steps,
            "real_all": real_tps, "floor_all": floor_tps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("TEXTVAE_PTB", "../shared/data/ptb"))
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=40, help="optimiser steps per round and side")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default="results/benchmark.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [bench_config(c, args.data_dir, args.rounds, args.steps, args.warmup) for c in args.configs]
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "peak_rss_mb": peak_rss_mb,
              "command": "python scripts/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "results": results}
    print("\n| config | real tok/s | floor tok/s | real/floor |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['config']} | {r['real_tokens_per_s']:,.0f} | {r['floor_tokens_per_s']:,.0f} | {r['ratio']:.2f} |")
    print(f"peak RSS {peak_rss_mb:,.0f} MB; torch threads {report['threads']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
