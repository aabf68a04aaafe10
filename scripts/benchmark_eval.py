"""Throughput of the importance-weighted NLL against a forward-only decoder pass.

The model has the shape of the ``ptb-li2019`` preset (LSTM encoder/decoder 256, embedding 256,
z 32, vocabulary 10,000) with random weights; the batches have PTB test-set lengths (from
``--data-dir``/test.txt when present, else synthetic lengths ~ 22 +- 10). On the same batches:

    forward   token/s of ``model.log_likelihood`` with one z per sentence, under no_grad
    iw        token-samples/s of ``metrics.iw_log_likelihood`` with k samples (tokens x k / s),
              encoder included (run once per sentence)

Each figure is the median over ``--repeats`` timed passes after ``--warmup`` untimed ones. Within
a pass the two alternate batch by batch, so load from other processes affects both alike; the
ratio is also reported per pass (median) and by process CPU time, which other processes do not
inflate. Acceptance target: iw / forward >= 0.8.

    python scripts/benchmark_eval.py --out bench_eval.json
"""

import argparse
import json
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from textvae.config import ModelConfig
from textvae.metrics import default_chunk, iw_log_likelihood
from textvae.model import TextVAE

DEFAULT_DATA = Path("/work/shared/data/ptb")
PAD, UNK, BOS, EOS = 0, 1, 2, 3


def ptb_li2019_config(vocab: int) -> ModelConfig:
    return ModelConfig(cell="lstm", emb_dim=256, enc_hidden=256, dec_hidden=256, latent_dim=32,
                       vocab_size=vocab)


def load_sentences(data_dir: Path | None, split: str, vocab: int, n_synthetic: int, seed: int):
    """Token-id lists: the split's words mapped to ids by frequency (rare words -> <unk>), or
    synthetic sentences with lengths ~ N(22, 10) clipped to [1, 80]."""
    path = data_dir / f"{split}.txt" if data_dir else None
    rng = np.random.default_rng(seed)
    if path and path.is_file():
        lines = [l.split() for l in path.read_text(encoding="utf-8").splitlines()]
        lines = [l for l in lines if l]
        counts = Counter(w for l in lines for w in l)
        ids = {w: i + 4 for i, (w, _) in enumerate(counts.most_common(vocab - 4))}
        return [[ids.get(w, UNK) for w in l] for l in lines], str(path)
    lengths = np.clip(np.rint(rng.normal(22, 10, n_synthetic)), 1, 80).astype(int)
    return [rng.integers(4, vocab, size=n).tolist() for n in lengths], "synthetic lengths ~ N(22, 10)"


def make_batches(sents, batch_size: int, n_batches: int):
    """Length-sorted batches (as BucketBatchSampler(shuffle=False)), n_batches spread evenly over
    the sorted order so short and long sentences are both represented."""
    order = sorted(range(len(sents)), key=lambda i: len(sents[i]))
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    groups = [g for g in groups if len(g) == batch_size] or groups
    pick = np.linspace(0, len(groups) - 1, min(n_batches, len(groups))).round().astype(int)
    out = []
    for gi in pick:
        seqs = [sents[i] for i in groups[gi]]
        T = max(len(s) for s in seqs) + 2
        tokens = torch.full((len(seqs), T), PAD, dtype=torch.long)
        for j, s in enumerate(seqs):
            tokens[j, 0], tokens[j, len(s) + 1] = BOS, EOS
            tokens[j, 1:len(s) + 1] = torch.tensor(s)
        out.append((tokens, torch.tensor([len(s) + 2 for s in seqs])))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA if DEFAULT_DATA.is_dir() else None)
    p.add_argument("--split", default="test")
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=6, help="batches timed per pass")
    p.add_argument("--k", type=int, default=16, help="importance samples per sentence (throughput is per sample)")
    p.add_argument("--chunk", type=int, default=None, help="IW samples per decoder pass (default: automatic)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = TextVAE(ptb_li2019_config(args.vocab)).to(device).eval()
    sents, source = load_sentences(args.data_dir, args.split, args.vocab, 3000, args.seed)
    batches = [(t.to(device), l.to(device)) for t, l in make_batches(sents, args.batch_size, args.batches)]
    n_tokens = sum(int((l - 1).sum()) for _, l in batches)
    g = torch.Generator().manual_seed(args.seed)
    zs = [torch.randn(t.size(0), model.latent_dim, generator=g).to(device) for t, _ in batches]
    chunks = sorted({args.chunk or default_chunk(args.k, t.size(0), t.size(1) - 1, args.vocab) for t, _ in batches})

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn) -> tuple[float, float]:
        sync()
        w, c = time.perf_counter(), time.process_time()
        fn()
        sync()
        return time.perf_counter() - w, time.process_time() - c

    def one_repeat() -> dict:
        """Forward and IW alternate batch by batch, so load from other processes hits both alike."""
        gen = torch.Generator().manual_seed(args.seed)
        t = {"fwd_wall": 0.0, "fwd_cpu": 0.0, "iw_wall": 0.0, "iw_cpu": 0.0}
        with torch.no_grad():
            for (tokens, lengths), z in zip(batches, zs):
                w, c = timed(lambda: model.log_likelihood(tokens, lengths, z))
                t["fwd_wall"] += w
                t["fwd_cpu"] += c
                w, c = timed(lambda: iw_log_likelihood(model, tokens, lengths, k=args.k, chunk=args.chunk,
                                                       generator=gen))
                t["iw_wall"] += w
                t["iw_cpu"] += c
        return t

    for _ in range(args.warmup):
        one_repeat()
    runs = [one_repeat() for _ in range(args.repeats)]
    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    fwd_tps = n_tokens / med["fwd_wall"]
    iw_tps = n_tokens * args.k / med["iw_wall"]
    ratios = [(args.k * r["fwd_wall"]) / r["iw_wall"] for r in runs]  # per repeat: iw tps / fwd tps
    cpu_ratio = (args.k * med["fwd_cpu"]) / med["iw_cpu"]
    result = {
        "model": "ptb-li2019 shape (lstm 256/256, emb 256, z 32), random weights",
        "vocab": args.vocab, "data": source, "device": str(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "batch_size": args.batch_size, "batches": len(batches), "tokens_per_pass": n_tokens,
        "batch_steps": [int(t.size(1)) for t, _ in batches], "k": args.k, "iw_chunks": chunks,
        "repeats": args.repeats, "warmup": args.warmup,
        "runs": runs, "forward_tokens_per_s": fwd_tps, "iw_token_samples_per_s": iw_tps,
        "ratio": iw_tps / fwd_tps, "ratio_per_repeat": ratios, "ratio_median_of_repeats": statistics.median(ratios),
        "ratio_cpu_time": cpu_ratio,
    }
    print(f"data: {source}; {len(batches)} batches of {args.batch_size}, {n_tokens} tokens; "
          f"device {device}, {torch.get_num_threads()} threads")
    print(f"forward-only log_likelihood: {fwd_tps:,.0f} token/s (median of {args.repeats})")
    print(f"IW-NLL k={args.k} (chunk {chunks}): {iw_tps:,.0f} token-samples/s")
    print(f"ratio IW / forward: {iw_tps / fwd_tps:.2f} (target >= 0.8); median of per-repeat ratios "
          f"{statistics.median(ratios):.2f}; by process CPU time {cpu_ratio:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
