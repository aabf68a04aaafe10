"""Decoding latent codes into token ids: greedy, temperature / nucleus sampling, beam search.

Every decoder here runs N sequences (and, for beam search, N x K hypotheses) as one batch and
stops when all have emitted EOS or after ``SampleConfig.max_len`` tokens. A sequence is returned
as its word ids, without BOS and EOS.

Randomness comes only from the ``torch.Generator`` passed in (CPU; noise is drawn on the CPU and
moved to the model's device), never from the global RNG, so decoding in the middle of training
does not change what the training loop draws next.

PAD and BOS are never generated, nor EOS as the first token: their logits are set to -inf before
the softmax, so every distribution (and every beam score) is over the remaining tokens,
renormalised. Sentences thus have at least one token, like every training example (empty ones are
dropped when a corpus is encoded); without this, a weakly trained model often returns empty
samples and unnormalised beam search empty reconstructions. ``sequence_log_prob`` scores a
sequence under exactly this distribution.

Poem forms (``SampleConfig.form = "LxN"``, e.g. "5x4" for a five-character quatrain): every step
of every decoder also has an allowed-token mask (:func:`form_masks`): L content characters, then
"，" after odd lines and "。" after even lines (and after the last), then EOS. All sequences are
then at the same position at every step, so the mask is one (V,) row per step, and the
distribution (and beam score) at each step is renormalised over the allowed tokens.
:func:`well_formed` checks a decoded text against the form, e.g. for free samples.
"""

import contextlib
import re
import unicodedata

import torch
import torch.nn.functional as F

from .config import SampleConfig
from .errors import ConfigError

PAD_ID = 0


@contextlib.contextmanager
def eval_mode(model):
    """``model.eval()`` and ``torch.no_grad()`` for the block; the training flag is restored after."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was)


def homotopy(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """Linear interpolation from ``a`` to ``b`` (each (Z,)): ``steps + 2`` points, endpoints included.

    Bowman et al. (2016), sec. 5: z(t) = (1 - t) a + t b for t evenly spaced in [0, 1].
    """
    if steps < 0:
        raise ValueError(f"steps={steps} must be >= 0")
    t = torch.linspace(0.0, 1.0, steps + 2, device=a.device, dtype=a.dtype).unsqueeze(1)  # (S, 1)
    return (1.0 - t) * a.unsqueeze(0) + t * b.unsqueeze(0)  # (S, Z); exact at t = 0 and t = 1


def _check_latent(model, z: torch.Tensor | None, n: int | None) -> tuple[torch.Tensor | None, int]:
    if model.is_lm:
        if z is not None and z.numel() > 0:
            raise ValueError("this model is a language model (latent_dim=0): pass z=None and n")
        if n is None:
            n = z.size(0) if z is not None else None
        if n is None:
            raise ValueError("a language model needs n, the number of sequences to generate")
        return None, n
    if z is None:
        raise ValueError(f"pass z of shape (N, {model.latent_dim}), e.g. z ~ N(0, I) drawn with a generator")
    if z.dim() != 2 or z.size(1) != model.latent_dim:
        raise ValueError(f"z has shape {tuple(z.shape)}; expected (N, {model.latent_dim})")
    if n is not None and n != z.size(0):
        raise ValueError(f"n={n} does not match z's {z.size(0)} rows")
    return z.to(model.device), z.size(0)


def _masked_logits(model, logits: torch.Tensor, first: bool) -> torch.Tensor:
    """PAD and BOS are never generated; EOS not as the first token (sentences are never empty)."""
    logits = logits.float()
    logits[:, PAD_ID] = float("-inf")
    logits[:, model.bos_id] = float("-inf")
    if first:
        logits[:, model.eos_id] = float("-inf")
    return logits


# --------------------------------------------------------------------------- poem forms

COMMA, STOP = "\uff0c", "\u3002"  # the full-width "，" and "。" of the Tang corpora
_CONTENT = r"[^\uff0c\u3002\s<>]"  # a content character: no verse punctuation, space or <unk>'s <>


def parse_form(form: str) -> tuple[int, int]:
    """``"LxN"`` -> (L characters per line, N lines); a ConfigError for anything else."""
    chars, _, lines = str(form).partition("x")
    if not (chars.isdigit() and lines.isdigit() and int(chars) > 0 and int(lines) > 0):
        raise ConfigError(f"form={form!r} is not LxN (characters per line x lines, e.g. 5x4 or 7x4)")
    return int(chars), int(lines)


def line_ends(form: str) -> str:
    """The punctuation after each line: "，" after odd lines, "。" after even lines and the last."""
    _, n = parse_form(form)
    return "".join(STOP if i % 2 == 1 or i == n - 1 else COMMA for i in range(n))


def form_regex(form: str) -> re.Pattern:
    """The text of a well-formed poem; for 5x4 ``([^，。]{5}，[^，。]{5}。){2}`` (content characters
    also exclude whitespace and ``<>``, so an ``<unk>`` is never a character)."""
    chars, _ = parse_form(form)
    return re.compile("".join(f"{_CONTENT}{{{chars}}}{end}" for end in line_ends(form)))


def well_formed(text: str, form: str) -> bool:
    """Whether ``text`` is exactly a poem of ``form`` (see :func:`form_regex`)."""
    return form_regex(form).fullmatch(text) is not None


def has_line_length(text: str, chars: int) -> bool:
    """Whether ``text`` is whole verses of ``chars`` characters, each ended by "，" or "。" (any number
    of verses, any punctuation order): the line-length check of a conditional model's form labels."""
    return re.fullmatch(f"({_CONTENT}{{{chars}}}[{COMMA}{STOP}])+", text) is not None


