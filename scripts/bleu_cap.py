"""Reconstruction BLEU of one trained run under the two length caps textvae has used.

``metrics.evaluate`` scores the greedy decode of each sentence's posterior mean; a decode that does
not end is cut. Before commit d0d85c6 the cut came at the longest input of the decode's batch + 10
tokens, so the score moved with the batching; since then at the sentence's own input + 10. This
decodes the split once, in ``evaluate``'s batches, and scores both cuts, so a table whose rows were
evaluated on either side of that commit can say how far apart the two are.

    python scripts/bleu_cap.py runs/ptb/vae-plain
"""

import argparse
import json
import sys

from textvae.batching import collate
from textvae.config import SampleConfig
from textvae.errors import TextVAEError
from textvae.generate import eval_mode, generate
from textvae.metrics import _batches, _ids_to_text, model_split, reconstruction_cap
from textvae.model import TextVAE, resolve_model_dir
from textvae.text_metrics import bleu, bleu_tokenize


def both_caps(model, split, batch_size: int = 64) -> dict:
    """bleu_rec with the batch-wide cut and with each sentence's own, and how many batches mix lengths."""
    by_batch, own, refs, mixed = [], [], [], 0
    with eval_mode(model):
        for idx in _batches(split, batch_size):
            b = collate(split, idx).to(model.device)
            mu = model.latent.point(model.posterior_params(b.tokens, b.lengths, b.label_ids))
            caps = [reconstruction_cap(n) for n in b.lengths]
            mixed += len(set(caps)) > 1
            out = generate(model, mu, SampleConfig(greedy=True, max_len=max(caps)), labels=b.label_ids)
            by_batch += [_ids_to_text(model, o) for o in out]
            own += [_ids_to_text(model, o[:cap]) for o, cap in zip(out, caps)]
            refs += [_ids_to_text(model, split.ids[i]) for i in idx]
    tok = bleu_tokenize(refs, getattr(model.tokenizer, "kind", None))
    return {"sentences": len(refs), "batches": len(_batches(split, batch_size)), "mixed_length_batches": mixed,
            "bleu_rec_batch_cap": bleu(by_batch, refs, tok), "bleu_rec_own_cap": bleu(own, refs, tok)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run directory or model directory (a VAE)")
    p.add_argument("--split", default="test")
    p.add_argument("--data-dir", help="the corpus folder, if not where the run was trained")
    p.add_argument("--batch-size", type=int, default=64, help="evaluate's batch size")
    args = p.parse_args(argv)
    try:
        model = TextVAE.from_pretrained(resolve_model_dir(args.run))
        if model.is_lm:
            raise TextVAEError(f"{args.run} is a language model: it has no reconstructions to score")
        split = model_split(model, args.split, data_dir=args.data_dir)
    except TextVAEError as e:
        print(f"bleu_cap.py: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(both_caps(model, split, args.batch_size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
