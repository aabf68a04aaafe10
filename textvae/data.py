"""Corpora through Hugging Face ``datasets``, and their encoding into token ids (batches: textvae.batching).

The data flow, top to bottom::

    load_splits(cfg)            {"train": Dataset("text"[, "label"]), ...}  blank lines skipped, counted
    encode_split(ds, tok, cfg)  EncodedSplit: int32 ids per example (cached by datasets), long ones
                                truncated or dropped, all of it counted in .stats
    textvae.batching            length buckets and collate into padded (B, T) batches

Where the text comes from (the first that is set in :class:`~textvae.config.DataConfig`):

1. ``data_dir``, a folder: ``{s}.txt``, ``ptb.{s}.txt``, ``{s}.jsonl``, ``{s}.json`` or ``{s}.csv``
   for each split's source name ``s = cfg.splits[split]``. Text files hold one example per line
   (labels optional, one per line in ``{s}.labels.txt``); JSON files hold one object per line with
   ``text_field`` (and ``label_field``); CSV files have a header row naming their columns, the text
   in column ``text_field`` (and the label in ``label_field``), read by datasets' csv builder.
   ``data_dir`` may also be one such file, or a folder with only a train file: its lines are split
   into train/valid/test by :func:`split_indices` (``split_ratio``, ``split_seed``), the same lines
   every time, so evaluating a run later sees exactly its test examples.
2. ``dataset``: a Hugging Face dataset name or a local folder ``datasets.load_dataset`` understands.
3. neither: the built-in corpus (:func:`textvae.corpus.builtin_corpus`), labelled by topic, or by the
   factor ``label_field`` names (topic, tense, sentiment or length).

Files are checked in Python before ``datasets`` sees them, so a bad corpus gives a :class:`DataError`
naming the file and line, never a library traceback.
"""

import contextlib
import csv
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from .config import DataConfig
from .errors import DataError
from .tokenizers import load_tokenizer, train_tokenizer


