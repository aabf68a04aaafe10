"""Hugging Face Hub round trip without the network: pushes stop at the upload call (the files and
card it would send are captured), loads read a snapshot laid out in huggingface_hub's own cache
layout with HF_HUB_OFFLINE=1."""
import json
import sys

import huggingface_hub
import pytest
import torch

from helpers import cli, expect_error
from textvae import CheckpointError, TextVAE, TextVAEError
from textvae.hub import read_card_metadata, snapshot_layout, stage

pytestmark = pytest.mark.filterwarnings("ignore:unknown word")  # the tiny corpus lacks some words used here
METRICS = {"nll_iw": 40.123456, "ppl_iw": 30.5, "elbo": 41.0, "kl": 3.25, "au": 4, "kl_per_dim": [1.0, 2.0]}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 and an empty private hub cache; returns the cache folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "hub-cache"  # also the default cache, for the CLI
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def uploads(monkeypatch):
    """HfApi.create_repo / upload_folder replaced by recorders: the list of uploads, each
    {"repo_id", "revision", "files": {name: bytes}}, read while the folder still exists."""
    sent = []

    def create_repo(self, repo_id, **kw):
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, revision=None, **kw):
        from pathlib import Path

        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        sent.append({"repo_id": repo_id, "revision": revision, "files": files, "message": kw.get("commit_message")})
        return f"https://huggingface.co/{repo_id}/commit/{'a' * 40}"

    def create_branch(self, repo_id, *, branch, **kw):
        sent.append({"branch": branch, "repo_id": repo_id})

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_branch", create_branch)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return sent


def _outputs(model):
    """Everything a user sees of a model, to compare exactly."""
    mu, logvar = model.encode(["the cat sat .", "a dog ran ."])
    return {"weights": {k: v.clone() for k, v in model.state_dict().items()}, "mu": mu, "logvar": logvar,
            "samples": model.sample(4, seed=3), "rec": model.reconstruct(["the cat sat ."])}


def _same(a, b):
    assert a["weights"].keys() == b["weights"].keys()
    assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
    assert torch.equal(a["mu"], b["mu"]) and torch.equal(a["logvar"], b["logvar"])
    assert a["samples"] == b["samples"] and a["rec"] == b["rec"]


def test_push_then_load_from_the_hub_cache_is_bit_identical(tiny_run, uploads, offline):
    model = TextVAE.from_pretrained(tiny_run)
    url = model.push_to_hub("me/tiny-vae", metrics=METRICS, split="test", command="textvae train --preset tiny")
    assert url.endswith("a" * 40)
    [up] = uploads
    assert up["repo_id"] == "me/tiny-vae"
    assert sorted(up["files"]) == ["README.md", "config.json", "model.safetensors", "tokenizer.json"]
    card = up["files"]["README.md"].decode()
    meta = read_card_metadata(card)
    assert meta["library_name"] == "textvae" and meta["textvae_version"] == "0.2.0"
    metrics = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics == {"nll_iw": 40.1235, "ppl_iw": 30.5, "elbo": 41.0, "kl": 3.25, "au": 4}
    assert "| nll_iw | 40.1235 | importance-weighted NLL" in card and "| au | 4 | active units |" in card
    parsed = huggingface_hub.ModelCard(card).data  # as the hub reads it: evaluation results from the model-index
    assert parsed.library_name == "textvae"
    assert {r.metric_type: r.metric_value for r in parsed.eval_results} == metrics
    assert {r.dataset_split for r in parsed.eval_results} == {"test"}
    assert "```bash\ntextvae train --preset tiny\n```" in card
    snapshot_layout(offline, "me/tiny-vae", up["files"])
    again = TextVAE.from_pretrained("me/tiny-vae", cache_dir=offline)
    _same(_outputs(model), _outputs(again))


