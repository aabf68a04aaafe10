"""The built-in corpus: deterministic, cleanly split, balanced, factors readable from text."""
import math
import re
from collections import Counter, defaultdict

import pytest

from textvae.corpus import (FACTOR_VALUES, FACTORS, MAX_TOKENS, MIN_TOKENS, builtin_corpus,
                            draw_examples)
from textvae.errors import DataError


@pytest.fixture(scope="module")
def corpus():
    return builtin_corpus()  # the default size and seed that `textvae train` uses


def _all(corpus):
    return corpus["train"] + corpus["valid"] + corpus["test"]


def test_draw_examples_is_deterministic_per_seed():
    assert draw_examples(300, seed=0) == draw_examples(300, seed=0)
    assert [e["text"] for e in draw_examples(300, seed=0)] != [e["text"] for e in draw_examples(300, seed=1)]
    assert draw_examples(50, seed=2) == draw_examples(130, seed=2)[:50]  # a prefix of a longer draw
    assert draw_examples(0) == []


def test_golden_first_sentences():
    # The corpus users train on must not change by accident (e.g. a Python upgrade changing the
    # random draws). Update this only on purpose, together with data/builtin/README.md.
    assert [e["text"] for e in draw_examples(3, seed=0)] == GOLDEN


GOLDEN = [
    "this field will be lonely , so my sister will feel upset .",
    "that dog brings my blanket angrily .",
    "the vet enjoyed an elephant in the barn because a goat chased our clean leaf happily .",
]


def test_examples_carry_every_factor():
    for example in draw_examples(120, seed=3):
        assert set(example) == {"text", *FACTORS}
        for factor in FACTORS:
            assert example[factor] in FACTOR_VALUES[factor]


def test_each_block_of_60_holds_every_combination_once():
    cells = Counter(tuple(e[f] for f in FACTORS) for e in draw_examples(120, seed=4))
    assert len(cells) == 5 * 3 * 2 * 2 and set(cells.values()) == {2}


def test_builtin_corpus_is_deterministic_per_seed():
    assert builtin_corpus(400, seed=3) == builtin_corpus(400, seed=3)
    assert builtin_corpus(400, seed=3)["train"] != builtin_corpus(400, seed=4)["train"]


@pytest.mark.parametrize("size, sizes", [(6000, (5400, 300, 300)), (400, (360, 20, 20)),
                                         (3, (1, 1, 1)), (101, (91, 5, 5))])
def test_split_sizes(size, sizes):
    corpus = builtin_corpus(size, seed=1)
    assert (len(corpus["train"]), len(corpus["valid"]), len(corpus["test"])) == sizes


def test_too_small_size_names_the_setting():
    with pytest.raises(DataError, match="data.builtin_size"):
        builtin_corpus(2)


def test_no_text_repeats_within_or_across_splits(corpus):
    texts = [e["text"] for e in _all(corpus)]
    assert len(texts) == len(set(texts)) == 6000
    assert not {e["text"] for e in corpus["train"]} & {e["text"] for e in corpus["test"]}


def test_every_factor_value_occurs_and_is_balanced(corpus):
    examples = _all(corpus)
    for factor in FACTORS:
        counts = Counter(e[factor] for e in examples)
        assert set(counts) == set(FACTOR_VALUES[factor])
        expected = len(examples) / len(FACTOR_VALUES[factor])
        assert all(abs(c - expected) < 0.05 * expected for c in counts.values()), (factor, counts)


def test_held_out_splits_cover_every_factor_value(corpus):
    for split in ("valid", "test"):
        for factor in FACTORS:
            assert {e[factor] for e in corpus[split]} == set(FACTOR_VALUES[factor])


def test_tokens_are_lower_case_words_and_separate_punctuation(corpus):
    for e in _all(corpus):
        tokens = e["text"].split(" ")
        assert all(re.fullmatch(r"[a-z]+|[.,]", t) for t in tokens), e["text"]
        assert tokens[-1] == "." and "." not in tokens[:-1]


def test_vocabulary_size(corpus):
    vocab = {t for e in _all(corpus) for t in e["text"].split()}
    assert 300 <= len(vocab) <= 600


def test_lengths_within_bounds_and_long_is_longer(corpus):
    lengths = defaultdict(list)
    for e in _all(corpus):
        lengths[e["length"]].append(len(e["text"].split()))
    assert all(MIN_TOKENS <= n <= MAX_TOKENS for ns in lengths.values() for n in ns)
    assert (MIN_TOKENS, MAX_TOKENS) == (5, 25)
    mean = {k: sum(v) / len(v) for k, v in lengths.items()}
    assert mean["long"] > mean["short"] + 5
    assert max(lengths["short"]) <= 12  # one clause, no place


def test_future_sentences_and_only_they_contain_will(corpus):
    for e in _all(corpus):
        assert ("will" in e["text"].split()) == (e["tense"] == "future"), e["text"]


def test_long_sentences_join_two_clauses(corpus):
    for e in _all(corpus):
        joined = bool({"and", "so", "because"} & set(e["text"].split()))
        assert joined == (e["length"] == "long"), e["text"]


def test_articles_agree_with_the_next_word(corpus):
    pairs = Counter()
    for e in _all(corpus):
        tokens = e["text"].split()
        for article, word in zip(tokens, tokens[1:]):
            if article in ("a", "an"):
                assert (article == "an") == (word[0] in "aeiou"), e["text"]
                pairs[article, word] += 1
    articles = Counter(article for article, _ in pairs.elements())
    assert articles["a"] > 200 and articles["an"] > 20 and pairs["an", "elephant"]


def test_present_tense_verbs_agree_with_pronoun_subjects(corpus):
    # A pronoun subject is always followed by its verb (no adverb comes between them).
    for e in _all(corpus):
        if e["tense"] != "present":
            continue
        tokens = e["text"].split()
        for subject, verb in zip(tokens, tokens[1:]):
            if subject in ("he", "she", "everyone"):
                assert verb.endswith("s"), e["text"]  # is, feels, loves, cries
            elif subject in ("i", "we", "they"):
                assert verb in ("am", "are") or not verb.endswith("s"), e["text"]
        assert not re.search(r"\b(i (is|are)|(we|they) (is|am)|(he|she) (am|are))\b", e["text"])


def test_past_tense_be_agrees(corpus):
    for e in _all(corpus):
        assert not re.search(r"\b((we|they) was|(i|he|she|everyone) were)\b", e["text"])


def _naive_bayes_accuracy(train, test, factor):
    counts, prior = defaultdict(Counter), Counter()
    for e in train:
        prior[e[factor]] += 1
        counts[e[factor]].update(e["text"].split())
    vocab = {t for c in counts.values() for t in c}

    def log_posterior(text, label):
        total = sum(counts[label].values()) + len(vocab)
        return math.log(prior[label]) + sum(
            math.log((counts[label][t] + 1) / total) for t in text.split())

    hits = sum(max(prior, key=lambda y: log_posterior(e["text"], y)) == e[factor] for e in test)
    return hits / len(test)


@pytest.mark.parametrize("factor", FACTORS)
def test_every_factor_is_recoverable_from_the_words(corpus, factor):
    # A bag-of-words classifier reads every factor off the text, so a latent code can hold it.
    assert _naive_bayes_accuracy(corpus["train"], corpus["test"], factor) >= 0.95
