"""BLEU, distinct-n and self-BLEU: values worked out by hand, and equality with the definitions
(sacrebleu's sentence BLEU, nltk's smoothing method 1) computed the slow way."""
import math

import numpy as np
import pytest

from helpers import SHARED_DATA
from textvae.text_metrics import bleu, bleu_tokenize, distinct_n, self_bleu, self_bleu_texygen


def test_bleu_of_ptb_sentences_against_a_shuffle_is_near_zero_when_scored_as_tokenised():
    """Unrelated PTB test sentences: under 13a, "<unk>" becomes "< unk >" and "u.s." "u . s .",
    inventing n-gram matches (~2.9 BLEU); scored as tokenised (multi-bleu.perl) they share ~0.2."""
    import random

    path = SHARED_DATA / "ptb" / "test.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found (set TEXTVAE_SHARED to the folder holding data/)")
    with open(path, encoding="utf-8") as f:
        refs = [line.strip() for line in f if line.strip()]
    hyps = refs[:]
    random.Random(0).shuffle(hyps)
    assert bleu(hyps, refs, bleu_tokenize(refs, "word")) < 1.0
    assert bleu(hyps, refs, "13a") > 2.0  # the convention that was wrong for this text


def test_bleu_tokenize_follows_the_tokenizer_kind_and_script():
    assert bleu_tokenize(["the <unk> u.s."], "word") == "none"
    assert bleu_tokenize(["the <unk> u.s."], "sentencepiece") == "13a"
    assert bleu_tokenize(["白日依山盡"], "sentencepiece") == "zh"
    assert bleu(["< unk > a"], ["<unk> b"], "none") == 0.0  # no invented unigram "unk"


def test_self_bleu_texygen_known_values():
    # by hand: "the cat sat" matches fully (p = 1, 1, 1; closest ref length 2, so no brevity
    # penalty); "the cat sat on the mat": p1 = 3/6, p2 = 2/5, p3 = 1/4 (closest ref length 3);
    # "a dog" matches no unigram: 0. nltk gives the same 45.6134.
    sents = ["the cat sat", "the cat sat on the mat", "a dog"]
    assert self_bleu_texygen(sents) == pytest.approx(100 * (1 + (0.5 * 0.4 * 0.25) ** (1 / 3)) / 3)
    assert self_bleu_texygen(["a b c d", "e f g h"]) == 0.0
    # p1 = 3/4, p2 = 1/3, and method 1 smoothing: no trigram matches, so p3 = 0.1 / 2 trigrams
    assert self_bleu_texygen(["a b x d", "a b y d"]) == pytest.approx(100 * (0.75 * (1 / 3) * 0.05) ** (1 / 3))
    assert self_bleu_texygen(["the cat sat on the mat"] * 3) == pytest.approx(100.0)


def _random_sentences(n, seed):
    rng = np.random.default_rng(seed)  # a small vocabulary: repeated n-grams, tied counts and lengths
    return [" ".join(rng.choice(list("abcde"), rng.integers(1, 9))) for _ in range(n)]


def test_self_bleu_equals_sacrebleu_sentence_bleu_against_all_the_others():
    from sacrebleu.metrics import BLEU

    for seed in range(3):
        sents = _random_sentences(25, seed) + ["a b c d", "a b c d"]
        metric = BLEU(effective_order=True, tokenize="none")
        slow = np.mean([metric.sentence_score(h, sents[:i] + sents[i + 1:]).score for i, h in enumerate(sents)])
        assert self_bleu(sents, "none") == pytest.approx(slow, abs=1e-9)


def test_self_bleu_texygen_equals_the_definition_against_all_the_others():
    from collections import Counter

    def nltk_method1(hyp, refs, max_n=3):  # nltk's sentence_bleu, SmoothingFunction().method1, written out
        log_p = 0.0
        for n in range(1, max_n + 1):
            grams = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
            most = Counter()
            for r in refs:
                for g, c in Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1)).items():
                    most[g] = max(most[g], c)
            matched, total = sum(min(c, most[g]) for g, c in grams.items()), max(1, sum(grams.values()))
            if n == 1 and matched == 0:
                return 0.0
            log_p += np.log((matched or 0.1) / total) / max_n
        r = min((len(x) for x in refs), key=lambda length: (abs(length - len(hyp)), length))
        return (1.0 if len(hyp) > r else np.exp(1 - r / len(hyp))) * np.exp(log_p)

    for seed in range(3):
        units = [s.split() for s in _random_sentences(25, seed)]
        slow = 100 * np.mean([nltk_method1(u, units[:i] + units[i + 1:]) for i, u in enumerate(units)])
        assert self_bleu_texygen([" ".join(u) for u in units]) == pytest.approx(slow, abs=1e-9)


def test_corpus_bleu_is_sacrebleus_default_exp_smoothed_score():
    # no 4-gram matches anywhere: unsmoothed BLEU would be 0; exp smoothing counts 1/2 of a match
    p = [3 / 5, 2 / 4, 1 / 3, 0.5 / 2]
    assert bleu(["a b c d e"], ["a b c x y"], "none") == pytest.approx(100 * math.prod(p) ** 0.25)


def test_distinct_n_per_ngram_and_per_token():
    sents = ["a b c", "a b d"]
    assert distinct_n(sents, 2) == pytest.approx(3 / 4)  # ab, bc, bd of 4 bigrams
    assert distinct_n(sents, 2, per="tokens") == pytest.approx(3 / 6)  # Li et al. 2016: of 6 tokens
    assert distinct_n(sents, 1, per="tokens") == distinct_n(sents, 1)
    with pytest.raises(ValueError, match="per"):
        distinct_n(sents, 1, per="words")


def test_bleu_distinct_self_bleu():
    sents = ["the cat sat on the mat", "a dog ran in the park today", "we saw it"]
    assert bleu(sents, sents) == pytest.approx(100.0)
    assert bleu(["x y z w"], ["a b c d"]) == pytest.approx(0.0)
    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["a"], 2) == 0.0
    assert self_bleu(["the cat sat on the mat"] * 5) == pytest.approx(100.0)
    assert self_bleu(["a b c d", "e f g h", "i j k l"]) == pytest.approx(0.0)
    mixed = self_bleu(["the cat sat on the mat", "the cat sat on a rug", "dogs run fast in parks"])
    assert 0.0 < mixed < 100.0


def test_distinct_n_counts_characters_for_chinese():
    poems = ["白日依山盡", "白日照山川"]
    assert distinct_n(poems, 1) == 7 / 10  # 白 日 山 repeat
    assert distinct_n(poems, 2) == 7 / 8  # 白日 repeats