@contextlib.contextmanager
def _quiet():
    """Hide datasets' per-map progress bars (textvae prints its own one-line summaries)."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()

# Tried in this order in data_dir for each split; {s} is the split's source name (cfg.splits[split]).
FILE_PATTERNS = ("{s}.txt", "ptb.{s}.txt", "{s}.jsonl", "{s}.json", "{s}.csv")
SPLITS = ("train", "valid", "test")  # the splits one file is cut into, in split_ratio order
LABELS_PATTERN = "{s}.labels.txt"  # optional labels for a .txt split, one per line
ENCODING_VERSION = 2  # part of the encoding cache key; bump when _encode_batch changes its output (2: a char
# model gives one UNK per unknown character)
_TEXT_FEATURES = datasets.Features({"text": datasets.Value("string")})
_SURROGATE_RE = re.compile("[\ud800-\udfff]")  # in a str only from a JSON escape with no pair


# --------------------------------------------------------------------------- loading

class Splits(dict):
    """``{split name: datasets.Dataset}`` as returned by :func:`load_splits`, plus ``stats``.

    Each Dataset has a ``"text"`` column (stripped, never blank) and, when the source has labels, a
    ``"label"`` column of strings. ``stats[split]`` is ``{"source": where the split was read from,
    "examples": rows kept, "skipped_blank": blank or whitespace-only rows skipped}``.
    """

    def __init__(self, splits: dict[str, datasets.Dataset], stats: dict[str, dict]):
        super().__init__(splits)
        self.stats = stats

    def encode(self, name: str, tokenizer, cfg: DataConfig) -> "EncodedSplit":
        """:func:`encode_split` of split ``name``, its stats counting the blank rows skipped on loading."""
        return encode_split(self[name], tokenizer, cfg, skipped_blank=self.stats[name]["skipped_blank"],
                            what=f"the {name} split ({self.stats[name]['source']})")


def load_splits(cfg: DataConfig, splits=("train", "valid", "test"), cache_dir: str | None = None) -> Splits:
    """Load the requested splits of the corpus ``cfg`` describes (see the module docstring).

    ``cache_dir`` is where ``datasets`` keeps its Arrow files (default: ``HF_DATASETS_CACHE``).
    Leading and trailing whitespace of every example is stripped; blank examples are skipped and
    counted in ``result.stats``. A split with no examples left is a DataError.
    """
    out: dict[str, datasets.Dataset] = {}
    stats: dict[str, dict] = {}
    builtin: dict | None = None  # the built-in corpus, generated once for all splits
    whole: dict = {}  # a file that is split, read once for all splits
    for name in splits:
        if name not in cfg.splits:
            raise DataError(f"unknown split {name!r}; data.splits maps {', '.join(map(repr, cfg.splits))} "
                            f"to source split names")
        if cfg.data_dir:
            raw, source = _from_data_dir(cfg, name, cache_dir, whole)
        elif cfg.dataset:
            raw, source = _from_hub(cfg, name, cache_dir)
        else:
            if builtin is None:
                from .corpus import builtin_corpus  # lazily: generating it costs time

                builtin = builtin_corpus(cfg.builtin_size)
            raw, source = _from_builtin(builtin, name, cfg.builtin_size, cfg.label_field or "topic")
        ds, blank = _clean(*raw, source=source, factors=_factor_columns(cfg, raw[0], source))
        if len(ds) == 0:
            raise DataError(f"the {name} split ({source}) has no examples ({blank} blank lines); "
                            f"add text to it or point data.data_dir / data.dataset at another corpus")
        out[name] = ds
        stats[name] = {"source": source, "examples": len(ds), "skipped_blank": blank}
    return Splits(out, stats)


def _from_data_dir(cfg: DataConfig, name: str, cache_dir: str | None, whole: dict):
    """(dataset, text column, label column, label names), source: the split's file in cfg.data_dir,
    or its part of the one file that is split (``whole`` keeps that file once read)."""
    root = Path(cfg.data_dir).expanduser()
    one = _file_to_split(cfg)
    if one is not None:
        if one not in whole:
            whole[one] = _read_file(one, cfg, cache_dir)
        ds, *columns = whole[one]
        parts = split_indices(len(ds), cfg.split_ratio, cfg.split_seed, source=str(one))
        return (ds.select(parts[name]), *columns), f"{one}, {name} part ({_ratio_text(cfg)})"
    if not root.is_dir():
        raise DataError(f"{root} does not exist; pass --data-dir FOLDER with train.txt, valid.txt, test.txt "
                        f"(or .jsonl, .csv, or Mikolov's ptb.train.txt names), or --data FILE: one .txt, .jsonl "
                        f"or .csv file, split into train/valid/test by data.split_ratio")
    src = cfg.splits[name]
    path = _split_file(root, src)
    if path is None:
        tried = [p.format(s=src) for p in FILE_PATTERNS]
        raise DataError(f"no {name} split in {root}: tried {', '.join(tried)}; add one of these files, "
                        f"map the split to another file name with data.splits.{name}=NAME, or keep only the "
                        f"train file to have it split by data.split_ratio")
    return _read_file(path, cfg, cache_dir), str(path)


def _split_file(root: Path, src: str) -> Path | None:
    """The first of FILE_PATTERNS for source split name ``src`` that is a file in ``root``, or None."""
    return next((root / f for f in (p.format(s=src) for p in FILE_PATTERNS) if (root / f).is_file()), None)


def _file_to_split(cfg: DataConfig) -> Path | None:
    """The one file whose lines make all three splits: ``data_dir`` itself when it is a file, or the
    train file of a folder that has no valid or test file; None when each split has its own file."""
    root = Path(cfg.data_dir).expanduser()
    if root.is_file():
        return root
    if not root.is_dir() or any(_split_file(root, cfg.splits[s]) for s in SPLITS[1:]):
        return None
    return _split_file(root, cfg.splits["train"])


def _ratio_text(cfg: DataConfig) -> str:
    r = cfg.split_ratio
    return f"data.split_ratio {'/'.join(f'{r[s]:g}' for s in SPLITS)}, data.split_seed={cfg.split_seed}"


def describe_source(cfg: DataConfig) -> str:
    """One line saying where the corpus comes from, and when one file is split, how."""
    if cfg.data_dir:
        one = _file_to_split(cfg)
        if one is None:
            return f"{Path(cfg.data_dir).expanduser()} (train, valid and test files)"
        only = "" if Path(cfg.data_dir).expanduser().is_file() else f"only {one.name} in the folder: "
        return f"{one} ({only}its lines split into train/valid/test by {_ratio_text(cfg)})"
    if cfg.dataset:
        return f"dataset {cfg.dataset!r}" + (f" (config {cfg.dataset_config!r})" if cfg.dataset_config else "")
    return f"built-in corpus (data.builtin_size={cfg.builtin_size})"


def split_indices(n: int, ratio: dict[str, float], seed: int = 0, source: str = "the file") -> dict[str, np.ndarray]:
    """Cut rows ``0..n-1`` into ``{"train", "valid", "test"}`` index arrays (each sorted).

    ``ratio`` gives the proportions (normalised to sum 1); valid and test get
    ``max(1, round(n * share))`` rows, train the rest. Which rows go where is fixed by ``seed``
    alone: rows are ordered by SplitMix64's output for (seed, row number), test takes the
    first, valid the next. The hash is plain integer arithmetic, so the split is the same on every
    machine and numpy version: a run's config (split_ratio, split_seed) names its test set. Rows
    appended to a file keep the others where they were, up to the few that sizes move.
    """
    total = sum(ratio[s] for s in SPLITS)
    sizes = {s: max(1, int(np.floor(n * ratio[s] / total + 0.5))) for s in SPLITS[1:]}
    if n - sizes["valid"] - sizes["test"] < 1:
        raise DataError(f"{source} has {n} lines; splitting it into train/valid/test needs at least 3 "
                        f"(train gets {ratio['train'] / total:.0%} of them); add text, or give each split its "
                        f"own file (train.txt, valid.txt, test.txt in a folder)")
    gamma = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment: the state of row i is base + (i + 1) * gamma
    base = _splitmix64(np.array([seed % 2**64], dtype=np.uint64) + gamma)
    key = _splitmix64(base + np.arange(1, n + 1, dtype=np.uint64) * gamma)
    order = np.argsort(key, kind="stable")
    test, valid = order[:sizes["test"]], order[sizes["test"]:sizes["test"] + sizes["valid"]]
    train = order[sizes["test"] + sizes["valid"]:]
    return {"train": np.sort(train), "valid": np.sort(valid), "test": np.sort(test)}


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (Steele, Lea and Flood 2014), element-wise on uint64 (wrapping)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _read_file(path: Path, cfg: DataConfig, cache_dir: str | None):
    """(dataset, text column, label column, label names) of one .txt, .jsonl/.json or .csv file."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        stem = path.name[:-len(".txt")].removeprefix("ptb.")
        return _read_txt(path, path.with_name(LABELS_PATTERN.format(s=stem)), cfg, cache_dir)
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(path, cfg)
    if suffix == ".csv":
        return _read_csv(path, cfg, cache_dir)
    raise DataError(f"{path}: textvae reads .txt (one example per line), .jsonl (one JSON object per line) "
                    f"and .csv (a header row, then one example per row) files, not {path.suffix or 'files without an extension'}; "
                    f"rename it if it is one of these")


