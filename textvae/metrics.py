"""Evaluation of sentence VAEs: the estimators of the literature, as pure functions, and the
two passes over a split that use them (``validate`` for the training loop, ``evaluate`` for papers).

Conventions: NLL, ELBO terms and KL are per sentence in nats; ``elbo`` is the NEGATIVE ELBO
(rec + kl, lower is better); perplexities are exp(total NLL / total tokens), tokens = words + EOS
per sentence (BOS is given, never predicted).

Nothing here touches the global torch RNG: every sample is drawn from a ``torch.Generator`` on the
CPU and moved to the model's device, so evaluating during training leaves the training run's
random stream (and its exact resume) unchanged. Models run under ``eval()`` and ``no_grad()``;
their training flag is restored afterwards.

Estimators:
    iw_bound            log (1/k) sum_k w_k from log-weights (Burda et al. 2016)
    iw_log_likelihood   importance-weighted log p(x), z_k ~ q(z|x) (Burda et al. 2016; He et al.
                        2019; Li et al. 2019)
    mutual_information  I(x; z) under q with the aggregate posterior (Hoffman & Johnson 2016;
                        He et al. 2019's calc_mi); mi_batch / mi_full choose the aggregate
    active_units        Burda et al. (2016): dims with Cov_x(E_q[z|x]) above a threshold
    bleu, self_bleu     corpus / per-sentence BLEU with sacrebleu (Papineni et al. 2002;
                        Zhu et al. 2018 for self-BLEU)
    distinct_n          Li et al. (2016): distinct n-grams / n-grams
"""

import math
import re
import time

import numpy as np
import torch

from .config import SampleConfig
from .errors import ConfigError
from .generate import eval_mode, generate, has_line_length, parse_form, well_formed
from .model import gaussian_kl, log_normal

LOG_2PI = math.log(2 * math.pi)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
# Decoder logits budget per log_likelihood call (elements of the (rows, V) matrix); it sets the
# default IW chunk. 2**26 floats = 256 MiB, plus as much again for the log-softmax. A GPU runs
# small decoder passes far below its speed (each is a few kernel launches), so it gets 4x more.
LOGIT_BUDGET = 2 ** 26
LOGIT_BUDGET_CUDA = 2 ** 28


def _generator(seed_or_gen) -> torch.Generator:
    if isinstance(seed_or_gen, torch.Generator):
        return seed_or_gen
    return torch.Generator().manual_seed(0 if seed_or_gen is None else int(seed_or_gen))


