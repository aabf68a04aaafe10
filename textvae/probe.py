"""Latent probe: how much of a label a linear classifier reads off the posterior means.

A multinomial logistic regression on E_q[z|x] (``mu``) of N labelled examples drawn from a split
with a seed, scored on the split's other examples; the same classifier on bag-of-words counts of
the same N examples is the baseline that needs no model, and the most frequent label among the N
is the floor. A latent that beats bag-of-words with the same N has made the label easy to read.

    model_split        (textvae.metrics) a split with one label per example (a labels file or
                       the corpus's own)
    bag_of_words       token counts over the tokens of the N training examples
    fit_logistic_regression / predict   L2-regularised softmax regression, L-BFGS in float64

Features are standardised with the mean and standard deviation of the N training examples. The
penalty is scikit-learn's: sum of cross-entropies + ||W||^2 / (2 C), C = 1 by default, the bias
not penalised. Everything is deterministic for a seed (zero initialisation, full-batch L-BFGS).
"""

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError, TextVAEError


def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, num_classes: int, c: float = 1.0,
                            max_iter: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression: minimise sum_i CE(x_i W + b, y_i) + ||W||^2 / (2c).

    x (N, D) features, y (N,) class ids in [0, num_classes). Full-batch L-BFGS with a strong Wolfe
    line search in float64 from W = 0, b = 0: the same inputs give the same weights.
    Returns W (D, K) and b (K,).
    """
    x = x.to(torch.float64)
    W = torch.zeros(x.size(1), num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-9,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")
    n = x.size(0)

    def closure():
        opt.zero_grad()
        # divided by n so the tolerances do not depend on the number of examples
        loss = (F.cross_entropy(x @ W + b, y, reduction="sum") + W.pow(2).sum() / (2 * c)) / n
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


def predict(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Class ids (N,) of features x (N, D) under a fitted regression."""
    return (x.to(torch.float64) @ W + b).argmax(-1)


def _standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale both with the training rows' mean and standard deviation (constant columns: 1)."""
    mean, std = train.mean(0), train.std(0, unbiased=False)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return (train - mean) / std, (test - mean) / std


def bag_of_words(ids: list, train_rows: list[int]) -> torch.Tensor:
    """Token counts (N, D) of every example, over the D distinct tokens of the ``train_rows``
    examples (a token never seen in training gets no weight from an L2 regression anyway)."""
    vocab = np.unique(np.concatenate([np.asarray(ids[i]) for i in train_rows]))
    column = {int(t): j for j, t in enumerate(vocab)}
    counts = torch.zeros(len(ids), len(vocab), dtype=torch.float64)
    for i, seq in enumerate(ids):
        for t in np.asarray(seq).tolist():
            j = column.get(t)
            if j is not None:
                counts[i, j] += 1
    return counts


def _accuracy(features: torch.Tensor, y: torch.Tensor, train: torch.Tensor, test: torch.Tensor,
              num_classes: int, c: float) -> float:
    x_train, x_test = _standardise(features[train].to(torch.float64), features[test].to(torch.float64))
    W, b = fit_logistic_regression(x_train, y[train], num_classes, c)
    return float((predict(W, b, x_test) == y[test]).double().mean())


def _given_label_decides(split, rows: list[int]) -> bool:
    """Whether each conditioning label id (``split.label_ids``) goes with one probe label only, over ``rows``."""
    seen: dict[int, str] = {}
    return all(seen.setdefault(int(split.label_ids[i]), split.labels[i]) == split.labels[i] for i in rows)


def probe(model, split, n: int = 100, seed: int = 0, c: float = 1.0, batch_size: int = 64) -> dict:
    """Accuracy of a logistic regression on posterior means vs on bag-of-words, N training examples.

    ``split`` is an :class:`~textvae.data.EncodedSplit` with ``labels`` (see
    :func:`textvae.metrics.model_split`);
    examples whose label is empty are left out. ``n`` of the labelled examples, drawn with ``seed``,
    train both classifiers; all the others test them. Labels that no training example has count as
    errors. Returns ``accuracy_latent``, ``accuracy_bow``, ``accuracy_majority`` (the most frequent
    training label), ``n_train``, ``n_test``, ``classes`` (labels among the training examples),
    ``latent_dim``, ``bow_features``, ``seed``.

    A conditional model's posterior is q(z|x, y) with the split's ``label_ids``: labels that follow
    from y are refused (the posterior would give y back), and a factor correlated with y is read
    partly from y itself.
    """
    from .metrics import posterior_parameters

    if model.is_lm:
        raise TextVAEError("this model is a language model (latent_dim=0): it has no latent space to probe")
    if split.labels is None:
        raise DataError("the split has no labels; pass a labels file (one label per line of the split)")
    rows = [i for i, label in enumerate(split.labels) if label != ""]
    if model.conditional and split.label_ids is not None and _given_label_decides(split, rows):
        raise TextVAEError("the probe's labels follow from the label this conditional model is given "
                           "(model.conditional: its posterior q(z|x, y) reads y), so the posterior would hand the "
                           "label back whatever z learned (an untrained model scores 1.0 on random labels); probe "
                           "another factor (--labels FILE) or a model trained without model.conditional")
    if not 2 <= n < len(rows):
        raise TextVAEError(f"--n {n}: the probe needs at least 2 training examples and at least one left to "
                           f"test on; the split has {len(rows)} labelled examples")
    order = np.random.default_rng(seed).permutation(len(rows))
    train_rows, test_rows = [rows[i] for i in order[:n]], [rows[i] for i in order[n:]]
    classes = sorted({split.labels[i] for i in train_rows})
    class_id = {label: k for k, label in enumerate(classes)}
    y = torch.tensor([class_id.get(label, -1) for label in split.labels])  # -1: never predicted
    train, test = torch.tensor(train_rows), torch.tensor(test_rows)

    if model.latent.discrete:  # one-hot codes (N, M K)
        from .code_metrics import code_features

        mu = code_features(model, split, batch_size)
    else:
        mu, _ = posterior_parameters(model, split, batch_size)  # (N, Z) means
    bow = bag_of_words(split.ids, train_rows)  # (N, D)
    counts = torch.bincount(y[train], minlength=len(classes))
    majority = int(counts.argmax())  # the first of the most frequent, in sorted label order
    return {
        "accuracy_latent": _accuracy(mu, y, train, test, len(classes), c),
        "accuracy_bow": _accuracy(bow, y, train, test, len(classes), c),
        "accuracy_majority": float((y[test] == majority).double().mean()),
        "n_train": n, "n_test": len(test_rows), "classes": len(classes),
        "latent_dim": mu.size(1), "bow_features": bow.size(1), "seed": seed,
        "features": "codes" if model.latent.discrete else "means",
    }