def _read_txt(path: Path, labels_path: Path, cfg: DataConfig, cache_dir: str | None):
    """One example per line, through datasets' text loader (Arrow files, cached)."""
    _check_text_file(path, cfg.encoding_errors)
    with open(path, encoding="utf-8-sig", errors=cfg.encoding_errors) as f:
        no_lines = not f.read(1)  # empty, or only a byte-order mark (Notepad's empty file)
    if no_lines:  # datasets' text loader fails on a file with no lines at all
        ds = datasets.Dataset.from_dict({"text": []}, features=_TEXT_FEATURES)
    else:
        with _quiet():
            ds = datasets.load_dataset("text", data_files=str(path), split="train", cache_dir=cache_dir,
                                       encoding="utf-8-sig",  # drops a byte-order mark, as editors do
                                       encoding_errors=cfg.encoding_errors)
    if not labels_path.is_file():
        return ds, "text", None, None
    _check_text_file(labels_path, cfg.encoding_errors)
    # Same line splitting as datasets' text loader: universal newlines ("\n", "\r\n", "\r").
    with open(labels_path, encoding="utf-8-sig", errors=cfg.encoding_errors) as f:
        labels = [_label(line) for line in f]
    if len(labels) != len(ds):
        raise DataError(f"{labels_path} has {len(labels)} lines but {path} has {len(ds)}; the labels file "
                        f"needs exactly one label per line of the text file (blank lines included)")
    return ds.add_column("label", labels), "text", "label", None


def _read_jsonl(path: Path, cfg: DataConfig):
    """JSON lines, parsed here (each error names its line) and kept in memory.

    Not through datasets' json loader: its Arrow schema inference fails on files with mixed types in
    fields we do not even read, and we have parsed every line already to validate it.
    """
    _check_text_file(path, cfg.encoding_errors)
    texts: list[str] = []
    labels: list[str] = []
    factors: dict[str, list[str]] = {name: [] for name in cfg.factor_fields if name != cfg.label_field}
    with open(path, encoding="utf-8-sig", errors=cfg.encoding_errors) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                texts.append("")  # a blank line is a blank example: skipped and counted by _clean
                labels.append("")
                for column in factors.values():
                    column.append("")
                continue
            # a first line that is not a whole object: most likely one JSON document (an array of
            # objects, or an object spread over lines, as json.dump(indent=...) writes)
            hint = ("; the file looks like one JSON document, but textvae reads JSON lines (one object per "
                    "line)") if lineno == 1 and line.lstrip().startswith(("[", "{")) else ""
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno}){hint}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object with a {cfg.text_field!r} field, "
                                f"got {type(obj).__name__}{hint}")
            where = (path, lineno, cfg.encoding_errors)
            texts.append(_json_field(obj, cfg.text_field, "text_field", *where, text=True))
            if cfg.label_field:
                labels.append(_json_field(obj, cfg.label_field, "label_field", *where, text=False))
            for name in factors:
                factors[name].append(_json_field(obj, name, "factor_fields", *where, text=False))
    columns = {"text": texts, "label": labels} if cfg.label_field else {"text": texts}
    columns.update(factors)
    features = datasets.Features({k: datasets.Value("string") for k in columns})
    ds = datasets.Dataset.from_dict(columns, features=features)
    return ds, "text", "label" if cfg.label_field else None, None


