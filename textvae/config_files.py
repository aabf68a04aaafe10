"""Reading a config: presets, YAML/JSON files and ``key=value`` overrides, merged into one
:class:`~textvae.config.Config` by :func:`load_config`.

Files are read strictly: a key given twice in a YAML mapping or a JSON object is an error, as are
invalid YAML/JSON (with the line and column), a folder, a non-UTF-8 file and a top level that is not
a mapping of sections. Overrides are YAML scalars (``train.lr=3e-4``, ``model.cell=gru``); a dotted
key into a mapping field (``data.splits.valid=dev``) changes that one entry, and the environment
variable ``TEXTVAE_OVERRIDES`` adds overrides after all others. The dataclasses, their validation
and the coercion of values to field types are in :mod:`textvae.config`.
"""

import dataclasses
import json
import os
import typing
from importlib import resources
from pathlib import Path

import yaml

from .config import Config, _raise_gathered, _WrittenFloat, _WrittenInt
from .errors import ConfigError


def list_presets() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("textvae.presets").iterdir() if p.name.endswith(".yaml"))


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A YAML mapping names one key twice."""


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no object tags, nothing executed) that refuses a key given twice in one
    mapping, where PyYAML keeps the last silently (a second ``train:`` section would drop the first).
    Keys brought in by a ``<<`` merge may be overridden, as YAML intends."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not key_node.start_mark:
                    raise DuplicateKeyError(
                        None, None, f"key {key!r} is given twice in one mapping (first at line {first.line + 1}); "
                        f"keep one", key_node.start_mark)
        return super().construct_mapping(node, deep)


def load_yaml(text: str):
    """``text`` parsed as YAML by :class:`UniqueKeyLoader`."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)


def yaml_problem(e: yaml.YAMLError) -> str:
    """Where and what a YAML error is, in one line: "at line 3, column 1: found character ..."."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(e, "problem", None) or str(e)
    if "'\\t'" in problem:  # PyYAML: "found character '\\t' that cannot start any token"
        problem += " (a tab: YAML files need spaces there; replace the tabs with spaces)"
    return f"{where}: {problem}"


class _DuplicateJSONKey(Exception):
    pass


def _unique_json_object(pairs: list) -> dict:
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateJSONKey(k)
        out[k] = v
    return out


def _read_mapping(path: Path, source: str) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:  # --config runs/demo, for the run's config.json
        inside = f"; the file in it is {path / 'config.json'}" if (path / "config.json").is_file() else ""
        raise ConfigError(f"config file {path} is a folder, not a YAML or JSON file{inside}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    text = text.removeprefix("\ufeff")  # a byte-order mark (Notepad writes one): not part of the JSON or YAML
    try:
        if path.suffix == ".json":
            d = json.loads(text, object_pairs_hook=_unique_json_object)
        else:
            d = load_yaml(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except _DuplicateJSONKey as e:
        raise ConfigError(f"{source}: invalid JSON: key {e.args[0]!r} is given twice in one object; keep one") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML{yaml_problem(e)}") from None
    if d is None:  # an empty file
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections (data, tokenizer, model, "
                          f"objective, train), got {type(d).__name__} {d!r:.60}")
    return d


def preset_dict(name: str) -> dict:
    path = resources.files("textvae.presets") / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available presets: {', '.join(list_presets())}")
    return _read_mapping(Path(str(path)), f"preset {name!r}")


def _merge(base: dict, extra: dict, cls=None) -> dict:
    """``extra`` on top of ``base``, section by section. Under a config dataclass ``cls`` a mapping
    field (``data.splits``, ``model.id2label``) given by ``extra`` replaces the whole mapping, as a
    file names every entry; without ``cls`` (overrides) mappings merge entry by entry."""
    out = dict(base)
    hints = typing.get_type_hints(cls) if cls is not None else {}
    for k, v in extra.items():
        field_type = hints.get(k)
        nested = field_type if dataclasses.is_dataclass(field_type) else None
        replaces = cls is not None and nested is None
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not replaces:
            out[k] = _merge(out[k], v, nested if cls is not None else None)
        else:
            out[k] = v
    return out


def _mapping_defaults(overrides: dict, cls=None, defaults=None) -> dict:
    """The default value of every mapping field that ``overrides`` reaches into (e.g. the default
    ``data.splits`` for ``data.splits.valid=X``), nested as the overrides are, so that one entry
    changes and the others keep their defaults unless a file names them."""
    cls = cls or Config
    defaults = defaults if defaults is not None else cls()
    hints, out = typing.get_type_hints(cls), {}
    for k, v in overrides.items():
        if not isinstance(v, dict) or k not in hints:
            continue
        value = getattr(defaults, k)
        if dataclasses.is_dataclass(hints[k]):
            inner = _mapping_defaults(v, hints[k], value)
            if inner:
                out[k] = inner
        elif isinstance(value, dict):
            out[k] = dict(value)
    return out


def parse_overrides(items: list[str]) -> dict:
    """``["train.lr=0.01", "model.cell=gru"]`` -> nested dict; values parsed as YAML scalars, except
    that a ``#`` is part of the value, never a comment. Every malformed item is listed in one ConfigError."""
    out: dict = {}
    problems = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(f"override {item!r} is not of the form section.key=value (e.g. train.max_steps=300)")
            continue
        try:
            value = load_yaml(raw) if raw != "" else ""
        except DuplicateKeyError as e:  # {a: 1, a: 2}: say so, rather than take the text as a string
            problems.append(f"override {item!r}: {e.problem}")
            continue
        except yaml.YAMLError:
            value = raw
        else:
            if "#" in raw and _drops_a_comment(raw):  # a value is never a comment: /data/run #2 is the path
                value = raw
            value = _written(value, raw)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"override {item!r} conflicts with an earlier override of {part!r}")
                break
        else:
            node[parts[-1]] = value
    if problems:
        _raise_gathered(problems, "overrides")
    return out


