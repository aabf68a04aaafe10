"""Text statistics of decoded or sampled sentences: corpus BLEU against references, the
diversity of a set of samples (distinct-n, self-BLEU in sacrebleu's and Texygen's conventions).

    bleu, self_bleu     corpus / per-sentence BLEU with sacrebleu (Papineni et al. 2002;
                        Zhu et al. 2018 for self-BLEU); ``none`` tokenisation for pre-tokenised
                        text (bleu_tokenize); self_bleu_texygen in Texygen's convention
    distinct_n          Li et al. (2016): distinct n-grams / n-grams (or / tokens)

Units: sacrebleu's tokenisers for the BLEUs; whitespace tokens, or characters for CJK text, for
distinct-n and Texygen self-BLEU. docs/metrics.md states every convention.
"""

import math
import re

import numpy as np

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")

# sacrebleu tokenisation of text a tokenizer kind decodes to: a word-level tokenizer's text is
# already tokenised (PTB: "<unk>", "u.s.", "n't" are single tokens), so it is scored as given, as
# multi-bleu.perl does; 13a would split "<unk>" into "< unk >" and invent n-gram matches.
BLEU_TOKENIZE = {"word": "none"}


def bleu_tokenize(texts: list[str], tokenizer_kind: str | None = None) -> str:
    """The sacrebleu tokeniser for ``texts``: ``none`` (split on whitespace only) for the output of
    a word-level tokenizer (``tokenizer_kind="word"``: pre-tokenised text); otherwise ``zh`` (one
    token per CJK character) when they contain CJK ideographs, else the standard ``13a``."""
    if tokenizer_kind in BLEU_TOKENIZE:
        return BLEU_TOKENIZE[tokenizer_kind]
    return "zh" if any(_CJK.search(t) for t in texts) else "13a"


def bleu(hyps: list[str], refs: list[str], tokenize: str | None = None) -> float:
    """Corpus BLEU (Papineni et al. 2002; sacrebleu, 4-grams, one reference per hypothesis), 0..100,
    with sacrebleu's default exp smoothing (it acts only when an n-gram order has no match at all).

    ``tokenize``: a sacrebleu tokeniser; ``none`` for pre-tokenised text (multi-bleu.perl's
    convention). Default: :func:`bleu_tokenize` of the references (``zh`` or ``13a``)."""
    import sacrebleu

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if not hyps:
        return 0.0
    tok = tokenize or bleu_tokenize(list(refs))
    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)], tokenize=tok, force=True).score)


def _units(sentence: str) -> list[str]:
    """What distinct-n and Texygen self-BLEU count: whitespace tokens, or characters for CJK text
    (written without spaces)."""
    return [c for c in sentence if not c.isspace()] if _CJK.search(sentence) else sentence.split()


def _ngrams(units: list[str], n: int) -> list[tuple]:
    return [tuple(units[i:i + n]) for i in range(len(units) - n + 1)]


def distinct_n(sentences: list[str], n: int, per: str = "ngrams") -> float:
    """Distinct n-grams over all sentences (Li et al. 2016), divided by the total number of
    n-grams (``per="ngrams"``, in 0..1, the common reading) or of tokens (``per="tokens"``, Li et
    al.'s own definition: "scaled by total number of generated tokens"). The two agree for n = 1;
    for n > 1 the token count is larger by n - 1 per sentence of at least n tokens (by its length for
    a shorter one). n-grams of whitespace tokens, or of characters for CJK text."""
    units = [_units(s) for s in sentences]
    grams = [g for u in units for g in _ngrams(u, n)]
    total = {"ngrams": len(grams), "tokens": sum(map(len, units))}
    if per not in total:
        raise ValueError(f"per={per!r}: expected one of {sorted(total)}")
    return len(set(grams)) / total[per] if total[per] else 0.0