def _read_csv(path: Path, cfg: DataConfig, cache_dir: str | None):
    """A CSV file with a header row, through datasets' csv builder (Arrow files, cached). Every column
    is read as text: "NA" or "007" stay as written, an empty cell is a blank example. A column without
    a name (the index column pandas' to_csv writes first, a trailing comma on every line) is named
    "Unnamed: N", N its position from 0, as pandas names it."""
    _check_text_file(path, cfg.encoding_errors)
    with open(path, encoding="utf-8-sig", errors=cfg.encoding_errors, newline="") as f:
        rows = csv.reader(f)
        header = next((row for row in rows if row), [])  # pandas skips blank lines, before the header too
        first = next((row for row in rows if row), [])  # the first example
    if not header:
        raise DataError(f"{path} is empty; a CSV file needs a header row naming its columns (e.g. text,label), "
                        f"then one example per row")
    columns = ", ".join(map(repr, header))
    wanted = [("text_field", cfg.text_field), ("label_field", cfg.label_field)]
    wanted += [("factor_fields", name) for name in cfg.factor_fields]
    fixes = {"text_field": "set data.text_field to the column that holds the text",
             "label_field": "set data.label_field to the column that holds the label, or unset it",
             "factor_fields": "data.factor_fields names it; name columns of the file there"}
    other = next((d for d in ";\t|" if len(header) == 1 and d in header[0]), None)  # Excel's ";" in some locales
    for option, key in wanted:
        if key is not None and key not in header:
            hint = (f"; the header row has one column with {other!r} in it: textvae reads comma-separated "
                    f"files, so save it with commas") if other else ""
            raise DataError(f"{path}: no column {key!r} in the header row (columns: {columns}); "
                            f"{fixes[option]}{hint}")
    names = [c or f"Unnamed: {i}" for i, c in enumerate(header)]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: the header row names a column twice ({columns}); give each column its own name")
    if len(first) > len(header):  # pandas would make the extra leading fields an index and shift every row
        raise DataError(f"{path}:{rows.line_num}: {len(first)} fields, but the header row names {len(header)} "
                        f"columns ({columns}); a field with a comma needs double quotes")
    features = datasets.Features({c: datasets.Value("string") for c in names})
    if not first:  # datasets' csv builder fails on a file with no rows ("corresponds to no data")
        ds = datasets.Dataset.from_dict({c: [] for c in names}, features=features)
        return ds, cfg.text_field, cfg.label_field, None
    level = datasets.logging.get_verbosity()
    try:
        # datasets logs pandas' error ("Failed to read file ...") before raising it: the DataError says it
        datasets.logging.set_verbosity(datasets.logging.CRITICAL)
        with _quiet():
            # names= replaces the header row (header=0, the first non-blank line): pandas would read an
            # unnamed column as "Unnamed: N" and the features' "" would not match it
            ds = datasets.load_dataset("csv", data_files=str(path), split="train", cache_dir=cache_dir,
                                       features=features, names=names, header=0, keep_default_na=False,
                                       encoding="utf-8-sig", encoding_errors=cfg.encoding_errors)
    except Exception as e:  # datasets wraps pandas' parser error, which names the line: pass that on
        cause = e
        for _ in range(10):
            cause = cause.__cause__ or cause.__context__ or cause
        raise DataError(f"{path}: not readable as CSV ({type(cause).__name__}: {str(cause).strip()}); check its "
                        f"quoting (a field with a comma or a line break needs double quotes)") from e
    finally:
        datasets.logging.set_verbosity(level)
    return ds, cfg.text_field, cfg.label_field, None


