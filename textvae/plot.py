"""Figures of a training run (PNG, matplotlib without a display).

    curves.png       reconstruction, KL, KL weight, valid perplexity and active units over steps
                     (the KL / MI-over-training figures of He et al. 2019)
    kl_per_dim.png   KL per latent dimension: which units the model uses (Burda et al. 2016)
    latent_pca.png   posterior means of a split (a discrete latent: its one-hot codes) projected on
                     their first two principal axes, coloured by sentence length or by label
                     (Bowman et al. 2016, fig. 4 style)

Only matplotlib's object-oriented API with the Agg canvas is used, so importing this module never
changes the pyplot backend of the calling program. matplotlib is a dependency of textvae; an install
without it (``pip install --no-deps``) gets an error naming the fix, not an ImportError.
"""

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError, DataError, TextVAEError


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl`` (one JSON object per line, blank lines skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass the directory of a training run "
                        f"(textvae train --out DIR writes DIR/metrics.jsonl)")
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {lineno}: not valid JSON ({e.msg}); the file may be "
                            f"truncated, delete that line or re-run training") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(rec).__name__}")
        records.append(rec)
    if not records:
        raise DataError(f"{path} is empty: the run has not logged anything yet; train for at least one "
                        f"log interval or evaluation before plotting")
    return records


def _series(records: list[dict], kind: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r[key]) for r in records
           if r.get("kind") == kind and key in r and "step" in r and r[key] is not None]
    if not pts:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*pts)
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def require_matplotlib() -> None:
    """A TextVAEError with the install command when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise TextVAEError(f"plotting needs matplotlib, which is not installed ({e}); install it with "
                           f"pip install 'textvae[plot]' (or pip install matplotlib)") from None


def _figure(nrows: int, ncols: int, size: tuple[float, float]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)
    return path


def plot_curves(records: list[dict], path: Path) -> Path:
    """Train and valid reconstruction / KL, the KL weight, valid PPL and AU against the step."""
    fig, axes = _figure(2, 3, (13, 6.5))
    panels = [
        ("reconstruction NLL (nats / sentence)", [("train", "rec"), ("valid", "rec")], False),
        ("KL (nats / sentence)", [("train", "kl"), ("valid", "kl")], False),
        ("KL weight", [("train", "kl_weight")], False),
        ("valid perplexity (ELBO bound)", [("valid", "ppl_elbo")], True),
        ("active units", [("valid", "au")], False),
        ("learning rate", [("train", "lr")], True),
    ]
    for ax, (title, series, logy) in zip(axes.flat, panels):
        drawn = False
        for kind, key in series:
            x, y = _series(records, kind, key)
            if len(x):
                style = dict(marker="o", markersize=3) if kind == "valid" else dict(linewidth=1)
                ax.plot(x, y, label=kind, **style)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif logy and all((_series(records, k, key)[1] > 0).all() for k, key in series):
            ax.set_yscale("log")
        if drawn and len(series) > 1:
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_kl_per_dim(kl_per_dim, path: Path, title: str = "") -> Path:
    """Bar chart of KL(q(z_d|x) || p(z_d)) per latent dimension d, in nats per sentence."""
    kl = np.asarray(kl_per_dim, dtype=float)
    fig, axes = _figure(1, 1, (max(6.0, 0.22 * len(kl) + 2), 3.5))
    ax = axes[0, 0]
    ax.bar(np.arange(len(kl)), kl, color="tab:blue")
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL (nats / sentence)")
    ax.set_title(f"KL per dimension, total {kl.sum():.2f} nats{title}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_code_usage(one_hot: torch.Tensor, vars: int, path: Path, title: str = "") -> Path:
    """How often each code is chosen, per position: one row of bars per variable, from one-hot codes (N, M K)."""
    counts = one_hot.view(one_hot.size(0), vars, -1).sum(0).numpy()  # (M, K)
    fig, axes = _figure(vars, 1, (max(6.0, 0.05 * counts.shape[1] + 2), 1.2 * vars + 1))
    for m in range(vars):
        ax = axes[m, 0]
        ax.bar(np.arange(counts.shape[1]), counts[m], color="tab:blue", width=1.0)
        ax.set_ylabel(f"z{m}", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xlabel("code id")
    used = (counts.sum(0) > 0).sum()
    axes[0, 0].set_title(f"code usage: {used} of {counts.shape[1]} codes used{title}", fontsize=10)
    return _save(fig, path)


def pca_2d(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Projection of the rows of x (N, D) on their first two principal axes, and the share of the
    variance each explains. Exact SVD (no random projections: the global RNG is left alone)."""
    x = x.double()
    x = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    k = min(2, vh.size(0))
    proj = x @ vh[:k].T
    if k < 2:
        proj = torch.cat([proj, torch.zeros(x.size(0), 2 - k, dtype=proj.dtype)], 1)
    var = s.pow(2)
    share = var[:2] / var.sum().clamp_min(1e-300)
    return proj, torch.cat([share, torch.zeros(2 - len(share), dtype=share.dtype)])


