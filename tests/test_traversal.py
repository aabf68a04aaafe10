"""Latent traversals (textvae.traversal) and the `textvae traverse` verb."""
import json

import numpy as np
import pytest
import torch

from helpers import TINY, cli, expect_error
from textvae.cli import main
from textvae.errors import TextVAEError
from textvae.latents import GaussianLatent
from textvae.latents.base import Latent
from textvae.traversal import FactorClassifier, intervention_effect, parse_dims, parse_values


def test_values_parse_ranges_and_lists():
    assert parse_values("-3:3:7") == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    assert parse_values("-2,0,2.5") == [-2.0, 0.0, 2.5]
    for bad, needle in (("1:2", "not a sweep"), ("0:1:1", "COUNT must be at least 2"), ("a,b", "not a sweep"),
                        ("0,inf", "finite")):
        with pytest.raises(TextVAEError, match=needle):
            parse_values(bad)


def test_values_refuse_a_count_too_large_to_decode_and_infinite_ends_without_a_warning():
    """A typo such as -3:3:100000000000 tried to allocate 745 GiB (a bare numpy MemoryError) before
    anything was decoded; 1e400:2:3 printed numpy's 'invalid value encountered' before the error."""
    import warnings

    with pytest.raises(TextVAEError, match=r"COUNT must be at least 2 and at most 1000 \(got 100000000000\)"):
        parse_values("-3:3:100000000000")
    with pytest.raises(TextVAEError, match="at most 1000 values"):
        parse_values(",".join(["0"] * 1001))
    assert len(parse_values("-3:3:1000")) == 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TextVAEError, match="finite"):
            parse_values("1e400:2:3")


def test_dims_parse_and_range_errors_name_the_dimension():
    assert parse_dims("all", 3) == [0, 1, 2] and parse_dims("2,0", 3) == [2, 0]
    assert parse_dims("0,2,0", 3) == [0, 2]  # swept and printed once
    with pytest.raises(TextVAEError, match=r"--dim 3 is out of range: the model's latent has 3 dimensions \(0 to 2\)"):
        parse_dims("3", 3)
    with pytest.raises(TextVAEError, match="--dim -1 is out of range"):
        parse_dims("-1", 3)
    with pytest.raises(TextVAEError, match="'x' is not a dimension index"):
        parse_dims("0,x", 3)


def test_gaussian_sweep_changes_only_the_swept_coordinate():
    latent = GaussianLatent(in_dim=4, dim=3)
    code = torch.tensor([0.5, -1.0, 2.0])
    swept = latent.sweep(code, 1, [-3.0, 0.0, 3.0])
    assert swept.shape == (3, 3)
    assert torch.equal(swept[:, 1], torch.tensor([-3.0, 0.0, 3.0]))
    assert torch.equal(swept[:, [0, 2]], code[[0, 2]].expand(3, 2))
    assert torch.equal(code, torch.tensor([0.5, -1.0, 2.0]))  # the base code is not modified
    assert torch.equal(latent.prior_point(), torch.zeros(3))


def test_a_latent_without_coordinates_refuses_a_traversal():
    with pytest.raises(TextVAEError, match="has none to set"):
        Latent().sweep(torch.zeros(2), 0, [0.0, 1.0])


class _SignModel:
    """A stand-in decoder: the sentence says whether z_0 is positive; z_1 changes nothing it says."""

    latent = GaussianLatent(in_dim=2, dim=2)

    def decode(self, codes, sample=None, label=None, generator=None):
        return ["it is good ." if z[0] > 0 else "it is bad ." for z in codes]


def test_intervention_effect_finds_the_dimension_that_moves_the_factor():
    texts = ["it is good .", "it is bad ."] * 10
    clf = FactorClassifier().fit(texts, {"sentiment": ["pos", "neg"] * 10, "noise": ["a"] * 10 + ["b"] * 10})
    assert clf.score(texts, {"sentiment": ["pos", "neg"] * 10, "noise": ["a"] * 20})["sentiment"] == 1.0
    bases = torch.tensor([[0.5, 0.0], [-0.5, 0.0]])
    effect = intervention_effect(_SignModel(), bases, [0, 1], [-2.0, -1.0, 1.0, 2.0], clf)
    # dim 0: half of each base's sweep crosses zero and flips the sentence; dim 1 never changes it
    assert effect[0]["sentiment"] == pytest.approx(0.5) and effect[1]["sentiment"] == 0.0
    assert effect[1]["noise"] == 0.0


