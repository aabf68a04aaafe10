"""The model: KL and word dropout values, encoder/decoder shapes, save/load round trips, clear
errors for damaged or mismatched model directories, and models written by textvae 0.1.0."""
import json
import shutil

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from helpers import TINY, expect_error, torch_threads
from textvae.cli import main
from textvae.config import ModelConfig, TokenizerConfig
from textvae.errors import CheckpointError
from textvae.latents.gaussian import gaussian_kl
from textvae.model import TextVAE, word_dropout
from textvae.tokenizers import train_tokenizer

TEXTS = ["the cat sat on the mat .", "a dog ran in the park .", "the bird sang a song .", "it rained ."]


def tiny(**kw) -> TextVAE:
    tok = train_tokenizer(TokenizerConfig(kind="word"), TEXTS)
    cfg = ModelConfig(emb_dim=8, enc_hidden=12, dec_hidden=10, latent_dim=kw.pop("latent_dim", 4), **kw)
    torch.manual_seed(0)
    return TextVAE(cfg, tok)


def batch(model, texts=TEXTS):
    return model._tokenize(texts)


def test_kl_matches_torch_distributions():
    mu, logvar = torch.randn(6, 5), torch.randn(6, 5)
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros(5), torch.ones(5)))
    assert torch.allclose(gaussian_kl(mu, logvar), ref, atol=1e-6)
    assert torch.all(gaussian_kl(torch.zeros(3), torch.zeros(3)) == 0)


def test_word_dropout_rate_and_extremes():
    torch.manual_seed(0)
    tokens = torch.randint(4, 100, (200, 50))
    keep = torch.zeros_like(tokens, dtype=torch.bool)
    keep[:, 0] = True
    out = word_dropout(tokens, 0.3, 1, keep)
    rate = (out[:, 1:] == 1).float().mean().item()
    assert 0.28 < rate < 0.32
    assert torch.all(out[:, 0] == tokens[:, 0])
    assert torch.all(word_dropout(tokens, 1.0, 1, keep)[:, 1:] == 1)  # p = 1: inputless decoder
    assert torch.equal(word_dropout(tokens, 0.0, 1, keep), tokens)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("latent_dim", [4, 0])
def test_packed_log_likelihood_equals_stepwise_decoding(cell, latent_dim):
    model = tiny(cell=cell, latent_dim=latent_dim, bidirectional=True, enc_layers=2, dec_layers=2,
                 tie_embeddings=True).eval()
    tokens, lengths = batch(model)
    z = None if latent_dim == 0 else torch.randn(len(TEXTS), latent_dim)
    ll = model.log_likelihood(tokens, lengths, z)
    state, total = model.init_state(z, len(TEXTS)), torch.zeros(len(TEXTS))
    for t in range(tokens.size(1) - 1):
        logits, state = model.step(tokens[:, t], state, z)
        lp = logits.log_softmax(-1).gather(1, tokens[:, t + 1:t + 2])[:, 0]
        total += lp * (t < lengths - 1).float()
    assert torch.allclose(ll, total, atol=1e-5)


def test_forward_terms_shapes_and_lm_has_no_kl():
    vae, lm = tiny(), tiny(latent_dim=0)
    out = vae(*batch(vae))
    assert out.rec.shape == (4,) and out.kl.shape == (4, 4) and torch.all(out.rec > 0)
    out = lm(*batch(lm))
    assert out.kl.shape == (4, 0) and out.kl.sum() == 0
    assert not hasattr(lm, "encoder")


def test_word_dropout_only_in_training():
    model = tiny(word_dropout=1.0)
    tokens, lengths = batch(model)
    z = torch.zeros(4, 4)
    model.eval()
    a = model.log_likelihood(tokens, lengths, z)
    model.train()
    b = model.log_likelihood(tokens, lengths, z)
    assert not torch.allclose(a, b)


def test_save_load_gives_identical_outputs(tmp_path):
    for kw in ({}, {"tie_embeddings": True, "cell": "gru"}, {"latent_dim": 0},
               {"share_embedding": True, "tie_embeddings": True}):
        model = tiny(**kw).eval()
        tokens, lengths = batch(model)
        model.save_pretrained(tmp_path / "m")
        again = TextVAE.from_pretrained(tmp_path / "m")
        z = None if model.is_lm else torch.randn(4, model.latent_dim)
        assert torch.equal(model.log_likelihood(tokens, lengths, z), again.log_likelihood(tokens, lengths, z))
        mu_a, _ = model.encode_posterior(tokens, lengths)
        mu_b, _ = again.encode_posterior(tokens, lengths)
        assert torch.equal(mu_a, mu_b)
        assert again.config == model.config


