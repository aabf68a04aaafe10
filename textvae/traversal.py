"""Latent traversals: decode one code with one dimension swept over a range of values, and measure
which known factor of variation each dimension moves (the intervention effect).

The data flow::

    parse_values("-3:3:7"), parse_dims("0,3", Z)    the sweep and the dimensions, checked
    traverse(model, code, dims, values)             {dim: [decoded sentence per value]}
    FactorClassifier.fit(texts, factors)            one bag-of-n-grams classifier per factor,
                                                    trained on real labelled text, read in
                                                    the model's tokens
    intervention_effect(model, codes, ...)          {dim: {factor: share of swept decodings whose
                                                    predicted factor differs from the unswept one}}
    factor_intervention(model, dims, values)        the two above on the model's own labelled
                                                    corpus (``textvae traverse --factors``)

A traversal sets dimension d of the code to each value (absolute values, in the prior's units:
the Gaussian prior is N(0, I), so -3..3 spans it) and leaves the others as they are. The base
code is a sentence's posterior point code (the Gaussian's mean) or the prior's centre.

The intervention effect of dimension d on factor f (docs/disentangle.md): for each of N base
codes, decode the unswept code and each swept one, ask f's classifier for the factor of every
decoded sentence, and count how often a swept decoding's prediction differs from the unswept
one's; the mean over bases and values. 0: moving d never changes what the classifier sees as f;
it rises towards 1 - 1/|f| when d alone decides f. It measures the decoder's use of d, which MIG
(computed on the encoder's means) does not.
"""

import numpy as np
import torch

from .errors import TextVAEError


MAX_VALUES = 1000  # values of one sweep: each is a decoded sentence per dimension (and per base with --factors)


def parse_values(text: str) -> list[float]:
    """``"a:b:n"`` -> n evenly spaced values from a to b (endpoints included), or a comma list
    ``"-2,0,2"``; 2 to :data:`MAX_VALUES` values (a list: at most that many). A TextVAEError names
    the text and the expected form."""
    form = "give START:STOP:COUNT (e.g. -3:3:7) or a comma list (e.g. -2,0,2)"
    finite = f"--values {text!r}: every value must be a finite number; {form}"
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            n, ends = int(count), (float(start), float(stop))
            if not 2 <= n <= MAX_VALUES:
                raise TextVAEError(f"--values {text!r}: COUNT must be at least 2 and at most {MAX_VALUES} "
                                   f"(got {n}); {form}")
            if not all(np.isfinite(ends)):
                raise TextVAEError(finite)
            values = np.linspace(*ends, n).tolist()
        else:
            values = [float(v) for v in text.split(",")]
    except ValueError:
        raise TextVAEError(f"--values {text!r} is not a sweep; {form}") from None
    if len(values) > MAX_VALUES:
        raise TextVAEError(f"--values: {len(values)} values; a sweep takes at most {MAX_VALUES} values; {form}")
    if not values or not all(np.isfinite(values)):
        raise TextVAEError(finite)
    return values


def parse_dims(text: str, latent_dim: int) -> list[int]:
    """``"all"`` or a comma list of dimension indices, each in [0, latent_dim); a dimension named twice
    is swept once."""
    if text == "all":
        return list(range(latent_dim))
    dims = []
    for part in text.split(","):
        try:
            d = int(part)
        except ValueError:
            raise TextVAEError(f"--dim {text!r}: {part!r} is not a dimension index; give an integer, a comma list "
                               f"(0,3) or 'all'") from None
        if not 0 <= d < latent_dim:
            raise TextVAEError(f"--dim {d} is out of range: the model's latent has {latent_dim} dimensions "
                               f"(0 to {latent_dim - 1})")
        if d not in dims:
            dims.append(d)
    return dims


def _check_dims(dims: list[int], code_dim: int) -> None:
    """Each dimension an index in [0, code_dim): a negative one would sweep a dimension counted from the
    end under its own (negative) name."""
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 0 <= d < code_dim:
            raise TextVAEError(f"dimension {d!r} is not a dimension of the code: give indices from 0 to "
                               f"{code_dim - 1} (the code has {code_dim} dimensions)")


