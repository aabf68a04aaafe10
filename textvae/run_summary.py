"""The end of a ``textvae train`` run: a bounded summary of the best model, with progress shown.

ELBO-based valid/test numbers by default (valid's are the run's own validation of the best model,
read from metrics.jsonl), importance-weighted NLL/PPL only when asked (``--summary-iw K``), then a
few prior samples and one homotopy. ``textvae evaluate`` gives every metric. A run trained with a
collapse strategy that has a phase of its own (aggressive training, autoencoder pretraining) also
says how long that phase lasted: ``strategy_phases`` reads it from metrics.jsonl, for the last lines
of ``textvae train``, the experiment tables and the aggressive-training benchmark alike.
"""

from .plot import read_metrics


def best_validation(run: str, step: int | None) -> dict | None:
    """The validation record of the best model (metrics.jsonl, kind "valid", its step), or None."""
    found = [r for r in read_metrics(run) if r.get("kind") == "valid" and r.get("step") == step]
    return found[-1] if found and {"elbo", "rec", "kl", "ppl_elbo", "au"} <= set(found[-1]) else None


def strategy_phases(records: list[dict], steps: int) -> list[dict]:
    """The phases in which a collapse strategy changed the updates, from a run's metrics records
    (``steps``: the run's last step). Aggressive training (He et al. 2019) lasts until the validation-MI
    check that switched it off, or the whole run; autoencoder pretraining (Li et al. 2019) until the
    step its VAE phase began. Empty for a run with neither."""
    phases = []
    checks = [r for r in records if r.get("kind") == "aggressive"]
    if checks:
        off = next((r["step"] for r in checks if not r["aggressive"]), None)
        end = steps if off is None else off
        mi = [r["mi"] for r in checks]
        inner = [r["encoder_updates"] for r in records
                 if r.get("kind") == "train" and r.get("encoder_updates") and r["step"] <= end]
        phases.append({"phase": "aggressive", "steps": end, "ended": off is not None, "mi_checks": len(checks),
                       "mi_first": mi[0], "mi_peak": max(mi), "mi_last": mi[-1],
                       "encoder_updates_per_step": sum(inner) / len(inner) if inner else None})
    for r in records:
        if r.get("kind") == "pretrain_end":
            phases.append({"phase": "pretrain", "steps": r["step"], "reason": r.get("reason"),
                           "decoder_reset": r.get("decoder_reset")})
    return phases


def describe_phase(phase: dict, steps: int) -> str:
    """One line for a phase of ``strategy_phases`` in a run of ``steps`` steps."""
    share = f"{phase['steps']:,} of {steps:,} steps ({100 * phase['steps'] / max(steps, 1):.1f}%)"
    if phase["phase"] == "aggressive":
        inner = phase.get("encoder_updates_per_step")
        inner = f", {inner:.1f} encoder updates per step" if inner else ""
        mi = (f"validation MI {phase['mi_first']:.3f} at the first of {phase['mi_checks']} checks, "
              f"peak {phase['mi_peak']:.3f}")
        if phase["ended"]:
            return (f"aggressive training for the first {share}{inner}; {mi}, switched off when it fell "
                    f"to {phase['mi_last']:.3f}")
        return f"aggressive training throughout ({share}{inner}); {mi}, never fell"
    if phase["phase"] == "pretrain":
        reset = "the decoder re-initialised, then " if phase.get("decoder_reset") else ""
        reason = f", ended because {phase['reason']}" if phase.get("reason") else ""
        return f"autoencoder pretraining for the first {share}{reason}; {reset}the VAE phase"
    return f"{phase['phase']} for the first {share}"


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
