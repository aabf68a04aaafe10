"""Poem forms: "LxN" (N lines of L characters), form-constrained decoding and form checks.

Everything poem-specific lives here; the rest of the package reaches it through two hooks:

    FormConstraint      a decoding constraint (:class:`textvae.generate.DecodingConstraint`): the
                        allowed tokens at each step, so sampling, greedy and beam search decode
                        only poems of the form (``SampleConfig.form``, ``--form``)
    form_sample_checks  the sample checks :func:`textvae.metrics.evaluate` runs on its prior
                        samples: ``well_formed`` for a requested form, and for a conditional model
                        whose labels are forms, ``label_line_length`` / ``label_well_formed``;
                        :func:`check_sample_config` gives those samples room for the forms

A form "LxN" is L content characters, then "，" after odd lines and "。" after even lines and
after the last, e.g. 5x4 is a five-character quatrain, ``([^，。]{5}，[^，。]{5}。){2}``. Every
sequence decoded under a form is at the same position at every step, so the constraint's mask is
one (V,) row per step.
"""

import dataclasses
import re
import unicodedata

import numpy as np
import torch
import torch.nn.functional as F

from .config import SampleConfig
from .errors import ConfigError

COMMA, STOP = "\uff0c", "\u3002"  # the full-width "，" and "。" of the Tang corpora
_CONTENT = r"[^\uff0c\u3002\s<>]"  # a content character: no verse punctuation, space or <unk>'s <>


MAX_FORM_CHARS = 10_000  # L x N at most: decoding builds a (L + 1) N + 1 by V mask and takes that many steps


def parse_form(form: str) -> tuple[int, int]:
    """``"LxN"`` -> (L characters per line, N lines); a ConfigError for anything else, or for a form of
    more than :data:`MAX_FORM_CHARS` characters (a typo such as 5x40000 would otherwise build masks
    of gigabytes and decode for hours)."""
    chars, _, lines = str(form).partition("x")
    if not (chars.isdecimal() and lines.isdecimal() and int(chars) > 0 and int(lines) > 0):  # isdigit: "²" too
        raise ConfigError(f"form={form!r} is not LxN (characters per line x lines, e.g. 5x4 or 7x4)")
    if int(chars) * int(lines) > MAX_FORM_CHARS:
        raise ConfigError(f"form={form!r} asks for {int(chars) * int(lines):,} characters; a form has at most "
                          f"{MAX_FORM_CHARS:,} (e.g. 5x4, 7x8)")
    return int(chars), int(lines)


def form_tokens(form: str) -> int:
    """Tokens of a poem of ``form``, EOS excluded: (L + 1) N, a character-level tokenizer's one token per
    character and per "，" or "。" (64 for 7x8)."""
    chars, lines = parse_form(form)
    return (chars + 1) * lines


def is_form(label: str) -> bool:
    """Whether ``label`` names a poem form ("5x4"), e.g. a conditional model's label."""
    try:
        parse_form(label)
    except ConfigError:
        return False
    return True


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


# --------------------------------------------------------------------------- decoding

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


class FormConstraint:
    """Decode only poems of ``form``: a :class:`textvae.generate.DecodingConstraint` whose mask at
    step t is row t of :func:`form_masks` (the same for every sequence), and whose length,
    (L + 1) N + 1 steps with EOS, replaces ``max_len``."""

    def __init__(self, model, form: str):
        self.form = form
        self.masks = form_masks(getattr(model, "tokenizer", None), form, model.config.vocab_size).to(model.device)
        self.steps = self.masks.size(0)

    def allowed(self, step: int, prefix: torch.Tensor) -> torch.Tensor:
        """(V,) allowed tokens at ``step``; ``prefix`` (rows, step) is not needed: the form fixes
        every position."""
        return self.masks[step]


# --------------------------------------------------------------------------- checks of samples