def base_code(model, sentence: str | None = None, label: str | None = None) -> torch.Tensor:
    """The code a traversal starts from, (Z,): the sentence's posterior point code, or without
    a sentence the prior's centre."""
    if model.is_lm:
        raise TextVAEError("a language model (latent_dim=0) has no latent space to traverse; use a VAE model")
    if sentence is None:
        return model.latent.prior_point().to(model.device)
    if not model.tokenizer.encode(sentence):
        raise TextVAEError(f"the sentence {sentence!r} is empty after tokenisation; give at least one word")
    return model.encode_points([sentence], label)[0]


@torch.no_grad()
def traverse(model, code: torch.Tensor, dims: list[int], values: list[float], sample=None,
             label: str | None = None, seed: int = 0) -> dict[int, list[str]]:
    """{dim: the decoded sentence at each value} for the code (Z,) with ``dim`` swept; greedy
    decoding unless ``sample`` says otherwise (its noise seeded by ``seed``)."""
    from .config import SampleConfig

    _check_dims(dims, code.size(-1))
    codes = torch.cat([model.latent.sweep(code, d, values) for d in dims])  # (len(dims) V, Z)
    lines = model.decode(codes, sample or SampleConfig(greedy=True), label=label,
                         generator=torch.Generator().manual_seed(seed))
    v = len(values)
    return {d: lines[i * v:(i + 1) * v] for i, d in enumerate(dims)}


class FactorClassifier:
    """One classifier per factor that reads the factor off a sentence's text: logistic regression
    on token unigram and bigram counts (scikit-learn), trained on real labelled sentences.

    ``tokenize`` (text -> list of tokens; default: split at whitespace) is how texts are cut into
    tokens, for training, scoring and prediction alike. To judge a model's decodings, use
    :func:`model_tokens`: real sentences are then read as the model would write them (lowercased,
    punctuation split off, unknown words as ``<unk>``, characters), the form its decodings have.

    ``accuracy`` holds each factor's held-out accuracy once :meth:`score` has run, so a reader
    knows how far to trust what it sees in decoded sentences.
    """

    def __init__(self, seed: int = 0, tokenize=None):
        self.seed = seed
        self.tokenize = tokenize
        self.models: dict = {}
        self.accuracy: dict[str, float] = {}

    def fit(self, texts: list[str], factors: dict[str, list]) -> "FactorClassifier":
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        for name, labels in factors.items():
            if len(labels) != len(texts):
                raise TextVAEError(f"factor {name!r} has {len(labels)} labels for {len(texts)} sentences")
            if len(set(labels)) < 2:
                raise TextVAEError(f"factor {name!r} has a single value ({labels[0]!r}); nothing to classify")
            tokens = ({"token_pattern": r"\S+"} if self.tokenize is None
                      else {"tokenizer": self.tokenize, "token_pattern": None})
            self.models[name] = make_pipeline(
                CountVectorizer(**tokens, ngram_range=(1, 2), lowercase=False),
                LogisticRegression(max_iter=2000, random_state=self.seed)).fit(texts, labels)
        return self

    def predict(self, texts: list[str]) -> dict[str, np.ndarray]:
        return {name: m.predict(texts) for name, m in self.models.items()}

    def score(self, texts: list[str], factors: dict[str, list]) -> dict[str, float]:
        """Held-out accuracy per factor on labelled ``texts``; kept in ``self.accuracy``."""
        pred = self.predict(texts)
        self.accuracy = {name: float(np.mean(pred[name] == np.asarray(factors[name]))) for name in self.models}
        return self.accuracy


def model_tokens(model):
    """text -> the model tokenizer's tokens of it (``<unk>`` for an unknown word): a
    :class:`FactorClassifier`'s ``tokenize`` that reads real sentences as the model writes them."""
    tokenizer = model.tokenizer
    return lambda text: [tokenizer.id_to_token(i) for i in tokenizer.encode(text)]


