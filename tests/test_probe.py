"""Latent probe: logistic regression on posterior means vs bag-of-words (textvae.probe, `textvae probe`)."""
import json
import random

import numpy as np
import pytest
import torch

from helpers import write_corpus, write_lines
from textvae.cli import main
from textvae.errors import DataError, TextVAEError
from textvae.model import TextVAE
from textvae.metrics import model_split
from textvae.probe import bag_of_words, fit_logistic_regression, predict, probe

# a toy corpus whose label (the topic) decides every word of the sentence
TOPICS = {
    "animals": (["the cat", "a dog", "the old horse", "a small bird"], ["sat", "ran", "slept", "ate"]),
    "weather": (["it", "the sky", "the wind"], ["rained", "was grey", "blew", "snowed"]),
    "food": (["the soup", "my bread", "the cheese", "a pie"], ["was hot", "smelled good", "tasted sweet"]),
}


def toy(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        topic = rng.choice(sorted(TOPICS))
        subjects, verbs = TOPICS[topic]
        subject, verb, when = rng.choice(subjects), rng.choice(verbs), rng.choice(["today ", "again ", ""])
        texts.append(f"{subject} {verb} {when}.")
        labels.append(topic)
    return texts, labels


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    splits = {name: toy(n, seed) for name, n, seed in (("train", 300, 0), ("valid", 90, 1), ("test", 60, 2))}
    data = write_corpus(root / "toy", {name: texts for name, (texts, _) in splits.items()})
    write_corpus(root, {name: labels for name, (_, labels) in splits.items()}, suffix=".topics")
    run = root / "run"
    assert main(["train", "--preset", "tiny", "--data-dir", str(data), "--out", str(run), "--no-summary",
                 "train.max_steps=120", "model.latent_dim=4"]) == 0
    return root, data, run


def test_logistic_regression_separates_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[3.0, 0.0], [0.0, 3.0], [-3.0, -3.0]])
    y = torch.arange(3).repeat(40)
    x = centres[y] + 0.5 * torch.randn(120, 2, generator=g)
    W, b = fit_logistic_regression(x, y, 3)
    assert W.shape == (2, 3) and b.shape == (3,)
    assert torch.equal(predict(W, b, x), y)
    W2, b2 = fit_logistic_regression(x, y, 3)
    assert torch.equal(W, W2) and torch.equal(b, b2)
    # a stronger penalty (smaller C) gives smaller weights
    assert fit_logistic_regression(x, y, 3, c=0.01)[0].norm() < W.norm()


def test_bag_of_words_counts_the_training_tokens():
    ids = [np.array([5, 6, 5]), np.array([7]), np.array([6, 9])]
    bow = bag_of_words(ids, train_rows=[0, 1])  # tokens 5, 6, 7; 9 is never seen in training
    assert bow.tolist() == [[2, 1, 0], [0, 0, 1], [0, 1, 0]]


def test_probe_recovers_a_label_the_latent_encodes(toy_run):
    root, data, run = toy_run
    model = TextVAE.from_pretrained(run)
    split = model_split(model, "valid", labels_file=root / "valid.topics")
    r = probe(model, split, n=40, seed=0)
    assert (r["n_train"], r["n_test"], r["classes"], r["latent_dim"]) == (40, 50, 3, 4)
    assert r["accuracy_bow"] == 1.0  # the topic's words give it away
    assert r["accuracy_majority"] < 0.5
    assert r["accuracy_latent"] > r["accuracy_majority"] + 0.2  # 0.66 vs 0.26 when written
    assert probe(model, split, n=40, seed=0) == r  # deterministic for a seed
    assert probe(model, split, n=40, seed=1)["n_test"] == 50


