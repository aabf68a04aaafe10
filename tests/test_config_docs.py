"""docs/configuration.md is generated from textvae/config.py and kept fresh."""
import dataclasses
from pathlib import Path

from textvae import config
from textvae.config_docs import REFRESH, SECTIONS, field_comments, field_types, render

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_md_is_fresh():
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == render(), f"docs/configuration.md is stale; refresh it with `{REFRESH}`"


def test_every_key_is_listed_with_its_default():
    text = render()
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f"| `{name}.{f.name}` |" in text
    assert "| `objective.free_bits` | `float` | `0.0` | lambda in nats; 0 disables |" in text
    assert "| `train.max_steps` | `int \\| None` | `null` |" in text


def test_comments_above_beside_and_continuing_a_field():
    comments = field_comments(config.ObjectiveConfig)
    assert comments["free_bits"] == "lambda in nats; 0 disables"
    # a trailing comment continued on an indented comment line below it
    assert comments["aggressive_window"].endswith("it never fires: always max_inner updates")
    # a block of comments above the field, not the continuation of the field before it
    assert comments["pretrain_ae_steps"].startswith("Li et al. (2019)")
    assert comments["pretrain_ae_steps"].endswith("0: no pretraining")
    assert field_types(config.TrainConfig)["max_minutes"] == "float | None"


def test_every_key_has_a_meaning():
    missing = [f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)
               if not field_comments(cls).get(f.name)]
    assert not missing, f"config keys without a comment in textvae/config.py: {missing}"


def test_the_header_says_how_override_values_are_read():
    # the page said only "values are read as YAML scalars": not that None is no null, how a list is
    # written, or that a # stays in the value (which YAML would take for a comment)
    from textvae.config_files import load_config
    from textvae.config_docs import HEADER

    text = " ".join(HEADER.split())
    assert ("`null`, not Python's `None`; `true`, `3e-4`; a list as `a,b` or `[a, b]`; a `#` is part of the value, "
            "not a comment") in text
    assert "a key given twice in a file is an error too" in text
    cfg = load_config(overrides=["data.factor_fields=a,b", "data.label_field=x #1", "train.max_steps=null"])
    assert (cfg.data.factor_fields, cfg.data.label_field, cfg.train.max_steps) == (["a", "b"], "x #1", None)
    assert load_config(overrides=["data.factor_fields=[a, b]"]).data.factor_fields == ["a", "b"]
