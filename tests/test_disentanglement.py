"""MIG and DCI on codes with known answers, and factor labels read beside a corpus."""

import numpy as np
import pytest

from textvae.config import DataConfig
from textvae.data import load_splits
from textvae.disentanglement import dci, discrete_mutual_info, mig, read_factors
from textvae.errors import DataError


def _factors(n=600, seed=0):
    rng = np.random.default_rng(seed)
    return {"topic": rng.integers(0, 5, n), "tense": rng.integers(0, 3, n), "mood": rng.integers(0, 2, n)}


def _one_to_one(factors, noise_dims=2, seed=1):
    """Each factor copied into its own dimension, then pure-noise dimensions."""
    rng = np.random.default_rng(seed)
    n = len(next(iter(factors.values())))
    copies = np.stack([np.asarray(v, dtype=float) for v in factors.values()], 1)
    return np.concatenate([copies, rng.normal(size=(n, noise_dims))], 1)


def _mixed(factors, dims=4):
    """Every dimension the same injective mixture of all factors (each carries everything)."""
    v = list(factors.values())
    code = v[0] * 6 + v[1] * 2 + v[2]  # distinct for every (topic, tense, mood)
    return np.repeat(code[:, None].astype(float), dims, 1)


def test_discrete_mutual_info_known_values():
    x = np.array([0, 0, 1, 1])
    assert discrete_mutual_info(x, x) == pytest.approx(np.log(2))
    assert discrete_mutual_info(x, np.array([0, 1, 0, 1])) == pytest.approx(0.0)


def test_mig_is_one_for_a_code_that_copies_each_factor_into_its_own_dimension():
    factors = _factors()
    out = mig(_one_to_one(factors), factors)
    assert out["mig"] == pytest.approx(1.0, abs=0.05)
    assert [out["top_dims"][name][0] for name in factors] == [0, 1, 2]
    assert set(out["per_factor"]) == set(factors)


def test_mig_matches_disentanglement_libs_computation_on_partly_informative_codes():
    # disentanglement_lib's _compute_mig: 20 equal-width bins per dimension (np.histogram edges,
    # np.digitize on all but the last), sklearn's mutual_info_score, gap of the two largest over H(v)
    from sklearn.metrics import mutual_info_score

    rng = np.random.default_rng(0)
    factors = _factors(n=300)
    codes = rng.normal(size=(300, 6))
    codes[:, 2] += factors["topic"]
    codes[:, 4] += 2 * factors["mood"]
    codes[:, 5] += 0.5 * factors["mood"] + 0.3 * factors["tense"]
    binned = np.stack([np.digitize(c, np.histogram(c, 20)[1][:-1]) for c in codes.T])
    out = mig(codes, factors)
    for name, v in factors.items():
        mi = np.sort([mutual_info_score(v, b) for b in binned])[::-1]
        assert out["per_factor"][name] == pytest.approx((mi[0] - mi[1]) / mutual_info_score(v, v), abs=1e-12)
        assert out["mutual_info"][name] == pytest.approx([mutual_info_score(v, b) for b in binned], abs=1e-12)
    assert 0.1 < out["per_factor"]["topic"] < 0.9 and 0.1 < out["per_factor"]["mood"] < 0.9


def test_mig_is_near_zero_when_every_dimension_carries_every_factor():
    factors = _factors()
    assert mig(_mixed(factors), factors)["mig"] < 0.1


def test_mig_accepts_string_labels():
    factors = {"sentiment": ["positive", "negative"] * 50}
    codes = np.stack([np.array([1.0, -1.0] * 50), np.zeros(100)], 1)
    assert mig(codes, factors)["mig"] == pytest.approx(1.0)


def test_single_valued_factor_is_an_error_naming_it():
    factors = {**_factors(100), "length": ["short"] * 100}
    with pytest.raises(DataError, match="'length'.*single value"):
        mig(np.random.default_rng(0).normal(size=(100, 4)), factors)
    with pytest.raises(DataError, match="'length'"):
        dci(np.random.default_rng(0).normal(size=(100, 4)), factors)