def test_no_local_corpus_path_is_staged(tiny_run, tmp_path):
    """docs/hub.md: a local corpus goes up by its folder name only, in config.json as in training_config.json."""
    model = TextVAE.from_pretrained(tiny_run)
    data = {**(model.extra_config.get("data") or {}), "data_dir": "/home/someone/private/tang5"}
    model.extra_config = {"data": data}
    stage(model, tmp_path / "up", "me/x", training_config={"data": dict(data)})
    for f in (tmp_path / "up").iterdir():
        assert "/home/someone" not in f.read_bytes().decode("utf-8", "replace"), f.name
    assert json.loads((tmp_path / "up" / "config.json").read_text())["data"]["data_dir"] == "tang5"
    assert model.extra_config["data"]["data_dir"] == "/home/someone/private/tang5"  # the model itself keeps it


def test_revision_picks_the_tagged_snapshot(tiny_run, uploads, offline, capsys):
    model = TextVAE.from_pretrained(tiny_run)
    model.push_to_hub("me/vae")
    first = uploads[0]["files"]
    with torch.no_grad():
        model.decoder.proj.bias.add_(1.0)  # a second, different version on main
    model.push_to_hub("me/vae")
    snapshot_layout(offline, "me/vae", first, commit="1" * 40, ref="v1")
    snapshot_layout(offline, "me/vae", uploads[1]["files"], commit="2" * 40, ref="main")
    v1 = TextVAE.from_pretrained("me/vae", revision="v1", cache_dir=offline)
    main = TextVAE.from_pretrained("me/vae", cache_dir=offline)
    assert torch.equal(main.decoder.proj.bias, model.decoder.proj.bias)
    assert torch.equal(v1.decoder.proj.bias + 1.0, model.decoder.proj.bias)
    out, _ = cli(capsys, ["sample", "--model", "me/vae", "--revision", "v1", "-n", 3, "--seed", 5])
    assert out.splitlines() == v1.sample(3, seed=5)
    expect_error(capsys, ["sample", "--model", "me/vae", "--revision", "v2"], "hub repo me/vae (revision v2)")


def test_incomplete_newer_or_absent_repos_are_clear_errors(tiny_run, offline):
    files = {p.name: p.read_bytes() for p in (tiny_run / "best").iterdir() if p.is_file()}
    snapshot_layout(offline, "me/no-weights", {k: v for k, v in files.items() if k != "model.safetensors"})
    with pytest.raises(CheckpointError, match=r"hub repo me/no-weights is not a complete textvae model: "
                                              r"model.safetensors missing"):
        TextVAE.from_pretrained("me/no-weights", cache_dir=offline)
    config = json.loads(files["config.json"])
    config["format_version"] = 99
    snapshot_layout(offline, "me/future", {**files, "config.json": json.dumps(config).encode()})
    with pytest.raises(CheckpointError, match=r"hub repo me/future: .* newer textvae \(format_version 99 .*upgrade"):
        TextVAE.from_pretrained("me/future", cache_dir=offline)
    with pytest.raises(CheckpointError, match=r"hub repo me/elsewhere is not in the local hub cache .*HF_HUB_OFFLINE"):
        TextVAE.from_pretrained("me/elsewhere", cache_dir=offline)
    with pytest.raises(CheckpointError, match=r"revision='v9' is for hub repos, but .* is a local path"):
        TextVAE.from_pretrained(tiny_run, revision="v9")


def test_the_card_shows_the_mi_evaluate_reports_and_keeps_its_table_rows_whole(tiny_run):
    from textvae.hub import model_card
    from textvae.model import TextVAE

    card = model_card(TextVAE.from_pretrained(tiny_run), "me/vae", {**METRICS, "mi_full": 2.5, "mi_batch": 1.0})
    rows = [line for line in card.splitlines() if line.startswith("| ") and "|---" not in line]
    assert any(line.startswith("| mi_full | 2.5") for line in rows)  # evaluate --json's key, not "mi"
    kl = next(line for line in rows if line.startswith("| kl |"))
    assert kl.count(" | ") == 2 and "KL(q(z\\|x) \\|\\| p(z))" in kl  # three cells, not five


