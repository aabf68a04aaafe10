"""Run figures from a synthetic metrics.jsonl and a tiny model."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import cli, expect_error, write_lines
from textvae.config import ModelConfig
from textvae.data import EncodedSplit
from textvae.errors import DataError
from textvae.model import TextVAE
from textvae.plot import pca_2d, plot_run, plot_traversal

PNG = b"\x89PNG\r\n\x1a\n"


def write_metrics(run, z=4, steps=6):
    lines = []
    for s in range(1, steps + 1):
        lines.append({"kind": "train", "step": 10 * s, "epoch": 0, "loss": 30.0 / s, "rec": 28.0 / s, "kl": 0.5 * s,
                      "kl_weight": min(1.0, s / 4), "lr": 1e-3, "tokens_per_s": 1000.0})
        if s % 2 == 0:
            lines.append({"kind": "valid", "step": 10 * s, "epoch": 0, "rec": 27.0 / s, "kl": 0.4 * s,
                          "elbo": 27.0 / s + 0.4 * s, "ppl_elbo": 50.0 / s, "au": s // 2,
                          "kl_per_dim": [0.1 * s * (d + 1) for d in range(z)], "lr": 1e-3, "kl_weight": 1.0})
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))


def tiny_split(n=30):
    rng = np.random.default_rng(0)
    ids = [rng.integers(4, 20, size=int(rng.integers(2, 9))).astype(np.int32) for _ in range(n)]
    return EncodedSplit(ids=ids, texts=["x"] * n, labels=None)


def test_plot_run_writes_the_three_pngs(tmp_path):
    write_metrics(tmp_path / "run")
    torch.manual_seed(0)
    model = TextVAE(ModelConfig(vocab_size=20, emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=4))
    split = tiny_split()
    before = torch.get_rng_state()
    paths = plot_run(tmp_path / "run", tmp_path / "out", model=model, split=split)
    assert torch.equal(before, torch.get_rng_state())
    assert [p.name for p in paths] == ["curves.png", "kl_per_dim.png", "latent_pca.png"]
    for p in paths:
        assert p.parent == tmp_path / "out" and p.read_bytes()[:8] == PNG and p.stat().st_size > 5000
    # coloured by labels; default output folder run/plots
    labels = ["pos" if i % 2 else "neg" for i in range(len(split.ids))]
    paths = plot_run(tmp_path / "run", model=model, split=split, labels=labels)
    assert (tmp_path / "run" / "plots" / "latent_pca.png").is_file() and len(paths) == 3
    with pytest.raises(DataError, match="labels"):
        plot_run(tmp_path / "run", model=model, split=split, labels=labels[:-1])


def test_without_a_model_kl_comes_from_the_last_valid_record(tmp_path):
    write_metrics(tmp_path)
    with pytest.warns(UserWarning, match="latent_pca.png skipped: no model given"):
        paths = plot_run(tmp_path)
    assert [p.name for p in paths] == ["curves.png", "kl_per_dim.png"]


def test_missing_or_empty_metrics_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="nothing to plot: .*metrics.jsonl does not exist .* and no model given"):
        plot_run(tmp_path)
    with pytest.raises(DataError, match=f"metrics.jsonl does not exist .* and {tmp_path} holds no model"):
        plot_run(tmp_path, split="valid")  # as textvae plot asks
    (tmp_path / "metrics.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n{"kind": "va')
    with pytest.raises(DataError, match="line 2"):
        plot_run(tmp_path)


def test_traversal_text_is_drawn_as_written_not_as_mathtext(tmp_path):
    """Penn Treebank text has "$" tokens: two on a line made matplotlib read the words between them as
    math (dropping the "$" and the spaces), and an unbalanced "{" there failed the whole figure."""
    lines = {0: ["it paid $ N { a share and $ N more .", "the price rose to $ N million ."],
             3: ["a_b ^ c $ x_1 $ .", "$"]}
    path = plot_traversal(lines, [-1.0, 1.0], tmp_path / "t.png", title=" of 'it paid $ N { $'")
    assert path.read_bytes()[:8] == PNG


def test_pca_recovers_the_dominant_directions():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=g) * torch.tensor([5.0, 2.0, 0.1])
    proj, share = pca_2d(x)
    assert proj.shape == (500, 2)
    assert abs(float(torch.corrcoef(torch.stack([proj[:, 0], x[:, 0].double()]))[0, 1])) > 0.99
    assert float(share[0]) > 0.8 and float(share.sum()) > 0.99


def test_plot_without_matplotlib_exits_2_with_the_install_hint(tmp_path, capsys, monkeypatch):
    import sys

    from textvae.cli import main

    write_metrics(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert main(["plot", "--run", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'textvae[plot]'" in err and "Traceback" not in err


def test_the_figures_say_what_a_discrete_latent_and_a_language_model_have(tmp_path, monkeypatch):
    """A VQ model's latent_pca.png plots its one-hot codes but was titled 'posterior means'; for a language
    model the per-dimension KL was 'skipped: ... no model + split given' though both were."""
    import textvae.plot as plot

    titles = {}
    save = plot._save
    monkeypatch.setattr(plot, "_save", lambda fig, path: titles.setdefault(path.name, fig.axes[0].get_title())
                        and save(fig, path))
    write_metrics(tmp_path / "run")
    torch.manual_seed(0)
    sizes = dict(vocab_size=20, emb_dim=8, enc_hidden=8, dec_hidden=8)
    vq = TextVAE(ModelConfig(**sizes, latent="vq", latent_dim=4, latent_vars=2, latent_classes=3, code_dim=4))
    plot_run(tmp_path / "run", tmp_path / "vq", model=vq, split=tiny_split())
    assert titles["latent_pca.png"] == "one-hot vq codes of 30 sentences"
    gaussian = TextVAE(ModelConfig(**sizes, latent_dim=4))
    titles.clear()
    plot_run(tmp_path / "run", tmp_path / "g", model=gaussian, split=tiny_split())
    assert titles["latent_pca.png"] == "posterior means of 30 sentences"
    write_metrics(tmp_path / "lm", z=0)  # an LM's validation records: kl_per_dim []
    with pytest.warns(UserWarning) as caught:
        paths = plot_run(tmp_path / "lm", model=TextVAE(ModelConfig(**sizes, latent_dim=0)), split=tiny_split())
    assert [p.name for p in paths] == ["curves.png"]
    said = [str(w.message) for w in caught]
    assert any(m.startswith("kl_per_dim.png skipped: ") and "is a language model (latent_dim=0)" in m for m in said)
    assert not any("no model" in m for m in said)


def _run_without_a_model(tiny_run, path):
    """A run stopped before its first save: its config and log, no best/ or checkpoints/."""
    path.mkdir()
    for name in ("config.json", "metrics.jsonl"):
        shutil.copy(tiny_run / name, path / name)
    return path


def test_plot_of_a_run_that_saved_no_model_draws_its_log_and_says_what_it_skipped(tiny_run, tmp_path, capsys):
    """`textvae plot` on a run killed before its first save (or a folder of its logs) wrote curves.png,
    then exited 2 on the model it could not load, leaving kl_per_dim.png out though the log has it."""
    run = _run_without_a_model(tiny_run, tmp_path / "run")
    out, err = cli(capsys, ["plot", "--run", run])
    assert out.splitlines() == [str(run / "plots" / "curves.png"), str(run / "plots" / "kl_per_dim.png")]
    assert all(p.read_bytes()[:8] == PNG for p in (run / "plots").iterdir())
    assert f"textvae plot: warning: latent_pca.png skipped: {run} holds no model (no best/, checkpoints/" in err
    assert "error" not in err
    # the labels colour the PCA map alone: asked for it with no model, an error before anything is drawn
    labels = tmp_path / "labels.txt"
    labels.write_text("a\n")
    expect_error(capsys, ["plot", "--run", run, "--labels", labels, "--out", tmp_path / "p"],
                 "the labels colour latent_pca.png, which needs a model", f"{run} holds no model")
    assert not (tmp_path / "p").exists()
    # a model there but unreadable is still an error, not a figure skipped
    shutil.copytree(tiny_run / "best", run / "best")
    (run / "best" / "config.json").write_text("{")
    expect_error(capsys, ["plot", "--run", run, "--out", tmp_path / "q"], "not valid JSON")


def test_plot_of_a_model_directory_draws_the_model_figures_without_curves(tiny_run, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_run / "best", model_dir)
    out, err = cli(capsys, ["plot", "--run", model_dir, "--out", tmp_path / "p"])
    assert [Path(line).name for line in out.splitlines()] == ["kl_per_dim.png", "latent_pca.png"]
    assert f"curves.png skipped: {model_dir / 'metrics.jsonl'} does not exist" in err


def test_plot_labels_of_blank_lines_are_dropped_with_them_as_probe_does(tiny_run, tmp_path, capsys, monkeypatch):
    """A labels file with one label per line of a split's text file that has blank lines: probe --labels
    drops the blank lines' labels with them; plot --labels counted 12 labels for 11 examples and refused."""
    import textvae.plot as plot

    texts = [f"the {w} sat on a mat ." for w in ("cat", "dog", "man", "boy", "cat", "dog",
                                                   "man", "boy", "cat", "dog", "man")]
    tags = ["pets", "pets", "people", "people"] * 3
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("train", "valid", "test"):
        write_lines(corpus / f"{name}.txt", texts[:4] + [""] + texts[4:])  # line 5 is blank ...
    write_lines(tmp_path / "tags.txt", tags[:4] + ["-"] + tags[4:11])  # ... and so is its label's line
    model = TextVAE.from_pretrained(tiny_run)
    run = tmp_path / "run"
    model.save_pretrained(run / "best", extra={**model.extra_config,
                                               "data": {**model.extra_config["data"], "data_dir": str(corpus)}})
    shutil.copy(tiny_run / "metrics.jsonl", run / "metrics.jsonl")
    drawn = {}
    monkeypatch.setattr(plot, "plot_latent_pca", lambda mu, path, lengths=None, labels=None, what="":
                        drawn.update(n=len(mu), labels=labels) or path)
    cli(capsys, ["plot", "--run", run, "--labels", tmp_path / "tags.txt"])
    assert drawn == {"n": 11, "labels": tags[:11]}
    # the same file, read by probe: the same labels for the same examples
    from textvae.metrics import model_split

    assert model_split(model, "valid", data_dir=str(corpus), labels_file=tmp_path / "tags.txt").labels == tags[:11]