def plot_latent_pca(mu: torch.Tensor, path: Path, lengths=None, labels=None, what: str = "posterior means") -> Path:
    """Scatter of the first two principal components of the rows of ``mu``: ``what`` they are, the
    posterior means (a discrete latent's one-hot codes, see :func:`plot_run`)."""
    proj, share = pca_2d(mu)
    p = proj.numpy()
    fig, axes = _figure(1, 1, (6.5, 5.5))
    ax = axes[0, 0]
    if labels is not None:
        names = sorted({str(l) for l in labels})
        cmap = __import__("matplotlib").colormaps["tab20" if len(names) > 10 else "tab10"]
        labels = np.asarray([str(l) for l in labels])
        for i, name in enumerate(names):
            sel = labels == name
            ax.scatter(p[sel, 0], p[sel, 1], s=6, alpha=0.7, color=cmap(i % cmap.N), label=name)
        if len(names) <= 20:
            ax.legend(fontsize=7, markerscale=2, loc="best")
    else:
        sc = ax.scatter(p[:, 0], p[:, 1], s=6, alpha=0.7, c=lengths, cmap="viridis")
        if lengths is not None:
            fig.colorbar(sc, ax=ax, label="sentence length (tokens)")
    ax.set_xlabel(f"PC 1 ({100 * float(share[0]):.1f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * float(share[1]):.1f}% of variance)")
    ax.set_title(f"{what} of {len(p)} sentences", fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_traversal(lines: dict[int, list[str]], values: list[float], path: Path, effect=None,
                   title: str = "") -> Path:
    """A latent traversal a reader can look at: for each swept dimension, the decoded sentence at every
    value (a text panel), and with ``effect`` ({dim: {factor: share}}, ``textvae.traversal``) a heat
    map of which factor each dimension moves."""
    from matplotlib.figure import Figure

    dims = list(lines)
    width = min(120, max(len(s) for d in dims for s in lines[d]) + 12)  # characters, value column included
    rows = len(dims) * (len(values) + 1)
    text_in = 0.075 * width
    heat_in = 0.55 * len(next(iter(effect.values()))) + 2.2 if effect else 0.0
    fig = Figure(figsize=(text_in + heat_in, 0.2 * rows + 1.0), layout="constrained")
    grid = fig.add_gridspec(1, 2 if effect else 1, width_ratios=[text_in, heat_in] if effect else None)
    ax = fig.add_subplot(grid[0, 0])
    ax.axis("off")
    text = []
    for d in dims:
        text.append(f"dim {d}")
        text += [f"  {v:+5.2f}  {s[:width - 10]}" for v, s in zip(values, lines[d])]
    # parse_math=False: decoded text is drawn as written (PTB's "$ N ... $ N" is not mathtext)
    ax.text(0, 1, "\n".join(text), family="monospace", fontsize=8, va="top", transform=ax.transAxes,
            parse_math=False)
    ax.set_title(f"latent traversal{title}", fontsize=10, loc="left", parse_math=False)
    if effect:
        names = list(next(iter(effect.values())))
        m = np.array([[effect[d][f] for f in names] for d in effect])
        hx = fig.add_subplot(grid[0, 1])
        im = hx.imshow(m, cmap="viridis", vmin=0, vmax=max(1e-9, float(m.max())), aspect="auto")
        hx.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        hx.set_yticks(range(len(effect)), [f"dim {d}" for d in effect], fontsize=8)
        for (i, j), v in np.ndenumerate(m):
            hx.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if v < 0.6 * m.max() else "black")
        hx.set_title("intervention effect\n(share of decodings whose factor changes)", fontsize=9)
        fig.colorbar(im, ax=hx, shrink=0.6)
    return _save(fig, path)


def _load_split(run_dir: Path, model, name: str, labels_file=None):
    """``name`` ("valid", "test", ...) of the run's corpus (:func:`textvae.metrics.model_split`, which
    also reads ``labels_file`` as ``textvae probe --labels`` does); the corpus is the model's saved
    ``data`` section or else the run's config.json."""
    from .config import Config
    from .metrics import model_split

    data = None
    if not getattr(model, "extra_config", {}).get("data"):
        if not (run_dir / "config.json").is_file():
            raise DataError(f"cannot tell which corpus {run_dir} was trained on (no data section in the model's "
                            f"config.json nor {run_dir / 'config.json'}); pass an encoded split instead")
        data = Config.from_dict(json.loads((run_dir / "config.json").read_text(encoding="utf-8")),
                                str(run_dir / "config.json")).data
    return model_split(model, name, data=data, labels_file=labels_file)


def _saved_model(run: Path):
    """(the model saved in ``run``, None) or, when it holds none (a run stopped before its first save,
    a folder of logs only), (None, why): a model that is there but cannot be read is an error."""
    from .model import TextVAE, resolve_model_dir

    try:
        resolve_model_dir(run)
    except CheckpointError:
        return None, (f"{run} holds no model (no best/, checkpoints/ or model.safetensors: a run saves one at its "
                      f"first validation)")
    return TextVAE.from_pretrained(run), None