def test_a_negative_or_out_of_range_dimension_is_refused_not_counted_from_the_end():
    """traverse(model, code, [-1], values) swept the last dimension and returned it as dimension -1 (and
    intervention_effect reported an effect of 'dimension -1'); 2 was a bare IndexError."""
    from textvae.traversal import traverse

    clf = FactorClassifier().fit(["it is good .", "it is bad ."] * 5, {"sentiment": ["pos", "neg"] * 5})
    code = torch.tensor([0.5, 0.0])
    assert traverse(_SignModel(), code, [0], [-1.0, 1.0]) == {0: ["it is bad .", "it is good ."]}
    for bad in (-1, 2, 0.0):
        with pytest.raises(TextVAEError, match=f"dimension {bad!r} is not a dimension of the code: give indices "
                                               r"from 0 to 1 \(the code has 2 dimensions\)"):
            traverse(_SignModel(), code, [bad], [-1.0, 1.0])
        with pytest.raises(TextVAEError, match=f"dimension {bad!r} is not"):
            intervention_effect(_SignModel(), code.unsqueeze(0), [0, bad], [-1.0, 1.0], clf)


def test_factor_classifier_refuses_a_single_valued_factor():
    with pytest.raises(TextVAEError, match="single value"):
        FactorClassifier().fit(["a", "b"], {"tense": ["past", "past"]})


def test_traverse_prints_each_dimension_sweep(tiny_run, capsys):
    out, _ = cli(capsys, ["traverse", "--model", tiny_run, "--dim", "0,1", "--values", "-3:3:3"])
    lines = out.splitlines()
    assert lines[0] == "dim 0" and lines[4] == "dim 1" and len(lines) == 8
    assert [ln.split()[0] for ln in lines[1:4]] == ["-3.00", "+0.00", "+3.00"]


def test_sampled_traversals_follow_the_seed(tiny_run, capsys):
    """--sample decoding drew its noise from seed 0 whatever --seed said: every seed gave the same lines."""
    def lines(seed):
        out, _ = cli(capsys, ["traverse", "--model", tiny_run, "--dim", "0,1,2", "--values", "-2:2:5", "--sample",
                              "--temperature", "2", "--seed", str(seed), "--json"])
        return json.loads(out)["traversal"]

    assert lines(3) == lines(3) and lines(3) != lines(4)


def test_traverse_json_with_factors_on_the_builtin_corpus(tiny_run, capsys):
    out, _ = cli(capsys, ["traverse", "--model", tiny_run, "the dog ran .", "--dim", "1", "--values", "-2,2",
                          "--factors", "--bases", "4", "--json"])
    r = json.loads(out)
    assert r["sentence"] == "the dog ran ." and r["values"] == [-2.0, 2.0] and len(r["traversal"]["1"]) == 2
    effect = r["intervention_effect"]["1"]
    assert set(effect) == {"topic", "tense", "sentiment", "length"}
    assert all(0.0 <= v <= 1.0 for v in effect.values()) and r["bases"] == 4
    assert all(0.0 <= a <= 1.0 for a in r["classifier_accuracy"].values())


def test_traverse_bad_input_speaks(tiny_run, capsys):
    expect_error(capsys, ["traverse", "--model", tiny_run, "--dim", "99"], "--dim 99 is out of range")
    expect_error(capsys, ["traverse", "--model", tiny_run, "--values", "3:4"], "--values '3:4' is not a sweep")
    expect_error(capsys, ["traverse", "--model", tiny_run, "   "], "empty after tokenisation")


def test_traverse_refuses_a_language_model(tmp_path, capsys, one_thread):
    lm = tmp_path / "lm"
    cli(capsys, ["train", *TINY, "--out", lm, "train.max_steps=2", "model.latent_dim=0"])
    expect_error(capsys, ["traverse", "--model", lm], "language model", "no latent space")


def test_traverse_factors_needs_factor_labels(tmp_path, capsys, one_thread):
    from helpers import write_corpus

    write_corpus(tmp_path / "c", {s: ["a b c .", "b c d ."] * 5 for s in ("train", "valid", "test")})
    run = tmp_path / "r"
    cli(capsys, ["train", *TINY, "--data", tmp_path / "c", "--out", run, "train.max_steps=2"])
    expect_error(capsys, ["traverse", "--model", run, "--factors", "--dim", "0"], "--factors needs factor labels")


