"""Configuration: presets, typed overrides, validation with one message per bad key, config files
(YAML and JSON) and their errors as the CLI reports them, round trips of every section, and the
checks of experiments/ row and table files (textvae.experiments)."""
import json
import re

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import TINY, expect_error
from textvae.config import Config
from textvae.config_files import list_presets, load_config, parse_overrides
from textvae.errors import ConfigError


def test_presets_ship_and_load():
    names = list_presets()
    for required in ("tiny", "default", "ptb-bowman", "ptb-li2019"):
        assert required in names
    for name in names:
        assert isinstance(load_config(preset=name), Config)
    li = load_config(preset="ptb-li2019")
    assert (li.model.enc_hidden, li.model.dec_hidden, li.model.emb_dim, li.model.latent_dim) == (256, 256, 256, 32)


def test_overrides_are_typed_and_nested():
    cfg = load_config(preset="tiny", overrides=["train.max_steps=300", "model.latent_dim=32", "model.cell=gru",
                                                "objective.free_bits=0.5", "data.data_dir=/tmp/x"])
    assert cfg.train.max_steps == 300 and cfg.model.latent_dim == 32 and cfg.model.cell == "gru"
    assert cfg.objective.free_bits == 0.5 and cfg.data.data_dir == "/tmp/x"
    assert parse_overrides(["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["train.max_stepz=3"])
    assert "train.max_stepz" in str(e.value) and "max_steps" in str(e.value)
    with pytest.raises(ConfigError, match="unknown key.*'trian'"):
        load_config(overrides=["trian.lr=1"])


def test_wrong_type_and_bad_values_are_all_reported():
    with pytest.raises(ConfigError, match="train.batch_size.*expects int"):
        load_config(overrides=["train.batch_size=big"])
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["model.cell=transformer", "model.word_dropout=1.5"])
    assert "model.cell" in str(e.value) and "model.word_dropout" in str(e.value)


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*tiny"):
        load_config(preset="nope")


def test_malformed_override_and_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(overrides=["train.lr"])
    bad = tmp_path / "c.yaml"
    bad.write_text("train:\n  lr: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_config(config_file=str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(config_file=str(tmp_path / "missing.yaml"))


def test_yaml_object_tags_are_refused(tmp_path):
    evil = tmp_path / "evil.yaml"
    marker = tmp_path / "marker"
    evil.write_text(f"train: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError):
        load_config(config_file=str(evil))
    assert not marker.exists()


def test_save_load_round_trip(tmp_path):
    cfg = load_config(preset="ptb-li2019", overrides=["train.max_steps=7"])
    cfg.save(tmp_path / "c.json")
    again = load_config(config_file=str(tmp_path / "c.json"))
    assert again == cfg


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ConfigError, match="newer"):
        load_config(config_file=str(path))


def test_an_empty_config_file_is_an_error_not_the_defaults(tmp_path):
    for text in ("", "# only a comment\n", "{}\n"):
        path = tmp_path / "empty.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match="empty.yaml is empty"):
            load_config(config_file=str(path))


def test_a_splits_override_changes_one_entry(tmp_path):
    cfg = load_config(overrides=["data.splits.valid=dev"])
    assert cfg.data.splits == {"train": "train", "valid": "dev", "test": "test"}
    # a file's mapping is whole (it may rename every split); an override then edits one entry of it
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  splits: {train: tr, valid: va, test: te}\n")
    assert load_config(config_file=str(path)).data.splits == {"train": "tr", "valid": "va", "test": "te"}
    cfg = load_config(config_file=str(path), overrides=["data.splits.test=held_out"])
    assert cfg.data.splits == {"train": "tr", "valid": "va", "test": "held_out"}


def test_textvae_overrides_env_applies_after_every_other_override(monkeypatch):
    monkeypatch.setenv("TEXTVAE_OVERRIDES", "train.max_steps=5  data.builtin_size=300 data.splits.test=held")
    cfg = load_config(preset="tiny", overrides=["train.max_steps=100", "train.lr=0.5"])
    assert cfg.train.max_steps == 5 and cfg.data.builtin_size == 300 and cfg.train.lr == 0.5
    assert cfg.data.splits == {"train": "train", "valid": "valid", "test": "held"}
    monkeypatch.setenv("TEXTVAE_OVERRIDES", "train.max_stepz=5")
    with pytest.raises(ConfigError, match=r"TEXTVAE_OVERRIDES='train.max_stepz=5'.*unknown key\(s\) 'train.max_stepz'"):
        load_config(preset="tiny")
    monkeypatch.setenv("TEXTVAE_OVERRIDES", "")
    assert load_config(preset="tiny").train.max_steps != 5


def test_a_dotted_override_changes_one_entry_of_any_mapping():
    cfg = load_config(overrides=["model.id2label.1=b", "model.id2label.0=a"])
    assert cfg.model.id2label == {0: "a", 1: "b"} and cfg.model.num_labels == 2
    with pytest.raises(ConfigError, match="model.id2label must map the ids 0..K-1"):
        load_config(overrides=["model.id2label.3=a"])
    with pytest.raises(ConfigError, match=r"model.id2label.x' expects int"):
        load_config(overrides=["model.id2label.x=a"])


def test_saved_config_carries_format_and_library_version(tmp_path):
    import json

    import textvae
    from textvae.config import FORMAT_VERSION, Config

    Config().save(tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["format_version"] == FORMAT_VERSION and saved["textvae_version"] == textvae.__version__
    assert load_config(config_file=str(tmp_path / "config.json")) == Config()


def test_a_format_1_run_config_with_num_labels_still_loads():
    import pathlib

    path = pathlib.Path(__file__).parent / "fixtures" / "v0.1.0" / "run" / "config.json"
    cfg = load_config(config_file=str(path))
    assert cfg.model.id2label is None and cfg.model.num_labels == 0 and cfg.train.max_steps == 6


# --------------------------------------------------------------------------- config files and overrides given to the CLI

def test_yaml_object_tag_in_a_config_file_is_not_executed(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"train: !!python/object/apply:pathlib.Path.touch ['{marker}']\n")
    expect_error(capsys, ["train", "--config", evil, "--out", tmp_path / "r"], str(evil), "invalid YAML at line 1")
    assert not marker.exists()


def test_missing_config_file(tmp_path, capsys):
    expect_error(capsys, ["train", "--config", tmp_path / "nope.yaml", "--out", tmp_path / "o"],
                 f"config file {tmp_path / 'nope.yaml'} does not exist")


def test_config_file_errors_name_the_file_and_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    out = ["--out", tmp_path / "o"]
    cfg.write_text("train:\n  batch_sise: 3\n")
    expect_error(capsys, ["train", "--config", cfg, *out], str(cfg), "unknown key(s) 'train.batch_sise'",
                 "valid keys in train:", "batch_size")
    cfg.write_text("model:\n  latent_dim: many\n")
    expect_error(capsys, ["train", "--config", cfg, *out], str(cfg), "'model.latent_dim' expects int", "'many'")
    for text, what in (("- train\n- model\n", "got list"), ("just words\n", "got str")):
        cfg.write_text(text)
        expect_error(capsys, ["train", "--config", cfg, *out], str(cfg), "top level must be a mapping", what)
    cfg.write_text("train: 3\n")
    expect_error(capsys, ["train", "--config", cfg, *out], str(cfg), "section 'train' must be a mapping")
    cfg.write_text("train:\n  lr: [0.1,\n")
    expect_error(capsys, ["train", "--config", cfg, *out], str(cfg), "invalid YAML at line 3")


def test_wrong_type_override(tmp_path, capsys):
    expect_error(capsys, ["train", *TINY, "--out", tmp_path / "o", "train.batch_size=big"],
                 "key 'train.batch_size' expects int, got 'big'")
    expect_error(capsys, ["train", *TINY, "--out", tmp_path / "o", "model.cell=transformer"],
                 "model.cell='transformer' is not one of 'lstm', 'gru'")
    # NaN passes every "> 0" comparison: without a check it reached torch (or trained on NaN)
    expect_error(capsys, ["train", *TINY, "--out", tmp_path / "o", "train.lr=.nan"],
                 "key 'train.lr' must be a finite number, got nan")
    expect_error(capsys, ["train", *TINY, "--out", tmp_path / "o", "model.logvar_max=.inf"],
                 "key 'model.logvar_max' must be a finite number, got inf")


# --------------------------------------------------------------------------- property: round trips

_names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
_unit = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def config_dicts(draw):
    return {
        "data": {"data_dir": draw(st.none() | _names), "text_field": draw(_names),
                 "label_field": draw(st.none() | _names), "max_len": draw(st.integers(1, 10_000)),
                 "long_policy": draw(st.sampled_from(["truncate", "drop"])),
                 "splits": {"train": draw(_names), "valid": draw(_names), "test": draw(_names)}},
        "tokenizer": {"kind": draw(st.sampled_from(["word", "sentencepiece"])), "lowercase": draw(st.booleans()),
                      "max_vocab": draw(st.none() | st.integers(1, 10**6)),
                      "character_coverage": draw(st.floats(1e-6, 1.0))},
        "model": {"cell": draw(st.sampled_from(["lstm", "gru"])), "latent_dim": draw(st.integers(0, 512)),
                  "bidirectional": draw(st.booleans()), "word_dropout": draw(_unit),
                  "emb_dropout": draw(st.floats(0.0, 1.0, exclude_max=True))},
        "objective": {"kl_schedule": draw(st.sampled_from(["constant", "linear", "logistic", "cyclical"])),
                      "free_bits": draw(st.floats(0.0, 100.0)), "cycle_steps": draw(st.none() | st.integers(1, 10**7))},
        "train": {"lr": draw(st.floats(1e-12, 10.0)), "max_steps": draw(st.none() | st.integers(1, 10**9)),
                  "batch_size": draw(st.integers(1, 4096)), "seed": draw(st.integers(-2**63, 2**63 - 1)),
                  "nonfinite": draw(st.sampled_from(["stop", "skip"])),
                  "device": draw(st.sampled_from(["auto", "cpu", "cuda:1"]))},
    }


@settings(max_examples=60, deadline=None)
@given(d=config_dicts())
def test_config_round_trips_through_dict_json_and_yaml(d, tmp_path_factory):
    """Valid values of several fields in every section: Config -> to_dict -> from_dict, -> save (JSON)
    -> load_config, and -> YAML -> load_config all give back the same Config and the given values."""
    cfg = Config.from_dict(d)
    assert Config.from_dict(cfg.to_dict()) == cfg
    for k, section in d.items():  # what was given is what is kept
        assert {key: getattr(getattr(cfg, k), key) for key in section} == section
    tmp = tmp_path_factory.mktemp("cfg")
    cfg.save(tmp / "c.json")
    assert load_config(config_file=str(tmp / "c.json")) == cfg
    (tmp / "c.yaml").write_text(yaml.safe_dump(cfg.to_dict()))  # non-ASCII escaped, as PyYAML does by default
    assert load_config(config_file=str(tmp / "c.yaml")) == cfg


def test_labelled_ratio_needs_a_batch_of_two():
    # M2's mixed batches hold at least one labelled and one unlabelled example; with batch_size=1
    # the sampler crashed at start-up (numpy: need at least one array to concatenate)
    with pytest.raises(ConfigError, match=r"train.labelled_ratio=0.5 needs train.batch_size >= 2"):
        load_config(preset="tiny", overrides=["model.conditional=true", "model.classifier=true",
                                              "data.labelled_per_class=3", "train.labelled_ratio=0.5",
                                              "train.batch_size=1"])


def test_a_seed_beyond_64_bits_is_refused():
    # torch's generators take 64 bits: 2**64 - 1 was accepted, then the run failed at start-up with
    # a bare "ValueError: Overflow when unpacking long long" (seed + 1 seeds the noise generator)
    with pytest.raises(ConfigError, match=r"train.seed=18446744073709551615 must be in \[-2\*\*63, 2\*\*63\)"):
        load_config(preset="tiny", overrides=["train.seed=18446744073709551615"])
    assert load_config(preset="tiny", overrides=["train.seed=-5"]).train.seed == -5


def test_a_floor_above_the_learning_rate_is_refused():
    # decay_lr keeps max(min_lr, lr * lr_decay): with min_lr above lr the first "decay" raised the
    # learning rate to min_lr (here tenfold)
    with pytest.raises(ConfigError, match=r"train.min_lr=0.01 is above train.lr=0.001"):
        load_config(preset="tiny", overrides=["train.lr=0.001", "train.min_lr=0.01"])
    assert load_config(preset="tiny", overrides=["train.lr=0.001", "train.min_lr=0.001"]).train.min_lr == 0.001


def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path):
    # PyYAML and json keep the last of two equal keys: a second `train:` section silently dropped the
    # first (its lr here), and `lr` twice kept whichever came last
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.5\nmodel:\n  latent_dim: 8\ntrain:\n  max_steps: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml: invalid YAML at line 5, column 1: key 'train' is given twice "
                                          r"in one mapping \(first at line 1\)"):
        load_config(config_file=str(path))
    path.write_text("train:\n  lr: 0.5\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"line 3, column 3: key 'lr' is given twice"):
        load_config(config_file=str(path))
    path = tmp_path / "c.json"
    path.write_text('{"train": {"lr": 0.5, "lr": 0.1}}')
    with pytest.raises(ConfigError, match=r"c.json: invalid JSON: key 'lr' is given twice in one object"):
        load_config(config_file=str(path))
    with pytest.raises(ConfigError, match=r"override 'model.id2label=\{0: a, 0: b\}': key 0 is given twice"):
        load_config(overrides=["model.id2label={0: a, 0: b}"])
    # a << merge's keys may still be overridden, as YAML intends
    path = tmp_path / "merge.yaml"
    path.write_text("train:\n  <<: {lr: 0.5, max_steps: 3}\n  lr: 0.2\n")
    cfg = load_config(config_file=str(path))
    assert (cfg.train.lr, cfg.train.max_steps) == (0.2, 3)


def test_a_config_file_saved_with_a_byte_order_mark_loads(tmp_path):
    # Windows editors save UTF-8 with a BOM; PyYAML skipped it but json refused the file
    # ("Unexpected UTF-8 BOM (decode using utf-8-sig)")
    for name, text in (("c.json", '{"train": {"lr": 0.5}}'), ("c.yaml", "train:\n  lr: 0.5\n")):
        path = tmp_path / name
        path.write_text("\ufeff" + text, encoding="utf-8")
        assert load_config(config_file=str(path)).train.lr == 0.5


def test_a_tab_in_a_yaml_config_file_is_named_with_its_fix(tmp_path):
    # PyYAML's "found character '\t' that cannot start any token" does not say what to do
    path = tmp_path / "c.yaml"
    path.write_text("train:\n\tlr: 0.5\n")
    with pytest.raises(ConfigError, match=r"c.yaml: invalid YAML at line 2, column 1: found character '\\t' that "
                                          r"cannot start any token \(a tab: YAML files need spaces there; replace "
                                          r"the tabs with spaces\)"):
        load_config(config_file=str(path))


def test_a_key_that_is_not_a_string_is_an_unknown_key_not_a_traceback(tmp_path):
    # YAML reads `1:` or `~:` as a number or null key: the unknown-key message concatenated it to a str
    # and stopped with a bare "TypeError: can only concatenate str (not "int") to str"
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  1: 0.5\n  ~: 2\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'train.1', 'train.None'; valid keys in train:"):
        load_config(config_file=str(path))
    path.write_text("3: {lr: 1}\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) '3'; valid keys: data, model"):
        load_config(config_file=str(path))


def test_a_cuda_device_needs_a_device_number():
    # anything after "cuda:" was accepted: on a GPU machine torch.device then stopped the run with a bare
    # "RuntimeError: Invalid device string: 'cuda:x'", on a CPU one the error said CUDA was not available
    for device in ("cuda:x", "cuda:", "cuda:-1", "cuda:0 ", "cuda:01"):
        with pytest.raises(ConfigError, match=rf"train.device='{device}' is not one of 'auto', 'cpu', 'cuda', "
                                              rf"'cuda:N'"):
            load_config(preset="tiny", overrides=[f"train.device='{device}'"])
    assert load_config(preset="tiny", overrides=["train.device=cuda:1"]).train.device == "cuda:1"


def test_a_hash_in_an_override_value_is_kept_not_read_as_a_comment():
    # YAML reads " #" as the start of a comment: data.data_dir=/data/run #2 became '/data/run' (another
    # folder, silently), data.text_field=#tweet became null ("expects str, got None")
    cfg = load_config(overrides=["data.data_dir=/data/run #2", "data.text_field=#tweet", "data.label_field=a#b"])
    assert (cfg.data.data_dir, cfg.data.text_field, cfg.data.label_field) == ("/data/run #2", "#tweet", "a#b")
    with pytest.raises(ConfigError, match=r"key 'train.lr' expects float, got '0.1 # ten times'"):
        load_config(overrides=["train.lr=0.1 # ten times"])
    assert load_config(overrides=['data.data_dir="/data/run #2"']).data.data_dir == "/data/run #2"


def test_none_written_as_in_python_names_yamls_null():
    # YAML reads None as the string 'None': "expects int, got 'None' (str)" said neither that the key
    # takes null nor how to write it
    with pytest.raises(ConfigError, match=r"key 'train.max_steps' expects int or null, got the string 'None'; "
                                          r"YAML writes None as null \(or ~\): train.max_steps=null"):
        load_config(overrides=["train.max_steps=None"])
    with pytest.raises(ConfigError, match=r"key 'model.id2label' expects dict or null"):
        load_config(overrides=["model.id2label=none"])
    assert load_config(overrides=["train.max_steps=null"]).train.max_steps is None
    assert load_config(overrides=["data.label_field=None"]).data.label_field == "None"  # a str may be 'None'


# --------------------------------------------------------------------------- experiments/ rows and tables

ROW = "name: r\nmethod: M\npaper: p\n"


def _table(tmp_path, table="", row=ROW, rows=None):
    """A table folder in tmp_path: table.yaml ("table: t, title: T" + ``table``) and its row files."""
    (tmp_path / "table.yaml").write_text("table: t\ntitle: T\n" + table, encoding="utf-8")
    for name, text in ({"r.yaml": row} if rows is None else rows).items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_experiment_files_are_read_as_config_files_are(tmp_path):
    from textvae.experiments import load_experiment, load_table

    row = tmp_path / "r.yaml"
    # a key given twice kept the last silently: here the row trained seed 2 alone
    row.write_text(ROW + "seeds: [1]\nseeds: [2]\n")
    with pytest.raises(ConfigError, match=r"r.yaml: invalid YAML at line 5, column 1: key 'seeds' is given twice"):
        load_experiment(row)
    # PyYAML's own three-line message with a caret, without the line in the heading
    row.write_text(ROW + "overrides:\n\t- model.cell=gru\n")
    with pytest.raises(ConfigError, match=r"experiment file .*r.yaml: invalid YAML at line 5, column 1: found "
                                          r"character '\\t' that cannot start any token \(a tab"):
        load_experiment(row)
    # latin-1 text stopped the runner with a bare UnicodeDecodeError
    row.write_bytes(ROW.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"r.yaml is not UTF-8 text \(invalid continuation byte at byte 32\)"):
        load_table(_table(tmp_path, rows={}))


def test_experiment_values_of_the_wrong_kind_are_all_named(tmp_path):
    from textvae.experiments import load_experiment, load_table

    row = tmp_path / "r.yaml"
    # seeds: 3 and seeds: (null) were bare TypeErrors ('int' object is not iterable); overrides: as one
    # string was taken letter by letter (m, o, d, ...); an order that is not a number broke the sorting
    row.write_text("name: r\nmethod: [M]\npaper: p\nseeds: 3\noverrides: model.cell=gru\norder: first\n")
    with pytest.raises(ConfigError) as e:
        load_experiment(row)
    assert str(e.value) == (f"{row}: method must be a string, got ['M']; seeds must be a list of distinct whole "
                            f"numbers (each seed is one run, named after it), got 3; "
                            f"overrides must be a list of section.key=value strings, got 'model.cell=gru'; order must "
                            f"be a number, got 'first'")
    for text, message in (("seeds: [true]", "seeds must be a list of distinct whole numbers (each seed is one run, "
                                           "named after it), got [True]"),
                          ("overrides: [model.cell]", "overrides must be a list of section.key=value strings"),
                          ("evaluation: test", "evaluation must be a mapping, got 'test'"),
                          ("reference: Bowman 2016", "reference must be a mapping or null, got 'Bowman 2016'")):
        row.write_text(ROW + text + "\n")
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_experiment(row)
    # table.yaml: a recipe or summary as one string was taken letter by letter, an evaluation list or
    # a baseline string stopped the runner or the report later with a bare TypeError
    for text, message in (("recipe: train.lr=1", "recipe must be a list of section.key=value strings"),
                          ("summary: nll_iw", "summary must be a list of strings, got 'nll_iw'"),
                          ("evaluation: [test]", "evaluation must be a mapping, got ['test']"),
                          ("baseline: lstm-lm", "baseline must be a mapping or null, got 'lstm-lm'"),
                          ("data_dir: 3", "data_dir must be a string or null, got 3")):
        with pytest.raises(ConfigError, match=re.escape(f"table.yaml: {message}")):
            load_table(_table(tmp_path, text + "\n"))


def test_a_misspelt_or_wrong_evaluation_setting_is_refused_before_anything_trains(tmp_path):
    from textvae.experiments import load_experiment, load_table

    row = tmp_path / "r.yaml"
    # iw_sample (for iw_samples) was ignored: the row was evaluated with the default 500 samples; a split
    # that is not one was found only after training, when the evaluation asked the corpus for it
    row.write_text(ROW + "evaluation: {iw_sample: 50, split: tset, samples: -1, disentanglement: yes please}\n")
    with pytest.raises(ConfigError) as e:
        load_experiment(row)
    assert str(e.value) == (
        f"{row}: evaluation has an unknown setting 'iw_sample' (valid: split, iw_samples, samples, homotopy_steps, "
        f"diversity_samples, disentanglement); evaluation.split must be train, valid or test, got 'tset'; "
        f"evaluation.samples must be a whole number >= 0, got -1; evaluation.disentanglement must be true or "
        f"false, got 'yes please'")
    with pytest.raises(ConfigError, match=r"table.yaml: evaluation.iw_samples must be a whole number >= 0 \(0: no "
                                          r"importance-weighted NLL\), got 1.5"):
        load_table(_table(tmp_path, "evaluation: {iw_samples: 1.5}\n", row=ROW))
    ok = load_table(_table(tmp_path, "evaluation: {split: valid, iw_samples: 0, disentanglement: true}\n", row=ROW))
    assert ok[0].evaluation == {"split": "valid", "iw_samples": 0, "disentanglement": True}


def test_settings_given_in_epochs_are_checked_when_the_files_load(tmp_path):
    from textvae.experiments import load_experiment, load_table, steps_from_epochs

    row = tmp_path / "r.yaml"
    # these reached steps_from_epochs only when the row's run started (after the rows before it had
    # trained): a bare TypeError for a number written as text, KeyError 'epochs' for a misspelt key;
    # a negative number of epochs became 1 step
    row.write_text(ROW + "steps_from_epochs:\n  train.eval_every: half\n  objective.pretrain_ae_steps: {epoch: 2}\n"
                         "  objective.kl_warmup_steps: -1\n  eval_every: 1\n"
                         "  train.checkpoint_every: {epochs: 1, max_fraction_of_run: 2}\n")
    with pytest.raises(ConfigError) as e:
        load_experiment(row)
    assert str(e.value) == (
        f"{row}: steps_from_epochs.train.eval_every must be a number of epochs > 0 (or {{epochs: N, "
        f"max_fraction_of_run: F}}), got 'half'; steps_from_epochs.objective.pretrain_ae_steps takes epochs and "
        f"optionally max_fraction_of_run, got {{'epoch': 2}}; steps_from_epochs.objective.kl_warmup_steps must be a "
        f"number of epochs > 0 (or {{epochs: N, max_fraction_of_run: F}}), got -1; steps_from_epochs has the key "
        f"'eval_every'; each key is a section.key setting (train.eval_every); "
        f"steps_from_epochs.train.checkpoint_every.max_fraction_of_run must be in (0, 1] or null, got 2")
    with pytest.raises(ConfigError, match=r"table.yaml: steps_from_epochs must be a mapping, got 3"):
        load_table(_table(tmp_path, "steps_from_epochs: 3\n", row=ROW))
    row.write_text(ROW + "steps_from_epochs: {objective.pretrain_ae_steps: {epochs: 20, max_fraction_of_run: 0.5}}\n")
    t, rows = load_table(_table(tmp_path, "steps_from_epochs: {train.eval_every: 0.5}\n", rows={}))
    assert steps_from_epochs(t, rows[0], 100, 1000) == ["train.eval_every=50", "objective.pretrain_ae_steps=500"]


def test_the_baseline_goal_is_checked_when_the_table_loads(tmp_path):
    from textvae.experiments import load_table

    # max_pl (for max_ppl) was ignored, so the goal had no PPL bound; a baseline row that no file
    # defines (a typo, a renamed row) left the page without its goal section, silently
    with pytest.raises(ConfigError) as e:
        load_table(_table(tmp_path, "baseline: {row: r, max_pl: 100, min_kl: five}\n"))
    assert str(e.value) == (f"{tmp_path / 'table.yaml'}: baseline has an unknown key 'max_pl' (valid: row, min_kl, "
                            f"min_au, max_ppl); baseline.min_kl must be a number of nats (default 5), got 'five'")
    with pytest.raises(ConfigError, match=r"baseline needs row"):
        load_table(_table(tmp_path, "baseline: {max_ppl: 100}\n"))
    with pytest.raises(ConfigError, match=r"baseline names the row 'lstm-lm', which no file in .* defines \(rows: r\)"):
        load_table(_table(tmp_path, "baseline: {row: lstm-lm}\n"))
    table = load_table(_table(tmp_path, "baseline: {row: r, max_ppl: null}\n"))[0]
    assert table.baseline == {"row": "r", "max_ppl": None}


def test_a_seed_given_twice_or_a_name_that_is_not_a_plain_id_is_refused(tmp_path):
    from textvae.experiments import load_experiment, load_table

    row = tmp_path / "r.yaml"
    # seeds: [1, 1] made two runs both named r-seed1, trained (and recorded) in one run directory
    row.write_text(ROW + "seeds: [1, 2, 1]\n")
    with pytest.raises(ConfigError, match=r"seeds must be a list of distinct whole numbers \(each seed is one run, "
                                          r"named after it\), got \[1, 2, 1\]"):
        load_experiment(row)
    # a row's name is a folder under runs/<table>/ and a table's a file under results/: '../x' wrote
    # outside them, 'a/b' into a sub-folder, 'a,b' could not be picked with --rows a,b, '' was runs/<table>
    for name in ("../x", "a/b", "a,b", "''", "my row", ".hidden"):
        row.write_text(f"name: {name}\nmethod: M\npaper: p\n")
        with pytest.raises(ConfigError, match=r"name must be a name of letters, digits and \. _ \+ - \(starting with "
                                              r"a letter or digit\)"):
            load_experiment(row)
    (tmp_path / "table.yaml").write_text("table: ../ptb\ntitle: T\n")
    with pytest.raises(ConfigError, match=r"table.yaml: table must be a name of letters"):
        load_table(tmp_path)
    row.write_text("name: beta-vae-0.4_b+1\nmethod: M\npaper: p\nseeds: [3, 1]\n")
    assert load_experiment(row).runs() == [("beta-vae-0.4_b+1-seed3", 3), ("beta-vae-0.4_b+1-seed1", 1)]


def test_a_row_saved_as_yml_is_not_left_out_silently(tmp_path):
    from textvae.experiments import load_table

    # the rows are the folder's *.yaml files: a row saved as bn-vae.yml was not run, not listed, not reported
    _table(tmp_path, rows={"r.yaml": ROW, "bn-vae.yml": "name: bn-vae\nmethod: BN-VAE\npaper: p\n"})
    with pytest.raises(ConfigError, match=r"bn-vae.yml: a table's rows are the .yaml files of its folder; rename it "
                                          r"to end in .yaml"):
        load_table(tmp_path)
    (tmp_path / "bn-vae.yml").rename(tmp_path / "bn-vae.yaml")
    (tmp_path / "README.md").write_text("notes\n")  # other files are not rows, as before
    assert [r.name for r in load_table(tmp_path)[1]] == ["bn-vae", "r"]


def test_a_format_1_key_is_unknown_outside_a_format_1_config_file(tmp_path):
    # format 1's model.num_labels (now len(model.id2label)) was dropped from every config, so
    # model.num_labels=5 or num_labels: 5 in one's own YAML was accepted and did nothing
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'model.num_labels'; valid keys in model:"):
        load_config(overrides=["model.num_labels=5"])
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  num_labels: 5\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'model.num_labels'"):
        load_config(config_file=str(path))
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"format_version": 2, "model": {"num_labels": 5}}))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'model.num_labels'"):
        load_config(config_file=str(path))
    path.write_text(json.dumps({"format_version": 1, "model": {"num_labels": 0}}))  # a saved format-1 config
    assert load_config(config_file=str(path)) == Config()


