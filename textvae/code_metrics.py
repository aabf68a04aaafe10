"""Evaluation of the discrete latents (``model.latent``: gumbel, vq), named so nobody confuses them
with the Gaussian's numbers. docs/metrics.md explains each key.

gumbel (M categoricals of K classes, uniform prior): a sample of q(z|x) outside training is a hard
one-hot draw with exact log q and log p, so ``nll_iw`` is a true importance-weighted estimate of
-log p(x) (Burda et al. 2016), beside ``rec``, the analytic ``kl`` and their sum ``elbo``.
``active_variables``: variables whose mean KL exceeds ``au_threshold`` (the analogue of active units).

vq (deterministic codes): ``rec`` is -log p(x|z_q) at the encoder's codes. No likelihood is
estimated, only bounded: -log p(x) <= rec - log p(codes) for any prior over codes, so
``nll_bound_uniform`` = rec + M log K (and ``ppl_bound_uniform``), and with a fitted code prior
(textvae.code_prior) ``nll_bound_prior`` = rec - log p_prior(codes) (and ``ppl_bound_prior``).
``active_variables``: positions whose code takes at least two values on the split.

Both: ``codebook_usage``, the share of the K entries used on the split (gumbel: mean over the M
variables, each with its own K classes; vq: one codebook shared by the M positions) and
``code_perplexity``, exp of the entropy of the code frequencies (same pooling), at most K;
``code_counts`` (the histogram ``textvae plot`` draws).
"""

import math
import time

import torch

from .config import SampleConfig
from .generate import eval_mode
from .metrics import (_batches, _generator, _ids_to_text, classifier_hits, iw_log_likelihood, prior_sample_metrics,
                      progress_bar, reconstructions)
from .text_metrics import bleu, bleu_tokenize


def _pass(model, split, batch_size: int, samples: int, g: torch.Generator, progress: str | None, each=None) -> dict:
    """One pass: rec (S hard samples of q per sentence), KL per variable, the point codes' ids, and M2's
    classifier hits."""
    from .batching import collate

    latent = model.latent
    rec_sum, kl_var, tokens, ids = 0.0, torch.zeros(latent.vars, dtype=torch.float64), 0, []
    correct, labelled = 0, 0
    with eval_mode(model):
        for idx in progress_bar(_batches(split, batch_size), progress):
            b = collate(split, idx).to(model.device)
            params = model.posterior_params(b.tokens, b.lengths, b.label_ids)
            B = b.tokens.size(0)
            eps = latent.noise(samples * B, g).view(samples, B, -1).to(model.device)
            z = latent.sample(params, eps).reshape(samples * B, -1)  # (S B, Z) hard codes
            y = None if b.label_ids is None else b.label_ids.repeat(samples)
            ll = model.log_likelihood(b.tokens.repeat(samples, 1), b.lengths.repeat(samples), z, y)
            rec = -ll.view(samples, B).mean(0)  # (B,)
            rec_sum += float(rec.double().sum())
            kl_var += latent.kl(params).double().sum(0).cpu()
            tokens += int((b.lengths - 1).sum())
            point = latent.point(params)
            ids.append(latent.code_ids(point).cpu())
            hits, known = classifier_hits(model, b)
            correct, labelled = correct + hits, labelled + known
            if each is not None:
                each(idx, b, params, point, rec)
    n = len(split.ids)
    if n == 0:
        raise ValueError("the split is empty")
    return {"rec_sum": rec_sum, "kl_per_var": (kl_var / n).tolist(), "tokens": tokens, "ids": torch.cat(ids), "n": n,
            "accuracy": correct / labelled if labelled else None}


def code_statistics(ids: torch.Tensor, classes: int, shared: bool) -> dict:
    """``codebook_usage`` and ``code_perplexity`` of code ids (N, M) (see the module docstring);
    ``shared``: one codebook for all M positions (vq), else one set of K classes per variable."""
    counts = torch.stack([torch.bincount(col, minlength=classes) for col in ids.t()]).double()  # (M, K)
    pooled = counts.sum(0, keepdim=True) if shared else counts
    p = pooled / pooled.sum(1, keepdim=True)
    entropy = -(p * p.clamp_min(1e-300).log()).sum(1)
    return {"codebook_usage": float((pooled > 0).double().mean()), "code_perplexity": float(entropy.exp().mean()),
            "code_counts": counts.sum(0).long().tolist() if shared else counts.long().tolist()}


def active_variables(model, kl_per_var: list[float], ids: torch.Tensor, threshold: float = 0.01) -> int:
    """gumbel: variables with mean KL above ``threshold``; vq: positions whose code varies."""
    if model.config.latent == "vq":
        return int(sum(len(col.unique()) > 1 for col in ids.t()))
    return int(sum(k > threshold for k in kl_per_var))


