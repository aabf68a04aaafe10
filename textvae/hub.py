"""The Hugging Face Hub: load a model by repo id, push one with a generated model card.

A hub repo holds exactly a model directory (``save_pretrained``: config.json, model.safetensors,
tokenizer.json and, for SentencePiece, tokenizer.model) plus a README.md model card whose YAML
header names the library, the datasets, the metrics and the textvae version. Loading goes through
``huggingface_hub.snapshot_download`` and its cache, so ``HF_HUB_OFFLINE=1`` works on a cached repo;
the files are then read as any model directory is, never unpickled.

``huggingface_hub`` is an optional dependency: ``pip install 'textvae[hub]'``.
"""

import json
import math
import re
import tempfile
from pathlib import Path

import yaml

from .errors import CheckpointError, TextVAEError
from .version import __version__

CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"
REQUIRED = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)
# what a download fetches (tokenizer.model: SentencePiece only; code_prior.safetensors: a VQ model's prior)
MODEL_FILES = [*REQUIRED, "tokenizer.model", "code_prior.safetensors"]
CARD_FILE = "README.md"
TRAINING_CONFIG_FILE = "training_config.json"
# owner/name as the hub spells them; a local path that exists always wins over this reading
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}")
# evaluate()'s and a validation record's numbers that go into the card, in this order, with their meaning
CARD_METRICS = {
    "nll_iw": "importance-weighted NLL per sentence (nats)", "ppl_iw": "importance-weighted perplexity",
    "elbo": "negative ELBO per sentence (nats)", "rec": "reconstruction NLL per sentence (nats)",
    "kl": "KL(q(z|x) || p(z)) per sentence (nats)", "ppl_elbo": "perplexity from the ELBO",
    "mi_full": "mutual information I(x; z), the split as the aggregate posterior (nats)", "au": "active units", "bleu_rec": "reconstruction BLEU",
    "distinct_1": "distinct-1 of prior samples", "distinct_2": "distinct-2 of prior samples",
    "self_bleu": "self-BLEU of prior samples",
}


def hub_module(purpose: str):
    """``huggingface_hub``, or a TextVAEError saying that ``purpose`` needs it and how to install it."""
    try:
        import huggingface_hub
    except ImportError:
        raise TextVAEError(f"{purpose} needs the huggingface_hub package: pip install 'textvae[hub]' "
                           f"(or pip install huggingface_hub)") from None
    return huggingface_hub


def is_repo_id(name: str | Path) -> bool:
    """Whether ``name`` is read as a hub repo id (``owner/name``) rather than a local directory:
    it has that shape and no such path exists here."""
    text = str(name)
    return bool(_REPO_ID.fullmatch(text)) and ".." not in text and not Path(text).exists()


def download(repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None,
             token: str | bool | None = None) -> Path:
    """The model files of hub repo ``repo_id`` (at ``revision``: a branch, tag or commit) in
    huggingface_hub's cache, downloaded if needed; the snapshot folder. With ``HF_HUB_OFFLINE=1``
    only the cache is read. A repo without a textvae model's files is a CheckpointError."""
    try:
        hub = hub_module("reading it as a hub repo id")
    except TextVAEError as e:  # a mistyped local path reads as a repo id too: say both
        raise CheckpointError(f"there is no local directory {repo_id}, and {e}") from None
    from huggingface_hub import errors

    where = describe(repo_id, revision)
    try:
        path = Path(hub.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                          allow_patterns=MODEL_FILES + [CARD_FILE], library_name="textvae",
                                          library_version=__version__))
    except errors.RevisionNotFoundError:
        raise CheckpointError(f"{where}: no such revision; give a branch, tag or commit of the repo") from None
    except errors.RepositoryNotFoundError:
        raise CheckpointError(f"{where}: no such repo, or it is private and no token was given (log in with "
                              f"`hf auth login` or set HF_TOKEN); nor is there a local directory {repo_id}") from None
    except errors.LocalEntryNotFoundError:
        raise CheckpointError(f"{where} is not in the local hub cache and the hub cannot be reached "
                              f"(offline: HF_HUB_OFFLINE=1, or no network); download it once while online, "
                              f"or pass a local model directory (there is no directory {repo_id} here)") from None
    except (errors.HFValidationError, ValueError) as e:
        raise CheckpointError(f"{where}: {e}") from None
    except (errors.HfHubHTTPError, OSError) as e:
        raise CheckpointError(f"{where}: download failed ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})") from None
    missing = [f for f in REQUIRED if not (path / f).is_file()]
    if missing:
        raise CheckpointError(f"{where} is not a complete textvae model: {', '.join(missing)} missing (a textvae "
                              f"repo holds {', '.join(REQUIRED)}); push it again with model.push_to_hub or "
                              f"textvae push")
    return path


