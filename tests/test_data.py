"""Data: loading and validation of corpora (and the errors the CLI reports for bad ones), encoding
with length limits, and the real Penn Treebank when it is at hand."""

import json
import logging
import os
import re
from pathlib import Path

import datasets
import numpy as np
import pytest

from helpers import SHARED_DATA, TINY, cli, expect_error, write_corpus
from textvae.cli import main
from textvae.config import Config, DataConfig, TokenizerConfig
from textvae.config_files import load_config
from textvae.data import describe_source, encode_split, load_splits, split_indices
from textvae.errors import ConfigError, DataError
from textvae.tokenizers import train_tokenizer


@pytest.fixture
def cache(tmp_path):
    """A private datasets cache: tests never write into ~/.cache."""
    return str(tmp_path / "hf-cache")


def write(folder, files: dict) -> str:
    """Create ``folder/name`` for each name: content (str as UTF-8, or bytes) and return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(folder)


def load(folder, cache, names=("train", "valid", "test"), **cfg):
    return load_splits(DataConfig(data_dir=str(folder), **cfg), names, cache_dir=cache)


OTHERS = {"valid.txt": "v\n", "test.txt": "t\n"}  # the splits a test does not look at
SMALL = {"train.txt": "the cat sat\n a dog ran \n\n   \nthe dog sat\n", "valid.txt": "the cat ran\n",
         "test.txt": "a cat\n"}


# --------------------------------------------------------------------------- loading

def test_txt_splits_strip_and_count_blank_lines(tmp_path, cache):
    splits = load(write(tmp_path, SMALL), cache)
    assert list(splits) == ["train", "valid", "test"]
    assert splits["train"]["text"] == ["the cat sat", "a dog ran", "the dog sat"]
    assert splits["train"].column_names == ["text"]
    assert splits.stats["train"] == {"source": str(tmp_path / "train.txt"), "examples": 3, "skipped_blank": 2}
    assert splits.stats["valid"]["skipped_blank"] == 0


def test_ptb_file_names_crlf_and_bom(tmp_path, cache):
    folder = write(tmp_path, {"ptb.train.txt": "\ufeff one <unk> N \r\n two \r\n", "ptb.valid.txt": "v\n",
                              "ptb.test.txt": "t\n"})
    splits = load(folder, cache)
    assert splits["train"]["text"] == ["one <unk> N", "two"]
    assert splits.stats["valid"]["source"].endswith("ptb.valid.txt")


def test_byte_order_marks_inside_a_file_are_dropped(tmp_path, cache):
    # two files saved with a BOM and joined (cat a.txt b.txt): the second BOM made "\ufeffthe" a word, and
    # "\ufeffneg" a label, of their own
    bom = "\ufeff"
    folder = write(tmp_path, {"train.txt": f"{bom}the cat\n{bom}the dog\n{bom}\n \n", "train.labels.txt":
                              f"{bom}pos\n{bom}neg\nx\ny\n", **OTHERS})
    splits = load(folder, cache, ("train",))
    assert splits["train"]["text"] == ["the cat", "the dog", bom]  # a line of only a BOM is not blank, as before
    assert splits["train"]["label"] == ["pos", "neg", "x"] and splits.stats["train"]["skipped_blank"] == 1


def test_splits_map_to_other_file_names(tmp_path, cache):
    folder = write(tmp_path, {"train.txt": "a\n", "validation.txt": "b\n"})
    mapping = {"train": "train", "valid": "validation", "test": "test"}
    splits = load(folder, cache, ("train", "valid"), splits=mapping)
    assert splits["valid"]["text"] == ["b"]


def test_jsonl_with_labels(tmp_path, cache):
    rows = [{"sentence": "good film", "y": 1, "extra": {"nested": True}}, {"sentence": "  ", "y": 0},
            {"sentence": "bad film", "y": "neg", "extra": "mixed types are fine"}]
    lines = "\n".join(json.dumps(r) for r in rows) + "\n\n"
    folder = write(tmp_path, {"train.jsonl": lines, "valid.json": json.dumps(rows[0]) + "\n",
                              "test.txt": "plain\n"})
    splits = load(folder, cache, text_field="sentence", label_field="y")
    assert splits["train"]["text"] == ["good film", "bad film"]
    assert splits["train"]["label"] == ["1", "neg"]
    assert splits.stats["train"]["skipped_blank"] == 2  # the blank text and the blank line
    assert splits["valid"]["label"] == ["1"]
    assert "label" not in splits["test"].column_names


def test_jsonl_errors_name_file_line_and_field(tmp_path, cache):
    folder = write(tmp_path, {"train.jsonl": '{"text": "a"}\n{"txt": "b"}\n', **OTHERS})
    with pytest.raises(DataError, match=r"train\.jsonl:2: no field 'text' \(fields: 'txt'\); "
                                        r"set data\.text_field"):
        load(folder, cache)
    write(tmp_path, {"train.jsonl": '{"text": "a"}\n{"text": "b",\n'})
    with pytest.raises(DataError, match=r"train\.jsonl:2: invalid JSON"):
        load(folder, cache)
    write(tmp_path, {"train.jsonl": '{"text": "a"}\n{"text": 3}\n'})
    with pytest.raises(DataError, match=r"train\.jsonl:2: field 'text' is int, not a string"):
        load(folder, cache)
    write(tmp_path, {"train.jsonl": '{"text": "a"}\n'})
    with pytest.raises(DataError, match=r"train\.jsonl:1: no field 'y'.*data\.label_field"):
        load(folder, cache, label_field="y")


@pytest.mark.parametrize("content, error", [
    ('[\n  {"text": "a b"},\n  {"text": "c d"}\n]\n', "invalid JSON"),  # json.dump(rows, f, indent=2)
    ('[{"text": "a b"}, {"text": "c d"}]\n', "expected a JSON object with a 'text' field, got list"),  # json.dump
    ('{\n  "text": "a b"\n}\n', "invalid JSON"),  # one object, indented
])
def test_one_json_document_is_told_apart_from_json_lines(tmp_path, cache, content, error):
    # only the first form said that textvae reads JSON lines; the others gave the bare parse error
    folder = write(tmp_path, {"train.json": content, **OTHERS})
    with pytest.raises(DataError, match=rf"train\.json:1: {error}.*; the file looks like one JSON document, but "
                                        rf"textvae reads JSON lines \(one object per line\)"):
        load(folder, cache, ("train",))


def test_jsonl_unpaired_surrogate_escape_names_the_line_then_replace_continues(tmp_path, cache):
    # a tweet cut inside an emoji's surrogate pair: valid JSON, but no text Arrow or a tokenizer takes
    folder = write(tmp_path, {"train.jsonl": '{"text": "fine \\ud83d\\ude00"}\n{"text": "cut \\ud83d"}\n',
                              **OTHERS})
    with pytest.raises(DataError, match=r"train\.jsonl:2: field 'text' holds an unpaired surrogate .*"
                                        r"--encoding-errors replace"):
        load(folder, cache)
    splits = load(folder, cache, encoding_errors="replace")
    assert splits["train"]["text"] == ["fine \U0001f600", "cut \ufffd"]


def test_labels_file_beside_txt(tmp_path, cache):
    folder = write(tmp_path, {"train.txt": "a b\n\nc d\n", "train.labels.txt": "x\nblank\ny\n", **OTHERS})
    splits = load(folder, cache)
    assert splits["train"]["text"] == ["a b", "c d"] and splits["train"]["label"] == ["x", "y"]
    write(tmp_path, {"train.labels.txt": "x\ny\n"})
    with pytest.raises(DataError, match=r"train\.labels\.txt has 2 lines but .*train\.txt has 3"):
        load(folder, cache)


def test_conditional_training_refuses_blank_labels_m2_takes_them(tmp_path):
    """A blank line of train.labels.txt was a class "" of a conditional VAE, in silence."""
    from textvae.data import training_data

    folder = write(tmp_path / "c", {"train.txt": "a b c\nd e f\ng h\ni j\n", "train.labels.txt": "pos\n\nneg\npos\n",
                                    "valid.txt": "a b\n", "valid.labels.txt": "pos\n", "test.txt": "a\n",
                                    "test.labels.txt": "neg\n"})
    cfg = load_config(preset="tiny", overrides=[f"data.data_dir={folder}", "model.conditional=true"])
    with pytest.raises(DataError, match=r"train split \(.*train\.txt\) has 1 example\(s\) with a blank label "
                                        r"\(the first: 'd e f'\).*model\.classifier=true"):
        training_data(cfg, None, lambda msg: None)
    cfg.model.classifier = True  # M2: a blank label is an unlabelled example
    _, train, _, labels = training_data(cfg, None, lambda msg: None)
    assert labels == ["neg", "pos"] and train.label_ids.tolist() == [1, -1, 0, 1]


def test_missing_directory_and_split(tmp_path, cache):
    with pytest.raises(DataError, match=r"nowhere does not exist; pass --data-dir"):
        load(tmp_path / "nowhere", cache)
    folder = write(tmp_path, {"train.txt": "a\n", "test.txt": "b\n"})  # (a lone train.txt is split)
    with pytest.raises(DataError, match=r"no valid split in .*tried valid\.txt, ptb\.valid\.txt, valid\.jsonl, "
                                        r"valid\.json"):
        load(folder, cache)


def test_binary_file(tmp_path, cache):
    folder = write(tmp_path, {"train.txt": b"ok line\nmore\x00\x01\x02 bytes\n", **OTHERS})
    with pytest.raises(DataError, match=r"train\.txt:2: .*looks like a binary file"):
        load(folder, cache)
    write(tmp_path, {"train.txt": "utf-16 text\n".encode("utf-16")})
    with pytest.raises(DataError, match="binary file"):
        load(folder, cache)


def test_invalid_utf8_names_the_line_and_the_fix(tmp_path, cache):
    folder = write(tmp_path, {"train.txt": b"fine\nalso fine\ncaf\xe9 latin-1\nend\n", **OTHERS})
    with pytest.raises(DataError, match=r"train\.txt:3: invalid UTF-8 \(byte 0xe9 at column 4.*"
                                        r"--encoding-errors replace \(data\.encoding_errors=replace\)"):
        load(folder, cache)
    splits = load(folder, cache, encoding_errors="replace")
    assert splits["train"]["text"] == ["fine", "also fine", "caf\ufffd latin-1", "end"]


def test_empty_split_is_an_error(tmp_path, cache):
    folder = write(tmp_path, {"train.txt": "\n  \n\t\n", **OTHERS})
    with pytest.raises(DataError, match=r"train split \(.*train\.txt\) has no examples \(3 blank lines\)"):
        load(folder, cache)
    write(tmp_path, {"train.txt": ""})
    with pytest.raises(DataError, match=r"has no examples \(0 blank lines\)"):
        load(folder, cache)
    write(tmp_path, {"train.txt": "\ufeff"})  # an empty file as Notepad saves it: only a byte-order mark
    with pytest.raises(DataError, match=r"train split \(.*train\.txt\) has no examples \(0 blank lines\)"):
        load(folder, cache)


def test_local_hub_style_dataset(tmp_path, cache):
    features = datasets.Features({"sentence": datasets.Value("string"), "idx": datasets.Value("int32"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    hub = tmp_path / "hub"
    hub.mkdir()
    for split, rows in {"train": [("a fine film", 1), ("dull", 0), ("  ", 1)], "validation": [("ok", 1)],
                        "test": [("unlabelled", -1)]}.items():
        columns = {"sentence": [r[0] for r in rows], "idx": list(range(len(rows))), "label": [r[1] for r in rows]}
        datasets.Dataset.from_dict(columns, features=features).to_parquet(hub / f"{split}.parquet")
    cfg = dict(dataset=str(hub), text_field="sentence", label_field="label",
               splits={"train": "train", "valid": "validation", "test": "test"})
    splits = load_splits(DataConfig(**cfg), cache_dir=cache)
    assert splits["train"]["text"] == ["a fine film", "dull"]
    assert splits["train"]["label"] == ["positive", "negative"]  # ClassLabel ids become names
    assert splits["test"]["label"] == ["-1"]
    assert splits.stats["train"]["skipped_blank"] == 1
    with pytest.raises(DataError, match=r"no column 'text' \(columns: 'sentence', 'idx', 'label'\)"):
        load_splits(DataConfig(**{**cfg, "text_field": "text"}), ("train",), cache_dir=cache)
    with pytest.raises(DataError, match=r"column 'idx' holds .*not text"):
        load_splits(DataConfig(**{**cfg, "text_field": "idx"}), ("train",), cache_dir=cache)
    with pytest.raises(DataError, match=r"(?s)could not load split 'valid'.*data\.splits\.valid"):
        load_splits(DataConfig(**{**cfg, "splits": {"train": "train", "valid": "valid", "test": "test"}}),
                    ("valid",), cache_dir=cache)


def test_builtin_corpus(cache):
    pytest.importorskip("textvae.corpus")
    splits = load_splits(DataConfig(builtin_size=60), cache_dir=cache)
    sizes = {name: len(ds) for name, ds in splits.items()}
    assert sum(sizes.values()) == 60 and sizes["train"] > sizes["valid"] > 0
    assert splits["train"].column_names == ["text", "label"]
    assert all(isinstance(x, str) and x for x in splits["train"]["label"])


def test_builtin_corpus_is_labelled_by_the_factor_label_field_names(cache):
    from textvae.corpus import FACTOR_VALUES

    topic = load_splits(DataConfig(builtin_size=60), ("train",), cache_dir=cache)["train"]
    sentiment = load_splits(DataConfig(builtin_size=60, label_field="sentiment"), ("train",), cache_dir=cache)["train"]
    assert sentiment["text"] == topic["text"]
    assert set(sentiment["label"]) == set(FACTOR_VALUES["sentiment"]) and set(topic["label"]) <= set(FACTOR_VALUES["topic"])
    with pytest.raises(DataError, match=r"data\.label_field='mood'.*topic, tense, sentiment, length"):
        load_splits(DataConfig(builtin_size=60, label_field="mood"), ("train",), cache_dir=cache)


def test_builtin_corpus_takes_its_factors_as_factor_fields(cache):
    # docs/disentangle.md's data.factor_fields=[tense,...] on the built-in corpus was a DataError saying the
    # corpus had no column 'tense' (and that .txt corpora keep factors in label files)
    from textvae.corpus import builtin_corpus

    cfg = DataConfig(builtin_size=60, label_field="sentiment", factor_fields=["tense", "sentiment"])
    train = load_splits(cfg, ("train",), cache_dir=cache)["train"]
    rows = builtin_corpus(60)["train"]
    assert train.column_names == ["text", "label", "factor.tense", "factor.sentiment"]
    assert train["factor.tense"] == [r["tense"] for r in rows] and train["factor.sentiment"] == train["label"]
    with pytest.raises(DataError, match=r"no column 'mood' for data\.factor_fields \(columns: 'text', 'label', "
                                        r"'topic', 'tense', 'sentiment', 'length'\)$"):
        load_splits(DataConfig(builtin_size=60, factor_fields=["mood"]), ("train",), cache_dir=cache)


# --------------------------------------------------------------------------- encoding

class CountingTokenizer:
    """A stand-in tokenizer: one id per character (4 + ord % 10), "" for text "EMPTY"; counts calls."""

    kind = "stub"

    def __init__(self):
        self.calls = 0

    def fingerprint(self) -> str:
        return "stub-v1"

    def encode_batch(self, texts):
        self.calls += 1
        return [[] if t == "EMPTY" else [4 + ord(c) % 10 for c in t] for t in texts]


def test_encode_truncate_drop_and_counts(tmp_path, cache):
    folder = write(tmp_path, {"train.txt": "abc\n\nabcdefgh\nEMPTY\nab\nabcdef\n", **OTHERS})
    splits = load(folder, cache, ("train",))
    ds = splits["train"]
    enc = splits.encode("train", CountingTokenizer(), DataConfig(max_len=5, long_policy="truncate"))
    assert enc.lengths.tolist() == [3, 5, 2, 5]
    assert enc.texts == ["abc", "abcdefgh", "ab", "abcdef"]  # texts are kept whole
    assert enc.stats == {"examples": 4, "skipped_blank": 1, "truncated": 2, "dropped": 1, "dropped_long": 0,
                         "dropped_empty": 1, "tokens": 3 + 5 + 2 + 5 + 4}
    assert all(a.dtype == np.int32 for a in enc.ids)
    enc = encode_split(ds, CountingTokenizer(), DataConfig(max_len=5, long_policy="drop"))
    assert enc.texts == ["abc", "ab"] and enc.lengths.tolist() == [3, 2]
    assert enc.stats["dropped"] == 3 and enc.stats["dropped_long"] == 2 and enc.stats["truncated"] == 0


def test_encode_is_cached_by_tokenizer_fingerprint(tmp_path, cache):
    folder = write(tmp_path, {"train.txt": "the cat\nthe dog\n", **OTHERS})
    ds = load(folder, cache, ("train",))["train"]
    first, second = CountingTokenizer(), CountingTokenizer()
    a = encode_split(ds, first, DataConfig())
    b = encode_split(load(folder, cache, ("train",))["train"], second, DataConfig(max_len=3))
    assert first.calls == 1 and second.calls == 0  # read back from the datasets cache
    assert [x.tolist() for x in b.ids] == [x[:3].tolist() for x in a.ids]


def test_encode_real_tokenizer_with_labels(tmp_path, cache):
    folder = write(tmp_path, {"train.txt": "the cat sat\na dog\n", "train.labels.txt": "x\ny\n", **OTHERS})
    ds = load(folder, cache, ("train",))["train"]
    tok = train_tokenizer(TokenizerConfig(), ds["text"])
    enc = encode_split(ds, tok, DataConfig())
    assert enc.labels == ["x", "y"] and len(enc) == 2
    assert [tok.decode(x) for x in enc.ids] == ["the cat sat", "a dog"]
    assert enc.stats["tokens"] == 3 + 1 + 2 + 1


def test_blank_counts_travel_in_the_stats_not_in_module_state(tmp_path, cache):
    import textvae.data as data

    a = load(write(tmp_path / "a", {"train.txt": "x y\n\n\nz\n", **OTHERS}), cache, ("train",))
    b = load(write(tmp_path / "b", {"train.txt": "x y\nz\n", **OTHERS}), cache, ("train",))
    tok = CountingTokenizer()
    assert a.encode("train", tok, DataConfig()).stats["skipped_blank"] == 2
    assert b.encode("train", tok, DataConfig()).stats["skipped_blank"] == 0
    assert encode_split(a["train"], tok, DataConfig()).stats["skipped_blank"] == 0  # not told: none known
    assert not [name for name, value in vars(data).items() if isinstance(value, (dict, list, set))
                and not name.isupper() and not name.startswith("__")]


# --------------------------------------------------------------------------- one file, split by the config


RATIO = {"train": 0.9, "valid": 0.05, "test": 0.05}
WORDS = "the a dog cat ran sat on mat park big small red".split()


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))) for _ in range(n)]


def test_split_indices_is_a_fixed_seeded_partition():
    parts = split_indices(20, RATIO, seed=0)
    # pinned: the split of a file must never change, or evaluating an old run would see other lines
    assert parts["test"].tolist() == [19] and parts["valid"].tolist() == [12]
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(20))
    assert [len(parts[s]) for s in ("train", "valid", "test")] == [18, 1, 1]
    assert split_indices(20, RATIO, seed=1)["test"].tolist() == [2]
    big = split_indices(1000, {"train": 8, "valid": 1, "test": 1}, seed=3)  # proportions, normalised
    assert [len(big[s]) for s in ("train", "valid", "test")] == [800, 100, 100]
    assert all((np.diff(p) > 0).all() for p in big.values())  # each part in file order
    grown = split_indices(1010, {"train": 8, "valid": 1, "test": 1}, seed=3)
    assert len(set(big["test"]) & set(grown["test"])) >= 95  # appending lines moves few of the others
    with pytest.raises(DataError, match=r"f\.txt has 2 lines; splitting it into train/valid/test needs at least 3"):
        split_indices(2, RATIO, source="f.txt")


def test_one_txt_file_is_split_by_the_config(tmp_path, cache):
    lines = sentences(40)
    (tmp_path / "my.txt").write_text("\n".join(lines) + "\n")
    splits = load(tmp_path / "my.txt", cache)
    parts = split_indices(40, RATIO, seed=0)
    for name in ("train", "valid", "test"):
        assert splits[name]["text"] == [lines[i] for i in parts[name]]
    assert splits.stats["test"]["source"] == (f"{tmp_path / 'my.txt'}, test part "
                                              f"(data.split_ratio 0.9/0.05/0.05, data.split_seed=0)")
    other = load(tmp_path / "my.txt", cache, split_seed=7, split_ratio={"train": 0.5, "valid": 0.25, "test": 0.25})
    assert len(other["test"]) == 10 and other["test"]["text"] != splits["test"]["text"]
    assert "its lines split into train/valid/test" in describe_source(DataConfig(data_dir=str(tmp_path / "my.txt")))


def test_folder_with_only_train_txt_is_split_the_same_way(tmp_path, cache):
    lines = sentences(30)
    folder = write(tmp_path / "corpus", {"train.txt": "\n".join(lines) + "\n",
                                         "train.labels.txt": "".join(f"{i % 2}\n" for i in range(30))})
    splits = load(folder, cache)
    parts = split_indices(30, RATIO)
    assert splits["test"]["text"] == [lines[i] for i in parts["test"]]
    assert splits["test"]["label"] == [str(i % 2) for i in parts["test"]]
    assert "only train.txt in the folder: its lines split" in describe_source(DataConfig(data_dir=folder))


def test_csv_text_and_label_columns(tmp_path, cache):
    rows = 'id,text,label\n1,"hello, world",pos\n2,NA,neg\n3,  ,pos\n4,007 bond,neg\n'
    folder = write(tmp_path, {"train.csv": rows, **OTHERS})
    splits = load(folder, cache, label_field="label")
    assert splits["train"]["text"] == ["hello, world", "NA", "007 bond"]  # cells stay text as written
    assert splits["train"]["label"] == ["pos", "neg", "neg"]
    assert splits.stats["train"]["skipped_blank"] == 1
    with pytest.raises(DataError, match=r"train\.csv: no column 'sentence' in the header row \(columns: 'id', "
                                        r"'text', 'label'\); set data\.text_field"):
        load(folder, cache, text_field="sentence")
    with pytest.raises(DataError, match=r"no column 'y' .*set data\.label_field .*or unset it"):
        load(folder, cache, label_field="y")
    write(tmp_path, {"train.csv": ""})
    with pytest.raises(DataError, match=r"train\.csv is empty; a CSV file needs a header row"):
        load(folder, cache)


def test_csv_first_row_with_more_fields_than_the_header_is_an_error(tmp_path, cache):
    # pandas would take the extra leading field of every row as an index and shift the columns:
    # text 'a', label 'c' for the first row, text 'b' and no label for the second
    folder = write(tmp_path, {"train.csv": "text,label\n\nhi there,a,c\nho,b\n", **OTHERS})
    with pytest.raises(DataError, match=r"train\.csv:3: 3 fields, but the header row names 2 columns "
                                        r"\('text', 'label'\); .*double quotes"):
        load(folder, cache, label_field="label")


@pytest.mark.parametrize("rows", [
    ",text,label\n0,hello world,a\n1,bye now,b\n",  # pandas' df.to_csv(path): an unnamed index column first
    "text,label,\nhello world,a,\nbye now,b,\n",  # a trailing comma on every line
    "text,,label,,\nhello world,,a,x,\nbye now,1,b,,\n",  # unnamed columns between and after
])
def test_csv_with_unnamed_columns_is_read(tmp_path, cache, rows):
    # was "not readable as CSV (DatasetGenerationError ...); check its quoting", from a KeyError on the
    # column named "" that pandas calls "Unnamed: 0"
    folder = write(tmp_path, {"train.csv": rows, **OTHERS})
    splits = load(folder, cache, ("train",), label_field="label")
    assert splits["train"]["text"] == ["hello world", "bye now"] and splits["train"]["label"] == ["a", "b"]
    assert splits["train"].column_names == ["text", "label"]


def test_csv_row_with_more_fields_names_its_line(tmp_path, cache):
    # datasets wraps pandas' ParserError, which names the line, in "An error occurred while generating the
    # dataset": the message said neither which line nor what was wrong
    folder = write(tmp_path, {"train.csv": "text,label\nhello world,a\nsecond,b\nthird, with comma,c\n",
                              **OTHERS})
    logged = []  # datasets' own log line of the same error, before the DataError's paragraph
    handler = logging.Handler()
    handler.emit = logged.append
    logging.getLogger("datasets").addHandler(handler)
    try:
        with pytest.raises(DataError, match=r"train\.csv: not readable as CSV \(ParserError: .*Expected 2 fields "
                                            r"in line 4, saw 3\); check its quoting"):
            load(folder, cache, ("train",), label_field="label")
    finally:
        logging.getLogger("datasets").removeHandler(handler)
    assert not logged


def test_csv_and_jsonl_labels_and_factors_are_stripped_as_labels_files_are(tmp_path, cache):
    # "hello world, pos" gave the label " pos", a class of its own beside "pos" (a labels file's lines,
    # and every text, were stripped; CSV and JSON labels and factor values were not)
    folder = write(tmp_path / "csv", {"train.csv": "text,label,tense\nhello world, pos,past \nbye now,pos,past\n"
                                                   "and more,\ufeffneg, \n", **OTHERS})
    train = load(folder, cache, ("train",), label_field="label", factor_fields=["tense"])["train"]
    assert train["label"] == ["pos", "pos", "neg"] and train["factor.tense"] == ["past", "past", ""]
    folder = write(tmp_path / "jsonl", {"train.jsonl": '{"text": "a b", "label": " neg\\t"}\n', **OTHERS})
    assert load(folder, cache, ("train",), label_field="label")["train"]["label"] == ["neg"]


@pytest.mark.parametrize("sep", [";", "\t"])
def test_csv_with_another_delimiter_says_so(tmp_path, cache, sep):
    folder = write(tmp_path, {"train.csv": f"text{sep}label\nhello world{sep}pos\n", **OTHERS})
    columns, mark = re.escape(repr(f"text{sep}label")), re.escape(repr(sep))
    with pytest.raises(DataError, match=rf"no column 'text' in the header row \(columns: {columns}\); .*"
                                        rf"one column with {mark} in it: textvae reads comma-separated files"):
        load(folder, cache, ("train",))


def test_csv_factor_field_missing_names_the_columns(tmp_path, cache):
    folder = write(tmp_path, {"train.csv": "text,tense\nhello world,past\n", **OTHERS})
    assert load(folder, cache, ("train",), factor_fields=["tense"])["train"]["factor.tense"] == ["past"]
    with pytest.raises(DataError, match=r"train\.csv: no column 'mood' in the header row \(columns: 'text', "
                                        r"'tense'\); data\.factor_fields names it"):
        load(folder, cache, ("train",), factor_fields=["tense", "mood"])


def test_csv_header_after_a_blank_line_is_read(tmp_path, cache):
    folder = write(tmp_path, {"train.csv": "\r\ntext,label\r\nhello world,a\r\n", **OTHERS})
    splits = load(folder, cache, label_field="label")
    assert splits["train"]["text"] == ["hello world"] and splits["train"]["label"] == ["a"]


def test_csv_with_only_a_header_row_is_an_empty_split(tmp_path, cache):
    folder = write(tmp_path, {"train.csv": "text,label\r\n\r\n", **OTHERS})
    with pytest.raises(DataError, match=r"train split \(.*train\.csv\) has no examples \(0 blank lines\); add text"):
        load(folder, cache, label_field="label")


def test_unknown_file_type_is_a_clear_error(tmp_path, cache):
    (tmp_path / "my.tsv").write_text("a\tb\n")
    with pytest.raises(DataError, match=r"my\.tsv: textvae reads \.txt .*\.jsonl .*\.csv .*not \.tsv"):
        load(tmp_path / "my.tsv", cache)


def test_file_loader_as_dataset_and_bad_split_ratio_are_config_errors():
    with pytest.raises(ConfigError, match=r"data\.dataset='csv' names datasets' csv loader, which needs files "
                                          r".*--data FILE"):
        load_config(overrides=["data.dataset=csv"])
    with pytest.raises(ConfigError, match=r"data\.split_ratio=.* must be positive proportions"):
        Config(data=DataConfig(split_ratio={"train": 1.0, "valid": 0.0, "test": 0.1}))
    with pytest.raises(ConfigError, match=r"data\.split_ratio has keys \['dev', 'test', 'train'\]"):
        Config(data=DataConfig(split_ratio={"train": 1.0, "dev": 0.1, "test": 0.1}))
    cfg = load_config(overrides=["data.split_ratio.test=0.2"])  # one entry, the others kept
    assert cfg.data.split_ratio == {"train": 0.9, "valid": 0.05, "test": 0.2}


def test_split_emptied_by_drop_names_the_fix(tmp_path, cache):
    folder = write(tmp_path, {"train.txt": "a b c d e f\n", "valid.txt": "one two three four\nfive six seven\n",
                              "test.txt": "t\n"})
    cfg = DataConfig(data_dir=folder, max_len=2, long_policy="drop")
    splits = load_splits(cfg, cache_dir=cache)
    tok = train_tokenizer(TokenizerConfig(), splits["train"]["text"])
    with pytest.raises(DataError) as e:
        splits.encode("valid", tok, cfg)
    assert str(e.value) == (f"the valid split ({folder}/valid.txt) has no examples left: all 2 are longer than "
                            f"data.max_len=2 tokens, and data.long_policy=drop removed them; raise data.max_len "
                            f"(its longest example has 4 tokens) or use data.long_policy=truncate")


def test_cli_failures_of_own_data_are_clear(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "long.txt").write_text("\n".join(sentences(30)) + "\n")
    expect_error(capsys, ["train", "--preset", "tiny", "--data", "long.txt", "--out", "R", "data.max_len=2",
                       "data.long_policy=drop"], "the train split (", "long.txt, train part",
              "data.max_len=2", "raise data.max_len", "data.long_policy=truncate")
    expect_error(capsys, ["train", "--preset", "tiny", "--out", "R2", "data.dataset=csv"],
              "data.dataset='csv'", "--data FILE")
    expect_error(capsys, ["train", "--preset", "tiny", "--data-dir", "missing.txt", "--out", "R3"],
              f"{tmp_path / 'missing.txt'} does not exist", "--data FILE")


def own_data_files(folder) -> dict[str, list[str]]:
    """A .txt, a .csv with text and label columns, and a .jsonl, each of 40 examples; returns their texts."""
    folder.mkdir()
    texts = {name: sentences(40, seed) for seed, name in enumerate(("my.txt", "my.csv", "my.jsonl"))}
    (folder / "my.txt").write_text("\n".join(texts["my.txt"]) + "\n")
    (folder / "my.csv").write_text("text,label\n" + "".join(f'"{t}, too",{i % 3}\n'
                                                           for i, t in enumerate(texts["my.csv"])))
    texts["my.csv"] = [f"{t}, too" for t in texts["my.csv"]]
    (folder / "my.jsonl").write_text("".join(json.dumps({"text": t, "label": "x"}) + "\n" for t in texts["my.jsonl"]))
    return texts


def test_train_on_one_file_then_evaluate_from_elsewhere(tmp_path, capsys, monkeypatch):
    """--data FILE (relative) for .txt, .csv and .jsonl: the run stores the absolute path and the split,
    so evaluate, probe and --resume from another directory see exactly the same test examples."""
    from textvae.metrics import model_split
    from textvae.model import TextVAE

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    texts = own_data_files(work)
    elsewhere.mkdir()
    for name, extra in (("my.txt", []), ("my.csv", ["data.label_field=label"]), ("my.jsonl", [])):
        monkeypatch.chdir(work)
        run = work / f"run-{name}"
        assert main(["train", "--preset", "tiny", "--no-summary", "--data", name, "--out", run.name,
                     "train.max_steps=2", *extra]) == 0
        err = capsys.readouterr().err
        assert f"data ({name}): {work / name} (its lines split into train/valid/test by data.split_ratio " \
               f"0.9/0.05/0.05, data.split_seed=0)" in err
        saved = json.loads((run / "config.json").read_text())["data"]
        assert saved["data_dir"] == str(work / name) and saved["split_ratio"] == RATIO and saved["split_seed"] == 0

        monkeypatch.chdir(elsewhere)
        test = split_indices(40, RATIO)["test"]
        assert model_split(TextVAE.from_pretrained(run), "test").texts == [texts[name][i] for i in test]
        assert main(["evaluate", "--model", str(run), "--iw-samples", "2", "--n-samples", "2", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["sentences"] == len(test)
    # --resume from another directory: the same file, named from there
    assert main(["train", "--preset", "tiny", "--no-summary", "--data", "../work/my.txt", "--out",
                 str(work / "run-my.txt"), "--resume", "train.max_steps=3"]) == 0
    assert "trained to step 3" in capsys.readouterr().out
    assert main(["probe", "--model", str(work / "run-my.csv"), "--split", "train", "--n", "10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == 3


def test_train_on_a_folder_with_only_train_txt(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "train.txt").write_text("\n".join(sentences(30)) + "\n")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "tiny", "--no-summary", "--data-dir", "corpus", "--out", "R",
                 "train.max_steps=2"]) == 0
    err = capsys.readouterr().err
    assert f"data (corpus): {folder / 'train.txt'} (only train.txt in the folder: its lines split into " \
           f"train/valid/test by data.split_ratio 0.9/0.05/0.05, data.split_seed=0)" in err
    assert "train: 26 examples" in err and "valid: 2 examples" in err
    assert json.loads((tmp_path / "R" / "config.json").read_text())["data"]["data_dir"] == str(folder)


# --------------------------------------------------------------------------- bad corpora given to the CLI

@pytest.fixture
def corpus(tmp_path, one_thread):
    """18 sentences in each split, for the CLI trainings below."""
    lines = [f"the {a} {b} ran to the {c} ." for a in ("old", "red", "big") for b in ("dog", "cat")
             for c in ("park", "lake", "house")]
    return write_corpus(tmp_path / "corpus", dict.fromkeys(("train", "valid", "test"), lines))


def train_on(corpus, tmp_path, *extra):
    return ["train", *TINY, "--out", tmp_path / "out", "--data-dir", corpus, "train.max_steps=1", *extra]


def test_missing_split_names_the_files_tried(corpus, tmp_path, capsys):
    (corpus / "valid.txt").unlink()
    expect_error(capsys, train_on(corpus, tmp_path), f"no valid split in {corpus}", "valid.txt", "ptb.valid.txt",
                 "data.splits.valid=NAME")


@pytest.mark.parametrize("content, needles", [
    (b"", ["valid.txt) has no examples (0 blank lines)"]),
    (b"\n   \n\t\n\n", ["valid.txt) has no examples (4 blank lines)"]),
])
def test_empty_or_blank_split(corpus, tmp_path, capsys, content, needles):
    (corpus / "valid.txt").write_bytes(content)
    expect_error(capsys, train_on(corpus, tmp_path), *needles)


def test_invalid_utf8_names_line_then_replace_continues(corpus, tmp_path, capsys):
    good = (corpus / "train.txt").read_bytes()
    (corpus / "train.txt").write_bytes(good + b"a caf\xe9 in the park .\n")  # Latin-1, line 19
    expect_error(capsys, train_on(corpus, tmp_path), f"{corpus / 'train.txt'}:19: invalid UTF-8",
                 "byte 0xe9 at column 6", "--encoding-errors replace")
    out, err = cli(capsys, train_on(corpus, tmp_path, "--encoding-errors", "replace"))
    assert "train: 19 examples" in err and "trained to step 1" in out


@pytest.mark.parametrize("content", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01",  # an image: invalid UTF-8 before the first NUL
    "the dog ran .\n".encode("utf-16"),  # UTF-16 text
])
def test_binary_file_is_called_binary(corpus, tmp_path, capsys, content):
    (corpus / "valid.txt").write_bytes(content)
    for errors in ([], ["--encoding-errors", "replace"]):  # replacing bytes does not make binary data text
        expect_error(capsys, train_on(corpus, tmp_path, *errors), f"{corpus / 'valid.txt'}:",
                     "contains NUL bytes", "binary file")


@pytest.mark.parametrize("policy, counts", [("truncate", "truncated 3, dropped 0"), ("drop", "truncated 0, dropped 3")])
def test_over_long_lines_are_truncated_or_dropped_and_counted(corpus, tmp_path, capsys, policy, counts):
    long = " ".join(["word"] * 50)
    with open(corpus / "train.txt", "a") as f:
        f.write(f"{long}\n{long} .\n{long} ! !\n")
    _, err = cli(capsys, train_on(corpus, tmp_path, "data.max_len=20", f"data.long_policy={policy}"))
    kept = 21 if policy == "truncate" else 18
    assert f"train: {kept} examples" in err and f"{counts} (data.long_policy={policy})" in err


# --------------------------------------------------------------------------- the real Penn Treebank

# Beside the checkout (../shared/data/ptb) or at $TEXTVAE_PTB; skipped otherwise (nothing else needs it).
PTB = Path(os.environ.get("TEXTVAE_PTB", SHARED_DATA / "ptb"))


@pytest.mark.skipif(not (PTB / "train.txt").is_file(), reason=f"PTB not found at {PTB}")
def test_ptb_sizes_vocabulary_and_token_count(tmp_path):
    cfg = DataConfig(data_dir=str(PTB))
    splits = load_splits(cfg, cache_dir=str(tmp_path))
    assert {k: len(v) for k, v in splits.items()} == {"train": 42068, "valid": 3370, "test": 3761}
    tok = train_tokenizer(TokenizerConfig(kind="word"), splits["train"]["text"])
    assert tok.vocab_size == 10000 + 2  # Mikolov's 10k types (incl. <unk>, which maps to our unk id) + <pad> <s> </s>
    test = encode_split(splits["test"], tok, cfg)
    # 78,669 words + 3,761 EOS = 82,430, the test-set token count perplexities are usually quoted over
    assert test.stats["tokens"] == 82430
    assert test.stats["truncated"] == 0 and test.stats["dropped"] == 0