def _json_field(obj: dict, key: str, option: str, path: Path, lineno: int, errors: str, text: bool) -> str:
    if key not in obj:
        raise DataError(f"{path}:{lineno}: no field {key!r} (fields: {', '.join(map(repr, obj)) or 'none'}); "
                        f"set data.{option} to the field that holds the {'text' if text else 'label'}")
    value = obj[key]
    if text and not isinstance(value, str):
        raise DataError(f"{path}:{lineno}: field {key!r} is {type(value).__name__}, not a string")
    if not text and (value is None or isinstance(value, (dict, list))):
        raise DataError(f"{path}:{lineno}: label field {key!r} is {value!r}; labels must be strings or numbers")
    value = value if isinstance(value, str) else str(value)
    # "\ud83d" without its pair (a string cut inside an emoji) is valid JSON but not text: UTF-8 has no
    # encoding for it, and Arrow stops with a UnicodeEncodeError
    surrogate = _SURROGATE_RE.search(value)
    if surrogate and errors == "strict":
        raise DataError(f"{path}:{lineno}: field {key!r} holds an unpaired surrogate escape "
                        f"(\\u{ord(surrogate.group()):04x} at character {surrogate.start() + 1}), which is not "
                        f"text; fix the file, or replace such escapes with U+FFFD using --encoding-errors "
                        f"replace (data.encoding_errors=replace)")
    return _SURROGATE_RE.sub("\ufffd", value) if surrogate else value


def _check_text_file(path: Path, errors: str) -> None:
    """Raise a DataError naming the line if ``path`` has NUL bytes or (errors="strict") invalid UTF-8."""
    with open(path, "rb") as f:  # fast pass: big chunks, decoded in C
        while chunk := f.read(1 << 24):
            chunk += f.readline()  # end on a line break so no character is cut in two
            binary = b"\0" in chunk  # text never has NUL bytes: report that, not the invalid UTF-8 near it
            if binary or (errors == "strict" and not _is_utf8(chunk)):
                break
        else:
            return
    with open(path, "rb") as f:  # slow pass, only to say where the problem is
        for lineno, line in enumerate(f, 1):
            if b"\0" in line:
                raise DataError(f"{path}:{lineno}: contains NUL bytes; it looks like a binary file (or UTF-16 "
                                f"text), not UTF-8 text with one example per line")
            if errors == "strict" and not binary:
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{lineno}: invalid UTF-8 (byte 0x{line[e.start]:02x} at column "
                                    f"{e.start + 1}: {e.reason}); convert the file to UTF-8, or replace bad "
                                    f"bytes with U+FFFD using --encoding-errors replace "
                                    f"(data.encoding_errors=replace)") from None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _from_hub(cfg: DataConfig, name: str, cache_dir: str | None):
    """A Hugging Face dataset (hub name or local folder) through ``datasets.load_dataset``."""
    split = cfg.splits[name]
    what = f"dataset {cfg.dataset!r}" + (f" (config {cfg.dataset_config!r})" if cfg.dataset_config else "")
    try:
        with _quiet():
            ds = datasets.load_dataset(cfg.dataset, cfg.dataset_config, split=split, cache_dir=cache_dir)
    except Exception as e:  # the library raises many types (not found, offline, bad split, ...)
        raise DataError(f"could not load split {split!r} of {what}: {type(e).__name__}: {e}\n"
                        f"Check the name (https://huggingface.co/datasets) and data.dataset_config; "
                        f"data.splits.{name} must name one of the dataset's splits (e.g. "
                        f"data.splits.valid=validation); and you need to be online unless it is cached") from e
    source = f"{what}, split {split!r}"
    columns = ", ".join(map(repr, ds.column_names))
    if cfg.text_field not in ds.column_names:
        raise DataError(f"{source} has no column {cfg.text_field!r} (columns: {columns}); "
                        f"set data.text_field to the column that holds the text")
    text_type = ds.features[cfg.text_field]
    if not (isinstance(text_type, datasets.Value) and text_type.dtype in ("string", "large_string")):
        raise DataError(f"{source}: column {cfg.text_field!r} holds {text_type}, not text; "
                        f"set data.text_field to a string column (columns: {columns})")
    label_names = None
    if cfg.label_field:
        if cfg.label_field not in ds.column_names:
            raise DataError(f"{source} has no column {cfg.label_field!r} (columns: {columns}); "
                            f"set data.label_field to the label column, or unset it")
        feature = ds.features[cfg.label_field]
        if isinstance(feature, datasets.ClassLabel):
            label_names = list(feature.names)  # store "positive", not 1
    return (ds, cfg.text_field, cfg.label_field, label_names), source


def _from_builtin(corpus: dict, name: str, size: int, label: str):
    """The built-in corpus's split ``name``, labelled by its factor ``label``."""
    from .corpus import FACTORS

    if name not in corpus:
        raise DataError(f"the built-in corpus has splits {', '.join(map(repr, corpus))}, not {name!r}")
    if label not in FACTORS:
        raise DataError(f"data.label_field={label!r}: the built-in corpus is labelled by one of its factors, "
                        f"{', '.join(FACTORS)}; set data.label_field to one of them (default: topic)")
    rows = corpus[name]
    # every factor as a column too, so that data.factor_fields may name any of them
    ds = datasets.Dataset.from_dict({"text": [r["text"] for r in rows], "label": [r[label] for r in rows],
                                     **{f: [r[f] for r in rows] for f in FACTORS}})
    where = "" if label == "topic" else f", labelled by {label}"
    return (ds, "text", "label", None), f"built-in corpus (data.builtin_size={size}{where}), {name}"