def describe(repo_id: str, revision: str | None = None) -> str:
    return f"hub repo {repo_id}" + (f" (revision {revision})" if revision else "")


# ----------------------------------------------------------------------------- the model card


def card_metrics(metrics: dict | None) -> dict[str, float]:
    """The numbers of ``metrics`` (an ``evaluate`` result or a validation record) that a card shows."""
    out = {}
    for key in CARD_METRICS:
        v = (metrics or {}).get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = v
    return out


def describe_data(data: dict) -> tuple[str, list[str]]:
    """(one line on the corpus, hub dataset ids for the card's ``datasets``) from a saved ``data`` section."""
    if data.get("dataset"):
        return f"the hub dataset `{data['dataset']}`", [data["dataset"]]
    if data.get("data_dir"):
        return f"a local corpus (`{Path(data['data_dir']).name}`)", []
    if data:
        return f"textvae's built-in grammar corpus ({data.get('builtin_size')} sentences)", []
    return "an unrecorded corpus", []


def describe_model(model) -> str:
    """What the model is, in the card's first line: a VAE's decoder cell and latent (gaussian: its
    size; gumbel, vq: M codes of K classes), or the language-model baseline, which has no latent."""
    cfg = model.config
    cell = {"lstm": "an LSTM", "gru": "a GRU"}.get(cfg.cell, f"a {cfg.cell}")
    if model.is_lm:
        return f"{cell[0].upper()}{cell[1:]} language model (the baseline of Bowman et al. 2016: no latent variable)"
    if model.latent.discrete:
        latent = f"{cfg.latent_vars} discrete {cfg.latent} codes of {cfg.latent_classes} classes each"
    else:
        latent = f"a {cfg.latent_dim}-dimensional {cfg.latent} latent"
    kind = "A conditional sentence variational autoencoder (Sohn et al. 2015" if cfg.conditional else \
        "A sentence variational autoencoder (Bowman et al. 2016"
    return f"{kind}) with {cell} decoder and {latent}"


def _settings(model) -> list[str]:
    """The card's settings rows: the sizes that make the model, those of its latent family only."""
    cfg = model.config
    keys = ["encoder", "cell", "emb_dim", "enc_hidden", "dec_hidden", "latent"]
    if model.is_lm:
        keys = ["cell", "emb_dim", "dec_hidden"]
    elif model.latent.discrete:
        keys += ["latent_vars", "latent_classes", "code_dim"]
    else:
        keys.append("latent_dim")
    keys += ["vocab_size", "conditional"]
    rows = [f"| {k} | {getattr(cfg, k)} |" for k in keys]
    if cfg.conditional:
        rows.append(f"| labels | {_cell(', '.join(model.label_names))} |")
    return rows


def _usage(model, repo_id: str) -> list[str]:
    """Python lines that load and use the model, each a call this kind of model answers: an LM
    samples but has no latent to interpolate in, a conditional model is given a label."""
    label = f", label={model.label_names[0]!r}" if model.conditional else ""
    lines = [f'model = TextVAE.from_pretrained("{repo_id}")  # pip install "textvae[hub]"',
             f"print(model.sample(5{label}))"]
    if not model.is_lm:
        lines.append(f'print(model.interpolate("a first sentence .", "another one .", steps=5{label}))')
    return lines


def _metric_meaning(key: str, metrics: dict) -> str:
    """A card metric's meaning; an importance-weighted bound says its number of samples k, which
    moves it (k = 500 in the papers' tables); k = 0 is evaluate's mark of a language model's exact NLL."""
    k = metrics.get("iw_samples")
    if key in ("nll_iw", "ppl_iw") and isinstance(k, int) and not isinstance(k, bool):
        if k == 0:
            return {"nll_iw": "exact NLL per sentence (nats), a language model's", "ppl_iw": "exact perplexity"}[key]
        return f"{CARD_METRICS[key]}, k = {k} samples"
    return CARD_METRICS[key]