def test_codes_with_one_dimension_or_wrong_length_are_errors():
    factors = _factors(100)
    with pytest.raises(DataError, match="at least 2 dimensions"):
        mig(np.zeros((100, 1)), factors)
    with pytest.raises(DataError, match="'topic' has 100 labels but there are 50 codes"):
        mig(np.zeros((50, 3)), factors)


def test_dci_is_near_one_for_a_one_to_one_code_and_lower_for_a_mixed_one():
    factors = _factors(400)
    clean = dci(_one_to_one(factors), factors, n_estimators=20)
    assert clean["disentanglement"] > 0.9 and clean["completeness"] > 0.9
    assert clean["informativeness"] == pytest.approx(1.0)
    assert np.asarray(clean["importance"]).shape == (5, 3) and clean["factors"] == list(factors)
    mixed = dci(_mixed(factors) + np.random.default_rng(2).normal(scale=1e-3, size=(400, 4)), factors,
                n_estimators=20)
    assert mixed["disentanglement"] < clean["disentanglement"] - 0.3
    assert mixed["completeness"] < clean["completeness"] - 0.3


def test_dci_is_seeded():
    factors = _factors(200)
    codes = _mixed(factors) + np.random.default_rng(3).normal(size=(200, 4))
    assert dci(codes, factors, seed=4, n_estimators=10) == dci(codes, factors, seed=4, n_estimators=10)


def test_read_factors_on_the_builtin_corpus_aligns_four_factors_with_the_texts(tmp_path):
    cfg = DataConfig(builtin_size=300)
    factors = read_factors(cfg, "test")
    assert list(factors) == ["topic", "tense", "sentiment", "length"]
    split = load_splits(cfg, ("test",), cache_dir=str(tmp_path))["test"]
    assert all(len(labels) == len(split) for labels in factors.values())
    assert factors["topic"] == split["label"]  # the split's own label is the topic
    long = [t for t, length in zip(split["text"], factors["length"]) if length == "long"]
    assert long and all(any(w in t.split() for w in ("and", "so", "because")) for t in long)


def test_read_factors_from_label_files_drops_blank_lines_with_the_text(tmp_path):
    (tmp_path / "test.txt").write_text("a b\n\nc d\ne f\n")
    (tmp_path / "test.tense.labels.txt").write_text("past\nx\nfuture\npast\n")
    (tmp_path / "test.labels.txt").write_text("1\n2\n3\n4\n")  # the split's own label: the factor "label"
    cfg = DataConfig(data_dir=str(tmp_path))
    assert read_factors(cfg, "test") == {"label": ["1", "3", "4"], "tense": ["past", "future", "past"]}
    assert len(load_splits(cfg, ("test",), cache_dir=str(tmp_path / "cache"))["test"]) == 3


def test_factor_label_files_drop_a_byte_order_mark_inside_the_file_as_labels_files_do(tmp_path):
    # two label files saved with BOMs and joined (cat a b): the second's BOM starts a line in the middle
    (tmp_path / "test.txt").write_text("a b\nc d\ne f\n")
    (tmp_path / "test.tense.labels.txt").write_text("\ufeffpast\n\ufeffpast \nfuture\n", encoding="utf-8")
    (tmp_path / "test.labels.txt").write_text("\ufeff1\n\ufeff2\n3\n", encoding="utf-8")
    factors = read_factors(DataConfig(data_dir=str(tmp_path)), "test")
    assert factors == {"label": ["1", "2", "3"], "tense": ["past", "past", "future"]}


def test_read_factors_takes_a_jsonl_corpus_label_field_as_the_factor_label(tmp_path):
    (tmp_path / "test.jsonl").write_text('{"t": "a b", "c": "x"}\n{"t": "c d", "c": "y"}\n')
    assert read_factors(DataConfig(data_dir=str(tmp_path), text_field="t", label_field="c"), "test") == {
        "label": ["x", "y"]}
    assert read_factors(DataConfig(data_dir=str(tmp_path), text_field="t"), "test") == {}