def test_sampling_settings_of_the_wrong_type_are_a_config_error():
    from textvae.config import SampleConfig

    # SampleConfig(temperature="0.7") stopped with a bare TypeError ('<' not supported between 'str' and
    # 'int'), max_len=10.0 with one from range() at the first sample, and greedy="no" decoded greedily
    with pytest.raises(ConfigError) as e:
        SampleConfig(max_len=10.0, temperature="0.7", top_p=None, greedy="no", beam=True, form=5)
    assert str(e.value) == ("invalid sampling settings: max_len=10.0 must be a whole number; beam=True must be a whole "
                            "number; temperature='0.7' must be a number; top_p=None must be a number; greedy='no' must "
                            "be True or False; form=5 must be a string \"LxN\" or None")
    import numpy as np

    assert SampleConfig(max_len=np.int64(7), temperature=np.float32(0.5), top_p=1, form="5x4").max_len == 7


def test_a_config_built_in_python_with_values_of_the_wrong_type_is_a_config_error():
    from textvae.config import DataConfig, TrainConfig

    # load_config coerces a file's values; a Config built in Python was only checked for values: lr="0.1"
    # stopped with a bare TypeError ('<' not supported), max_steps=5.5 trained to step 6, progress="no"
    # showed the bar, factor_fields="topic,tense" read five one-letter factors and a comma
    with pytest.raises(ConfigError) as e:
        Config(data=DataConfig(factor_fields="topic,tense"), train=TrainConfig(lr="0.1", max_steps=5.5, progress="no"))
    assert str(e.value) == ("invalid configuration:\n  - data.factor_fields='topic,tense' is not of type list[str]\n"
                            "  - train.max_steps=5.5 is not of type int | None\n  - train.lr='0.1' is not of type "
                            "float\n  - train.progress='no' is not of type bool")
    with pytest.raises(ConfigError, match=r"train must be a TrainConfig, got \{'lr': 1\}"):
        Config(train={"lr": 1})
    assert Config(train=TrainConfig(lr=1, max_minutes=2)).train.lr == 1  # an int is a float, as in a file