def validate_codes(model, split, batch_size: int = 64, samples: int = 1, seed: int = 0,
                   progress: str | None = None) -> dict:
    """:func:`textvae.metrics.validate` for a discrete latent: ``rec``, ``kl`` (per sentence; vq: M log
    K), ``elbo`` = rec + kl, ``ppl_elbo``, ``au`` (active variables), ``kl_per_dim`` (per variable),
    ``codebook_usage``, ``code_perplexity``, ``tokens``, ``sentences``; a model with a classifier (M2)
    adds ``accuracy``, as :func:`textvae.metrics.validate` does."""
    r = _pass(model, split, batch_size, samples, _generator(seed), progress)
    n, kl = r["n"], math.fsum(r["kl_per_var"])
    stats = code_statistics(r["ids"], model.latent.classes, shared=model.config.latent == "vq")
    return {"rec": r["rec_sum"] / n, "kl": kl, "elbo": r["rec_sum"] / n + kl,
            "ppl_elbo": math.exp((r["rec_sum"] + kl * n) / r["tokens"]),
            "au": active_variables(model, r["kl_per_var"], r["ids"]), "tokens": r["tokens"], "sentences": n,
            "kl_per_dim": r["kl_per_var"], "codebook_usage": stats["codebook_usage"],
            "code_perplexity": stats["code_perplexity"],
            **({} if r["accuracy"] is None else {"accuracy": r["accuracy"]})}


def evaluate_codes(model, split, *, iw_samples: int = 500, elbo_samples: int = 1, batch_size: int = 64,
                   seed: int = 0, n_samples: int = 100, sample_cfg: SampleConfig | None = None,
                   bleu_sentences: int | None = None, au_threshold: float = 0.01, iw_chunk: int | None = None,
                   form: str | None = None, sample_checks: list | None = None, progress: str | None = None) -> dict:
    """:func:`textvae.metrics.evaluate` for a discrete latent; the keys are in the module docstring."""
    from .poems import form_sample_checks

    start = time.perf_counter()
    checks = form_sample_checks(form) if sample_checks is None else list(sample_checks)
    g = _generator(seed)
    latent, vq = model.latent, model.config.latent == "vq"
    bleu_limit = len(split.ids) if bleu_sentences is None else bleu_sentences
    acc = {"nll": 0.0, "prior_nll": 0.0, "hyps": [], "refs": []}

    def each(idx, b, params, point, rec):
        if not vq and iw_samples > 0:
            acc["nll"] -= float(iw_log_likelihood(model, b.tokens, b.lengths, iw_samples, iw_chunk, g,
                                                  posterior=params, y=b.label_ids).double().sum())
        if vq and latent.prior is not None:
            acc["prior_nll"] -= float(latent.log_prior(point).double().sum())
        keep = [j for j, i in enumerate(idx) if i < bleu_limit]
        if keep:
            acc["hyps"] += reconstructions(model, point[keep], b.lengths[keep],
                                           None if b.label_ids is None else b.label_ids[keep])
            acc["refs"] += [_ids_to_text(model, split.ids[idx[j]]) for j in keep]

    r = _pass(model, split, batch_size, elbo_samples, g, progress, each)
    n, tokens, rec = r["n"], r["tokens"], r["rec_sum"] / r["n"]
    kl = math.fsum(r["kl_per_var"])
    bleu_tok = bleu_tokenize(acc["refs"], getattr(getattr(model, "tokenizer", None), "kind", None))
    result = {"latent": model.config.latent, "rec": rec, "kl": kl, "elbo": rec + kl,
              "ppl_elbo": math.exp((rec + kl) * n / tokens), "kl_per_dim": r["kl_per_var"]}
    if vq:
        bound = rec + latent.vars * math.log(latent.classes)
        result.update(nll_iw=None, ppl_iw=None, nll_bound_uniform=bound, ppl_bound_uniform=math.exp(bound * n / tokens))
        if latent.prior is not None:
            bound = rec + acc["prior_nll"] / n
            result.update(nll_bound_prior=bound, ppl_bound_prior=math.exp(bound * n / tokens))
    else:
        have = iw_samples > 0
        result.update(nll_iw=acc["nll"] / n if have else None, ppl_iw=math.exp(acc["nll"] / tokens) if have else None)
    au = active_variables(model, r["kl_per_var"], r["ids"], au_threshold)
    result.update(active_variables=au, au=au, au_threshold=au_threshold,
                  **code_statistics(r["ids"], latent.classes, shared=vq),
                  bleu_rec=bleu(acc["hyps"], acc["refs"], bleu_tok) if acc["hyps"] else None)
    result.update(prior_sample_metrics(model, n_samples, sample_cfg, g, checks, bleu_tok if acc["refs"] else None))
    result.update(tokens=tokens, sentences=n, iw_samples=0 if vq else iw_samples, seconds=time.perf_counter() - start)
    return result


def code_features(model, split, batch_size: int = 64) -> torch.Tensor:
    """One-hot codes (N, M K) of every example of ``split`` (a probe's features), in split order."""
    from .batching import collate

    out = torch.zeros(len(split.ids), model.latent.vars * model.latent.classes)
    with eval_mode(model):
        for idx in _batches(split, batch_size):
            b = collate(split, idx).to(model.device)
            params = model.posterior_params(b.tokens, b.lengths, b.label_ids)
            out[idx] = model.latent.features(params).float().cpu()
    return out
