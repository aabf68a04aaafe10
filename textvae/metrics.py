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

and the functions that prepare a pass: model_split (a model's corpus split, encoded, with its
labels), posterior_parameters (q(z|x) of every example), length_batches (He et al.'s batching).
BLEU, distinct-n and self-BLEU, which ``evaluate`` reports, are in :mod:`textvae.text_metrics`.
docs/metrics.md states every convention and how it differs from the reference code.
"""

import contextlib
import dataclasses
import math
import time

import numpy as np
import torch

from .config import SampleConfig
from .errors import DataError, TextVAEError
from .generate import eval_mode, generate
from .eval_checkpoint import PassCheckpoint, PassState, pass_key
from .latents.gaussian import gaussian_kl
from .signals import StopSignals
from .text_metrics import bleu, bleu_tokenize, distinct_n, self_bleu, self_bleu_texygen

LOG_2PI = math.log(2 * math.pi)
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
        params = posterior if posterior is not None else model.posterior_params(tokens, lengths, y)
        mu, logvar = params
        B = tokens.size(0)
        if model.is_lm:
            return -model.log_likelihood(tokens, lengths, None), gaussian_kl(mu, logvar), mu, logvar
        latent = model.latent
        eps = latent.noise(samples * B, g).view(samples, B, -1)  # (S, B, noise)
        z = latent.sample(params, eps.to(mu.device)).reshape(samples * B, -1)  # (S*B, Z), sample-major
        ll = model.log_likelihood(tokens.repeat(samples, 1), lengths.repeat(samples), z,
                                  _tile(y, samples))  # (S*B,)
        rec = -ll.view(samples, B).mean(0)
        return rec, latent.kl(params), mu, logvar


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
        params = posterior if posterior is not None else model.posterior_params(tokens, lengths, y)
        latent, mu = model.latent, params[0]
        B, T = tokens.shape
        budget = LOGIT_BUDGET_CUDA if mu.is_cuda else LOGIT_BUDGET
        chunk = chunk or default_chunk(k, B, T - 1, model.config.vocab_size, budget)
        eps = latent.noise(k * B, g).view(k, B, -1).to(mu.device)  # (k, B, noise)
        out = []
        for s in range(0, k, chunk):
            e = eps[s:s + chunk]  # (c, B, noise)
            c = e.size(0)
            z = latent.sample(params, e)  # (c, B, Z)
            log_w = latent.log_prior(z) - latent.log_q(z, params)  # (c, B)
            ll = model.log_likelihood(tokens.repeat(c, 1), lengths.repeat(c), z.reshape(c * B, -1),
                                      _tile(y, c))
            out.append(ll.view(c, B) + log_w)
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
    neg_entropy, log_qz = _mi_rows(mu, logvar, z, generator, chunk)
    return float(neg_entropy.mean() - log_qz.mean()) if len(log_qz) else 0.0


def _mi_rows(mu, logvar, z=None, generator=None, chunk=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-row terms :func:`mutual_information` averages: -H(q(z|x_n)) and log q(z_n), each (N,)
    (empty when N or Z is 0)."""
    N, Z = mu.shape
    if N == 0 or Z == 0:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    mu, logvar = mu.double(), logvar.double()
    if z is None:
        z = mu + _randn((N, Z), _generator(generator), mu) * (0.5 * logvar).exp()
    z = z.to(mu)
    neg_entropy = -0.5 * Z * LOG_2PI - 0.5 * (1.0 + logvar).sum(-1)  # (N,)
    inv_var = (-logvar).exp()  # (N, Z)
    const = -0.5 * (Z * LOG_2PI + logvar.sum(-1))  # (N,)
    chunk = chunk or max(1, 2 ** 22 // (N * Z))
    log_qz = []
    for s in range(0, N, chunk):
        dev = z[s:s + chunk].unsqueeze(1) - mu.unsqueeze(0)  # (c, N, Z)
        log_density = -0.5 * (dev.pow(2) * inv_var).sum(-1) + const  # (c, N): log q(z_c | x_n)
        log_qz.append(torch.logsumexp(log_density, dim=1) - math.log(N))  # (c,)
    return neg_entropy, torch.cat(log_qz)


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
    return mi_full_with_se(mu, logvar, generator)[0]


def mi_full_with_se(mu: torch.Tensor, logvar: torch.Tensor,
                    generator: torch.Generator | None = None) -> tuple[float, float]:
    """:func:`mi_full` and its standard error: the estimate is a mean over the N rows of
    ``-H(q(z|x_n)) - log q(z_n)`` (one z_n ~ q(z|x_n) each), so SE = std of those terms / sqrt(N).
    Near 0 (a collapsed posterior) the estimate can be negative by about this much (docs/metrics.md)."""
    neg_entropy, log_qz = _mi_rows(mu, logvar, generator=_generator(generator))
    if len(log_qz) == 0:
        return 0.0, 0.0
    value = float(neg_entropy.mean() - log_qz.mean())
    terms = neg_entropy - log_qz
    se = float(terms.std(unbiased=True) / math.sqrt(len(terms))) if len(terms) > 1 else 0.0
    return value, se


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


# =========================================================================== passes over a split

def _batches(split, batch_size: int) -> list[list[int]]:
    from .batching import BucketBatchSampler

    return BucketBatchSampler(split.lengths, batch_size, shuffle=False).batches(0)


def _ids_to_text(model, ids) -> str:
    tok = getattr(model, "tokenizer", None)
    ids = [int(i) for i in ids]
    return tok.decode(ids) if tok is not None else " ".join(map(str, ids))


def reconstruction_cap(length) -> int:
    """The most tokens a reconstruction of a sentence of ``length`` (BOS and EOS counted) may have: its
    words + 10."""
    return int(length) - 2 + 10


def reconstructions(model, codes: torch.Tensor, lengths: torch.Tensor, labels=None) -> list[str]:
    """Greedy decodes of ``codes`` (one row per sentence), each cut at its own sentence's length + 8
    words: what bleu_rec scores. The cap is per sentence, so a decode that never stops is scored the
    same whatever the batch it was decoded in."""
    caps = [reconstruction_cap(n) for n in lengths]
    out = generate(model, codes, SampleConfig(greedy=True, max_len=max(caps)), labels=labels)
    return [_ids_to_text(model, o[:cap]) for o, cap in zip(out, caps)]


def length_batches(lengths, size: int = 32) -> list[list[int]]:
    """Row indices in batches of at most ``size`` sentences of one length, in length order (split
    order within a length): how He et al. (2019) batch a test set (``create_data_batch``), and so
    the minibatches their ``calc_mi`` averages over."""
    by_length: dict[int, list[int]] = {}
    for i, length in enumerate(lengths):
        by_length.setdefault(int(length), []).append(i)
    return [rows[s:s + size] for _, rows in sorted(by_length.items()) for s in range(0, len(rows), size)]


def posterior_parameters(model, split, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and log-variance (each (N, Z)) of q(z|x) for every example of ``split``, in split
    order (CPU); a conditional model's posterior is q(z|x, y) with the split's ``label_ids``."""
    from .batching import collate

    if model.latent is not None and model.latent.discrete:
        raise TextVAEError(f"posterior means and log-variances belong to the Gaussian latent; model.latent="
                           f"{model.config.latent!r} has discrete codes (code_metrics.code_features reads them)")
    N, Z = len(split.ids), model.latent_dim
    mu, logvar = torch.zeros(N, Z), torch.zeros(N, Z)
    with eval_mode(model):
        for idx in _batches(split, batch_size):
            b = collate(split, idx).to(model.device)
            m, lv = model.encode_posterior(b.tokens, b.lengths, b.label_ids)
            mu[idx], logvar[idx] = m.float().cpu(), lv.float().cpu()
    return mu, logvar


def read_labels(path) -> list[str]:
    """One label per line (stripped); the file's lines, blank ones included."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return [line.rstrip("\n").strip() for line in f]
    except OSError as e:
        raise DataError(f"cannot read labels file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"labels file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def model_data(model, data=None, data_dir: str | None = None, encoding_errors: str | None = None):
    """The corpus (a DataConfig) :func:`model_split` reads: a copy of ``data``, or the ``data`` section
    the trainer saved in the model's config.json (default DataConfig when there is none), with
    ``data_dir`` replacing its folder (and any hub dataset) and ``encoding_errors`` its UTF-8 policy."""
    from .config import DataConfig, _build

    if data is None:
        saved = getattr(model, "extra_config", {}).get("data", {})
        data = _build(DataConfig, saved, "the model's config.json", "data.") if saved else DataConfig()
    else:
        data = dataclasses.replace(data)  # a copy: the caller's config stays as it was
    if data_dir:
        data.data_dir, data.dataset = data_dir, None
    if encoding_errors:
        data.encoding_errors = encoding_errors
    return data


def model_split(model, split: str = "test", *, data=None, data_dir: str | None = None,
                labels_file=None, encoding_errors: str | None = None, need_labels: bool = False):
    """The ``split`` of the corpus a model was trained on, encoded with its tokenizer, with its labels.

    The corpus is ``data`` (a DataConfig) or else the ``data`` section the trainer saved in the
    model's config.json (default DataConfig when there is none); ``data_dir`` replaces its folder
    (and any hub dataset), ``encoding_errors`` its policy for invalid UTF-8. The result is an
    :class:`~textvae.data.EncodedSplit` whose ``labels`` are the corpus's own (``{split}.labels.txt``,
    a JSON label field, the built-in topics) or, with ``labels_file``, one label per line of the
    split's text file (blank lines' labels dropped with them) or per example as loaded; a
    conditional model's ``label_ids`` always come from the corpus's own labels. ``need_labels``:
    a DataError when the split ends up without labels. Feed it to :func:`posterior_parameters`,
    :func:`evaluate`, :func:`textvae.probe.probe` or :func:`textvae.plot.plot_run`.
    """
    from pathlib import Path

    from .data import attach_label_ids, encode_split, load_splits

    data = model_data(model, data, data_dir, encoding_errors)
    loaded = load_splits(data, (split,))
    ds = loaded[split]
    source = loaded.stats[split]["source"]
    what = f"the {split} split ({source})"
    own = attach_label_ids(loaded.encode(split, model.tokenizer, data), model.label_names, what)
    if labels_file is None:
        if need_labels and own.labels is None:
            raise DataError(f"{what} has no labels; pass --labels FILE with one label per line, or put them in "
                            f"{split}.labels.txt beside it")
        return own
    labels = read_labels(labels_file)
    if len(labels) != len(ds) and source.endswith(".txt") and Path(source).is_file():
        with open(source, encoding="utf-8-sig", errors=data.encoding_errors) as f:
            lines = list(f)
        if len(labels) == len(lines):  # one per line of the file: drop the blank lines' labels
            labels = [label for label, line in zip(labels, lines) if line.strip()]
    if len(labels) != len(ds):
        raise DataError(f"labels file {labels_file} has {len(labels)} lines but {what} has {len(ds)} "
                        f"examples; give one label per line of the split")
    if "label" in ds.column_names:
        ds = ds.remove_columns("label")
    labelled = encode_split(ds.add_column("label", labels), model.tokenizer, data)  # the same examples kept
    labelled.label_ids = own.label_ids
    return labelled


def progress_bar(batches: list, label: str | None):
    """``batches`` wrapped in a tqdm bar labelled ``label`` (on stderr, removed when done); as is for None."""
    if label is None:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc=label, unit="batch", leave=False, dynamic_ncols=True, mininterval=0.5)


def classifier_hits(model, b) -> tuple[int, int]:
    """M2 (``model.classifier``): how many labelled examples of batch ``b`` q(y|x)'s arg max gets right, and
    how many are labelled (label id >= 0); (0, 0) for a model without a classifier or a batch without labels."""
    if getattr(model, "classifier", None) is None or b.label_ids is None:
        return 0, 0
    known = b.label_ids >= 0
    pred = model.classifier(b.tokens, b.lengths).argmax(-1)
    return int((pred == b.label_ids)[known].sum()), int(known.sum())


def validate(model, split, batch_size: int = 64, samples: int = 1, seed: int = 0, progress: str | None = None) -> dict:
    """The fast pass the training loop runs at every evaluation: the negative ELBO and its terms.

    Keys: ``rec``, ``kl`` (nats per sentence), ``elbo`` = rec + kl (negative ELBO), ``ppl_elbo`` =
    exp(sum(rec + kl) / tokens), ``au`` (active units, threshold 0.01), ``tokens``, ``sentences``,
    ``kl_per_dim`` (list, sums to ``kl``). ``samples`` z ~ q(z|x) per sentence for ``rec``. A model
    with a classifier (M2) adds ``accuracy``: its q(y|x)'s arg max against the split's labels.
    Deterministic for a seed; the global RNG is not used. ``progress``: a bar with this label on
    stderr (None: silent).
    """
    from .batching import collate

    if not model.is_lm and model.latent.discrete:
        from .code_metrics import validate_codes

        return validate_codes(model, split, batch_size, samples, seed, progress)
    g = _generator(seed)
    rec_sum, kl_dim, tokens, mus = 0.0, torch.zeros(model.latent_dim, dtype=torch.float64), 0, []
    correct, labelled = 0, 0
    with eval_mode(model):
        for idx in progress_bar(_batches(split, batch_size), progress):
            b = collate(split, idx).to(model.device)
            rec, kl, mu, _ = elbo_terms(model, b.tokens, b.lengths, samples, g, y=b.label_ids)
            hits, known = classifier_hits(model, b)
            correct, labelled = correct + hits, labelled + known
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
            "sentences": n, "kl_per_dim": kl_per_dim, **({"accuracy": correct / labelled} if labelled else {})}


def prior_sample_metrics(model, n_samples: int, sample_cfg: SampleConfig | None, g: torch.Generator,
                         checks: list, bleu_tok: str | None) -> dict:
    """Diversity and length of ``n_samples`` sentences decoded from prior codes (the LM: sampled),
    and the keys of each of ``checks`` (see :func:`evaluate`). ``bleu_tok``: self-BLEU's sacrebleu
    tokeniser, the reconstruction BLEU's; None (no reconstructions: the LM, ``bleu_sentences=0``):
    :func:`bleu_tokenize` of the samples, so CJK samples are scored per character all the same."""
    samples, requested, result = [], None, {}
    if n_samples > 0:
        z = model.prior_sample(n_samples, g)  # None for the LM
        # a conditional model: sample i is decoded with label i mod K, so every label gets its share
        y = torch.arange(n_samples, device=model.device) % len(model.label_names) if model.conditional else None
        ids = generate(model, z, sample_cfg or SampleConfig(), n=n_samples, generator=g, labels=y)
        samples = [_ids_to_text(model, s) for s in ids]
        if y is not None:
            requested = [model.label_names[i] for i in y.tolist()]
        mean_len = float(np.mean([len(s) for s in ids]))
    if bleu_tok is None:
        bleu_tok = bleu_tokenize(samples, getattr(getattr(model, "tokenizer", None), "kind", None))
    for check in checks:
        result.update(check(samples, requested))
    result.update(distinct_1=distinct_n(samples, 1) if samples else None,
                  distinct_2=distinct_n(samples, 2) if samples else None,
                  self_bleu=self_bleu(samples, bleu_tok) if len(samples) >= 2 else None,
                  self_bleu_texygen=self_bleu_texygen(samples) if len(samples) >= 2 else None,
                  bleu_tokenize=bleu_tok, mean_len=mean_len if samples else None, n_samples=len(samples))
    return result


def _pass_metrics(model, split, acc: PassState, g: torch.Generator, checks, *, iw_samples: int, au_threshold: float,
                  mi_batch_size: int, n_samples: int, sample_cfg, seed: int, decomposition: bool, factors) -> dict:
    """evaluate's numbers from the sums of a finished pass (``acc``), then what needs no pass over the
    split: MI, AU, BLEU, prior samples, the KL decomposition, MIG and DCI."""
    lm, n = model.is_lm, len(split.ids)
    rec_sum, nll_sum, kl_dim, tokens = acc.rec_sum, acc.nll_sum, acc.kl_dim, acc.tokens
    mu_all, logvar_all, hyps, refs = acc.mu, acc.logvar, acc.hyps, acc.refs
    kl_per_dim = (kl_dim / n).tolist()
    kl_mean = math.fsum(kl_per_dim)
    bleu_tok = bleu_tokenize(refs, getattr(getattr(model, "tokenizer", None), "kind", None))
    have_nll = lm or iw_samples > 0
    result = {
        "nll_iw": nll_sum / n if have_nll else None,
        "ppl_iw": math.exp(nll_sum / tokens) if have_nll else None,
        "rec": rec_sum / n, "kl": kl_mean, "elbo": rec_sum / n + kl_mean,
        "ppl_elbo": math.exp((rec_sum + kl_mean * n) / tokens),
    }
    if lm:
        result.update(mi_batch=0.0, mi_full=0.0, mi_full_se=0.0, au=0, au_threshold=au_threshold, au_variances=[],
                      kl_per_dim=[], bleu_rec=None)
    else:
        au, variances = active_units(mu_all, au_threshold)
        he_batches = length_batches(split.lengths, mi_batch_size)
        mi_value, mi_se = mi_full_with_se(mu_all, logvar_all, g)
        result.update(mi_batch=mi_batch(mu_all, logvar_all, he_batches, g), mi_full=mi_value, mi_full_se=mi_se,
                      au=au, au_threshold=au_threshold, au_variances=variances.tolist(), kl_per_dim=kl_per_dim,
                      bleu_rec=bleu(hyps, refs, bleu_tok) if hyps else None)
    result.update(prior_sample_metrics(model, n_samples, sample_cfg, g, checks, bleu_tok if refs else None))
    result.update(tokens=tokens, sentences=n, iw_samples=0 if lm else iw_samples, mi_batch_size=mi_batch_size)
    if not lm and decomposition:
        from .decomposition import kl_decomposition

        result["decomposition"] = kl_decomposition(mu_all, logvar_all, model.latent,
                                                   generator=torch.Generator().manual_seed(seed + 1))
    if not lm and factors:
        from .disentanglement import dci, mig

        m, d = mig(mu_all, factors), dci(mu_all, factors, seed=seed)
        result.update(mig=m["mig"], mig_per_factor=m["per_factor"], mig_top_dims=m["top_dims"],
                      mig_mutual_info=m["mutual_info"],
                      dci_disentanglement=d["disentanglement"],
                      dci_completeness=d["completeness"], dci_informativeness=d["informativeness"])
    return result


def evaluate(model, split, *, iw_samples: int = 500, elbo_samples: int = 1, batch_size: int = 64, seed: int = 0,
             n_samples: int = 100, sample_cfg: SampleConfig | None = None, bleu_sentences: int | None = None,
             au_threshold: float = 0.01, iw_chunk: int | None = None, form: str | None = None,
             mi_batch_size: int = 32, sample_checks: list | None = None, progress: str | None = None,
             decomposition: bool = False, factors: dict | None = None, resume_file=None, log=None) -> dict:
    """Every test-set metric of the sentence-VAE papers, in one pass over ``split``.

    Likelihood: ``nll_iw`` (mean -log p(x) per sentence, k = ``iw_samples`` importance samples;
    None when 0), ``ppl_iw`` = exp(sum NLL / tokens); ``rec``, ``kl``, ``elbo`` = rec + kl (negative
    ELBO, ``elbo_samples`` z per sentence for rec), ``ppl_elbo``.
    Latent space: ``mi_batch`` (He et al. 2019: per-minibatch aggregate over their batches,
    ``mi_batch_size`` = 32 sentences of one length, see :func:`length_batches`), ``mi_full`` (Li et
    al. 2019, whole-split aggregate) and ``mi_full_se`` (its standard error), ``au`` / ``au_threshold`` /
    ``au_variances``, ``kl_per_dim``
    (sums to ``kl``). Text: ``bleu_rec`` (greedy decoding from posterior means vs the inputs as the
    tokenizer decodes their ids; the first ``bleu_sentences`` sentences of the split, all when
    None); ``distinct_1``, ``distinct_2``, ``self_bleu``, ``self_bleu_texygen``, ``mean_len``
    (tokens) of ``n_samples`` (a key too) prior samples decoded with ``sample_cfg`` (default: SampleConfig(),
    ancestral sampling). ``bleu_tokenize``: the sacrebleu tokeniser of both BLEUs (``none`` for a
    word-level tokenizer's pre-tokenised text, see :func:`bleu_tokenize`). Also ``tokens``,
    ``sentences``, ``iw_samples``, ``seconds``. docs/metrics.md gives every formula.

    ``sample_checks``: functions ``check(samples, labels) -> dict`` whose keys are added, called
    with the prior samples' texts and, for a conditional model, the label each was decoded with
    (else None). Default: the poem checks (:func:`textvae.poems.form_sample_checks`): with
    ``form`` (e.g. "5x4"), ``well_formed``, the fraction of the samples that are poems of that
    form; for a conditional model, ``label_line_length``, ``label_well_formed``, ``label_match``.
    The samples are then decoded with ``max_len`` raised, where needed, to hold the longest form
    checked and its EOS (:func:`textvae.poems.check_sample_config`; 65 for 7x8).

    A conditional model needs ``split.label_ids`` (:func:`textvae.data.attach_label_ids`): every term
    is then conditioned on the example's label (``nll_iw`` estimates -log p(x|y)) and prior sample
    i is decoded with label i mod K.

    For the LM: ``nll_iw`` is the exact NLL (``iw_samples`` reported as 0), kl / MI / AU are 0 and
    Disentanglement (a Gaussian latent): ``decomposition`` adds Chen et al.'s split of the KL over the
    whole split, {mi, tc, dimwise_kl, kl} (O(N^2 Z): subsample big splits); ``factors`` ({name: label
    per example of ``split``}, textvae.disentanglement.read_factors) adds ``mig``, ``mig_per_factor``,
    ``mig_top_dims``, ``mig_mutual_info`` (each factor's I(z_d; v) for every dimension d) and
    ``dci_disentanglement``/``dci_completeness``/``dci_informativeness`` of the posterior means.
    ``bleu_rec`` is None. Deterministic for a seed; the global RNG is not used. ``progress``: a bar
    with this label on stderr over the pass (None: silent).

    ``resume_file``: the pass's running sums are saved there about every minute and removed at the
    end; a pass started again with the same file, model, split and settings goes on from the last
    save and returns the same numbers as an uninterrupted one (textvae.eval_checkpoint; ``log``
    receives what it did). SIGINT or SIGTERM during such a pass saves it up to its last whole batch (the
    batch in progress is redone next time) and raises KeyboardInterrupt naming the file. Gaussian latents
    and the LM; discrete latents ignore it.
    """
    from .batching import collate

    from .poems import check_sample_config, form_sample_checks

    if sample_checks is None:  # the poem checks: samples with room for the longest form they look for
        sample_cfg = check_sample_config(model, sample_cfg, form)
    if not model.is_lm and model.latent.discrete:
        from .code_metrics import evaluate_codes

        if decomposition or factors:
            raise TextVAEError(f"the KL decomposition, MIG and DCI read a Gaussian posterior's coordinates; "
                               f"model.latent={model.config.latent!r} has discrete codes")
        return evaluate_codes(model, split, iw_samples=iw_samples, elbo_samples=elbo_samples, batch_size=batch_size,
                              seed=seed, n_samples=n_samples, sample_cfg=sample_cfg, bleu_sentences=bleu_sentences,
                              au_threshold=au_threshold, iw_chunk=iw_chunk, form=form, sample_checks=sample_checks,
                              progress=progress)
    start = time.perf_counter()
    # built first, so a bad form fails now, not after the pass
    checks = form_sample_checks(form) if sample_checks is None else list(sample_checks)
    g = _generator(seed)
    n = len(split.ids)
    if n == 0:
        raise ValueError("evaluate: the split is empty")
    batches = _batches(split, batch_size)
    lm = model.is_lm
    Z = model.latent_dim
    bleu_limit = n if bleu_sentences is None else bleu_sentences
    acc = PassState.fresh(n, Z)
    acc.batches = len(batches)
    saver = None
    if resume_file is not None:
        key = pass_key(model, split, iw_samples=iw_samples, elbo_samples=elbo_samples, batch_size=batch_size,
                       seed=seed, iw_chunk=iw_chunk, bleu_sentences=bleu_limit)
        saver = PassCheckpoint(resume_file, key, log=log)
        saver.restore(acc, g)
    earlier = acc.seconds  # spent in earlier sittings of this pass, up to their last save
    # a resumable pass stops on SIGINT/SIGTERM by saving its last whole batch, with a message; else as before
    stop = StopSignals("the evaluation")
    g_done = g.get_state()  # the noise generator as the last whole batch left it
    with eval_mode(model), (stop if saver is not None else contextlib.nullcontext()):
        try:
            for i, idx in enumerate(progress_bar(batches, progress)):
                if i < acc.done:
                    continue
                b = collate(split, idx).to(model.device)
                rec, kl, mu, logvar = elbo_terms(model, b.tokens, b.lengths, elbo_samples, g, y=b.label_ids)
                nll = float(rec.double().sum()) if lm else 0.0
                hyps, refs = [], []
                if not lm:
                    if iw_samples > 0:
                        ll = iw_log_likelihood(model, b.tokens, b.lengths, iw_samples, iw_chunk, g,
                                               posterior=(mu, logvar), y=b.label_ids)
                        nll = -float(ll.double().sum())
                    keep = [j for j, row in enumerate(idx) if row < bleu_limit]
                    if keep:
                        hyps = reconstructions(model, mu[keep], b.lengths[keep],
                                               None if b.label_ids is None else b.label_ids[keep])
                        refs = [_ids_to_text(model, split.ids[idx[j]]) for j in keep]
                with stop.deferred():  # the batch goes into the sums whole or not at all
                    acc.tokens += int((b.lengths - 1).sum())
                    acc.rec_sum += float(rec.double().sum())
                    acc.kl_dim += kl.double().sum(0).cpu()
                    acc.nll_sum += nll
                    if not lm:
                        acc.mu[idx], acc.logvar[idx] = mu.float().cpu(), logvar.float().cpu()
                        acc.hyps += hyps
                        acc.refs += refs
                    acc.done = i + 1
                    g_done = g.get_state()
                if saver is not None:
                    acc.seconds = earlier + time.perf_counter() - start
                    saver.maybe_save(acc, g)
            result = _pass_metrics(model, split, acc, g, checks, iw_samples=iw_samples, au_threshold=au_threshold,
                                   mi_batch_size=mi_batch_size, n_samples=n_samples, sample_cfg=sample_cfg, seed=seed,
                                   decomposition=decomposition, factors=factors)
            result["seconds"] = earlier + time.perf_counter() - start
            if saver is not None:
                saver.clear()
        except KeyboardInterrupt as e:
            if saver is None:
                raise
            stop.defer = True  # a second signal does not cut the save short
            g.set_state(g_done)  # the interrupted batch is redone from its own noise next time
            acc.seconds = earlier + time.perf_counter() - start
            saver.save(acc, g)
            raise KeyboardInterrupt(f"{e}: {acc.done} of {len(batches)} batches saved in {saver.path}; "
                                    f"run the same command again to continue from there") from None
    return result