def _factor_columns(cfg: DataConfig, ds: datasets.Dataset, source: str) -> dict[str, str]:
    """{factor: its column in ``ds``} for data.factor_fields (the label's own column when a factor is
    the label field); a DataError when a column is missing."""
    out = {}
    for name in cfg.factor_fields:
        column = "label" if name == cfg.label_field and "label" in ds.column_names else name
        if column not in ds.column_names:
            hint = ("; a .txt corpus keeps factors in {split}.{factor}.labels.txt files beside its text, not "
                    "in data.factor_fields") if "text" in ds.column_names and len(ds.column_names) <= 2 else ""
            raise DataError(f"{source} has no column {name!r} for data.factor_fields (columns: "
                            f"{', '.join(map(repr, ds.column_names))}){hint}")
        out[name] = column
    return out


def _clean(ds: datasets.Dataset, text_col: str, label_col: str | None, label_names: list[str] | None,
           source: str, factors: dict[str, str] | None = None) -> tuple[datasets.Dataset, int]:
    """Keep "text" (stripped), "label" (as str) and each factor's column as "factor.NAME" (as str);
    drop blank rows. Returns (dataset, rows dropped)."""
    features = {"text": datasets.Value("string")}
    if label_col:
        features["label"] = datasets.Value("string")
    features.update({f"factor.{name}": datasets.Value("string") for name in factors or {}})
    with _quiet():
        out = ds.map(_clean_batch, batched=True, remove_columns=ds.column_names,
                     features=datasets.Features(features), desc=f"Reading {source}",
                     fn_kwargs={"text_col": text_col, "label_col": label_col, "label_names": label_names,
                                "factors": factors or {}})
    return out, len(ds) - len(out)


def _strip(text: str) -> str:
    """``text.strip()``, and a byte-order mark at its start removed: one inside a file is where two files
    were joined (``cat a.txt b.txt``, each saved with a BOM), and it would make "\ufeffthe" a word (or
    "\ufeffpos" a label) of its own. A line of only BOMs stays as it was, so what is blank is unchanged
    (the factor label files and --labels files are aligned with the examples by blank lines)."""
    text = text.strip()
    if text.startswith("\ufeff"):
        text = text.lstrip("\ufeff").strip() or text
    return text


def _label(value) -> str:
    """A label or factor value as text, stripped as a labels file's lines are ("pos " and "pos" are one
    class; a BOM, see :func:`_strip`, is dropped); None is ""."""
    return "" if value is None else str(value).strip().lstrip("\ufeff").strip()


def _clean_batch(batch: dict, text_col: str, label_col: str | None, label_names: list[str] | None,
                 factors: dict[str, str]) -> dict:
    texts: list[str] = []
    labels: list[str] = []
    kept = {f"factor.{name}": [] for name in factors}
    for i, text in enumerate(batch[text_col]):
        text = _strip(text or "")
        if not text:
            continue
        texts.append(text)
        for name, column in factors.items():
            kept[f"factor.{name}"].append(_label(batch[column][i]))
        if label_col:
            value = batch[label_col][i]
            if label_names is not None and isinstance(value, int) and 0 <= value < len(label_names):
                labels.append(label_names[value])
            else:  # also ClassLabel -1 ("no label", e.g. GLUE test sets): kept as "-1"
                labels.append(_label(value))
    return {"text": texts, **({"label": labels} if label_col else {}), **kept}


# --------------------------------------------------------------------------- encoding

@dataclass
class EncodedSplit:
    """A split as token ids, ready for bucketing and collate.

    ``ids[i]`` are example i's token ids (int32, no BOS/EOS); ``texts[i]`` its text as loaded (the
    whole text even when ``ids[i]`` was truncated); ``labels`` is None when the corpus has none.
    ``label_ids`` (int64, one per example) are what a conditional model is conditioned on, set by
    :func:`attach_label_ids`; None otherwise.
    ``stats``: examples, skipped_blank, truncated, dropped (= dropped_long + dropped_empty), tokens
    (= sum(len(ids) + 1), words + EOS: the perplexity denominator).
    """

    ids: list[np.ndarray] = field(repr=False)
    texts: list[str] = field(repr=False)
    labels: list[str] | None = field(default=None, repr=False)
    label_ids: np.ndarray | None = field(default=None, repr=False)
    stats: dict = field(default_factory=dict)
    lengths: np.ndarray = field(init=False, repr=False)  # (N,) len(ids[i])

    def __post_init__(self):
        self.lengths = np.fromiter((len(a) for a in self.ids), dtype=np.int64, count=len(self.ids))

    def __len__(self) -> int:
        return len(self.ids)