def _is_content(piece: str) -> bool:
    """A single character that is not punctuation, a separator, a control character or "▁"."""
    return (len(piece) == 1 and piece not in (COMMA, STOP, "\u2581")
            and unicodedata.category(piece)[0] not in "PZC")


def form_masks(tokenizer, form: str, vocab_size: int | None = None) -> torch.Tensor:
    """Allowed tokens at each decoding step of a poem of ``form``: a (L+1) N + 1 by V bool tensor.

    Content positions allow every single-character token that is not punctuation, a special
    piece or <unk>; line ends allow only their "，" or "。"; the last step only EOS. The tokenizer
    must be character-level (every piece one character, decoded without separators) and know "，"
    and "。"; otherwise a ConfigError says what to train instead.
    """
    chars, _ = parse_form(form)
    if tokenizer is None:
        raise ConfigError("form-aware decoding needs the model's tokenizer; this model has none")
    V = vocab_size or tokenizer.vocab_size
    specials = (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id)
    pieces = {i: tokenizer.id_to_token(i) for i in range(V) if i not in specials}
    longer = [p for p in pieces.values() if len(p) != 1]
    how = ("train the model with a character-level tokenizer: tokenizer.kind=sentencepiece "
           "tokenizer.model_type=char (as the tang5 and tang7 presets do)")
    if longer:
        raise ConfigError(f"form {form!r}: the model's tokenizer is not character-level ({len(longer)} of its "
                          f"{len(pieces)} pieces are longer than one character, e.g. {longer[:3]}); {how}")
    ids = {p: i for i, p in pieces.items()}
    missing = [p for p in (COMMA, STOP) if p not in ids]
    if missing:
        raise ConfigError(f"form {form!r}: the model's tokenizer has no token for {' or '.join(missing)} "
                          f"(full-width verse punctuation); train it on text that uses them, e.g. the Tang corpora")
    if tokenizer.decode([ids[COMMA], ids[STOP]]) != COMMA + STOP:
        raise ConfigError(f"form {form!r}: the model's tokenizer puts separators between tokens when it decodes "
                          f"(a word-level vocabulary of single characters?); {how}")
    content = torch.zeros(V, dtype=torch.bool)
    content[[i for i, p in pieces.items() if _is_content(p)]] = True
    if not content.any():
        raise ConfigError(f"form {form!r}: the model's tokenizer has no content characters")
    rows = []
    for end in line_ends(form):
        rows += [content] * chars
        rows.append(F.one_hot(torch.tensor(ids[end]), V).bool())
    rows.append(F.one_hot(torch.tensor(tokenizer.eos_id), V).bool())
    return torch.stack(rows)  # (steps, V)


def _form_masks(model, form: str | None) -> torch.Tensor | None:
    if form is None:
        return None
    return form_masks(getattr(model, "tokenizer", None), form, model.config.vocab_size).to(model.device)


def _nucleus_sample(logits: torch.Tensor, temperature: float, top_p: float,
                    generator: torch.Generator) -> torch.Tensor:
    """One token per row from softmax(logits / T) restricted to the top-p nucleus (Holtzman et al. 2020).

    The nucleus is the smallest set of most probable tokens whose mass reaches ``top_p`` (the most
    probable token is always in it). Sampling is by inverse CDF with one uniform per row drawn
    from ``generator`` on the CPU, so the same generator gives the same tokens on any device.
    """
    probs = F.softmax(logits / temperature, dim=-1)  # (N, V)
    order = None
    if top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        before = probs.cumsum(-1) - probs  # mass of the strictly more probable tokens
        probs = probs * (before < top_p)
    u = torch.rand(probs.size(0), 1, generator=generator).to(probs.device)  # (N, 1)
    cdf = probs.cumsum(-1)
    # right=True: the first index whose cdf exceeds u * total, so zero-mass tokens are never chosen
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_max(probs.size(1) - 1)  # (N, 1)
    if order is not None:
        idx = order.gather(1, idx)
    return idx.squeeze(1)


