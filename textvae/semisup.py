"""Semi-supervised classification with few labels (Kingma et al. 2014), and its honest baselines.

    draw_labelled       N labelled training examples per class, stratified, deterministic per seed
    check_test_labels   every test label is a class of the training labels
    score               accuracy and macro-F1 of predictions
    m1                  Kingma's M1: logistic regression on posterior means (the probe's classifier,
                        textvae.probe), fitted on the drawn examples, scored on the test split
    majority, bag_of_words_lr, tfidf_lr, from_scratch
                        the baselines on the same draws: the most frequent class (ties: first in
                        sorted order), scikit-learn's LogisticRegression on word counts and on
                        TfidfVectorizer features, and M2's classifier architecture
                        (textvae.m2.Classifier) trained on the drawn examples alone

M2 itself is a model (textvae/m2.py, ``model.classifier``); ``data.labelled_per_class`` keeps the
labels of one :func:`draw_labelled` draw. ``scripts/semisup.py`` runs the whole table.
"""

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError


def draw_labelled(labels: list[str], per_class: int | None, seed: int, what: str = "the train split",
                  classes: list[str] | None = None) -> np.ndarray:
    """Indices (sorted) of ``per_class`` examples of every class, drawn with ``seed``; all labelled
    examples when ``per_class`` is None. An empty label ("") is no label.

    ``classes``: the classes a classifier must know (default: those of ``labels``). The draw of
    class c depends only on (seed, per_class, c) and its examples, so it is the same on every
    machine. A class with fewer than ``per_class`` examples, or with none, is a DataError naming
    every such class; nothing is drawn.
    """
    rows: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        if label != "":
            rows.setdefault(label, []).append(i)
    classes = sorted(rows) if classes is None else list(classes)
    if not classes:
        raise DataError(f"{what} has no labelled example; give each example a label ({{split}}.labels.txt "
                        f"beside a .txt split, or data.label_field)")
    empty = [c for c in classes if c not in rows]
    if empty:
        raise DataError(f"{what}: class(es) {empty[:10]} have no labelled example, so a classifier could "
                        f"never predict them; label some of their examples or leave them out of the classes")
    if per_class is None:
        return np.array(sorted(i for c in classes for i in rows[c]), dtype=np.int64)
    if per_class < 1:
        raise DataError(f"labels per class must be >= 1, got {per_class}")
    short = {c: len(rows[c]) for c in classes if len(rows[c]) < per_class}
    if short:
        listed = ", ".join(f"{c!r} has {n}" for c, n in sorted(short.items(), key=lambda x: x[1])[:10])
        raise DataError(f"{what}: {per_class} labelled examples per class asked for, but {listed}; "
                        f"ask for at most {min(short.values())} per class (data.labelled_per_class / "
                        f"--per-class) or use all labels")
    out = []
    for c in classes:
        key = [seed % 2**32, per_class] + list(c.encode())  # one stream per class: classes do not interact
        out.extend(np.random.default_rng(key).choice(rows[c], per_class, replace=False).tolist())
    return np.array(sorted(out), dtype=np.int64)


def check_test_labels(classes: list[str], test_labels: list[str], what: str = "the test split",
                      labels_file=None) -> None:
    """A DataError when a test example's label is not one of the training ``classes`` (no
    classifier trained on them could predict it), or when no test example has a label (nothing to
    score). ``labels_file``: the file the test labels were read from, to name the line."""
    if all(label == "" for label in test_labels):
        where = f"{what} ({labels_file})" if labels_file else what
        raise DataError(f"{where} has no labelled example to score the classifiers on ({len(test_labels)} "
                        f"examples, every label empty); give its examples labels")
    known = set(classes)
    for i, label in enumerate(test_labels):
        if label != "" and label not in known:
            line = _line_of(labels_file, label) if labels_file else None
            where = f"{labels_file}:{line}" if line else f"{what}, example {i + 1}"
            raise DataError(f"{where}: test label {label!r} never occurs in the training labels "
                            f"({sorted(known)[:20]}); fix the label or add training examples of it")


def _line_of(path, label: str) -> int | None:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return next((n for n, line in enumerate(f, 1) if line.strip() == label), None)
    except OSError:
        return None