def test_a_folder_given_as_the_config_file_names_the_file_in_it(tmp_path, capsys):
    # --config runs/demo (the run, not its config.json) stopped with a bare IsADirectoryError traceback
    Config().save(tmp_path / "config.json")
    with pytest.raises(ConfigError, match=rf"config file {tmp_path} is a folder, not a YAML or JSON file; the file in "
                                          rf"it is {tmp_path / 'config.json'}$"):
        load_config(config_file=str(tmp_path))
    expect_error(capsys, ["train", "--config", tmp_path, "--out", tmp_path / "o"],
                 "is a folder, not a YAML or JSON file")


def test_a_compare_entry_naming_rows_with_lists_is_a_config_error(tmp_path):
    from textvae.experiments import load_table

    # baseline: [r] or rows: [[r]] stopped load_table with a bare TypeError (unhashable type: 'list')
    for entry in ("{metric: kl, baseline: [r], better: lower}", "{metric: kl, baseline: r, better: lower, rows: [[r]]}",
                  "{metric: [kl], baseline: r, better: lower}"):
        with pytest.raises(ConfigError, match=r"table.yaml: each compare entry needs exactly baseline, better, metric "
                                              r"with better: higher or lower, a metric and a baseline row name"):
            load_table(_table(tmp_path, f"compare: [{entry}]\n"))