def _trim(rows: list[list[int]], eos: int) -> list[list[int]]:
    out = []
    for r in rows:
        out.append(r[:r.index(eos)] if eos in r else r)
    return out


def generate(model, z: torch.Tensor | None, sample_cfg: SampleConfig | None = None, n: int | None = None,
             generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> list[list[int]]:
    """Decode N sequences from latent codes ``z`` (N, Z) (the LM: ``z=None`` and ``n``).

    ``sample_cfg.beam > 1``: beam search (see :func:`beam_search`; deterministic, takes precedence);
    ``greedy``: argmax at every step; otherwise ancestral sampling with ``temperature`` and
    ``top_p``. Returns token ids without BOS/EOS, at most ``max_len`` per sequence. ``generator``
    (CPU) supplies the sampling noise; without one, a generator seeded with 0 is used.
    With ``sample_cfg.form`` every sequence is a poem of that form (see :func:`form_masks`), whose
    length replaces ``max_len``. A conditional model needs ``labels`` (N,), the label ids to decode with.
    """
    cfg = sample_cfg or SampleConfig()
    z, n = _check_latent(model, z, n)
    if cfg.beam > 1:
        return beam_search(model, z, cfg.beam, cfg.max_len, n=n, form=cfg.form, labels=labels)[0]
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    allowed = _form_masks(model, cfg.form)  # (steps, V) or None
    with eval_mode(model):
        device = model.device
        z = model.decoder_code(z, labels)  # (N, Z [+ label_dim]); z itself unless conditional
        state = model.init_state(z, n)
        prev = torch.full((n,), model.bos_id, dtype=torch.long, device=device)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        out = []
        for t in range(cfg.max_len if allowed is None else allowed.size(0)):
            logits, state = model.step(prev, state, z)  # (N, V)
            logits = _masked_logits(model, logits, t == 0)
            if allowed is not None:
                logits = logits.masked_fill(~allowed[t], float("-inf"))
            if cfg.greedy:
                tok = logits.argmax(-1)
            else:
                tok = _nucleus_sample(logits, cfg.temperature, cfg.top_p, generator)
            tok = tok.masked_fill(done, PAD_ID)
            out.append(tok)
            prev = tok
            done = done | (tok == model.eos_id)
            if bool(done.all()):
                break
        if not out:
            return [[] for _ in range(n)]
        rows = torch.stack(out, 1).cpu().tolist()  # (N, steps)
    return [[t for t in r if t != PAD_ID] for r in _trim(rows, model.eos_id)]


def _reorder(state, index: torch.Tensor):
    """Select batch rows ``index`` of an RNN state ((L, N, H) tensor or an LSTM (h, c) pair)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)


def beam_search(model, z: torch.Tensor | None, beam: int, max_len: int, n: int | None = None,
                length_penalty: float = 0.0, form: str | None = None,
                labels: torch.Tensor | None = None) -> tuple[list[list[int]], torch.Tensor]:
    """Beam search for the most probable sequence given z, batched over N sentences x K beams.

    Hypotheses are ranked by their log-probability sum_t log p(y_t | y_<t, z), EOS included once
    emitted. With ``length_penalty`` alpha > 0 the final choice among the K surviving hypotheses
    uses score / len^alpha (len = words + EOS) instead; during the search hypotheses always
    compete on raw log-probability. ``generate`` uses alpha = 0 (no length normalisation): the
    search then maximises exactly the model's probability, the quantity greedy decoding
    approximates, and it stops as soon as, for every sentence, the best finished hypothesis beats
    every unfinished one (their scores can only fall). Unnormalised search prefers short
    sentences, which is what the model's probability says.

    Finished hypotheses stay in the beam with their score frozen. A hypothesis that reaches
    ``max_len`` words without EOS is returned truncated and scored without EOS.
    With ``form`` the search is over poems of that form only (:func:`form_masks`; its length
    replaces ``max_len``), each step's log-probabilities renormalised over the allowed tokens.
    A conditional model needs ``labels`` (N,).
    Returns (ids per sentence, (N,) log-probability of each returned sequence).
    """
    if beam < 1:
        raise ValueError(f"beam={beam} must be >= 1")
    z, n = _check_latent(model, z, n)
    K = beam
    allowed = _form_masks(model, form)  # (steps, V) or None
    if allowed is not None:
        max_len = allowed.size(0)
    with eval_mode(model):
        device = model.device
        z = model.decoder_code(z, labels)
        zz = z.repeat_interleave(K, 0) if z is not None else None  # (N*K, Z), beams of a sentence adjacent
        state = model.init_state(zz, n * K)
        prev = torch.full((n * K,), model.bos_id, dtype=torch.long, device=device)
        scores = torch.full((n, K), float("-inf"), device=device)
        scores[:, 0] = 0.0  # all beams start identical: expand only the first
        finished = torch.zeros(n, K, dtype=torch.bool, device=device)
        hist = torch.zeros(n, K, 0, dtype=torch.long, device=device)
        offset = (torch.arange(n, device=device) * K).unsqueeze(1)  # (N, 1)
        V = None
        for t in range(max_len):
            logits, state = model.step(prev, state, zz)
            logits = _masked_logits(model, logits, t == 0)
            if allowed is not None:
                logits = logits.masked_fill(~allowed[t], float("-inf"))
            logp = F.log_softmax(logits, dim=-1)  # (N*K, V)
            V = logp.size(1)
            logp = logp.view(n, K, V)
            # a finished hypothesis has one continuation, PAD, costing nothing
            stay = torch.full((V,), float("-inf"), device=device)
            stay[PAD_ID] = 0.0
            logp = torch.where(finished.unsqueeze(-1), stay, logp)
            top, idx = (scores.unsqueeze(-1) + logp).view(n, K * V).topk(K, dim=-1)  # (N, K)
            origin, tok = idx // V, idx % V
            scores = top
            finished = finished.gather(1, origin) | (tok == model.eos_id)
            hist = torch.cat([hist.gather(1, origin.unsqueeze(-1).expand(-1, -1, t)), tok.unsqueeze(-1)], -1)
            flat = (origin + offset).view(-1)
            state = _reorder(state, flat)
            prev = tok.view(-1)
            if bool(finished.all()):
                break
            if length_penalty == 0.0 and bool(finished.any()):
                best_done = scores.masked_fill(~finished, float("-inf")).max(1).values
                best_open = scores.masked_fill(finished, float("-inf")).max(1).values
                if bool((best_done >= best_open).all()):
                    break
        rows = hist.cpu().tolist()  # (N, K, steps)
        rank = scores
        if length_penalty != 0.0:
            length = (hist != PAD_ID).sum(-1).clamp_min(1).float()  # words + EOS if emitted
            rank = scores / length.pow(length_penalty)
        best = rank.argmax(1).tolist()  # (N,)
        best_scores = scores.gather(1, torch.tensor(best, device=device).unsqueeze(1)).squeeze(1).cpu()
    seqs = [[t for t in rows[i][b] if t != PAD_ID] for i, b in enumerate(best)]
    seqs = _trim(seqs, model.eos_id)
    return seqs, best_scores


def sequence_log_prob(model, z: torch.Tensor | None, seqs: list[list[int]], max_len: int | None = None,
                      n: int | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
    """log p(y | z) of given sequences under the decoding distribution (PAD, BOS and a first EOS
    excluded; an empty sequence has log-probability -inf).

    EOS is scored after each sequence, except for sequences of ``max_len`` words (truncated by
    the decoder, so they never emitted EOS). Batched over sequences, one step per position.
    Returns (N,) float tensor on the CPU.
    """
    z, n = _check_latent(model, z, len(seqs) if n is None else n)
    L = max((len(s) for s in seqs), default=0) + 1
    target = torch.full((n, L), PAD_ID, dtype=torch.long)
    counted = torch.zeros(n, L, dtype=torch.bool)
    for i, s in enumerate(seqs):
        target[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        counted[i, :len(s)] = True
        if max_len is None or len(s) < max_len:
            target[i, len(s)] = model.eos_id
            counted[i, len(s)] = True
    with eval_mode(model):
        device = model.device
        target, counted = target.to(device), counted.to(device)
        z = model.decoder_code(z, labels)
        state = model.init_state(z, n)
        prev = torch.full((n,), model.bos_id, dtype=torch.long, device=device)
        total = torch.zeros(n, device=device)
        for t in range(L):
            logits, state = model.step(prev, state, z)
            logp = F.log_softmax(_masked_logits(model, logits, t == 0), dim=-1)
            total += torch.where(counted[:, t], logp.gather(1, target[:, t:t + 1]).squeeze(1), 0.0)
            prev = target[:, t]
    return total.cpu()
