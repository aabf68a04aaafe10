"""The end of a ``textvae train`` run: a bounded summary of the best model, with progress shown.

ELBO-based valid/test numbers by default (valid's are the run's own validation of the best model,
read from metrics.jsonl), importance-weighted NLL/PPL only when asked (``--summary-iw K``), then a
few prior samples and one homotopy. ``textvae evaluate`` gives every metric.
"""

from .plot import read_metrics


def best_validation(run: str, step: int | None) -> dict | None:
    """The validation record of the best model (metrics.jsonl, kind "valid", its step), or None."""
    found = [r for r in read_metrics(run) if r.get("kind") == "valid" and r.get("step") == step]
    return found[-1] if found and {"elbo", "rec", "kl", "ppl_elbo", "au"} <= set(found[-1]) else None


def print_summary(run: str, cfg, iw_samples: int = 0, best_step: int | None = None) -> None:
    """The end of a run, bounded and with a progress bar: the best model's ELBO-based valid/test
    numbers (one pass over test; valid's are the training run's own validation of the best model,
    at ``best_step``), with ``iw_samples`` > 0 also the importance-weighted NLL and PPL
    (k = iw_samples; the slow part), then a few prior samples and one homotopy."""
    from tqdm.auto import tqdm

    from .metrics import evaluate, model_split, validate
    from .model import TextVAE

    model = TextVAE.from_pretrained(run)
    names, seed = ("valid", "test"), cfg.train.seed
    passes = [(name, "ELBO") for name in names] + [(name, f"IW k={iw_samples}") for name in names if iw_samples]
    rows, encoded = {name: {} for name in names}, {}
    known = best_validation(run, best_step)
    if known is not None:
        rows["valid"].update(known)
        passes.remove(("valid", "ELBO"))
    with tqdm(total=len(passes) + 1, desc="summary", unit="pass", disable=not cfg.train.progress,
              dynamic_ncols=True) as bar:
        for name, kind in passes:
            bar.set_description(f"summary: {name} {kind}")
            if name not in encoded:
                encoded[name] = model_split(model, name, data=cfg.data)
            if kind == "ELBO":
                rows[name].update(validate(model, encoded[name], batch_size=64, seed=seed,
                                           progress=f"{name} ELBO" if cfg.train.progress else None))
            else:
                r = evaluate(model, encoded[name], iw_samples=iw_samples, n_samples=0, bleu_sentences=0, seed=seed,
                             progress=f"{name} IW k={iw_samples}" if cfg.train.progress else None)
                rows[name].update(nll_iw=r["nll_iw"], ppl_iw=r["ppl_iw"])
            bar.update(1)
        bar.set_description("summary: samples, homotopy")
        samples = model.sample(5, seed=seed)
        test = encoded["test"]
        texts = test.texts
        homotopy, label = [], None
        if not model.is_lm and len(texts) >= 2:
            a, b = texts[0], max(texts[1:], key=lambda t: len(t))
            label = test.labels[0] if model.conditional else None  # a conditional model: a's label
            homotopy = model.interpolate(a, b, steps=5, label=label)
        bar.update(1)
    iw_head = f" nll_iw (k={iw_samples}) | ppl_iw |" if iw_samples else ""
    print(f"\n| split | elbo | rec | kl | ppl_elbo | au |{iw_head}")
    print("|---" * (6 + 2 * bool(iw_samples)) + "|")
    for name, r in rows.items():
        iw = f" {r['nll_iw']:.2f} | {r['ppl_iw']:.2f} |" if iw_samples else ""
        print(f"| {name} | {r['elbo']:.2f} | {r['rec']:.2f} | {r['kl']:.2f} | {r['ppl_elbo']:.2f} | {r['au']} |{iw}")
    print("\nsamples from the prior:")
    for s in samples:
        print(f"  {s}")
    if homotopy:
        print(f"\nhomotopy (posterior means, greedy{', label ' + label if label else ''}):")
        for i, s in enumerate(homotopy):
            print(f"  {'*' if i in (0, len(homotopy) - 1) else ' '} {s}")
    test = rows["test"]
    print(f"\n({test['sentences']} test sentences, {test['tokens']} tokens; importance-weighted NLL/PPL: "
          f"--summary-iw K, or textvae evaluate --model {run} --split test for every metric)")
