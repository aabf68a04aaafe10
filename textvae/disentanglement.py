"""Disentanglement measures against known factors of variation: MIG and DCI.

The data flow::

    read_factors(cfg, split)   {factor: [label per example]}, aligned with load_splits(cfg)[split]
    mig(codes, factors)        Chen et al. 2018's mutual information gap
    dci(codes, factors)        Eastwood & Williams 2018's disentanglement / completeness / informativeness

``codes`` are posterior means (N, D); ``factors`` map each factor's name to its N labels (any
hashable values: strings or ints). Conventions (docs/metrics.md) follow disentanglement_lib
(Locatello et al. 2019): each code dimension is cut into equal-width bins over its range, mutual
information is in nats, DCI's importances come from gradient-boosted trees.
"""

from pathlib import Path

import numpy as np

from .errors import DataError

FACTOR_LABELS_PATTERN = "{s}.{factor}.labels.txt"  # one label per line of the split's {s}.txt
_TEXT_PATTERNS = ("{s}.txt", "ptb.{s}.txt")  # the text files factor label files sit beside


# --------------------------------------------------------------------------- inputs

def _check(codes, factors: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """codes as (N, D) floats and each factor as (N,) integer ids; DataError on bad shapes or
    on a factor with a single value (its entropy is 0, so no code can be said to capture it)."""
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or codes.shape[1] < 2:
        raise DataError(f"disentanglement measures need codes of shape (examples, dimensions) with at least "
                        f"2 dimensions (MIG is a gap between the two most informative), got shape {codes.shape}; "
                        f"use a model with model.latent_size >= 2")
    if not factors:
        raise DataError("no factors given; disentanglement is measured against known factor labels "
                        "(the built-in corpus, or {split}.{factor}.labels.txt files beside the text)")
    ids = {}
    for name, labels in factors.items():
        labels = np.asarray(labels)
        if labels.shape != (codes.shape[0],):
            raise DataError(f"factor {name!r} has {labels.size} labels but there are {codes.shape[0]} codes; "
                            f"give one label per example")
        values, ids[name] = np.unique(labels, return_inverse=True)
        if len(values) < 2:
            raise DataError(f"factor {name!r} has a single value ({values[0]!r}) over all {codes.shape[0]} "
                            f"examples: its entropy is 0 and nothing can be measured against it; drop the "
                            f"factor or evaluate on a split where it varies")
    return codes, ids


def histogram_discretize(codes: np.ndarray, bins: int = 20) -> np.ndarray:
    """(N, D) codes -> (N, D) bin ids, each dimension cut into ``bins`` equal-width bins over its
    own range (disentanglement_lib's ``histogram_discretize``)."""
    out = np.empty(codes.shape, dtype=np.int64)
    for d in range(codes.shape[1]):
        edges = np.histogram(codes[:, d], bins)[1]
        out[:, d] = np.digitize(codes[:, d], edges[:-1])  # the maximum falls in the last bin
    return out


def discrete_mutual_info(x: np.ndarray, y: np.ndarray) -> float:
    """I(x; y) in nats of two (N,) integer arrays, from their joint histogram; I(y; y) = H(y)."""
    _, xi = np.unique(x, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    joint = np.zeros((xi.max() + 1, yi.max() + 1))
    np.add.at(joint, (xi, yi), 1.0)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(joint[nz] / outer[nz])))


# --------------------------------------------------------------------------- MIG