def test_pushing_offline_says_so(tiny_run, offline):
    with pytest.raises(TextVAEError, match=r"pushing to hub repo me/x failed \(OfflineModeIsEnabled: .*check the "
                                           r"network"):
        TextVAE.from_pretrained(tiny_run).push_to_hub("me/x")


@pytest.mark.parametrize("repo_id", ["me/x-", "me/a--b", "me/a..b", "me/x.git"])
def test_a_repo_id_the_hub_refuses_is_a_clear_error(tiny_run, offline, capsys, repo_id):
    """owner/name shapes that pass textvae's own check but not huggingface_hub's validation."""
    with pytest.raises(TextVAEError, match=rf"{repo_id!r} is not a valid hub repo id \(.*\); write it as owner/name"):
        TextVAE.from_pretrained(tiny_run).push_to_hub(repo_id)
    expect_error(capsys, ["push", "--model", tiny_run, "--repo", repo_id], "is not a valid hub repo id")


def test_without_huggingface_hub_installed(monkeypatch, tiny_run):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(CheckpointError, match=r"there is no local directory runs/demo, and reading it as a hub repo "
                                              r"id needs the huggingface_hub package: pip install 'textvae\[hub\]'"):
        TextVAE.from_pretrained("runs/demo")
    with pytest.raises(TextVAEError, match=r"pushing to the Hugging Face Hub needs .* pip install 'textvae\[hub\]'"):
        TextVAE.from_pretrained(tiny_run).push_to_hub("me/anything")
    assert TextVAE.from_pretrained(tiny_run).latent_dim == 4  # local directories need no hub