def _drops_a_comment(raw: str) -> bool:
    """Whether YAML reads part of ``raw`` as a comment: all of it (``#x``) or the end (``/a #b``)."""
    node = yaml.compose(raw, Loader=UniqueKeyLoader)
    return node is None or bool(raw[node.end_mark.index:].strip())


def _written(value, raw: str):
    """``value`` as parsed from the override text ``raw``, a number remembering ``raw``."""
    kind = {int: _WrittenInt, float: _WrittenFloat}.get(type(value))
    if kind is None:
        return value
    out = kind(value)
    out.text = raw.strip()
    return out


OVERRIDES_ENV = "TEXTVAE_OVERRIDES"


def load_config(preset: str | None = None, config_file: str | None = None,
                overrides: list[str] | None = None) -> Config:
    """Build a Config from a preset or a YAML/JSON file, then apply ``key=value`` overrides.

    A dotted key into a mapping (``data.splits.valid=dev``) changes that one entry. After all
    others come the space-separated ``key=value`` overrides of the environment variable
    ``TEXTVAE_OVERRIDES``, e.g. ``TEXTVAE_OVERRIDES="train.max_steps=5 data.builtin_size=300"``:
    the documentation's tests use it to run every documented command at a small size.
    An empty config file is an error, not the defaults.
    """
    if preset and config_file:
        raise ConfigError("give either --preset or --config, not both")
    base: dict = {}
    source = "defaults"
    if preset:
        base, source = preset_dict(preset), f"preset {preset!r}"
    elif config_file:
        base, source = _read_mapping(Path(config_file), f"config file {config_file}"), f"config file {config_file}"
        if not base:
            raise ConfigError(f"config file {config_file} is empty (no sections); write at least one section "
                              f"(data, tokenizer, model, objective, train), or leave out --config to use the "
                              f"defaults")
        if "tokenizer_fingerprint" in base:  # what save_pretrained writes: a model's settings, not a run's
            runs = [d / "config.json" for d in Path(config_file).resolve().parents[1:3]
                    if (d / "config.json").is_file()]
            mine = f" ({runs[0]}, the run this model was saved by)" if runs else ""
            raise ConfigError(f"config file {config_file} is a model's config.json (save_pretrained's: its model "
                              f"and data settings, without the tokenizer, objective and train sections a run "
                              f"needs); give --config a run's config.json{mine} or a config file of your own")
    env = os.environ.get(OVERRIDES_ENV, "").split()
    items = list(overrides or []) + env
    overrides_dict = parse_overrides(items)
    merged = _merge(_merge(_mapping_defaults(overrides_dict), base, Config), overrides_dict)
    if items:
        source += " with overrides" + (f" (and {OVERRIDES_ENV}={' '.join(env)!r})" if env else "")
    return Config.from_dict(merged, source)