def test_string_api(tmp_path):
    model = tiny()
    mu, logvar = model.encode(["the cat sat ."])
    assert mu.shape == (1, 4)
    assert len(model.sample(3, seed=1)) == 3
    assert model.sample(3, seed=1) == model.sample(3, seed=1)
    assert len(model.reconstruct(TEXTS)) == 4
    assert len(model.interpolate(TEXTS[0], TEXTS[1], steps=5)) == 7
    with pytest.raises(ValueError, match="empty"):
        model.encode([""])


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        TextVAE.from_pretrained(tmp_path / "nope")
    model = tiny()
    model.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="newer textvae"):
        TextVAE.from_pretrained(tmp_path / "m")
    model.save_pretrained(tmp_path / "m2")
    (tmp_path / "m2" / "model.safetensors").write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        TextVAE.from_pretrained(tmp_path / "m2")


# --------------------------------------------------------------------------- gated-CNN encoder

def test_gcnn_encoder_shapes_and_gradients():
    model = tiny(encoder="gcnn", gcnn_layers=3, gcnn_kernel=5)
    assert type(model.encoder).__name__ == "GatedCNNEncoder" and len(model.encoder.blocks) == 3
    tokens, lengths = batch(model)
    h = model.encoder(tokens, lengths)
    assert h.shape == (4, 12) and model.encoder.out_dim == 12  # (B, enc_hidden)
    mu, logvar = model.encode_posterior(tokens, lengths)
    assert mu.shape == logvar.shape == (4, 4)
    out = model(tokens, lengths)
    (out.rec.mean() + out.kl.sum(1).mean()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for n, p in model.encoder.named_parameters() if n != "embedding.weight")


def test_gcnn_encoder_ignores_padding():
    model = tiny(encoder="gcnn", gcnn_layers=4, gcnn_kernel=3).eval()
    tokens, lengths = batch(model)
    with torch.no_grad():
        ref = model.encoder(tokens, lengths)
        padded = torch.cat([tokens, torch.zeros(4, 6, dtype=tokens.dtype)], 1)  # six more PAD columns
        assert torch.allclose(model.encoder(padded, lengths), ref, atol=1e-6)
        for i in range(4):  # each sentence alone (no padding at all) = its row in the padded batch
            n = int(lengths[i])
            alone = model.encoder(tokens[i:i + 1, :n], lengths[i:i + 1])
            assert torch.allclose(alone, ref[i:i + 1], atol=1e-6)
        garbage = padded.clone()  # whatever sits at padded positions is never seen
        garbage[torch.arange(padded.size(1)) >= lengths.unsqueeze(1)] = 5
        assert torch.allclose(model.encoder(garbage, lengths), ref, atol=1e-6)


def test_gcnn_save_load_round_trip(tmp_path):
    model = tiny(encoder="gcnn", gcnn_layers=2, gcnn_kernel=3).eval()
    tokens, lengths = batch(model)
    model.save_pretrained(tmp_path / "m")
    again = TextVAE.from_pretrained(tmp_path / "m")
    assert again.config == model.config and again.config.encoder == "gcnn"
    assert torch.equal(model.encode_posterior(tokens, lengths)[0], again.encode_posterior(tokens, lengths)[0])


def test_gcnn_config_is_validated():
    from textvae.config_files import load_config
    from textvae.errors import ConfigError

    cfg = load_config(preset="tiny", overrides=["model.encoder=gcnn", "model.gcnn_layers=2", "model.gcnn_kernel=5"])
    assert (cfg.model.encoder, cfg.model.gcnn_layers, cfg.model.gcnn_kernel) == ("gcnn", 2, 5)
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["model.encoder=cnn", "model.gcnn_kernel=4", "model.gcnn_layers=0"])
    for part in ("model.encoder='cnn' is not one of 'rnn', 'gcnn'", "model.gcnn_kernel=4 must be an odd",
                 "model.gcnn_layers=0 must be > 0"):
        assert part in str(e.value)


def test_shared_embedding_is_one_table():
    model = tiny(share_embedding=True)
    assert model.encoder.embedding.weight is model.decoder.embedding.weight
    n_shared = model.num_parameters()
    assert tiny().num_parameters() - n_shared == model.decoder.embedding.weight.numel()