def test_read_factors_takes_jsonl_and_csv_factor_fields_aligned_with_kept_examples(tmp_path):
    (tmp_path / "test.jsonl").write_text('{"t": "a b", "c": "x", "tense": "past", "n": 2}\n\n'
                                         '{"t": "  ", "c": "z", "tense": "now", "n": 1}\n'
                                         '{"t": "c d", "c": "y", "tense": "future", "n": 3}\n')
    cfg = DataConfig(data_dir=str(tmp_path), text_field="t", label_field="c", factor_fields=["tense", "n", "c"])
    assert read_factors(cfg, "test") == {"label": ["x", "y"], "tense": ["past", "future"], "n": ["2", "3"],
                                         "c": ["x", "y"]}
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "test.csv").write_text("text,tense\na b,past\n,now\nc d,future\n")
    cfg = DataConfig(data_dir=str(csv_dir), factor_fields=["tense"])
    assert read_factors(cfg, "test") == {"tense": ["past", "future"]}


def test_factor_fields_missing_or_on_a_txt_corpus_is_an_error_naming_the_key(tmp_path):
    (tmp_path / "test.jsonl").write_text('{"text": "a b", "tense": "past"}\n')
    with pytest.raises(DataError, match=r"test\.jsonl:1: no field 'mood'.*data\.factor_fields"):
        read_factors(DataConfig(data_dir=str(tmp_path), factor_fields=["mood"]), "test")
    txt = tmp_path / "txt"
    txt.mkdir()
    (txt / "test.txt").write_text("a b\n")
    with pytest.raises(DataError, match=r"no column 'tense' for data\.factor_fields.*labels\.txt files"):
        read_factors(DataConfig(data_dir=str(txt), factor_fields=["tense"]), "test")


def test_factor_fields_from_the_command_line_and_bad_entries(tmp_path):
    from textvae.config import ConfigError
    from textvae.config_files import load_config

    cfg = load_config(overrides=["data.factor_fields=tense,mood"])
    assert cfg.data.factor_fields == ["tense", "mood"]
    with pytest.raises(ConfigError, match="names a field twice"):
        load_config(overrides=["data.factor_fields=[a, a]"])
    with pytest.raises(ConfigError, match="other than the text"):
        load_config(overrides=["data.factor_fields=[text]"])


def test_factor_label_file_with_another_line_count_is_an_error_naming_it(tmp_path):
    (tmp_path / "test.txt").write_text("a b\nc d\ne f\n")
    (tmp_path / "test.topic.labels.txt").write_text("x\ny\n")
    with pytest.raises(DataError, match=r"test\.topic\.labels\.txt has 2 lines but .*test\.txt has 3"):
        read_factors(DataConfig(data_dir=str(tmp_path)), "test")


@pytest.mark.parametrize("one_file", ["folder", "file"])
def test_factor_labels_of_a_corpus_split_from_one_file_follow_its_split(tmp_path, one_file):
    # each line names its own label, so a label that belongs to another line shows
    tenses = ["past", "now", "future"]
    lines = [f"line {i} in the {tenses[i % 3]}" if i % 7 else "" for i in range(60)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "train.tense.labels.txt").write_text("\n".join(tenses[i % 3] for i in range(60)) + "\n")
    cfg = DataConfig(data_dir=str(tmp_path if one_file == "folder" else tmp_path / "train.txt"))
    for split in ("train", "valid", "test"):
        factors = read_factors(cfg, split)
        texts = load_splits(cfg, (split,), cache_dir=str(tmp_path / "cache"))[split]["text"]
        assert len(factors["tense"]) == len(texts)
        assert all(text.endswith(tense) for text, tense in zip(texts, factors["tense"]))