def form_check(form: str):
    """A sample check (see :func:`form_sample_checks`) giving ``well_formed``: the fraction of the
    samples that are poems of ``form``. A bad form fails here, before any pass over data."""
    parse_form(form)

    def check(samples: list[str], labels: list[str] | None) -> dict:
        return {"well_formed": float(np.mean([well_formed(s, form) for s in samples])) if samples else None}

    return check


def label_agreement(samples: list[str], requested: list[str] | None) -> dict:
    """How often a conditional model's samples follow the label they were decoded with, for labels
    that are poem forms "LxN" (e.g. "5x4" and "7x4" for a model trained on tang5 + tang7 with the
    form as the label).

    ``line_length``: the sample is whole verses of L characters each ended by "，" or "。"
    (:func:`has_line_length`); ``well_formed``: it is exactly a poem of that form
    (:func:`well_formed`). Other labels have no check. Returns ``label_line_length`` and
    ``label_well_formed``, fractions over the samples whose label is a form (None when there are
    none), and ``label_match``: per label, those fractions and the number of samples. Without
    labels (an unconditional model), nothing.
    """
    if requested is None:
        return {}
    per: dict[str, list] = {}
    for text, label in zip(samples, requested):
        if is_form(label):
            chars, _ = parse_form(label)
            per.setdefault(label, []).append((has_line_length(text, chars), well_formed(text, label)))
    checked = [r for rows in per.values() for r in rows]
    return {
        "label_line_length": float(np.mean([a for a, _ in checked])) if checked else None,
        "label_well_formed": float(np.mean([b for _, b in checked])) if checked else None,
        "label_match": {label: {"line_length": float(np.mean([a for a, _ in rows])),
                                "well_formed": float(np.mean([b for _, b in rows])), "samples": len(rows)}
                        for label, rows in sorted(per.items())},
    }


def form_sample_checks(form: str | None = None) -> list:
    """The poem checks for :func:`textvae.metrics.evaluate`'s ``sample_checks``: each is
    ``check(samples, labels) -> dict`` of extra keys. :func:`label_agreement` always (it adds
    nothing for an unconditional model), :func:`form_check` when a ``form`` is given."""
    return [label_agreement] + ([form_check(form)] if form else [])


def checked_forms(model, form: str | None = None) -> list[str]:
    """The forms the poem checks look for in ``model``'s samples: ``form`` (``evaluate --form``) and a
    conditional model's labels that are forms."""
    labels = model.label_names if getattr(model, "conditional", False) else []
    return ([form] if form else []) + [label for label in labels if is_form(label)]


def check_max_len(forms: list[str], at_least: int) -> int:
    """Decoding steps (EOS included, as ``SampleConfig.max_len`` counts them) for free samples that
    the checks of ``forms`` read: at least ``at_least``, and at least the longest form's tokens + 1.

    With that one step more than the form, a poem of the form ends with EOS inside the limit, and a
    sample that goes on past the form is cut longer than the form, so it is never well formed.
    The limit is also no multiple of any form's verse (L + 1 tokens): a cut sample is never whole
    verses either, which ``label_line_length`` would count (one character per token, as forms need).
    """
    verses = [parse_form(f)[0] + 1 for f in forms]
    steps = max([at_least] + [form_tokens(f) + 1 for f in forms])
    while any(steps % v == 0 for v in verses):
        steps += 1
    return steps


def check_sample_config(model, sample_cfg: SampleConfig | None, form: str | None = None) -> SampleConfig | None:
    """The decoding settings of the prior samples the poem checks read (:func:`form_sample_checks`):
    ``sample_cfg`` (None: ``SampleConfig()``) with ``max_len`` raised to :func:`check_max_len` of
    :func:`checked_forms`, so a 7x8 poem (64 tokens + EOS) is not cut at the default 50 and scored
    as not well formed. ``sample_cfg`` itself, None included, when there is no form to check."""
    forms = checked_forms(model, form)
    if not forms:
        return sample_cfg
    cfg = sample_cfg or SampleConfig()
    steps = check_max_len(forms, cfg.max_len)
    return cfg if steps == cfg.max_len else dataclasses.replace(cfg, max_len=steps)