def test_cli_push_sends_the_runs_validation_and_config(tiny_run, uploads, capsys, tmp_path):
    out, _ = cli(capsys, ["push", "--model", tiny_run, "--repo", "me/cli-vae", "--revision", "dev"])
    assert out.strip().endswith("a" * 40)
    branch, up = uploads
    assert branch == {"branch": "dev", "repo_id": "me/cli-vae"}  # made before the upload to it
    assert up["revision"] == "dev" and "training_config.json" in up["files"]
    card = up["files"]["README.md"].decode()
    valid = [json.loads(l) for l in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    best = [r for r in valid if r["kind"] == "valid" and r["step"] == 4][-1]
    assert f"| elbo | {best['elbo']:.4f} |" in card and "On the valid split" in card
    assert "textvae train --config training_config.json --out runs/cli-vae" in card
    trained = json.loads(up["files"]["training_config.json"])
    assert trained["model"] == json.loads((tiny_run / "config.json").read_text())["model"]
    dry = tmp_path / "dry"
    out, _ = cli(capsys, ["push", "--model", tiny_run / "best", "--dry-run", dry])
    assert sorted(p.name for p in dry.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                      "tokenizer.json"]
    assert "No evaluation was given" in (dry / "README.md").read_text()
    metrics = tmp_path / "test-metrics.json"
    metrics.write_text(json.dumps(METRICS))
    cli(capsys, ["push", "--model", tiny_run, "--repo", "me/cli-vae", "--metrics", metrics])
    card = uploads[-1]["files"]["README.md"].decode()
    assert "On the test split" in card and "| nll_iw | 40.1235 |" in card and "| elbo | 41.0000 |" in card
    expect_error(capsys, ["push", "--model", tiny_run, "--repo", "me/x", "--metrics", tmp_path / "none.json"],
                 "--metrics", "textvae evaluate --model R --json > metrics.json")
    expect_error(capsys, ["push", "--model", tiny_run], "push needs --repo owner/name")
    expect_error(capsys, ["push", "--model", tiny_run, "--repo", "not a repo"], "is not a hub repo id")


def _card_models(tiny_run):
    """A language model, a VQ model and a conditional VAE, small and untrained, with the tiny run's tokenizer."""
    from pathlib import Path

    from textvae.config import ModelConfig

    tok = TextVAE.from_pretrained(tiny_run).tokenizer
    sizes = dict(vocab_size=tok.vocab_size, emb_dim=8, enc_hidden=8, dec_hidden=8)
    torch.manual_seed(0)
    return {"lm": TextVAE(ModelConfig(**sizes, latent_dim=0, cell="gru"), tok),
            "vq": TextVAE(ModelConfig(**sizes, latent="vq", latent_dim=4, latent_vars=3, latent_classes=5,
                                      code_dim=4), tok),
            "conditional": TextVAE.from_pretrained(Path(__file__).parent / "fixtures" / "v0.1.0" / "conditional")}


@pytest.mark.parametrize("kind, says, not_said", [
    ("lm", "A GRU language model (the baseline of Bowman et al. 2016: no latent variable)", "latent_dim"),
    ("vq", "with an LSTM decoder and 3 discrete vq codes of 5 classes each", "4-dimensional"),
    ("conditional", "A conditional sentence variational autoencoder (Sohn et al. 2015) with an LSTM decoder and a "
                    "4-dimensional gaussian latent", "0-dimensional"),
])
def test_the_card_says_what_the_model_is_and_its_use_lines_run(tiny_run, monkeypatch, capsys, kind, says, not_said):
    """The card called every model a VAE with a '{latent_dim}-dimensional {latent} latent' (an LM: '0-dimensional
    gaussian'; a VQ model: its on/off latent_dim, not its M codes of K), and its Use block called
    interpolate without a label, which an LM and a conditional model refuse."""
    from textvae.hub import model_card

    model = _card_models(tiny_run)[kind]
    card = model_card(model, "me/vae")
    assert says in card and not_said not in card
    if kind == "conditional":
        assert "| labels | animals, food, sport, travel, weather |" in card
    use = card.split("## Use\n\n```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setattr(TextVAE, "from_pretrained", classmethod(lambda cls, repo, **kw: model))
    exec(compile(use, "card", "exec"), {})  # the lines a reader copies, against this model
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == (1 if kind == "lm" else 2)


def test_the_card_gives_the_importance_samples_of_its_iw_bound(tiny_run):
    from textvae.hub import model_card

    model = TextVAE.from_pretrained(tiny_run)
    card = model_card(model, "me/vae", {**METRICS, "iw_samples": 500})
    assert "| nll_iw | 40.1235 | importance-weighted NLL per sentence (nats), k = 500 samples |" in card
    assert "| ppl_iw | 30.5000 | importance-weighted perplexity, k = 500 samples |" in card
    names = {m["type"]: m["name"] for m in read_card_metadata(card)["model-index"][0]["results"][0]["metrics"]}
    assert names["nll_iw"].endswith("k = 500 samples") and names["elbo"] == "negative ELBO per sentence (nats)"
    assert "| nll_iw | 40.1235 | importance-weighted NLL per sentence (nats) |" in model_card(model, "me/vae", METRICS)


def test_a_push_deletes_the_textvae_files_an_earlier_push_left_and_keeps_the_users(tiny_run, monkeypatch):
    """The repo held a SentencePiece VQ model pushed from a run (tokenizer.model, code_prior.safetensors,
    training_config.json) and a file of the user's own; a word-level Gaussian model pushed from its model
    directory over it used to leave those three beside it: a training config of another model, files no
    longer describing the repo. Through huggingface_hub's own upload_folder (its commit captured)."""
    from huggingface_hub import hf_api

    before = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer.model", "code_prior.safetensors",
              "training_config.json", "README.md", ".gitattributes", "notes.md", "extra/tokenizer.model"]
    commits = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: repo_id)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo_id, **kw: list(before))
    monkeypatch.setattr(huggingface_hub.HfApi, "_validate_yaml", lambda self, **kw: None)  # the card's check, online
    monkeypatch.setattr(hf_api, "is_xet_available", lambda: False)  # the single-commit path: create_commit

    def create_commit(self, repo_id, operations, **kw):
        commits.append(list(operations))
        return f"https://huggingface.co/{repo_id}/commit/{'b' * 40}"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", create_commit)
    assert TextVAE.from_pretrained(tiny_run).push_to_hub("me/vae").endswith("b" * 40)
    [ops] = commits
    deleted = sorted(op.path_in_repo for op in ops if isinstance(op, huggingface_hub.CommitOperationDelete))
    added = sorted(op.path_in_repo for op in ops if isinstance(op, huggingface_hub.CommitOperationAdd))
    assert deleted == ["code_prior.safetensors", "tokenizer.model", "training_config.json"]
    assert added == ["README.md", "config.json", "model.safetensors", "tokenizer.json"]


