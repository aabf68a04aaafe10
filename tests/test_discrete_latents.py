"""The discrete latents (textvae.latents.gumbel, textvae.latents.vq) and their evaluation
(textvae.code_metrics): values with known answers, the exact likelihood of a one-variable Gumbel
model against its importance-weighted estimate, save/reload, exact resume, the verbs."""

import hashlib
import json
import math
import pathlib
import re

import numpy as np
import pytest
import torch
from safetensors.torch import save
from torch.distributions import Categorical, kl_divergence

from helpers import cli, expect_error, records, tiny_cfg, weights
from textvae.checkpoint import list_checkpoints
from textvae.code_prior import fit_code_prior
from textvae.config import ModelConfig, TokenizerConfig
from textvae.config_files import load_config
from textvae.data import EncodedSplit
from textvae.errors import ConfigError, DataError, TextVAEError
from textvae.latents import GaussianLatent, GumbelLatent, VQLatent
from textvae.latents.gumbel import temperature
from textvae.metrics import iw_log_weights
from textvae.model import TextVAE
from textvae.tokenizers import train_tokenizer
from textvae.train import train

TOKENS = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]])
LENGTHS = torch.tensor([5, 4])


@pytest.mark.parametrize("override, key", [
    ("model.latent_classes=1", "model.latent_classes=1 must be >= 2"),
    ("model.latent_vars=0", "model.latent_vars=0 must be >= 1"),
    ("model.gumbel_tau=0", "model.gumbel_tau=0.0 must be > 0"),
    ("model.gumbel_tau_min=-1", "model.gumbel_tau_min=-1.0 must be > 0"),
])
def test_bad_gumbel_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(overrides=["model.latent=gumbel", override])


def test_bad_vq_config_names_the_key():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["model.latent=vq", "model.vq_restart_window=0", "model.latent_classes=0",
                               "objective.aggressive=true"])
    msg = str(e.value)
    assert "model.vq_restart_window=0 must be >= 1" in msg and "model.vq_restart=false" in msg
    assert "model.latent_classes=0 must be >= 2" in msg and "objective.aggressive" in msg


def test_gumbel_values():
    torch.manual_seed(0)
    lat = GumbelLatent(6, vars=3, classes=4, tau=2.0, tau_min=0.5, tau_decay=0.1)
    (log_pi,) = params = lat.posterior(torch.randn(5, 6))
    q = Categorical(logits=log_pi.view(5, 3, 4))
    uniform = Categorical(logits=torch.zeros(5, 3, 4))
    assert torch.allclose(lat.kl(params), kl_divergence(q, uniform), atol=1e-6)  # (B, M) per variable
    assert torch.allclose(lat.kl((torch.full((2, 12), -math.log(4)),)), torch.zeros(2, 3), atol=1e-6)
    lat.eval()
    z = lat.sample(params, lat.noise(5, torch.Generator().manual_seed(1)))
    assert set(z.unique().tolist()) == {0.0, 1.0} and torch.equal(z.view(5, 3, 4).sum(-1), torch.ones(5, 3))
    ids = lat.code_ids(z)
    assert torch.allclose(lat.log_q(z, params), q.log_prob(ids).sum(-1), atol=1e-6)
    assert torch.allclose(lat.log_prior(z), torch.full((5,), -3 * math.log(4)))
    # hard samples are exact draws of q: frequencies of 20,000 draws of variable 0 of sentence 0
    draws = lat.code_ids(lat.sample(params, lat.noise(20000, torch.Generator().manual_seed(2)).view(20000, 1, 12)
                                    .expand(-1, 5, -1)))[:, 0, 0]
    freq = torch.bincount(draws, minlength=4) / 20000.0
    assert torch.allclose(freq, q.probs[0, 0], atol=0.02)
    # temperature schedule: exponential decay with a floor, clocked by training steps
    assert temperature(0, 2.0, 0.5, 0.1) == 2.0 and temperature(100, 2.0, 0.5, 0.1) == 0.5
    lat.train()
    soft = lat.sample(params, lat.noise(5))
    assert int(lat.steps) == 1 and soft.min() > 0 and torch.allclose(soft.view(5, 3, 4).sum(-1), torch.ones(5, 3))
    assert lat.tau == pytest.approx(2.0 * math.exp(-0.1))
    lat.hard = True
    st = lat.sample((log_pi.detach().requires_grad_(),), lat.noise(5))
    assert set(st.detach().unique().tolist()) == {0.0, 1.0}  # one-hot forward ...
    path = lat.interpolate(log_pi[0], log_pi[1], 3)
    assert torch.equal(path[0], lat.point(params)[0]) and torch.equal(path[-1], lat.point(params)[1])
    swap = lat.swap(z[0], z[1])
    assert swap.shape == (4, 12) and torch.equal(swap[0], z[0]) and torch.equal(swap[-1], z[1])
    assert torch.equal(swap[1][:4], z[1][:4]) and torch.equal(swap[1][4:], z[0][4:])