def encode_split(ds: datasets.Dataset, tokenizer, cfg: DataConfig,
                 skipped_blank: int = 0, what: str = "the split") -> EncodedSplit:
    """Encode the ``"text"`` column of ``ds`` and apply ``cfg.max_len`` / ``cfg.long_policy``.

    Tokenizing is a batched ``ds.map`` whose cache key is the dataset's fingerprint plus the
    tokenizer's, so a second run with the same corpus and tokenizer reads the ids back from disk.
    Length limits are applied afterwards (they are cheap), so changing ``max_len`` reuses the cache.
    Examples longer than ``max_len`` tokens are cut to ``max_len`` (truncate) or removed (drop);
    examples with no tokens are removed. ``skipped_blank``, the blank rows dropped before ``ds`` was
    made (``Splits.stats[name]["skipped_blank"]``; :meth:`Splits.encode` passes it), goes into ``stats``.
    A split left with no examples is a DataError naming ``what`` (e.g. "the test split (FILE)").
    """
    if "text" not in ds.column_names:
        raise DataError(f"encode_split needs a 'text' column; the dataset has {ds.column_names}")
    # ds._fingerprint is datasets' content hash of ds (private, but the documented cache key)
    key = _hash(ds._fingerprint, tokenizer.fingerprint(), ENCODING_VERSION)
    with _quiet():
        encoded = ds.map(_encode_batch, batched=True, batch_size=1000, input_columns="text",
                         fn_kwargs={"tokenizer": tokenizer}, remove_columns=ds.column_names,
                         features=datasets.Features({"ids": datasets.List(datasets.Value("int32"))}),
                         new_fingerprint=key,  # the tokenizer object itself is not hashable by datasets
                         desc=f"Encoding with the {tokenizer.kind} tokenizer")
    ids = _ragged_to_numpy(encoded.data.column("ids"))
    columns = ds.with_format("arrow")  # whole columns at C speed (iterating a Column is per row)
    texts = columns["text"].to_pylist()
    labels = columns["label"].to_pylist() if "label" in ds.column_names else None
    assert len(ids) == len(texts), "map must keep one row per example"

    n = np.fromiter((len(a) for a in ids), dtype=np.int64, count=len(ids))
    long, empty = n > cfg.max_len, n == 0
    drop_long = cfg.long_policy == "drop"
    keep = (~empty & ~long) if drop_long else ~empty
    if not drop_long and long.any():
        ids = [a[:cfg.max_len] for a in ids]  # views, no copies
    if not keep.all():
        kept = np.flatnonzero(keep)
        ids = [ids[i] for i in kept]
        texts = [texts[i] for i in kept]
        labels = [labels[i] for i in kept] if labels is not None else None
    n_long, n_empty = int(long.sum()), int(empty.sum())
    if not keep.any() and len(n):
        _raise_emptied(what, cfg, n, n_long if drop_long else 0, n_empty)
    split = EncodedSplit(ids, texts, labels)
    split.stats = {
        "examples": len(split),
        "skipped_blank": skipped_blank,
        "truncated": 0 if drop_long else n_long,
        "dropped": (n_long if drop_long else 0) + n_empty,
        "dropped_long": n_long if drop_long else 0,
        "dropped_empty": n_empty,
        "tokens": int(split.lengths.sum()) + len(split),  # words + one EOS per sentence
    }
    return split


def _raise_emptied(what: str, cfg: DataConfig, n: np.ndarray, n_long: int, n_empty: int):
    """The DataError for a split whose every example was removed by encoding."""
    if n_long:
        raise DataError(f"{what} has no examples left: all {len(n)} are longer than data.max_len={cfg.max_len} "
                        f"tokens{f' (or have no tokens: {n_empty})' if n_empty else ''}, and "
                        f"data.long_policy=drop removed them; raise data.max_len (its longest example has "
                        f"{int(n.max())} tokens) or use data.long_policy=truncate")
    raise DataError(f"{what} has no examples left: none of its {len(n)} lines has a token the tokenizer "
                    f"knows how to make; check the file's content and tokenizer.kind")