def test_probe_cli_with_a_labels_file_or_the_corpus_labels(toy_run, capsys):
    root, data, run = toy_run
    assert main(["probe", "--model", str(run), "--labels", str(root / "valid.topics"), "--n", "40", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["accuracy_bow"] == 1.0 and r["n_test"] == 50
    # the corpus's own labels: valid.labels.txt beside valid.txt
    (data / "valid.labels.txt").write_text((root / "valid.topics").read_text())
    try:
        assert main(["probe", "--model", str(run), "--n", "40", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == r
    finally:
        (data / "valid.labels.txt").unlink()
    assert main(["probe", "--model", str(run), "--labels", str(root / "test.topics"), "--split", "test",
                 "--n", "30"]) == 0
    out = capsys.readouterr().out
    assert "posterior means (4 dims)" in out and "bag of words" in out and "majority label" in out


def test_probe_errors_name_the_fix(toy_run, tmp_path, capsys):
    root, data, run = toy_run
    model = TextVAE.from_pretrained(run)
    with pytest.raises(DataError, match="has no labels; pass --labels"):
        model_split(model, "valid", need_labels=True)
    short = tmp_path / "short.txt"
    short.write_text("animals\nfood\n")
    with pytest.raises(DataError, match="has 2 lines but the valid split .* has 90 examples"):
        model_split(model, "valid", labels_file=short)
    split = model_split(model, "valid", labels_file=root / "valid.topics")
    with pytest.raises(TextVAEError, match="at least one left to test on"):
        probe(model, split, n=90)
    assert main(["probe", "--model", str(run), "--labels", str(short)]) == 2
    assert "one label per line" in capsys.readouterr().err


def test_labels_of_blank_lines_are_dropped_with_them(toy_run, tmp_path):
    root, data, run = toy_run
    texts, labels = toy(20, seed=7)
    corpus = tmp_path / "blank"
    corpus.mkdir()
    lines = texts[:10] + [""] + texts[10:]  # a blank line in the text file ...
    for name in ("train", "valid", "test"):
        write_lines(corpus / f"{name}.txt", lines)
    tags = labels[:10] + ["-"] + labels[10:]  # ... and its label, one per line of the file
    write_lines(tmp_path / "tags.txt", tags)
    model = TextVAE.from_pretrained(run)
    split = model_split(model, "valid", labels_file=tmp_path / "tags.txt", data_dir=str(corpus))
    assert split.labels == labels and split.texts == texts
    # unlabelled examples (empty label) are left out of the probe
    write_lines(tmp_path / "some.txt", labels[:15] + [""] * 5)
    split = model_split(model, "valid", labels_file=tmp_path / "some.txt", data_dir=str(corpus))
    assert probe(model, split, n=10)["n_test"] == 5


def test_probe_refuses_the_labels_a_conditional_model_is_given():
    """q(z|x, y) reads the label y, so a probe of the posterior means for y (or a renaming of it) reads
    the input back: an untrained conditional model scored 1.0 on labels that nothing in the text predicts."""
    from textvae.config import ModelConfig
    from textvae.data import EncodedSplit

    rng = np.random.default_rng(1)
    ids = [rng.integers(4, 20, size=int(rng.integers(1, 9))).astype(np.int32) for _ in range(200)]
    given = [str(x) for x in rng.integers(0, 3, 200)]  # random: the text does not predict them
    torch.manual_seed(0)
    model = TextVAE(ModelConfig(vocab_size=20, emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=8,
                                conditional=True), labels=["0", "1", "2"]).eval()
    for labels in (given, [f"class {x}" for x in given]):
        split = EncodedSplit(ids=ids, texts=[""] * 200, labels=labels, label_ids=np.array(given, dtype=np.int64))
        with pytest.raises(TextVAEError, match="conditional model is given"):
            probe(model, split, n=100)
    other = [str(x) for x in rng.integers(0, 2, 200)]  # another factor: the probe is allowed
    split = EncodedSplit(ids=ids, texts=[""] * 200, labels=other, label_ids=np.array(given, dtype=np.int64))
    assert probe(model, split, n=100)["accuracy_latent"] < 0.7