def test_straight_through_gradients_reach_the_logits():
    lat = GumbelLatent(4, vars=2, classes=3, hard=True)
    h = torch.randn(3, 4)
    z = lat.sample(lat.posterior(h), lat.noise(3))
    (z * torch.randn_like(z)).sum().backward()
    assert lat.head.weight.grad is not None and lat.head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("ema", [False, True])
def test_vq_quantises_and_learns_its_codebook(ema):
    torch.manual_seed(0)
    lat = VQLatent(4, vars=2, classes=5, code_dim=3, beta=0.25, ema=ema, restart=False)
    (z_e,) = params = lat.posterior(torch.randn(6, 4))
    ids = lat.code_ids(z_e)  # (6, 2): nearest by brute force
    brute = torch.cdist(z_e.detach().view(6, 2, 3), lat.codebook.detach().unsqueeze(0)).argmin(-1)
    assert torch.equal(ids, brute)
    z = lat.sample(params, lat.noise(6))
    z_q = lat.codebook[ids].reshape(6, 6)
    assert torch.allclose(z, z_q, atol=1e-6)  # the forward value is the codebook entry ...
    before = lat.codebook.detach().clone()
    losses = lat.extra_losses(params, z)
    assert losses["commitment"].item() == pytest.approx(0.25 * (z_e - z_q).pow(2).sum(-1).mean().item(), rel=1e-5)
    assert ("codebook" in losses) == (not ema)
    z.sum().backward()
    assert lat.head.weight.grad.abs().sum() > 0  # ... and a gradient reaches the encoder head (straight-through)
    if ema:
        moved = (lat.codebook - before).abs().amax(-1) > 1e-3  # EMA moved the used entries, only them
        assert int(lat.steps) == 1 and torch.equal(moved, torch.isin(torch.arange(5), ids.unique()))
        assert lat.codebook.abs().max() < 10
    assert torch.allclose(lat.kl(params), torch.full((6, 2), math.log(5)))
    assert torch.equal(lat.log_q(z, params), torch.zeros(6))


def test_dead_codes_are_restarted_from_encoder_outputs():
    torch.manual_seed(0)
    on = VQLatent(4, vars=1, classes=8, code_dim=2, restart_window=2)
    off = VQLatent(4, vars=1, classes=8, code_dim=2, restart=False)
    off.load_state_dict(on.state_dict())
    h = torch.randn(16, 4)
    for lat in (on, off):
        for _ in range(2):
            params = lat.posterior(h)
            lat.extra_losses(params, lat.sample(params, lat.noise(16)))
    used_on = len(on.code_ids(on.posterior(h)[0]).unique())
    used_off = len(off.code_ids(off.posterior(h)[0]).unique())
    assert used_off < used_on  # the re-seeded entries sit on encoder outputs, so they are chosen
    seeded = on.posterior(h)[0].detach()  # (16, 2): this batch's encoder outputs
    assert any(bool((on.codebook[k] - seeded).abs().amax(-1).min() < 1e-6) for k in range(8))
    assert not any(bool((off.codebook[k] - seeded).abs().amax(-1).min() < 1e-6) for k in range(8))


def exact_log_px(model, tokens, lengths):
    """log p(x) of a one-variable Gumbel model by enumerating its K codes under the uniform prior."""
    K = model.latent.classes
    codes = torch.eye(K)  # (K, K): every code
    ll = torch.stack([model.log_likelihood(tokens, lengths, codes[c].expand(len(tokens), -1)) for c in range(K)])
    return torch.logsumexp(ll, 0) - math.log(K)


def test_gumbel_iw_estimate_matches_exact_likelihood():
    """M = 1, K = 4: exact log p(x) = logsumexp_c log p(x|c) - log 4; the IW estimate with k = 1,000
    hard samples of q is within 4 Monte-Carlo standard errors of it (and the ELBO is below it)."""
    torch.manual_seed(0)
    model = TextVAE(ModelConfig(latent="gumbel", latent_vars=1, latent_classes=4, vocab_size=12, emb_dim=8,
                                enc_hidden=8, dec_hidden=8)).eval()
    with torch.no_grad():
        model.latent.head.bias.copy_(torch.tensor([1.5, -1.0, 0.3, 0.0]))  # q far from uniform
        model.decoder.z_to_hidden.weight.mul_(20)  # p(x|z) depends strongly on z
        exact = exact_log_px(model, TOKENS, LENGTHS)
        log_w = iw_log_weights(model, TOKENS, LENGTHS, k=1000, generator=torch.Generator().manual_seed(0))
    estimate = torch.logsumexp(log_w, 1) - math.log(1000)
    w = (log_w - log_w.max(1, keepdim=True).values).exp()
    se = w.std(1) / (w.mean(1) * math.sqrt(1000))  # delta method: sd of log(mean w)
    assert torch.all((estimate - exact).abs() < 4 * se + 1e-5), (estimate, exact, se)
    assert torch.all(log_w.mean(1) < exact - 0.01)  # the ELBO is a strictly looser bound here
    assert torch.all(se > 1e-4)  # the code matters: the test could fail