def attach_label_ids(split: EncodedSplit, names: list[str] | None, what: str = "the split",
                     unlabelled_ok: bool = False) -> EncodedSplit:
    """Set ``split.label_ids`` to each example's index in ``names`` (a conditional model's labels);
    nothing to do when ``names`` is None. A DataError when the split has no labels or unknown ones.
    ``unlabelled_ok`` (M2): an empty label is no label, id -1."""
    if names is None:
        return split
    if split.labels is None:
        raise DataError(f"{what} has no labels, but the model is conditional (model.conditional=true): give "
                        f"each example a label ({{split}}.labels.txt beside a .txt split, or data.label_field)")
    index = {name: i for i, name in enumerate(names)}
    if unlabelled_ok:
        index[""] = -1
    unknown = sorted({label for label in split.labels if label not in index})
    if unknown == [""]:  # an M2 training split's unlabelled examples, read outside training
        blank = sum(1 for label in split.labels if label == "")
        raise DataError(f"{what} has {blank} example(s) with a blank label; a conditional model reads every "
                        f"example with its label (only M2's training takes blank labels, as unlabelled "
                        f"examples): use a split whose examples all have labels, e.g. test")
    if unknown:
        raise DataError(f"{what} has labels the model was not trained with: {unknown[:5]}; its labels are "
                        f"{names[:20]}")
    split.label_ids = np.array([index[label] for label in split.labels], dtype=np.int64)
    return split


def training_data(cfg, tokenizer_dir: Path | None, log) -> tuple:
    """What a training run reads: (tokenizer, train split, valid split, label names or None).

    The tokenizer is trained on the train split's texts, or loaded from ``tokenizer_dir`` (the
    checkpoint a run resumes from); both splits are encoded with it and one line of counts per split
    goes to ``log``. A conditional model (``cfg.model.conditional``) gets the train split's labels,
    sorted, as its label names, and both splits their label ids."""
    splits = load_splits(cfg.data, ("train", "valid"))
    if tokenizer_dir:
        tokenizer = load_tokenizer(tokenizer_dir)
    else:
        tokenizer = train_tokenizer(cfg.tokenizer, splits["train"].with_format("arrow")["text"].to_pylist())
    encoded = {name: splits.encode(name, tokenizer, cfg.data) for name in ("train", "valid")}
    for name, s in encoded.items():
        log(f"{name}: {s.stats['examples']} examples, {s.stats['tokens']} tokens (words + EOS); skipped "
            f"{s.stats.get('skipped_blank', 0)} blank, truncated {s.stats.get('truncated', 0)}, "
            f"dropped {s.stats.get('dropped', 0)} (data.long_policy={cfg.data.long_policy})")
    if cfg.model.classifier and encoded["train"].labels is None:
        raise DataError(f"M2 (model.classifier) learns from labels, but the train split "
                        f"({splits.stats['train']['source']}) has none: give it {{split}}.labels.txt beside a .txt "
                        f"split (one label per line, blank for unlabelled) or data.label_field; or train M1 "
                        f"(a VAE without model.classifier, scripts/semisup.py)")
    train = encoded["train"]
    if cfg.model.conditional and not cfg.model.classifier and train.labels is not None and "" in train.labels:
        blank = [i for i, label in enumerate(train.labels) if label == ""]
        raise DataError(f"the train split ({splits.stats['train']['source']}) has {len(blank)} example(s) with a "
                        f"blank label (the first: {train.texts[blank[0]][:60]!r}), and a conditional VAE "
                        f"(model.conditional) conditions every example on its label, so a blank one would be a "
                        f"class of its own; give each example a label, remove those examples, or train M2 "
                        f"(model.classifier=true), which takes a blank label as an unlabelled example")
    unlabelled = {""} if cfg.model.classifier else set()  # M2: an empty label is no label
    labels = sorted(set(encoded["train"].labels or []) - unlabelled) if cfg.model.conditional else None
    if labels is not None:
        for name, split in encoded.items():
            attach_label_ids(split, labels, f"the {name} split",
                             unlabelled_ok=cfg.model.classifier and name == "train")
    if cfg.model.classifier and cfg.data.labelled_per_class:
        from .semisup import draw_labelled

        train = encoded["train"]
        keep = draw_labelled(train.labels, cfg.data.labelled_per_class, cfg.data.label_seed,
                             f"the train split ({splits.stats['train']['source']})")
        hidden = np.ones(len(train), dtype=bool)
        hidden[keep] = False
        train.label_ids[hidden] = -1  # unlabelled for M2
        log(f"M2: {len(keep)} labelled training examples ({cfg.data.labelled_per_class} per class, "
            f"data.label_seed={cfg.data.label_seed}), {int(hidden.sum())} unlabelled")
    return tokenizer, encoded["train"], encoded["valid"], labels


def _encode_batch(texts: list[str], tokenizer) -> dict:
    return {"ids": tokenizer.encode_batch(texts)}


def _ragged_to_numpy(column) -> list[np.ndarray]:
    """An Arrow list<int32> column -> one int32 array per row (views into one buffer)."""
    arr = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if len(arr) == 0:
        return []
    offsets = arr.offsets.to_numpy()
    values = arr.flatten().to_numpy()  # flatten respects a sliced array's offset
    return np.split(values, offsets[1:-1] - offsets[0])


def _hash(*parts) -> str:
    return hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=16).hexdigest()