def _randn(shape, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise from ``generator`` (CPU), moved to ``like``'s device and dtype."""
    return torch.randn(shape, generator=generator).to(device=like.device, dtype=like.dtype)


# =========================================================================== likelihood estimators

def iw_bound(log_w: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The importance-weighted bound L_k = log (1/k) sum_k exp(log_w_k) (Burda et al. 2016).

    ``log_w`` holds log p(x, z_k) - log q(z_k|x) for k samples z_k ~ q(z|x) along ``dim``.
    E[L_1] is the ELBO, E[L_k] is non-decreasing in k and tends to log p(x) as k grows.
    """
    k = log_w.size(dim)
    return torch.logsumexp(log_w, dim=dim) - math.log(k)


def default_chunk(k: int, batch: int, steps: int, vocab: int, budget: int = LOGIT_BUDGET) -> int:
    """Samples per decoder pass so that batch x chunk x steps x vocab logits fit ``budget``."""
    return max(1, min(k, budget // max(1, batch * steps * vocab)))


def _tile(y: torch.Tensor | None, times: int) -> torch.Tensor | None:
    """Labels for a batch repeated ``times`` times (``tokens.repeat(times, 1)``); None stays None."""
    return None if y is None else y.repeat(times)


def elbo_terms(model, tokens: torch.Tensor, lengths: torch.Tensor, samples: int = 1,
               generator: torch.Generator | None = None, posterior=None, y: torch.Tensor | None = None):
    """Reconstruction NLL (B,) averaged over ``samples`` z ~ q(z|x), and KL (B, Z) per dimension.

    Returns (rec, kl, mu, logvar). rec + kl.sum(1) is the negative ELBO (Bowman et al. 2016).
    The LM gives rec = exact NLL and a (B, 0) KL. ``posterior`` = (mu, logvar) skips the encoder.
    ``y`` (B,): label ids, for a conditional model (then q(z|x, y), p(x|z, y); the prior is N(0, I)).
    """
    g = _generator(generator)
    with eval_mode(model):
        mu, logvar = posterior if posterior is not None else model.encode_posterior(tokens, lengths, y)
        B = tokens.size(0)
        if model.is_lm:
            return -model.log_likelihood(tokens, lengths, None), gaussian_kl(mu, logvar), mu, logvar
        eps = _randn((samples, B, model.latent_dim), g, mu)  # (S, B, Z)
        z = (mu + eps * (0.5 * logvar).exp()).reshape(samples * B, -1)  # (S*B, Z), sample-major
        ll = model.log_likelihood(tokens.repeat(samples, 1), lengths.repeat(samples), z,
                                  _tile(y, samples))  # (S*B,)
        rec = -ll.view(samples, B).mean(0)
        return rec, gaussian_kl(mu, logvar), mu, logvar


def iw_log_weights(model, tokens: torch.Tensor, lengths: torch.Tensor, k: int, chunk: int | None = None,
                   generator: torch.Generator | None = None, posterior=None,
                   y: torch.Tensor | None = None) -> torch.Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x): a (B, k) tensor.

    The encoder runs once per sentence. The decoder runs on the batch repeated ``chunk`` times
    ((B * chunk, T) rows per ``log_likelihood`` call) until k samples are done. All B x k x Z
    noise is drawn from ``generator`` up front, so the chunk size does not change the estimate
    (only float rounding in differently sized batches).
    """
    g = _generator(generator)
    with eval_mode(model):
        mu, logvar = posterior if posterior is not None else model.encode_posterior(tokens, lengths, y)
        B, T = tokens.shape
        budget = LOGIT_BUDGET_CUDA if mu.is_cuda else LOGIT_BUDGET
        chunk = chunk or default_chunk(k, B, T - 1, model.config.vocab_size, budget)
        eps = _randn((k, B, model.latent_dim), g, mu)  # (k, B, Z)
        std = (0.5 * logvar).exp()
        out = []
        for s in range(0, k, chunk):
            e = eps[s:s + chunk]  # (c, B, Z)
            c = e.size(0)
            z = mu + e * std  # (c, B, Z)
            log_q = log_normal(z, mu, logvar)  # (c, B)
            log_prior = -0.5 * (z.pow(2).sum(-1) + model.latent_dim * LOG_2PI)  # (c, B)
            ll = model.log_likelihood(tokens.repeat(c, 1), lengths.repeat(c), z.reshape(c * B, -1),
                                      _tile(y, c))
            out.append(ll.view(c, B) + log_prior - log_q)
        return torch.cat(out, 0).t()  # (B, k)


def iw_log_likelihood(model, tokens: torch.Tensor, lengths: torch.Tensor, k: int = 500,
                      chunk: int | None = None, generator: torch.Generator | None = None,
                      posterior=None, y: torch.Tensor | None = None) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) per sentence, (B,) in nats.

    log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k, z_k ~ q(z|x)
    (Burda et al. 2016; the test-set NLL of He et al. 2019 and Li et al. 2019, k = 500 there).
    A lower bound on log p(x) in expectation, tight as k -> inf. ``chunk`` = samples per decoder
    pass (default: as many as fit ``LOGIT_BUDGET``, ``LOGIT_BUDGET_CUDA`` on a GPU). For the LM (no
    latent) the exact log p(x).
    A conditional model (labels ``y``) gives log p(x|y) the same way, with the prior N(0, I).
    """
    if model.is_lm:
        with eval_mode(model):
            return model.log_likelihood(tokens, lengths, None)
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    return iw_bound(iw_log_weights(model, tokens, lengths, k, chunk, generator, posterior, y))


# =========================================================================== latent-space statistics

def mutual_information(mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor | None = None,
                       generator: torch.Generator | None = None, chunk: int | None = None) -> float:
    """I(x; z) under q: E_x E_q(z|x)[log q(z|x) - log q(z)], q(z) = (1/N) sum_n q(z|x_n).

    The estimator of He et al. (2019, ``calc_mi``): the rows of ``mu``/``logvar`` (N, Z) are both
    the x's and the aggregate posterior; E_q[log q(z|x)] = -H(q(z|x)) is analytic; log q(z_n) is a
    logsumexp over the N posteriors at one sample z_n ~ q(z|x_n) per row (``z`` (N, Z), else
    drawn from ``generator``). Chunked over samples so no (N, N, Z) tensor is built.
    The estimate is at most about log N (it cannot tell apart more posteriors than it has).
    """
    N, Z = mu.shape
    if N == 0 or Z == 0:
        return 0.0
    mu, logvar = mu.double(), logvar.double()
    if z is None:
        z = mu + _randn((N, Z), _generator(generator), mu) * (0.5 * logvar).exp()
    z = z.to(mu)
    neg_entropy = (-0.5 * Z * LOG_2PI - 0.5 * (1.0 + logvar).sum(-1)).mean()
    inv_var = (-logvar).exp()  # (N, Z)
    const = -0.5 * (Z * LOG_2PI + logvar.sum(-1))  # (N,)
    chunk = chunk or max(1, 2 ** 22 // (N * Z))
    log_qz = []
    for s in range(0, N, chunk):
        dev = z[s:s + chunk].unsqueeze(1) - mu.unsqueeze(0)  # (c, N, Z)
        log_density = -0.5 * (dev.pow(2) * inv_var).sum(-1) + const  # (c, N): log q(z_c | x_n)
        log_qz.append(torch.logsumexp(log_density, dim=1) - math.log(N))  # (c,)
    return float(neg_entropy - torch.cat(log_qz).mean())


def mi_batch(mu: torch.Tensor, logvar: torch.Tensor, batches: list, generator: torch.Generator | None = None) -> float:
    """He et al. (2019): MI with each minibatch as the aggregate posterior, averaged over
    minibatches weighted by their size. ``batches``: lists of row indices into mu/logvar."""
    g = _generator(generator)
    total = sum(len(b) for b in batches)
    if total == 0:
        return 0.0
    return sum(mutual_information(mu[b], logvar[b], generator=g) * len(b) for b in batches) / total


def mi_full(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> float:
    """Li et al. (2019): MI with the whole evaluation set as the aggregate posterior."""
    return mutual_information(mu, logvar, generator=_generator(generator))


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> tuple[int, torch.Tensor]:
    """Burda et al. (2016): dimension d is active when A_d = Var_x(E_q[z_d|x]) > threshold.

    ``mu`` (N, Z) posterior means. Returns (count, (Z,) variances); unbiased variance over N, as
    in He et al. (2019).
    """
    if mu.size(0) < 2 or mu.size(1) == 0:
        var = torch.zeros(mu.size(1), dtype=torch.float64)
    else:
        var = mu.double().var(dim=0, unbiased=True).cpu()
    return int((var > threshold).sum()), var


# =========================================================================== text statistics

def bleu_tokenize(texts: list[str]) -> str:
    """sacrebleu tokeniser for these texts: ``zh`` (one token per CJK character) when they contain
    CJK ideographs, else the standard ``13a``."""
    return "zh" if any(_CJK.search(t) for t in texts) else "13a"


def bleu(hyps: list[str], refs: list[str]) -> float:
    """Corpus BLEU (sacrebleu; 13a tokenisation, ``zh`` for CJK text; one reference per
    hypothesis), 0..100. Input that is already tokenised (PTB style) is scored as given."""
    import sacrebleu

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if not hyps:
        return 0.0
    tok = bleu_tokenize(list(refs))
    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)], tokenize=tok, force=True).score)


def _units(sentence: str) -> list[str]:
    """What distinct-n counts: whitespace tokens, or characters for CJK text (written without spaces)."""
    return [c for c in sentence if not c.isspace()] if _CJK.search(sentence) else sentence.split()


def distinct_n(sentences: list[str], n: int) -> float:
    """Li et al. (2016): distinct n-grams / total n-grams over all sentences; n-grams of whitespace
    tokens, or of characters for CJK text."""
    grams = [tuple(w[i:i + n]) for w in map(_units, sentences) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(sentences: list[str]) -> float:
    """Self-BLEU (Zhu et al. 2018, Texygen): each sentence scored by sentence-level BLEU (sacrebleu,
    exp smoothing, effective order) against all the others as references, then averaged. 100:
    identical samples; lower is more diverse. O(n^2): meant for ~100 samples."""
    from sacrebleu.metrics import BLEU

    if len(sentences) < 2:
        raise ValueError(f"self-BLEU needs at least 2 sentences, got {len(sentences)}")
    metric = BLEU(effective_order=True, tokenize=bleu_tokenize(sentences), force=True)
    scores = [metric.sentence_score(s, sentences[:i] + sentences[i + 1:]).score for i, s in enumerate(sentences)]
    return float(np.mean(scores))


# =========================================================================== passes over a split

def _batches(split, batch_size: int) -> list[list[int]]:
    from .data import BucketBatchSampler

    return BucketBatchSampler(split.lengths, batch_size, shuffle=False).batches(0)


def _ids_to_text(model, ids) -> str:
    tok = getattr(model, "tokenizer", None)
    ids = [int(i) for i in ids]
    return tok.decode(ids) if tok is not None else " ".join(map(str, ids))


def label_agreement(samples: list[str], requested: list[str]) -> dict:
    """How often a conditional model's samples follow the label they were decoded with.

    The check exists for labels that are poem forms "LxN" (e.g. "5x4" and "7x4" for a model trained
    on tang5 + tang7 with the form as the label): ``line_length``, the sample is whole verses of L
    characters each ended by "，" or "。" (:func:`~textvae.generate.has_line_length`); ``well_formed``,
    it is exactly a poem of that form (:func:`~textvae.generate.well_formed`). Other labels have no
    check. Returns ``label_line_length`` and ``label_well_formed``, fractions over the samples whose
    label is a form (None when there are none), and ``label_match``: per label, those fractions
    and the number of samples.
    """
    per: dict[str, list] = {}
    for text, label in zip(samples, requested):
        try:
            chars, _ = parse_form(label)
        except ConfigError:
            continue  # not a form: no check
        per.setdefault(label, []).append((has_line_length(text, chars), well_formed(text, label)))
    checked = [r for rows in per.values() for r in rows]
    return {
        "label_line_length": float(np.mean([a for a, _ in checked])) if checked else None,
        "label_well_formed": float(np.mean([b for _, b in checked])) if checked else None,
        "label_match": {label: {"line_length": float(np.mean([a for a, _ in rows])),
                                "well_formed": float(np.mean([b for _, b in rows])), "samples": len(rows)}
                        for label, rows in sorted(per.items())},
    }


def posterior_means(model, split, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and log-variances (N, Z) of every example of ``split``, in split order (CPU)."""
    from .data import collate

    N, Z = len(split.ids), model.latent_dim
    mu, logvar = torch.zeros(N, Z), torch.zeros(N, Z)
    with eval_mode(model):
        for idx in _batches(split, batch_size):
            b = collate(split, idx).to(model.device)
            m, lv = model.encode_posterior(b.tokens, b.lengths, b.label_ids)
            mu[idx], logvar[idx] = m.float().cpu(), lv.float().cpu()
    return mu, logvar


def validate(model, split, batch_size: int = 64, samples: int = 1, seed: int = 0) -> dict:
    """The fast pass the training loop runs at every evaluation: the negative ELBO and its terms.

    Keys: ``rec``, ``kl`` (nats per sentence), ``elbo`` = rec + kl (negative ELBO), ``ppl_elbo`` =
    exp(sum(rec + kl) / tokens), ``au`` (active units, threshold 0.01), ``tokens``, ``sentences``,
    ``kl_per_dim`` (list, sums to ``kl``). ``samples`` z ~ q(z|x) per sentence for ``rec``.
    Deterministic for a seed; the global RNG is not used.
    """
    from .data import collate

    g = _generator(seed)
    rec_sum, kl_dim, tokens, mus = 0.0, torch.zeros(model.latent_dim, dtype=torch.float64), 0, []
    with eval_mode(model):
        for idx in _batches(split, batch_size):
            b = collate(split, idx).to(model.device)
            rec, kl, mu, _ = elbo_terms(model, b.tokens, b.lengths, samples, g, y=b.label_ids)
            rec_sum += float(rec.double().sum())
            kl_dim += kl.double().sum(0).cpu()
            tokens += int((b.lengths - 1).sum())
            mus.append(mu.float().cpu())
    n = len(split.ids)
    if n == 0:
        raise ValueError("validate: the split is empty")
    kl_per_dim = (kl_dim / n).tolist()
    kl_mean = math.fsum(kl_per_dim)
    au, _ = active_units(torch.cat(mus)) if mus else (0, None)
    return {"rec": rec_sum / n, "kl": kl_mean, "elbo": rec_sum / n + kl_mean,
            "ppl_elbo": math.exp((rec_sum + kl_mean * n) / tokens), "au": au, "tokens": tokens,
            "sentences": n, "kl_per_dim": kl_per_dim}


def evaluate(model, split, *, iw_samples: int = 500, elbo_samples: int = 1, batch_size: int = 64, seed: int = 0,
             n_samples: int = 100, sample_cfg: SampleConfig | None = None, bleu_sentences: int | None = None,
             au_threshold: float = 0.01, iw_chunk: int | None = None, form: str | None = None) -> dict:
    """Every test-set metric of the sentence-VAE papers, in one pass over ``split``.

    Likelihood: ``nll_iw`` (mean -log p(x) per sentence, k = ``iw_samples`` importance samples;
    None when 0), ``ppl_iw`` = exp(sum NLL / tokens); ``rec``, ``kl``, ``elbo`` = rec + kl (negative
    ELBO, ``elbo_samples`` z per sentence for rec), ``ppl_elbo``.
    Latent space: ``mi_batch`` (He et al. 2019, per-minibatch aggregate), ``mi_full`` (Li et al.
    2019, whole-split aggregate), ``au`` / ``au_threshold`` / ``au_variances``, ``kl_per_dim``
    (sums to ``kl``). Text: ``bleu_rec`` (greedy decoding from posterior means vs the inputs as the
    tokenizer decodes their ids; the first ``bleu_sentences`` sentences of the split, all when
    None); ``distinct_1``, ``distinct_2``, ``self_bleu``, ``mean_len`` (tokens) of ``n_samples``
    prior samples decoded with ``sample_cfg`` (default: SampleConfig(), ancestral sampling).
    With ``form`` (a poem form such as "5x4"), ``well_formed``: the fraction of those samples that
    are poems of that form (:func:`textvae.generate.well_formed`); with a free ``sample_cfg`` this
    shows what the model learned of the form by itself. Also ``tokens``, ``sentences``,
    ``iw_samples``, ``seconds``.

    A conditional model needs ``split.label_ids`` (:func:`textvae.data.attach_label_ids`): every term
    is then conditioned on the example's label (``nll_iw`` estimates -log p(x|y)), prior sample i is
    decoded with label i mod K, and :func:`label_agreement` adds ``label_line_length``,
    ``label_well_formed`` and ``label_match``.

    For the LM: ``nll_iw`` is the exact NLL (``iw_samples`` reported as 0), kl / MI / AU are 0 and
    ``bleu_rec`` is None. Deterministic for a seed (and batch size, which sets the minibatches of
    ``mi_batch``); the global RNG is not used.
    """
    from .data import collate

    start = time.perf_counter()
    if form:
        parse_form(form)  # a bad form fails now, not after the pass
    g = _generator(seed)
    n = len(split.ids)
    if n == 0:
        raise ValueError("evaluate: the split is empty")
    batches = _batches(split, batch_size)
    lm = model.is_lm
    Z = model.latent_dim
    rec_sum, nll_sum, kl_dim, tokens = 0.0, 0.0, torch.zeros(Z, dtype=torch.float64), 0
    mu_all, logvar_all = torch.zeros(n, Z), torch.zeros(n, Z)
    hyps, refs = [], []
    bleu_limit = n if bleu_sentences is None else bleu_sentences
    with eval_mode(model):
        for idx in batches:
            b = collate(split, idx).to(model.device)
            tokens += int((b.lengths - 1).sum())
            rec, kl, mu, logvar = elbo_terms(model, b.tokens, b.lengths, elbo_samples, g, y=b.label_ids)
            rec_sum += float(rec.double().sum())
            kl_dim += kl.double().sum(0).cpu()
            if lm:
                nll_sum += float(rec.double().sum())
                continue
            if iw_samples > 0:
                ll = iw_log_likelihood(model, b.tokens, b.lengths, iw_samples, iw_chunk, g, posterior=(mu, logvar),
                                       y=b.label_ids)
                nll_sum -= float(ll.double().sum())
            mu_all[idx], logvar_all[idx] = mu.float().cpu(), logvar.float().cpu()
            keep = [j for j, i in enumerate(idx) if i < bleu_limit]
            if keep:
                max_len = int(b.lengths.max()) - 2 + 10
                out = generate(model, mu[keep], SampleConfig(greedy=True, max_len=max_len),
                               labels=None if b.label_ids is None else b.label_ids[keep])
                hyps += [_ids_to_text(model, o) for o in out]
                refs += [_ids_to_text(model, split.ids[idx[j]]) for j in keep]
    kl_per_dim = (kl_dim / n).tolist()
    kl_mean = math.fsum(kl_per_dim)
    have_nll = lm or iw_samples > 0
    result = {
        "nll_iw": nll_sum / n if have_nll else None,
        "ppl_iw": math.exp(nll_sum / tokens) if have_nll else None,
        "rec": rec_sum / n, "kl": kl_mean, "elbo": rec_sum / n + kl_mean,
        "ppl_elbo": math.exp((rec_sum + kl_mean * n) / tokens),
    }
    if lm:
        result.update(mi_batch=0.0, mi_full=0.0, au=0, au_threshold=au_threshold, au_variances=[],
                      kl_per_dim=[], bleu_rec=None)
    else:
        au, variances = active_units(mu_all, au_threshold)
        result.update(mi_batch=mi_batch(mu_all, logvar_all, batches, g), mi_full=mi_full(mu_all, logvar_all, g),
                      au=au, au_threshold=au_threshold, au_variances=variances.tolist(), kl_per_dim=kl_per_dim,
                      bleu_rec=bleu(hyps, refs) if hyps else None)
    # prior samples: diversity and length
    samples = []
    if n_samples > 0:
        z = None if lm else torch.randn(n_samples, Z, generator=g).to(model.device)
        # a conditional model: sample i is decoded with label i mod K, so every label gets its share
        y = torch.arange(n_samples, device=model.device) % len(model.label_names) if model.conditional else None
        ids = generate(model, z, sample_cfg or SampleConfig(), n=n_samples, generator=g, labels=y)
        samples = [_ids_to_text(model, s) for s in ids]
        if y is not None:
            result.update(label_agreement(samples, [model.label_names[i] for i in y.tolist()]))
        mean_len = float(np.mean([len(s) for s in ids]))
    result.update(distinct_1=distinct_n(samples, 1) if samples else None,
                  distinct_2=distinct_n(samples, 2) if samples else None,
                  self_bleu=self_bleu(samples) if len(samples) >= 2 else None,
                  mean_len=mean_len if samples else None,
                  tokens=tokens, sentences=n, iw_samples=0 if lm else iw_samples,
                  seconds=time.perf_counter() - start)
    if form:
        result["well_formed"] = float(np.mean([well_formed(s, form) for s in samples])) if samples else None
    return result