def test_yaml_booleans_and_dates_for_a_text_key_say_to_quote_them(tmp_path):
    # data.splits.valid=no or a hub config named by a date gave "expects str, got False (bool)": true of
    # YAML 1.1, but not what the user wrote nor how to write it
    with pytest.raises(ConfigError, match=r"key 'data.splits.valid' expects str, got False \(bool\): YAML reads "
                                          r"yes/no/on/off/true/false as true or false and YYYY-MM-DD as a date; for "
                                          r"the text, quote it as written, e.g. data.splits.valid='yes'"):
        load_config(overrides=["data.splits.valid=no"])
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  dataset: wikimedia/wikipedia\n  dataset_config: 2023-11-01\n")
    with pytest.raises(ConfigError, match=r"'data.dataset_config' expects str, got datetime.date\(2023, 11, 1\) "
                                          r"\(date\): .* e.g. data.dataset_config='2023-11-01'"):
        load_config(config_file=str(path))
    assert load_config(overrides=["data.splits.valid='no'"]).data.splits["valid"] == "no"


def test_saving_a_config_is_atomic(tmp_path, monkeypatch):
    # Config.save wrote config.json in place: a run killed (or a disk filling up) while the trainer saved
    # it left a cut file, and --resume then stopped on "invalid JSON"; it now uses checkpoint.atomic_write
    import os

    path = tmp_path / "config.json"
    Config().save(path)

    def disk_full(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="disk full"):
        load_config(preset="tiny").save(path)
    assert load_config(config_file=str(path)) == Config() and [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_a_models_config_json_given_as_the_config_names_the_runs(tmp_path):
    # --config RUN/best/config.json (the model's, which save_pretrained writes) said only "unknown key(s)
    # 'tokenizer_fingerprint'", as if one key were misspelt
    Config().save(tmp_path / "config.json")
    model = tmp_path / "best" / "config.json"
    model.parent.mkdir()
    model.write_text(json.dumps({"format_version": 2, "model": {}, "tokenizer_fingerprint": "ab", "data": {}}))
    with pytest.raises(ConfigError, match=rf"config file {model} is a model's config.json \(save_pretrained's: its "
                                          rf"model and data settings, without the tokenizer, objective and train "
                                          rf"sections a run needs\); give --config a run's config.json "
                                          rf"\({tmp_path / 'config.json'}, the run this model was saved by\)"):
        load_config(config_file=str(model))


def test_a_number_given_to_a_text_key_on_the_command_line_is_kept_as_written():
    # YAML 1.1 reads 010 as 8 (octal), 1:30 as 90 (base 60), 0x1F as 31 and 1.10 as 1.1, and the text key
    # then took str() of that number: data.splits.valid=010 read the split '8'
    cfg = load_config(overrides=["data.splits.valid=010", "data.dataset_config=1.10", "data.text_field=1:30",
                                 "data.label_field=0x1F", "model.id2label.0=007"])
    assert (cfg.data.splits["valid"], cfg.data.dataset_config, cfg.data.text_field, cfg.data.label_field,
            cfg.model.id2label) == ("010", "1.10", "1:30", "0x1F", {0: "007"})
    # number keys read the number as before, as plain int and float
    cfg = load_config(overrides=["train.lr=1.10", "train.max_steps=1e3", "train.seed=0x10"])
    assert (cfg.train.lr, cfg.train.max_steps, cfg.train.seed) == (1.1, 1000, 16)
    assert type(cfg.train.lr) is float and type(cfg.train.max_steps) is int and type(cfg.train.seed) is int
    with pytest.raises(ConfigError, match=r"key 'train.progress' expects bool, got 1 \(int\)"):
        load_config(overrides=["train.progress=1"])


def test_two_rows_whose_runs_share_a_name_are_refused(tmp_path):
    from textvae.experiments import load_table

    # row a with seeds [1, 2] runs a-seed1 and a-seed2; a row named a-seed1 (one seed) runs a-seed1 too:
    # both trained, resumed and recorded in runs/t/a-seed1 as if one run
    _table(tmp_path, rows={"a.yaml": "name: a\nmethod: A\npaper: p\nseeds: [1, 2]\n",
                           "b.yaml": "name: a-seed1\nmethod: B\npaper: p\n"})
    with pytest.raises(ConfigError, match=r"row 'a-seed1' and row 'a' both have a run named 'a-seed1' "
                                          r"\(runs/t/a-seed1\): rename one of the rows"):
        load_table(tmp_path)