def mig(codes, factors: dict, bins: int = 20) -> dict:
    """Mutual information gap (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs").

    Per factor v_k: (I(z_a; v_k) - I(z_b; v_k)) / H(v_k), where z_a and z_b are the two code
    dimensions with the largest mutual information with v_k, each dimension discretised into
    ``bins`` equal-width bins over its range. 1 when one dimension alone carries the factor.

    Returns {"mig": mean over factors, "per_factor": {name: gap}, "top_dims": {name: (a, b)},
    "mutual_info": {name: [I(z_d; v_k) in nats for each dimension d]}}.
    """
    codes, ids = _check(codes, factors)
    binned = histogram_discretize(codes, bins)
    per_factor, top_dims, mutual_info = {}, {}, {}
    for name, v in ids.items():
        mi = np.array([discrete_mutual_info(binned[:, d], v) for d in range(codes.shape[1])])  # (D,)
        a, b = np.argsort(-mi, kind="stable")[:2]
        per_factor[name] = float((mi[a] - mi[b]) / discrete_mutual_info(v, v))
        top_dims[name] = (int(a), int(b))
        mutual_info[name] = mi.tolist()
    return {"mig": float(np.mean(list(per_factor.values()))), "per_factor": per_factor, "top_dims": top_dims,
            "mutual_info": mutual_info}


# --------------------------------------------------------------------------- DCI