def score(pred, y, num_classes: int) -> dict:
    """Accuracy and macro-F1 (scikit-learn's, over all ``num_classes`` classes) of predictions."""
    from sklearn.metrics import f1_score

    pred, y = np.asarray(pred), np.asarray(y)
    return {"accuracy": float((pred == y).mean()),
            "macro_f1": float(f1_score(y, pred, labels=list(range(num_classes)), average="macro", zero_division=0))}


def logistic(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, num_classes: int,
             c: float = 1.0) -> np.ndarray:
    """The probe's classifier (textvae.probe): standardised features, L2 softmax regression; predictions."""
    from .probe import _standardise, fit_logistic_regression, predict

    a, b = _standardise(x_train.to(torch.float64), x_test.to(torch.float64))
    W, bias = fit_logistic_regression(a, y_train, num_classes, c)
    return predict(W, bias, b).numpy()


def m1(mu_train: torch.Tensor, y_train, mu_test: torch.Tensor, num_classes: int) -> np.ndarray:
    """Kingma et al.'s M1: the probe's regression on posterior means (N, Z) of the drawn examples."""
    return logistic(mu_train, torch.as_tensor(y_train), mu_test, num_classes)


def majority(y_train, n_test: int) -> np.ndarray:
    """The most frequent training class (ties: the lowest id) for every test example."""
    return np.full(n_test, int(np.bincount(np.asarray(y_train)).argmax()))


def bag_of_words_lr(ids_train: list, y_train, ids_test: list, num_classes: int) -> np.ndarray:
    """Word counts over the drawn examples' vocabulary (sparse) -> scikit-learn's L2 LogisticRegression
    (C = 1, the probe's penalty). Sparse: with all labels of a 10k-sentence corpus the probe's dense
    counts would be gigabytes."""
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression

    y_train = np.asarray(y_train)
    if len(set(y_train.tolist())) < 2:
        return np.full(len(ids_test), int(y_train[0]))
    column = {int(t): j for j, t in enumerate(np.unique(np.concatenate([np.asarray(a) for a in ids_train])))}

    def counts(seqs):
        rows, cols = [], []
        for i, seq in enumerate(seqs):
            for t in np.asarray(seq).tolist():
                if t in column:
                    rows.append(i)
                    cols.append(column[t])
        return csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(seqs), len(column)))

    clf = LogisticRegression(C=1.0, max_iter=2000)
    clf.fit(counts(ids_train), y_train)
    return clf.predict(counts(ids_test))


def tfidf_lr(texts_train: list[str], y_train, texts_test: list[str]) -> np.ndarray:
    """scikit-learn: TF-IDF of whitespace tokens (unigrams and bigrams) -> LogisticRegression (C = 10)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    y_train = np.asarray(y_train)
    if len(set(y_train.tolist())) < 2:
        return np.full(len(texts_test), int(y_train[0]))
    vec = TfidfVectorizer(token_pattern=r"\S+", ngram_range=(1, 2), sublinear_tf=True)
    clf = LogisticRegression(C=10.0, max_iter=2000)
    clf.fit(vec.fit_transform(texts_train), y_train)
    return clf.predict(vec.transform(texts_test))


def from_scratch(model_cfg, split_train, rows, y_train, split_test, num_classes: int, steps: int = 300,
                 batch_size: int = 32, lr: float = 1e-3, seed: int = 0) -> np.ndarray:
    """M2's classifier architecture (textvae.m2.Classifier: the encoder of ``model_cfg`` + linear)
    trained from random weights on the drawn examples alone: Adam, ``steps`` minibatches drawn
    with ``seed``, no early stopping (with few labels there is no labelled validation set to stop on)."""
    from .batching import collate
    from .m2 import Classifier

    torch.manual_seed(seed)
    net = Classifier(model_cfg, num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rows, y = np.asarray(rows), torch.as_tensor(np.asarray(y_train))
    rng = np.random.default_rng(seed)
    net.train()
    for _ in range(steps):
        pick = rng.choice(len(rows), min(batch_size, len(rows)), replace=False)
        b = collate(split_train, rows[pick])
        loss = F.cross_entropy(net(b.tokens, b.lengths), y[pick])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
    net.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(split_test), 256):
            b = collate(split_test, range(i, min(i + 256, len(split_test))))
            preds.append(net(b.tokens, b.lengths).argmax(-1))
    return torch.cat(preds).numpy()