def test_emb_init_starts_every_word_table_uniform_and_keeps_pad_zero():
    from textvae.collapse import reset_decoder

    default = tiny(tie_embeddings=True)
    assert default.decoder.embedding.weight.abs().max() > 1  # PyTorch's N(0, 1): the tied output layer too
    for encoder in ("rnn", "gcnn"):
        model = tiny(tie_embeddings=True, emb_init=0.1, encoder=encoder)
        for table in (model.encoder.embedding.weight, model.decoder.embedding.weight, model.decoder.proj.weight):
            assert table.abs().max() <= 0.1 and table[1:].std() > 0.03  # U(-0.1, 0.1), not a constant
            assert torch.all(table[0] == 0)  # PAD
    model.decoder.embedding.weight.data.fill_(3.0)
    reset_decoder(model, seed=1)  # Li et al.'s decoder reset starts it over with the same init
    assert model.decoder.embedding.weight.abs().max() <= 0.1 and model.decoder.proj.weight.abs().max() <= 0.1


def test_enc_dropout_applies_to_the_encoder_alone_and_defaults_to_emb_dropout():
    tokens = torch.tensor([[2, 5, 6, 7, 3]])
    lengths = torch.tensor([5])
    for encoder in ("rnn", "gcnn"):
        inherit = tiny(encoder=encoder, emb_dropout=0.4)
        assert inherit.encoder.dropout.p == 0.4 and inherit.decoder.dropout.p == 0.4
        model = tiny(encoder=encoder, emb_dropout=0.4, enc_dropout=0.0)
        assert model.encoder.dropout.p == 0.0 and model.decoder.dropout.p == 0.4
        model.train()  # no dropout in the encoder: training-mode posteriors are deterministic
        assert torch.equal(model.encode_posterior(tokens, lengths)[0], model.encode_posterior(tokens, lengths)[0])
        inherit.train()
        assert not torch.equal(inherit.encode_posterior(tokens, lengths)[0], inherit.encode_posterior(tokens, lengths)[0])


def test_bn_vae_bound_holds_for_raw_means_with_variance_far_below_pytorchs_eps():
    """BatchNorm divides by sqrt(Var + eps); with eps = 1e-5 raw means of variance 1e-8 come out with
    variance ~1e-3 gamma^2, and the KL lower bound Z gamma^2 / 2 is gone."""
    from textvae.latents.gaussian import MeanBatchNorm

    torch.manual_seed(0)
    bn = MeanBatchNorm(4, gamma=0.6).train()
    raw = 0.01 + 1e-4 * torch.randn(256, 4)  # Var ~ 1e-8
    out = bn(raw)
    assert torch.allclose(out.var(dim=0, unbiased=False), torch.full((4,), 0.36), rtol=0.02)
    kl_floor = 0.5 * out.pow(2).mean(0).sum()  # the mu^2 part of the batch-mean KL
    assert kl_floor >= 4 * 0.36 / 2 * 0.98


# ---------------------------------------------------------------- models written by earlier versions

FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "v0.1.0"


@pytest.mark.parametrize("name", ["run", "conditional"])
def test_format_1_models_load_and_reproduce_their_outputs(name):
    expected = json.loads((FIXTURES / "expected.json").read_text())[name]
    model = TextVAE.from_pretrained(FIXTURES / name)
    label = model.label_names[0] if model.conditional else None  # 0.1.0 sampled with the first label
    mu, logvar = model.encode([expected["sentence"]], label)
    # float32 kernels differ in the last bits between CPUs (CI's differed at 4e-9): compare to 1e-5
    assert mu[0].tolist() == pytest.approx(expected["mu"], abs=1e-5)
    assert logvar[0].tolist() == pytest.approx(expected["logvar"], abs=1e-5)
    assert model.sample(2, seed=0, label=label) == expected["sample"]


def test_format_1_labels_become_id2label():
    model = TextVAE.from_pretrained(FIXTURES / "conditional")
    names = ["animals", "food", "sport", "travel", "weather"]
    assert model.config.id2label == dict(enumerate(names)) and model.label_names == names
    assert model.config.num_labels == 5


def test_format_1_checkpoint_weights_load_through_upgrade_state_dict():
    from safetensors.torch import load_file

    from textvae.model import upgrade_state_dict

    model = TextVAE.from_pretrained(FIXTURES / "run")
    state = load_file(str(FIXTURES / "run" / "checkpoints" / "step-00000006" / "model.safetensors"))
    assert "posterior.weight" in state  # the format-1 name
    model.load_state_dict(upgrade_state_dict(state, model.config))  # strict: every key fits
    assert torch.equal(model.latent.head.weight, state["latent.head.weight"])