def _skipped(name: str, why: str) -> None:
    warnings.warn(f"{name} skipped: {why}", UserWarning, stacklevel=3)


def plot_run(run_dir, out_dir=None, model=None, split=None, labels=None, labels_file=None) -> list[Path]:
    """Write the figures of a training run that its files allow; returns the paths written, and
    warns (UserWarning) of each figure skipped and why.

    ``curves.png`` from ``run_dir/metrics.jsonl`` (skipped when there is none, as in a model
    directory; an empty or damaged log is a DataError). ``kl_per_dim.png`` from the model on
    ``split`` when both are available, else from the last validation record. ``latent_pca.png``
    needs a model with a latent space and a split: the posterior means, coloured by ``labels``
    (one per example) or ``labels_file`` (one per line of the split's text file, blank lines'
    labels dropped with them: :func:`textvae.metrics.model_split`; ``split`` must then be a name),
    by default the split's own labels, else by sentence length. ``split`` is an encoded split, or
    the name of a split of the run's corpus ("valid", "test"); ``model`` defaults to the run's best
    model when a split is given, and a run without one gets the figures of its log alone. A
    DataError when nothing can be drawn, or when labels are given and there is no model to colour.
    ``out_dir`` defaults to ``run_dir/plots``.
    """
    from .metrics import posterior_parameters, validate

    require_matplotlib()
    run = Path(run_dir)
    if labels_file is not None and not isinstance(split, str):
        raise TextVAEError("labels_file is read against a split of the run's corpus: give split as its name "
                           "(\"valid\", \"test\"), or give labels, one per example of an encoded split")
    logged = (run / "metrics.jsonl").is_file()
    records = read_metrics(run) if logged else []  # an empty or damaged log is an error, not a skip
    no_model = None if model is not None else "no model given"
    if split is not None and model is None:
        model, no_model = _saved_model(run)
    if model is None and (labels is not None or labels_file is not None):
        raise DataError(f"the labels colour latent_pca.png, which needs a model, but {no_model}; leave the "
                        f"labels out to draw the figures of the run's log")
    if not logged and (model is None or split is None or model.is_lm):
        why = (no_model if model is None else "no split given" if split is None
               else f"{run} is a language model (latent_dim=0), it has no latent to draw")
        raise DataError(f"nothing to plot: {run / 'metrics.jsonl'} does not exist (textvae train --out DIR writes "
                        f"DIR/metrics.jsonl) and {why}; pass the directory of a training run")
    if isinstance(split, str) and model is not None:
        split = _load_split(run, model, split, labels_file)
    elif model is None:
        split = None  # a split name with no model to encode it: the figures of the log only
    out = Path(out_dir) if out_dir is not None else run / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if logged:
        written.append(plot_curves(records, out / "curves.png"))
    else:
        _skipped("curves.png", f"{run / 'metrics.jsonl'} does not exist: {run} is not a training run's directory")

    kl_source = None
    discrete = model is not None and split is not None and not model.is_lm and model.latent.discrete
    if discrete:  # the codes' histogram says which are used, where per-dimension KL would
        from .code_metrics import code_features

        written.append(plot_code_usage(code_features(model, split), model.latent.vars, out / "code_usage.png",
                                       f" ({model.config.latent}, {len(split.ids)} sentences)"))
    elif model is not None and split is not None and not model.is_lm:
        kl_source = (validate(model, split)["kl_per_dim"], f" (model on {len(split.ids)} sentences)")
    else:
        valid = [r for r in records if r.get("kind") == "valid" and r.get("kl_per_dim")]
        if valid:
            kl_source = (valid[-1]["kl_per_dim"], f" (valid, step {valid[-1].get('step')})")
    if discrete:
        pass
    elif kl_source:
        written.append(plot_kl_per_dim(kl_source[0], out / "kl_per_dim.png", kl_source[1]))
    elif model is not None and model.is_lm:
        _skipped("kl_per_dim.png", f"{run} is a language model (latent_dim=0), it has no latent")
    else:
        _skipped("kl_per_dim.png", f"no per-dimension KL in {run / 'metrics.jsonl'} and "
                                   f"{no_model or 'no split given'}")

    if model is not None and split is not None and not model.is_lm:
        if labels is None:
            labels = split.labels
        if labels is not None and len(labels) != len(split.ids):
            raise DataError(f"{len(labels)} labels for {len(split.ids)} examples; give one label per example "
                            f"of the split, in order")
        mu = code_features(model, split) if discrete else posterior_parameters(model, split)[0]  # (N, Z)
        what = f"one-hot {model.config.latent} codes" if discrete else "posterior means"
        written.append(plot_latent_pca(mu, out / "latent_pca.png", lengths=np.asarray(split.lengths),
                                       labels=labels, what=what))
    else:
        _skipped("latent_pca.png", no_model if model is None else
                 f"{run} is a language model (latent_dim=0), it has no latent" if model.is_lm else
                 "it needs a split to encode")
    return written