def test_traverse_factors_needs_the_test_splits_labels_of_each_train_factor(tmp_path, capsys, one_thread):
    from helpers import write_corpus, write_lines

    write_corpus(tmp_path / "c", {s: ["a b c .", "b c d ."] * 5 for s in ("train", "valid", "test")})
    write_lines(tmp_path / "c" / "train.tense.labels.txt", ["past", "future"] * 5)  # no test.tense.labels.txt
    run = tmp_path / "r"
    cli(capsys, ["train", *TINY, "--data", tmp_path / "c", "--out", run, "train.max_steps=2"])
    expect_error(capsys, ["traverse", "--model", run, "--factors", "--dim", "0"],
                 "the test split has no labels of factor 'tense'", "test.tense.labels.txt")


def test_traverse_factors_on_a_conditional_model_uses_each_base_sentences_label(tmp_path, capsys, one_thread):
    from helpers import write_corpus, write_lines

    write_corpus(tmp_path / "c", {s: ["a b c .", "b c d .", "c d e .", "d e f ."] * 5 for s in ("train", "valid", "test")})
    for s in ("train", "valid", "test"):
        write_lines(tmp_path / "c" / f"{s}.labels.txt", ["x", "y"] * 10)
        write_lines(tmp_path / "c" / f"{s}.tense.labels.txt", ["past", "past", "future", "future"] * 5)
    run = tmp_path / "r"
    cli(capsys, ["train", *TINY, "--data", tmp_path / "c", "--out", run, "train.max_steps=2", "model.conditional=true"])
    out, _ = cli(capsys, ["traverse", "--model", run, "--factors", "--dim", "0", "--label", "x", "--json"])
    result = json.loads(out)
    assert result["bases"] == 20 and set(result["intervention_effect"]["0"]) == {"label", "tense"}
    (tmp_path / "c" / "test.labels.txt").unlink()
    expect_error(capsys, ["traverse", "--model", run, "--factors", "--dim", "0", "--label", "x"],
                 "the test split has no labels of factor 'label'", "(test.labels.txt beside the test text file")


def test_values_option_takes_a_negative_start(tiny_run, capsys):
    out, _ = cli(capsys, ["traverse", "--model", tiny_run, "--values", "-1:1:2", "--dim", "0"])
    assert np.allclose([float(ln.split()[0]) for ln in out.splitlines()[1:]], [-1.0, 1.0])


def test_traverse_plot_draws_the_sweep_and_the_intervention_effect(tiny_run, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "t.png"
    out, err = cli(capsys, ["traverse", "--model", tiny_run, "--dim", "0,1", "--values", "-1:1:3", "--factors",
                            "--bases", "3", "--plot", png])
    assert "dim 0" in out and f"drew {png}" in err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_factor_classifiers_read_the_text_as_the_model_writes_it(tmp_path, one_thread, monkeypatch):
    """A corpus written with capitals and punctuation attached, a model that lowercases and splits punctuation
    off: its decodings read 'the weather is good today .', never 'The weather is GOOD today.'. Classifiers
    trained on the corpus's raw words saw neither 'good' nor 'bad' and called every decoding the same,
    so a dimension that decides the sentiment showed an effect of 0; they read the model's tokens now."""
    from helpers import write_corpus, write_lines
    from textvae.model import TextVAE
    from textvae.traversal import factor_intervention

    texts = ["The weather is GOOD today.", "The weather is BAD today."] * 10
    write_corpus(tmp_path / "c", {s: texts for s in ("train", "valid", "test")})
    for s in ("train", "test"):
        write_lines(tmp_path / "c" / f"{s}.sentiment.labels.txt", ["pos", "neg"] * 10)
    run = tmp_path / "r"
    assert main(["train", *TINY, "--data", str(tmp_path / "c"), "--out", str(run), "train.max_steps=2",
                 "tokenizer.lowercase=true", "tokenizer.pretokenize=punctuation"]) == 0
    model = TextVAE.from_pretrained(run)
    written = model.tokenizer.decode(model.tokenizer.encode(texts[0]))
    assert written == "the weather is good today ."  # what the model's decoder can write
    monkeypatch.setattr(model, "decode", lambda codes, sample=None, label=None, generator=None: [
        ("the weather is good today ." if z[0] > 0 else "the weather is bad today .") for z in codes])
    r = factor_intervention(model, [0, 1], [-2.0, -1.0, 1.0, 2.0], bases=6)
    assert r["classifier_accuracy"] == {"sentiment": 1.0}
    assert r["intervention_effect"][0]["sentiment"] == pytest.approx(0.5)  # half of each sweep crosses 0
    assert r["intervention_effect"][1]["sentiment"] == 0.0