def test_saved_config_has_id2label_format_and_library_version(tmp_path):
    import textvae
    from textvae.config import FORMAT_VERSION

    model = TextVAE.from_pretrained(FIXTURES / "conditional")
    model.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION == 2 and meta["textvae_version"] == textvae.__version__
    assert "labels" not in meta and "num_labels" not in meta["model"]
    assert meta["model"]["id2label"] == {"0": "animals", "1": "food", "2": "sport", "3": "travel", "4": "weather"}
    again = TextVAE.from_pretrained(tmp_path / "m")
    assert again.config == model.config and again.sample(2, seed=1, label="food") == model.sample(2, seed=1,
                                                                                                 label="food")
    state = again.state_dict()
    assert "latent.head.weight" in state and not any(k.startswith("posterior.") for k in state)
    del meta["model"]["id2label"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="conditional but 'model.id2label' is missing"):
        TextVAE.from_pretrained(tmp_path / "m")


def test_format_1_conditional_model_without_its_labels_is_a_clear_error(tmp_path):
    import shutil

    shutil.copytree(FIXTURES / "conditional", tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    del meta["labels"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="conditional but 'labels' is not a list of its 5 label names"):
        TextVAE.from_pretrained(tmp_path / "m")


def test_version_is_setup_cfgs():
    import configparser
    import pathlib

    import textvae

    cfg = configparser.ConfigParser()
    cfg.read(pathlib.Path(__file__).parents[1] / "setup.cfg")
    assert textvae.__version__ == cfg["metadata"]["version"]


# ---------------------------------------------------------------- damaged or mismatched model directories

@pytest.mark.parametrize("name, content, needles", [
    ("tokenizer.json", b"\x00\x01garbage\xff", ["tokenizer.json is not UTF-8 text", "re-download"]),
    ("tokenizer.json", b'{"vocab": [', ["tokenizer.json: invalid JSON at line 1"]),
    ("tokenizer.json", b'["a list"]', ["tokenizer.json: expected a JSON object"]),
    ("config.json", b"{garbage", ["config.json is missing or not valid JSON"]),
    ("config.json", b'{"format_version": 1, "model": {"latent_dim": "four"}}',
     ["config.json: key 'model.latent_dim' expects int"]),
    ("config.json", b'{"format_version": "1", "model": {}}', ["config.json: 'format_version' must be a whole number"]),
    ("model.safetensors", None, ["model.safetensors is not a valid safetensors file"]),  # truncated
])
def test_garbage_model_files_give_clear_errors(tiny_run, tmp_path, capsys, name, content, needles):
    model = tmp_path / "model"
    shutil.copytree(tiny_run / "best", model)
    path = model / name
    path.write_bytes(content if content is not None else path.read_bytes()[:300])
    expect_error(capsys, ["sample", "--model", model, "-n", "1"], str(model), *needles)


def test_missing_weights_file_is_named(tiny_run, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_run / "best", model)
    (model / "model.safetensors").unlink()
    expect_error(capsys, ["sample", "--model", model], f"{model / 'model.safetensors'} is missing")


@pytest.fixture(scope="module")
def other_vocab_run(tmp_path_factory):
    """A second model whose tokenizer has a different vocabulary."""
    out = tmp_path_factory.mktemp("other") / "run"
    with torch_threads(1):
        assert main(["train", *TINY, "--out", str(out), "train.max_steps=1", "data.builtin_size=200"]) == 0
    return out


def test_tokenizer_from_another_model_is_refused(tiny_run, other_vocab_run, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_run / "best", model)
    shutil.copy(other_vocab_run / "best" / "tokenizer.json", model / "tokenizer.json")
    expect_error(capsys, ["sample", "--model", model], f"the tokenizer files in {model} do not match",
                 "mixes files from different models")
    config = json.loads((model / "config.json").read_text())  # older files without a fingerprint
    config["tokenizer_fingerprint"] = None
    (model / "config.json").write_text(json.dumps(config))
    expect_error(capsys, ["sample", "--model", model], f"tokenizer in {model} has", "tokens but the model expects")


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json"])
def test_model_from_a_newer_format_version(tiny_run, tmp_path, capsys, name):
    model = tmp_path / "model"
    shutil.copytree(tiny_run / "best", model)
    meta = json.loads((model / name).read_text())
    newer = meta["format_version"] + 1
    (model / name).write_text(json.dumps({**meta, "format_version": newer}))
    expect_error(capsys, ["sample", "--model", model], str(model), f"format_version {newer}", "upgrade textvae")


def test_weights_of_another_shape_are_a_clear_error(tmp_path):
    tiny().save_pretrained(tmp_path / "m")
    tiny(latent_dim=6).save_pretrained(tmp_path / "other")  # same tokenizer, other sizes
    shutil.copy(tmp_path / "other" / "model.safetensors", tmp_path / "m" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.safetensors does not fit the config: .*latent.head.weight.*"
                                              r"mixes files from different models"):
        TextVAE.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("key, value, kw", [
    ("tokenizer_fingerprint", 5, {}),
    ("data", ["a list"], {}),  # read later by reconstruct (data.max_len) and push (the card)
    ("code_prior", "code_prior.safetensors", {"latent": "vq", "latent_vars": 2, "latent_classes": 4, "code_dim": 3}),
])
def test_config_entries_of_the_wrong_type_are_a_clear_error(tmp_path, key, value, kw):
    tiny(**kw).save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**meta, key: value}))
    with pytest.raises(CheckpointError, match=f"config.json: '{key}' must be"):
        TextVAE.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("key, value", [("latent_dim", -3), ("emb_dim", -1), ("dec_layers", 0),
                                        ("word_dropout", 2.0), ("cell", "rnn")])