@pytest.mark.integration  # four tiny trainings: gumbel and vq, each whole and resumed
@pytest.mark.parametrize("latent", [
    ("model.latent=gumbel", "model.latent_vars=2", "model.latent_classes=4", "model.gumbel_tau_decay=0.2",
     "model.gumbel_hard=true", "objective.free_bits=0.1"),
    ("model.latent=vq", "model.latent_vars=2", "model.latent_classes=16", "model.code_dim=4",
     "model.vq_restart_window=2", "model.vq_ema=true"),
], ids=["gumbel", "vq"])
def test_train_save_reload_and_exact_resume(tmp_path, capsys, latent):
    cfg = (*latent, "train.max_epochs=1", "train.checkpoint_every=3")
    full, part = tmp_path / "full", tmp_path / "part"
    train(tiny_cfg(*cfg, "train.max_steps=6"), full, log=lambda m: None)
    train(tiny_cfg(*cfg, "train.max_steps=3"), part, log=lambda m: None)
    train(tiny_cfg(*cfg, "train.max_steps=6"), part, resume=True, log=lambda m: None)
    a, b = weights(list_checkpoints(full)[-1]), weights(list_checkpoints(part)[-1])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert int(a["latent.steps"]) == 6  # the schedule / restart clock is saved with the weights
    valid = records(full, "valid")[-1]
    assert 0 < valid["codebook_usage"] <= 1 and len(valid["kl_per_dim"]) == 2  # per variable
    model = TextVAE.from_pretrained(list_checkpoints(full)[-1])
    assert isinstance(model.latent, GumbelLatent if "gumbel" in latent[0] else VQLatent)
    out, _ = cli(capsys, ["evaluate", "--model", full, "--json", "--iw-samples", "5", "--n-samples", "4"])
    r = json.loads(out)
    assert 0 < r["codebook_usage"] <= 1 and 1 <= r["code_perplexity"] <= model.latent.classes
    if "vq" in latent[0]:
        assert r["nll_iw"] is None and r["nll_bound_uniform"] == pytest.approx(r["rec"] + 2 * math.log(16))
    else:
        assert r["nll_iw"] is not None and r["nll_iw"] <= r["elbo"] + 1.0 and 0 <= r["active_variables"] <= 2
    for argv in (["sample", "-n", "2"], ["reconstruct", "the dog ran ."],
                 ["interpolate", "--steps", "2", "the dog ran .", "a cat sleeps ."],
                 ["interpolate", "--path", "codes", "the dog ran .", "a cat sleeps ."],
                 ["plot", "--run", full]):
        argv = argv if argv[0] == "plot" else [argv[0], "--model", full, *argv[1:]]
        out, _ = cli(capsys, argv)
        assert out.strip()
    assert (full / "plots" / "code_usage.png").is_file()
    expect_error(capsys, ["traverse", "--model", full], "has none to set")
    expect_error(capsys, ["evaluate", "--model", full, "--disentanglement"], "has discrete codes")
    if "vq" in latent[0]:
        fitted_prior_round_trip(capsys, full)