def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy, in base ``base``, of each row of a non-negative matrix normalised to sum 1."""
    p = p + 1e-11  # an all-zero row counts as uniform, as in disentanglement_lib
    p = p / p.sum(1, keepdims=True)
    return -np.sum(p * np.log(p), 1) / np.log(base)


def _estimators():
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier  # lazily: slow import

    return {"boosting": GradientBoostingClassifier, "forest": RandomForestClassifier}


def dci(codes, factors: dict, seed: int = 0, test_fraction: float = 0.25, estimator: str = "boosting",
        **estimator_args) -> dict:
    """Disentanglement, completeness, informativeness (Eastwood & Williams 2018, "A Framework for
    the Quantitative Evaluation of Disentangled Representations").

    One classifier per factor predicts it from the codes (scikit-learn; ``estimator`` "boosting":
    gradient-boosted trees as in disentanglement_lib, or "forest": a random forest; extra keyword
    arguments go to it), trained on a seeded random ``1 - test_fraction`` of the examples. Its
    feature importances make column k of the importance matrix R (D, K). With P_d. row d of R
    normalised and P_.k column k normalised:

        disentanglement = sum_d rho_d (1 - H_K(P_d.)),  rho_d = sum_k R_dk / sum R
        completeness    = mean_k (1 - H_D(P_.k))
        informativeness = mean over factors of the held-out accuracy

    Returns those three, "per_factor" {name: {"completeness", "accuracy"}}, "importance" (D x K
    nested list) and "factors" (the column order).
    """
    codes, ids = _check(codes, factors)
    table = _estimators()
    if estimator not in table:
        raise DataError(f"dci estimator {estimator!r} is unknown; choose one of {', '.join(map(repr, table))}")
    if not 0 < test_fraction < 1:
        raise DataError(f"dci test_fraction must be between 0 and 1, got {test_fraction}")
    n, dims = codes.shape
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    names = list(ids)
    importance = np.zeros((dims, len(names)))  # R (D, K)
    accuracy = {}
    for k, name in enumerate(names):
        v = ids[name]
        if len(np.unique(v[train])) < 2:
            raise DataError(f"factor {name!r} has a single value among the {len(train)} training examples of "
                            f"dci; give more examples or a smaller test_fraction")
        model = table[estimator](random_state=seed, **estimator_args).fit(codes[train], v[train])
        importance[:, k] = np.abs(model.feature_importances_)
        accuracy[name] = float(np.mean(model.predict(codes[test]) == v[test]))
    total = importance.sum()
    rho = importance.sum(1) / total if total > 0 else np.full(dims, 1.0 / dims)
    per_code_d = 1.0 - _entropy_rows(importance, len(names)) if len(names) > 1 else np.ones(dims)
    per_factor_c = 1.0 - _entropy_rows(importance.T, dims)
    return {
        "disentanglement": float(np.sum(rho * per_code_d)),
        "completeness": float(np.mean(per_factor_c)),
        "informativeness": float(np.mean(list(accuracy.values()))),
        "per_factor": {name: {"completeness": float(per_factor_c[k]), "accuracy": accuracy[name]}
                       for k, name in enumerate(names)},
        "importance": importance.tolist(),
        "factors": names,
    }


# --------------------------------------------------------------------------- factor labels

def read_factors(cfg, split: str = "test") -> dict[str, list[str]]:
    """The known factors of a split, {factor: [label per example]}, aligned with the examples of
    ``textvae.data.load_splits(cfg)[split]`` (``cfg`` a DataConfig); {} when the corpus has none.

    Built-in corpus (neither data_dir nor dataset): topic, tense, sentiment, length.
    Any other corpus with labels (``{s}.labels.txt``, ``data.label_field`` of jsonl/csv files or a
    hub dataset): its label as the factor ``label`` (dbpedia14's class, say).
    A jsonl/csv/hub corpus: every column named in ``data.factor_fields``, under its own name.
    A data_dir folder: also every ``{s}.{factor}.labels.txt`` beside the split's ``{s}.txt`` (or
    ``ptb.{s}.txt``), one label per line of the text file, blank text lines included (their
    labels are dropped with them). A line count that differs is a DataError naming both files.
    """
    if split not in cfg.splits:
        raise DataError(f"unknown split {split!r}; data.splits has {', '.join(map(repr, cfg.splits))}")
    if not cfg.data_dir and not cfg.dataset:
        from .corpus import FACTORS, builtin_corpus

        rows = builtin_corpus(cfg.builtin_size)[split]
        return {f: [r[f] for r in rows] for f in FACTORS}
    from .data import load_splits

    ds = load_splits(cfg, (split,))[split]
    out = {"label": [str(v) for v in ds["label"]]} if "label" in ds.column_names else {}
    out.update({name: list(ds[f"factor.{name}"]) for name in cfg.factor_fields})
    return {**out, **_factor_files(cfg, split)}


def _factor_files(cfg, split: str) -> dict[str, list[str]]:
    """The ``{s}.{factor}.labels.txt`` files of a data_dir corpus, aligned with its examples. When one
    .txt file is cut into the three splits (``data.data_dir`` a file, or a folder with only a train
    file), its label files (``{stem}.{factor}.labels.txt``, stem as for ``{stem}.labels.txt``) cover
    the whole file and are cut with it, by data.split_ratio and data.split_seed."""
    if not cfg.data_dir:
        return {}
    from .data import _file_to_split, _label, split_indices

    root, one = Path(cfg.data_dir).expanduser(), _file_to_split(cfg)
    if one is not None:
        text = one if one.suffix.lower() == ".txt" else None
        stem = one.name[:-len(".txt")].removeprefix("ptb.")
    else:
        stem = cfg.splits[split]
        text = next((root / p.format(s=stem) for p in _TEXT_PATTERNS
                     if root.is_dir() and (root / p.format(s=stem)).is_file()), None)
    if text is None:
        return {}
    lines = _lines(text, cfg.encoding_errors)
    rows = range(len(lines)) if one is None else split_indices(len(lines), cfg.split_ratio, cfg.split_seed,
                                                                source=str(text))[split]
    keep = [i for i in rows if lines[i].strip()]  # load_splits skips blank examples
    prefix = FACTOR_LABELS_PATTERN.format(s=stem, factor="")[:-len(".labels.txt")]  # "{stem}."
    out = {}
    for path in sorted(text.parent.glob(FACTOR_LABELS_PATTERN.format(s=stem, factor="*"))):
        factor = path.name[len(prefix):-len(".labels.txt")]
        labels = [_label(line) for line in _lines(path, cfg.encoding_errors)]  # as data reads labels
        if len(labels) != len(lines):
            raise DataError(f"{path} has {len(labels)} lines but {text} has {len(lines)}; a factor label file "
                            f"needs exactly one label per line of the text file (blank lines included)")
        out[factor] = [labels[i] for i in keep]
    return out


def _lines(path: Path, errors: str) -> list[str]:
    """A file's lines as datasets' text loader splits them (universal newlines, BOM dropped)."""
    with open(path, encoding="utf-8-sig", errors=errors) as f:
        return [line.rstrip("\n") for line in f]