def test_push_labels_the_card_with_the_split_evaluate_measured(tiny_run, tmp_path, capsys):
    """`textvae evaluate --split valid --json > m.json` then `textvae push --metrics m.json` put the
    validation numbers on the card as the test split's: the file did not say which split it measured."""
    out, _ = cli(capsys, ["evaluate", "--model", tiny_run, "--split", "valid", "--json", "--iw-samples", "2",
                          "--n-samples", "2"])
    assert json.loads(out)["split"] == "valid"
    metrics = tmp_path / "valid-metrics.json"
    metrics.write_text(out)
    dry = tmp_path / "dry"
    cli(capsys, ["push", "--model", tiny_run, "--dry-run", dry, "--metrics", metrics])
    card = (dry / "README.md").read_text()
    assert "On the valid split:" in card and "test" not in card.split("## Evaluation")[1].split("## Training")[0]
    assert read_card_metadata(card)["model-index"][0]["results"][0]["dataset"]["split"] == "valid"
    assert "| nll_iw | " in card and "k = 2 samples" in card
    # --split that says otherwise: an error naming both, nothing staged
    expect_error(capsys, ["push", "--model", tiny_run, "--dry-run", tmp_path / "d2", "--metrics", metrics,
                          "--split", "test"], "--split test contradicts", f"--metrics {metrics}", "the valid split")
    assert not (tmp_path / "d2").exists()
    cli(capsys, ["push", "--model", tiny_run, "--dry-run", tmp_path / "d3", "--metrics", metrics, "--split", "valid"])
    # an older file, without the key: test as before, or --split
    old = tmp_path / "old.json"
    old.write_text(json.dumps(METRICS))
    cli(capsys, ["push", "--model", tiny_run, "--dry-run", tmp_path / "d4", "--metrics", old, "--split", "valid"])
    assert "On the valid split:" in (tmp_path / "d4" / "README.md").read_text()
    # without --metrics the card shows the run's validation record, which --split test would mislabel
    expect_error(capsys, ["push", "--model", tiny_run, "--dry-run", tmp_path / "d5", "--split", "test"],
                 "--split test: without --metrics", "measured on the valid split")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**METRICS, "split": 3}))
    expect_error(capsys, ["push", "--model", tiny_run, "--dry-run", tmp_path / "d6", "--metrics", bad],
                 f"--metrics {bad}: the metrics record split 3")


def test_the_card_api_takes_the_split_the_metrics_record(tiny_run):
    from textvae.hub import model_card

    model = TextVAE.from_pretrained(tiny_run)
    assert "On the valid split:" in model_card(model, "me/vae", {**METRICS, "split": "valid"})
    assert "On the test split:" in model_card(model, "me/vae", METRICS)
    with pytest.raises(TextVAEError, match="split='test' contradicts the metrics.*'valid' split"):
        model_card(model, "me/vae", {**METRICS, "split": "valid"}, split="test")


def test_a_language_models_exact_nll_is_not_called_an_importance_weighted_bound(tiny_run):
    """evaluate reports a language model's exact NLL as nll_iw with iw_samples 0; the card called it an
    'importance-weighted NLL per sentence (nats), k = 0 samples'."""
    from textvae.hub import model_card

    card = model_card(_card_models(tiny_run)["lm"], "me/lm", {**METRICS, "iw_samples": 0})
    assert "| nll_iw | 40.1235 | exact NLL per sentence (nats), a language model's |" in card
    assert "| ppl_iw | 30.5000 | exact perplexity |" in card and "k = 0" not in card