class _LeaveOneOut:
    """For self-BLEU: over a set of sentences (each a list of tokens), the largest count of every
    n-gram (n = 1..max_n) and the reference length closest to a length, each among all sentences but
    one. Built once in O(total n-grams), so self-BLEU of n samples costs O(n L), not O(n^2 L)."""

    def __init__(self, units: list[list[str]], max_n: int):
        from collections import Counter

        self.counts = [Counter(g for n in range(1, max_n + 1) for g in _ngrams(u, n)) for u in units]
        self.top: dict[tuple, list[int]] = {}  # n-gram -> [largest count, sentences with it, next largest]
        for counts in self.counts:
            for g, c in counts.items():
                top = self.top.setdefault(g, [0, 0, 0])
                if c > top[0]:
                    top[:] = [c, 1, top[0]]
                elif c == top[0]:
                    top[1] += 1
                elif c > top[2]:
                    top[2] = c
        self.lengths = [len(u) for u in units]
        self.length_count = Counter(self.lengths)

    def max_count(self, i: int, gram: tuple) -> int:
        """The largest count of ``gram`` in a sentence other than sentence i (0 if none has it)."""
        best, holders, second = self.top.get(gram, (0, 0, 0))
        return second if self.counts[i].get(gram, 0) == best and holders == 1 else best

    def closest_length(self, i: int, length: int) -> int:
        """The length of another sentence closest to ``length`` (the shorter on a tie)."""
        others = (x for x, c in self.length_count.items() if c - (x == self.lengths[i]) > 0)
        return min(others, key=lambda x: (abs(x - length), x))

    def clipped(self, i: int, n: int) -> tuple[int, int]:
        """Matched (clipped by :meth:`max_count`) and total n-grams of sentence i."""
        grams = [(g, c) for g, c in self.counts[i].items() if len(g) == n]
        return sum(min(c, self.max_count(i, g)) for g, c in grams), sum(c for _, c in grams)


def self_bleu(sentences: list[str], tokenize: str | None = None) -> float:
    """Self-BLEU (Zhu et al. 2018): each sentence scored by sentence-level BLEU against all the
    others as references, then averaged; 100: identical samples, lower is more diverse.

    sacrebleu's sentence BLEU (``BLEU(effective_order=True).sentence_score(s, others)``: 4-grams,
    exp smoothing, effective order, ``tokenize`` as in :func:`bleu`, default :func:`bleu_tokenize`),
    its statistics computed once for all sentences (leave-one-out maxima) and scored with
    sacrebleu's ``compute_bleu``. Texygen's convention (3-grams, nltk's smoothing method 1) is
    :func:`self_bleu_texygen`."""
    from sacrebleu.metrics import BLEU

    if len(sentences) < 2:
        raise ValueError(f"self-BLEU needs at least 2 sentences, got {len(sentences)}")
    metric = BLEU(effective_order=True, tokenize=tokenize or bleu_tokenize(sentences), force=True)
    units = [metric._preprocess_segment(s).split() for s in sentences]
    refs = _LeaveOneOut(units, metric.max_ngram_order)
    scores = []
    for i, u in enumerate(units):
        stats = [refs.clipped(i, n) for n in range(1, metric.max_ngram_order + 1)]
        scores.append(BLEU.compute_bleu([m for m, _ in stats], [t for _, t in stats], len(u),
                                        refs.closest_length(i, len(u)), smooth_method=metric.smooth_method,
                                        smooth_value=metric.smooth_value, effective_order=True,
                                        max_ngram_order=metric.max_ngram_order).score)
    return float(np.mean(scores))


def _sentence_bleu_method1(i: int, length: int, refs: _LeaveOneOut, max_n: int, epsilon: float = 0.1) -> float:
    """nltk's ``sentence_bleu`` of sentence i against the others with uniform weights 1/max_n and
    ``SmoothingFunction().method1``: clipped n-gram precisions p_n (a zero count becomes epsilon /
    the n-gram count), brevity penalty against the reference length closest to the hypothesis (the
    shorter on a tie); 0 when no unigram matches. 0..1."""
    if not length:
        return 0.0
    log_p = 0.0
    for n in range(1, max_n + 1):
        matched, total = refs.clipped(i, n)
        if n == 1 and matched == 0:
            return 0.0
        log_p += math.log((matched if matched else epsilon) / max(1, total)) / max_n
    r = refs.closest_length(i, length)
    brevity = 1.0 if length > r else math.exp(1 - r / length)
    return brevity * math.exp(log_p)


def self_bleu_texygen(sentences: list[str], max_n: int = 3) -> float:
    """Self-BLEU in Texygen's convention (Zhu et al. 2018, geek-ai/Texygen ``SelfBleu``): nltk
    sentence BLEU of each sentence against all the others, 3-grams by default with weights 1/3,
    smoothing method 1, averaged; reported 0..100 like :func:`self_bleu`. Tokens are whitespace
    tokens (characters for CJK text) where Texygen runs ``nltk.word_tokenize``."""
    if len(sentences) < 2:
        raise ValueError(f"self-BLEU needs at least 2 sentences, got {len(sentences)}")
    units = [_units(s) for s in sentences]
    refs = _LeaveOneOut(units, max_n)
    return 100.0 * float(np.mean([_sentence_bleu_method1(i, len(u), refs, max_n) for i, u in enumerate(units)]))
