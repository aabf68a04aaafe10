"""docs/configuration.md, generated from the config dataclasses of :mod:`textvae.config`.

Each key's type and default come from the dataclass field; its meaning from the comments beside and
above the field in config.py (read with :mod:`tokenize`, so the source stays the one place to write
them). Refresh the committed page with::

    python -m textvae.config_docs docs/configuration.md
"""

import ast
import dataclasses
import io
import sys
import tokenize
from importlib import resources
from pathlib import Path

from . import config

SECTIONS = {"data": config.DataConfig, "tokenizer": config.TokenizerConfig, "model": config.ModelConfig,
            "objective": config.ObjectiveConfig, "train": config.TrainConfig}
REFRESH = "python -m textvae.config_docs docs/configuration.md"

HEADER = f"""# Configuration

<!-- generated from textvae/config.py by `{REFRESH}`; edit the comments there, not this file -->

A run is one config with five sections. Set keys in a YAML/JSON file (`textvae train --config FILE`),
start from a preset (`textvae train --preset NAME`; `textvae presets` lists them), and override any
key on the command line as `section.key=value` (values are read as YAML scalars: `null`, not Python's
`None`; `true`, `3e-4`; a list as `a,b` or `[a, b]`; a `#` is part of the value, not a comment).
A misspelt key or a wrong type is an error that lists every problem at once; a key given twice in a
file is an error too. Overrides in the
environment variable `TEXTVAE_OVERRIDES` (space-separated `key=value`) are applied after all others;
the documentation's examples run with `TEXTVAE_OVERRIDES="train.max_steps=5 data.builtin_size=300"`.
"""

SAMPLE_HEADER = """## Decoding: `SampleConfig`

Generation settings are not part of the model or the run: `textvae sample`, `reconstruct` and
`interpolate` take them as flags (`--max-len`, `--temperature`, `--top-p`, `--greedy`, `--beam`,
`--form`), and the Python API as a `SampleConfig`.
"""


def _class_source(cls: type) -> tuple[list[str], dict[int, str], ast.ClassDef]:
    source = Path(sys.modules[cls.__module__].__file__).read_text(encoding="utf-8")
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    return source.splitlines(), comments, node


def _fields(node: ast.ClassDef) -> list[ast.AnnAssign]:
    return [s for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]


def field_comments(cls: type) -> dict[str, str]:
    """The comments of each field of ``cls`` in its source: the full-line comments directly above it,
    its trailing comment, and the comment lines below that continue it (``#`` and then an indent)."""
    lines, comments, node = _class_source(cls)

    def comment_only(n: int) -> bool:  # n is 1-based
        return 1 <= n <= len(lines) and lines[n - 1].lstrip().startswith("#")

    def continuation(n: int) -> bool:  # "#" then an indent: it continues the trailing comment above it
        return comment_only(n) and lines[n - 1].lstrip()[1:].startswith("  ")

    out = {}
    for stmt in _fields(node):
        first = stmt.lineno
        while comment_only(first - 1) and not continuation(first - 1):
            first -= 1
        parts = [comments[n] for n in range(first, stmt.lineno)]
        if stmt.lineno in comments:
            parts.append(comments[stmt.lineno])
            n = stmt.end_lineno + 1
            while continuation(n):
                parts.append(comments[n])
                n += 1
        out[stmt.target.id] = " ".join(p for p in parts if p)
    return out


def field_types(cls: type) -> dict[str, str]:
    """Each field's annotation as written in the source, e.g. ``int | None``."""
    return {s.target.id: ast.unparse(s.annotation) for s in _fields(_class_source(cls)[2])}


def _default(f: dataclasses.Field) -> str:
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict):
        return "`" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def table(cls: type, prefix: str) -> str:
    """A markdown table of ``cls``'s fields: key, type, default, meaning."""
    meanings, types = field_comments(cls), field_types(cls)
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        rows.append(f"| `{prefix}{f.name}` | `{_cell(types[f.name])}` | {_cell(_default(f))} | "
                    f"{_cell(meanings.get(f.name, ''))} |")
    return "\n".join(rows)


def _summary(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split())


def render() -> str:
    """The whole of docs/configuration.md."""
    parts = [HEADER]
    for name, cls in SECTIONS.items():
        parts.append(f"## `{name}`\n\n{_summary(cls)}\n\n{table(cls, name + '.')}\n")
    parts.append(f"{SAMPLE_HEADER}\n{table(config.SampleConfig, '')}\n")
    presets = sorted(p.name[:-5] for p in resources.files("textvae.presets").iterdir() if p.name.endswith(".yaml"))
    parts.append("## Presets\n\nShipped in `textvae/presets/` (each a YAML file over the defaults above): "
                 + ", ".join(f"`{p}`" for p in presets) + ".\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if argv:
        Path(argv[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