def card_split(metrics: dict | None, split: str | None = None) -> str:
    """The split a card says ``metrics`` were measured on: the ``split`` they record (``textvae
    evaluate --json`` writes it), else ``split``, else "test". A ``split`` that contradicts the
    recorded one is a TextVAEError: the card would label the numbers of one split as another's."""
    recorded = (metrics or {}).get("split")
    if recorded is None:
        return split or "test"
    if not isinstance(recorded, str) or not recorded.strip():
        raise TextVAEError(f"the metrics record split {recorded!r}, not the name of a split")
    if split is not None and split != recorded:
        raise TextVAEError(f"split={split!r} contradicts the metrics, which record that they were measured on "
                           f"the {recorded!r} split; leave split out, or give that split's metrics")
    return recorded


def model_card(model, repo_id: str, metrics: dict | None = None, split: str | None = None,
               command: str | None = None) -> str:
    """README.md for hub repo ``repo_id``: YAML metadata (library, tags, datasets, textvae version,
    the metrics as a model-index), then what the model is, its metrics table, how it was trained
    (``command``) and how to use it. The metrics are labelled with :func:`card_split`'s split."""
    split = card_split(metrics, split)
    data = model.extra_config.get("data") or {}
    about, datasets = describe_data(data)
    numbers = card_metrics(metrics)
    meaning = {k: _metric_meaning(k, metrics or {}) for k in numbers}
    meta = {"library_name": "textvae", "tags": ["textvae", "vae", "sentence-vae", "text-generation"],
            "textvae_version": __version__}
    if datasets:
        meta["datasets"] = datasets
    if numbers:
        meta["model-index"] = [{"name": repo_id.split("/")[-1], "results": [{
            "task": {"type": "text-generation", "name": "sentence VAE"},
            "dataset": {"name": datasets[0] if datasets else about, "type": datasets[0] if datasets else "custom",
                        "split": split},
            "metrics": [{"type": k, "name": meaning[k], "value": v if isinstance(v, int) else round(float(v), 4)} for k, v in numbers.items()]}]}]
    tok = model.tokenizer
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {repo_id}", "",
             f"{describe_model(model)}, {model.num_parameters():,} parameters, made with textvae {__version__} "
             f"and trained on {about}.", "",
             "| setting | value |", "|---|---|", *_settings(model)]
    if tok is not None:
        lines.append(f"| tokenizer | {tok.kind}, {tok.vocab_size} tokens |")
    lines += ["", "## Evaluation", ""]
    if numbers:
        lines += [f"On the {split} split:", "", "| metric | value | meaning |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(v)} | {_cell(meaning[k])} |" for k, v in numbers.items()]
    else:
        lines.append("No evaluation was given when this model was pushed; `textvae evaluate --model REPO` measures it.")
    lines += ["", "## Training", "", "```bash", command or "# not recorded", "```", "",
              "## Use", "", "```python", "from textvae import TextVAE", "", *_usage(model, repo_id), "```", "",
              "```bash", f"textvae sample --model {repo_id} -n 5", "```", ""]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """``text`` inside a markdown table cell: its ``|`` escaped (KL(q(z|x) || p(z)) would split the row)."""
    return text.replace("|", "\\|")


def _fmt(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:.4f}"


def read_card_metadata(text: str) -> dict:
    """The YAML header of a model card (``---`` ... ``---``), as a mapping."""
    m = re.match(r"---\n(.*?)\n---\n", text, re.S)
    return yaml.safe_load(m.group(1)) if m else {}


# ----------------------------------------------------------------------------- pushing