@torch.no_grad()
def intervention_effect(model, codes: torch.Tensor, dims: list[int], values: list[float],
                        classifier: FactorClassifier, sample=None, batch_size: int = 512,
                        labels: list[str] | None = None, seed: int = 0) -> dict[int, dict[str, float]]:
    """{dim: {factor: effect}} over base codes (N, Z) (see the module docstring); greedy decoding
    unless ``sample`` says otherwise (one noise stream seeded by ``seed`` over all its decodings).
    ``labels``: a conditional model's label of each base code (N), which its sweeps are decoded with too."""
    from .config import SampleConfig

    _check_dims(dims, codes.size(-1))
    sample = sample or SampleConfig(greedy=True)
    generator = torch.Generator().manual_seed(seed)
    n, v = codes.size(0), len(values)
    unswept = classifier.predict(_decode(model, codes, sample, batch_size, labels, generator))  # {factor: (N,)}
    swept_labels = None if labels is None else [y for y in labels for _ in values]  # (N V,), as swept below
    effect = {}
    for d in dims:
        swept = torch.stack([model.latent.sweep(c, d, values) for c in codes])  # (N, V, Z)
        pred = classifier.predict(_decode(model, swept.flatten(0, 1), sample, batch_size, swept_labels, generator))
        effect[d] = {f: float(np.mean(pred[f].reshape(n, v) != unswept[f][:, None])) for f in pred}
    return effect


def _decode(model, codes: torch.Tensor, sample, batch_size: int, labels: list[str] | None,
            generator: torch.Generator) -> list[str]:
    return [s for i in range(0, codes.size(0), batch_size)
            for s in model.decode(codes[i:i + batch_size], sample, generator=generator,
                                  label=None if labels is None else labels[i:i + batch_size])]


def factor_intervention(model, dims: list[int], values: list[float], sample=None, *, data_dir: str | None = None,
                        bases: int = 50, seed: int = 0) -> dict:
    """The intervention effect on the model's corpus: one :class:`FactorClassifier` per factor trained
    on the labelled train split, scored on the test split (both read in the model's tokens,
    :func:`model_tokens`, the form of its decodings), and :func:`intervention_effect` over the
    codes of ``bases`` test sentences picked at random (``seed``, which also seeds sampled decoding).
    ``data_dir``: the corpus when it is not where the model was trained. A conditional model encodes
    each base sentence, and decodes its sweeps, with the sentence's own label. Returns ``intervention_effect``, ``classifier_accuracy``,
    ``bases`` and ``split``."""
    from .data import load_splits
    from .disentanglement import read_factors
    from .metrics import model_data

    data = model_data(model, data_dir=data_dir)
    train_factors, test_factors = read_factors(data, "train"), read_factors(data, "test")
    if not train_factors:
        raise TextVAEError("--factors needs factor labels: the built-in corpus, or {split}.{factor}.labels.txt "
                           "files beside the corpus's text files, or data.factor_fields naming jsonl/csv columns "
                           "set when training (docs/disentangle.md)")
    missing = [f for f in train_factors if f not in test_factors]
    if missing:  # the classifiers are scored on the test split
        files = ", ".join(f"{data.splits['test']}.{'' if f == 'label' else f + '.'}labels.txt" for f in missing)
        raise TextVAEError(f"--factors: the test split has no labels of factor{'s' * (len(missing) > 1)} "
                           f"{', '.join(map(repr, missing))}, which the train split has; add them ({files} beside "
                           f"the test text file, or the same data.factor_fields columns in the test file)")
    splits = load_splits(data, ("train", "test"))
    # the classifiers read the corpus as the model writes it (lowercased, punctuation split off, <unk>): read
    # as written ("The weather is GOOD today."), they would never see a word of a decoding ("... good today .")
    clf = FactorClassifier(seed, tokenize=model_tokens(model)).fit(splits["train"]["text"], train_factors)
    test = splits["test"]["text"]
    accuracy = clf.score(test, test_factors)
    pick = np.random.default_rng(seed).permutation(len(test))[:bases]
    # a conditional model's base sentences are encoded, and their sweeps decoded, with their own labels
    # (the test split has them: its "label" factor was checked above)
    labels = [str(splits["test"]["label"][i]) for i in pick] if model.conditional else None
    codes = model.encode_points([test[i] for i in pick], labels)
    effect = intervention_effect(model, codes, dims, values, clf, sample, labels=labels, seed=seed)
    return {"intervention_effect": effect, "classifier_accuracy": accuracy, "bases": len(pick), "split": "test"}
