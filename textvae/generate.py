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
samples and unnormalised beam search empty reconstructions.

Constraints: every decoder also takes a :class:`DecodingConstraint`, an object that gives the
allowed tokens at each step given what has been decoded so far; the distribution (and beam score)
at each step is then renormalised over them. Poem forms (``SampleConfig.form``,
:class:`textvae.poems.FormConstraint`) are one; nothing here knows about them.
"""

import contextlib
from typing import Protocol

import torch
import torch.nn.functional as F

from .config import SampleConfig

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
    # the model's own dtype too: codes made with numpy (float64) would otherwise fail in its first layer
    return z.to(model.device, next(model.parameters()).dtype), z.size(0)


def _masked_logits(model, logits: torch.Tensor, first: bool) -> torch.Tensor:
    """PAD and BOS are never generated; EOS not as the first token (sentences are never empty)."""
    logits = logits.float()
    logits[:, PAD_ID] = float("-inf")
    logits[:, model.bos_id] = float("-inf")
    if first:
        logits[:, model.eos_id] = float("-inf")
    return logits


# --------------------------------------------------------------------------- constraints

class DecodingConstraint(Protocol):
    """Which tokens may come next: the hook every decoder here calls at every step.

    ``steps``: a fixed number of decoding steps (EOS included) that replaces ``max_len``, or None.
    ``allowed(step, prefix)``: a bool mask of the allowed tokens, (V,) for all rows or (rows, V),
    given ``prefix`` (rows, step), the tokens decoded so far (PAD after a row's EOS). Each step's
    distribution (and beam score) is renormalised over the allowed tokens.
    :class:`textvae.poems.FormConstraint` (poem forms) is one.
    """

    steps: int | None

    def allowed(self, step: int, prefix: torch.Tensor) -> torch.Tensor: ...


def constraint_for(model, sample_cfg: SampleConfig) -> DecodingConstraint | None:
    """The constraint a SampleConfig asks for: its ``form`` (a poem form, see textvae.poems), or None."""
    if sample_cfg.form is None:
        return None
    from .poems import FormConstraint

    return FormConstraint(model, sample_cfg.form)


def _constrain(logits: torch.Tensor, constraint, step: int, prefix: torch.Tensor) -> torch.Tensor:
    if constraint is None:
        return logits
    return logits.masked_fill(~constraint.allowed(step, prefix), float("-inf"))


def _steps(constraint, max_len: int) -> int:
    return max_len if constraint is None or constraint.steps is None else constraint.steps


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
             generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
             constraint: DecodingConstraint | None = None) -> list[list[int]]:
    """Decode N sequences from latent codes ``z`` (N, Z) (the LM: ``z=None`` and ``n``).

    ``sample_cfg.beam > 1``: beam search (see :func:`beam_search`; deterministic, takes precedence);
    ``greedy``: argmax at every step; otherwise ancestral sampling with ``temperature`` and
    ``top_p``. Returns token ids without BOS/EOS, at most ``max_len`` per sequence. ``generator``
    (CPU) supplies the sampling noise; without one, a generator seeded with 0 is used.
    Every step obeys ``constraint`` (default: the one ``sample_cfg`` asks for, see
    :func:`constraint_for`, e.g. a poem form). A conditional model needs ``labels`` (N,), the label
    ids to decode with.
    """
    cfg = sample_cfg or SampleConfig()
    z, n = _check_latent(model, z, n)
    constraint = constraint or constraint_for(model, cfg)
    if cfg.beam > 1:
        return beam_search(model, z, cfg.beam, cfg.max_len, n=n, labels=labels, constraint=constraint)[0]
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    with eval_mode(model):
        device = model.device
        z = model.decoder_code(z, labels)  # (N, Z [+ label_dim]); z itself unless conditional
        state = model.init_state(z, n)
        prev = torch.full((n,), model.bos_id, dtype=torch.long, device=device)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        out = []
        for t in range(_steps(constraint, cfg.max_len)):
            logits, state = model.step(prev, state, z)  # (N, V)
            logits = _masked_logits(model, logits, t == 0)
            if constraint is not None:
                prefix = torch.stack(out, 1) if out else prev.new_zeros(n, 0)  # (N, t)
                logits = _constrain(logits, constraint, t, prefix)
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
                length_penalty: float = 0.0, labels: torch.Tensor | None = None,
                constraint: DecodingConstraint | None = None) -> tuple[list[list[int]], torch.Tensor]:
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
    With a ``constraint`` the search is over the sequences it allows (its ``steps``, when set,
    replace ``max_len``), each step's log-probabilities renormalised over the allowed tokens.
    A conditional model needs ``labels`` (N,).
    Returns (ids per sentence, (N,) log-probability of each returned sequence).
    """
    if beam < 1:
        raise ValueError(f"beam={beam} must be >= 1")
    z, n = _check_latent(model, z, n)
    K = beam
    max_len = _steps(constraint, max_len)
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
            logits = _constrain(logits, constraint, t, hist.reshape(n * K, t))  # prefix (N*K, t)
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