def stage(model, folder: Path, repo_id: str, metrics: dict | None = None, split: str | None = None,
          command: str | None = None, training_config: dict | None = None) -> list[str]:
    """Write what a push uploads into ``folder``: the model directory, README.md and, when given,
    the run's ``training_config`` (in both config files a local corpus path is cut to its folder
    name). Returns the file names, sorted."""
    folder = Path(folder)
    model.save_pretrained(folder, extra=_without_local_paths(model.extra_config))
    if training_config is not None:
        cfg = _without_local_paths(training_config)
        (folder / TRAINING_CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        command = command or f"textvae train --config {TRAINING_CONFIG_FILE} --out runs/{repo_id.split('/')[-1]}"
    (folder / CARD_FILE).write_text(model_card(model, repo_id, metrics, split, command), encoding="utf-8")
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def _without_local_paths(sections: dict) -> dict:
    """A copy of config ``sections`` with a local corpus path cut to its folder name: no local paths on the hub."""
    cfg = json.loads(json.dumps(sections))
    if (cfg.get("data") or {}).get("data_dir"):
        cfg["data"]["data_dir"] = Path(cfg["data"]["data_dir"]).name
    return cfg


def push_to_hub(model, repo_id: str, *, metrics: dict | None = None, split: str | None = None,
                command: str | None = None, training_config: dict | None = None, revision: str | None = None,
                private: bool | None = None, token: str | bool | None = None,
                commit_message: str | None = None) -> str:
    """Upload ``model`` to hub repo ``repo_id`` (created if needed; ``revision``: a branch, created
    if needed) in one commit: weights, config, tokenizer files and a model card (:func:`model_card`)
    with ``metrics`` of ``split`` (:func:`card_split`: by default the split they record, else test).
    The files textvae writes that this model lacks (a SentencePiece tokenizer.model, a VQ code prior,
    a training_config.json) are deleted in the same commit, so that none is left from an earlier
    push; the repo's other files are kept. Returns the commit's URL."""
    if not _REPO_ID.fullmatch(repo_id):
        raise TextVAEError(f"{repo_id!r} is not a hub repo id; write it as owner/name, e.g. my-name/textvae-ptb")
    hub = hub_module("pushing to the Hugging Face Hub")
    from huggingface_hub import errors

    try:  # the hub's own rules ('--', '..', a '-' or '.' at either end, '.git'), before anything is staged
        hub.utils.validate_repo_id(repo_id)
    except errors.HFValidationError as e:
        raise TextVAEError(f"{repo_id!r} is not a valid hub repo id ({e}); write it as owner/name, e.g. "
                           f"my-name/textvae-ptb") from None
    with tempfile.TemporaryDirectory(prefix="textvae-push-") as tmp:
        staged = stage(model, Path(tmp), repo_id, metrics, split, command, training_config)
        stale = [f for f in (*MODEL_FILES, TRAINING_CONFIG_FILE) if f not in staged]  # exact names, top level
        api = hub.HfApi(token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision is not None:  # a new branch is made from main
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, delete_patterns=stale,
                                     commit_message=commit_message or f"textvae {__version__}: upload model")
        except (errors.HfHubHTTPError, OSError) as e:
            raise TextVAEError(f"pushing to {describe(repo_id, revision)} failed ({type(e).__name__}: "
                               f"{(str(e).splitlines() or [''])[0][:200]}); check the network and your "
                               f"token (`hf auth login` or HF_TOKEN)") from None
    return str(getattr(info, "commit_url", info))


def run_metadata(run: Path) -> tuple[dict | None, dict | None]:
    """(training config, the best model's validation record) of run directory ``run``, each None
    when not there: what ``textvae push`` puts in a card besides a given evaluation."""
    run = Path(run)
    config = best = None
    if (run / "best").is_dir() and (run / CONFIG_FILE).is_file():
        try:
            config = json.loads((run / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = None
    if config is not None and (run / "metrics.jsonl").is_file():
        valid = []
        for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict) and r.get("kind") == "valid" and isinstance(r.get("elbo"), (int, float)):
                valid.append(r)
        step = _best_step(run)
        chosen = [r for r in valid if r.get("step") == step]
        best = chosen[-1] if chosen else (min(valid, key=lambda r: r["elbo"]) if valid else None)
    return config, best


def _best_step(run: Path) -> int | None:
    """The step of the run's best model, as its newest checkpoint records it."""
    from .checkpoint import STATE_JSON, list_checkpoints

    ckpts = list_checkpoints(run)
    try:
        return json.loads((ckpts[-1] / STATE_JSON).read_text(encoding="utf-8"))["progress"]["best_step"]
    except (IndexError, OSError, ValueError, KeyError, TypeError):
        return None


def snapshot_layout(cache_dir: Path, repo_id: str, files: dict[str, bytes], commit: str = "0" * 40,
                    ref: str = "main") -> Path:
    """Lay ``files`` out as huggingface_hub's cache keeps a downloaded repo (models--OWNER--NAME/
    snapshots/COMMIT/..., refs/REF): a repo placed in a cache without the network, as tests and
    air-gapped machines need. Returns the snapshot folder."""
    root = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (snap / name).write_bytes(data)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    return snap