def test_model_settings_out_of_range_in_config_json_are_a_clear_error(tmp_path, key, value):
    # a hand-edited config.json: values the training config refuses failed deep in torch (negative
    # dimension, num_layers), as a weight-shape mismatch, or loaded (word_dropout=2)
    tiny().save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["model"][key] = value
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=rf"config.json: invalid model settings: model.{key}="):
        TextVAE.from_pretrained(tmp_path / "m")


def test_a_lone_string_or_a_non_string_sentence_is_refused_not_split_into_characters():
    model = tiny()
    for call in (model.reconstruct, model.encode, model.encode_points):
        with pytest.raises(TypeError, match=r"a list of sentences, e\.g\. \['cat'\]"):
            call("cat")  # list("cat") would be three one-letter sentences
    with pytest.raises(TypeError, match="sentence 2 is NoneType None, not a string"):
        model.reconstruct(["the cat sat .", None])
    with pytest.raises(TypeError, match="sentence 1 is list"):
        model.interpolate(["the cat sat ."], "it rained .", steps=2)
    assert len(model.reconstruct(("the cat sat .", "it rained ."))) == 2  # any iterable of strings still works


def test_interpolate_refuses_an_unknown_path_instead_of_drawing_a_line():
    model = tiny()
    with pytest.raises(ValueError, match="path='code' is not one of 'line', 'codes'"):
        model.interpolate(TEXTS[0], TEXTS[1], steps=2, path="code")


def test_sample_and_interpolate_counts_of_the_wrong_kind_are_clear_errors():
    model = tiny()
    for n in (-1, 2.5, "3", True):
        with pytest.raises(ValueError, match=f"n={n!r} must be a whole number >= 0"):
            model.sample(n)
    with pytest.raises(ValueError, match="steps=2.5 must be a whole number >= 0"):
        model.interpolate(TEXTS[0], TEXTS[1], steps=2.5)
    assert model.sample(0) == [] and len(model.sample(torch.tensor(2))) == 2  # anything int-like counts
    assert len(model.interpolate(TEXTS[0], TEXTS[1], steps=torch.tensor(2))) == 4
    assert len(model.interpolate_prior(torch.tensor(2))) == 4


def test_a_string_api_call_that_fails_keeps_the_training_flag():
    model = tiny().train()
    for call in (lambda: model.encode([""]), lambda: model.encode_points(["the cat sat .", ""]),
                 lambda: model.interpolate(TEXTS[0], "", steps=2)):
        with pytest.raises(ValueError, match="empty after tokenisation"):
            call()
        assert model.training  # not left in eval mode: training would go on without dropout


def test_a_run_killed_before_its_first_save_is_named_as_such_not_as_a_model_missing_its_weights(tmp_path, capsys):
    # a run directory holds config.json and metrics.jsonl from its start; best/ and checkpoints/ come later
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text("")
    expect_error(capsys, ["sample", "--model", run], "has saved no model yet", "--resume")