def fitted_prior_round_trip(capsys, run):
    """fit-prior writes best/code_prior.safetensors; evaluate reports the bound under it; a damaged or
    missing prior file is refused by name."""
    out, _ = cli(capsys, ["fit-prior", "--model", run, "--epochs", "3"])
    path = run / "best" / "code_prior.safetensors"
    assert out.strip() == str(path)
    model = TextVAE.from_pretrained(run)
    assert model.latent.prior is not None
    codes = model.prior_sample(3, torch.Generator().manual_seed(0))
    assert codes.shape == (3, model.latent_dim) and torch.isfinite(model.latent.log_prior(codes)).all()
    r = json.loads(cli(capsys, ["evaluate", "--model", run, "--json", "--n-samples", "2"])[0])
    assert r["nll_bound_prior"] < r["nll_bound_uniform"]  # fitted to the same corpus's codes
    from textvae.hub import MODEL_FILES

    staged = run.parent / "staged"  # what push would upload, and what a hub download fetches of it
    sent = {pathlib.Path(line).name for line in cli(capsys, ["push", "--model", run, "--dry-run", staged])[0].split()}
    assert "code_prior.safetensors" in sent and sent - {"README.md", "training_config.json"} <= set(MODEL_FILES)
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    expect_error(capsys, ["sample", "--model", run], "code_prior.safetensors does not match the SHA-256")
    forged = save({"out.weight": torch.zeros(3, 3)})  # config.json's hash made to match: shapes still checked
    path.write_bytes(forged)
    meta = json.loads((run / "best" / "config.json").read_text())
    meta["code_prior"]["sha256"] = hashlib.sha256(forged).hexdigest()
    (run / "best" / "config.json").write_text(json.dumps(meta))
    expect_error(capsys, ["sample", "--model", run], "does not hold the code prior")
    path.unlink()
    expect_error(capsys, ["sample", "--model", run], "code_prior.safetensors is missing")


SENTENCES = ["the cat sat on the mat .", "a dog ran in the park .", "the bird sang a song .", "it rained ."]


def tiny_vq() -> TextVAE:
    """A small VQ model with a word tokenizer (so that it saves and reloads) and no code prior yet."""
    tok = train_tokenizer(TokenizerConfig(kind="word"), SENTENCES)
    torch.manual_seed(0)
    return TextVAE(ModelConfig(latent="vq", latent_vars=2, latent_classes=4, code_dim=3, emb_dim=8, enc_hidden=8,
                               dec_hidden=8), tok).eval()


def prior_tensors(model) -> dict[str, torch.Tensor]:
    return model.latent.prior.state_dict()


def test_a_fitted_code_prior_moves_with_the_model_and_round_trips(tmp_path):
    """model.to(dtype) / model.to(device) take the fitted prior along, as they do every weight of the model;
    the prior stays out of model.safetensors (its own file, as in every model directory written before)."""
    model = tiny_vq()
    keys = set(model.state_dict())
    split = EncodedSplit([np.array(model.tokenizer.encode(t), np.int32) for t in SENTENCES], SENTENCES)
    fit_code_prior(model, split, epochs=2, hidden=16)
    assert set(model.state_dict()) == keys  # the model's weights file is unchanged by a prior
    codes = model.prior_sample(6, torch.Generator().manual_seed(0))
    ref = model.latent.log_prior(codes)  # (6,) under the float32 prior
    model.to(torch.float64)
    assert {t.dtype for t in prior_tensors(model).values()} == {torch.float64}
    assert torch.allclose(model.latent.log_prior(codes.double()), ref.double(), atol=1e-5)
    model.save_pretrained(tmp_path / "m")
    assert not [k for k in weights(tmp_path / "m") if "prior" in k]
    back = TextVAE.from_pretrained(tmp_path / "m")
    assert back.latent.prior is not None and prior_tensors(back).keys() == prior_tensors(model).keys()
    assert all(torch.equal(t, prior_tensors(model)[k].float()) for k, t in prior_tensors(back).items())
    assert torch.allclose(back.latent.log_prior(codes), ref, atol=1e-5)
    back.to("meta")
    assert {t.device.type for t in prior_tensors(back).values()} == {"meta"}


@pytest.mark.parametrize("texts", [[], ["", "  "]], ids=["no-sentences", "all-blank"])
def test_fit_code_prior_refuses_a_split_with_nothing_to_fit(texts):
    """Before, no sentences gave a ZeroDivisionError with a log, and without one an unfitted prior silently
    attached (every batch's loss NaN); blank sentences were fitted as if they were text."""
    model = tiny_vq()
    split = EncodedSplit([np.zeros(0, np.int32) for _ in texts], texts)
    what = "has no sentences" if not texts else "has only blank sentences (all 2 have no tokens)"
    with pytest.raises(DataError, match=rf"fit_code_prior {re.escape(what)}.*model_split\(model, 'train'\)"):
        fit_code_prior(model, split, epochs=1, log=lambda m: None)
    with pytest.raises(DataError):
        fit_code_prior(model, split, epochs=1)
    assert model.latent.prior is None


def test_gaussian_refuses_the_code_homotopy(tiny_run, capsys):
    lat = GaussianLatent(3, 2)
    with pytest.raises(TextVAEError, match="no discrete codes"):
        lat.swap(torch.zeros(2), torch.ones(2))
    expect_error(capsys, ["interpolate", "--model", tiny_run, "--path", "codes", "the dog ran .", "a cat sat ."],
                 "has no discrete codes (use the straight-line path)")
