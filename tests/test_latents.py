"""The latent interface (textvae.latents) and the Gaussian latent's values, including the
log-variance clamp inside a trained model."""

import math

import pytest
import torch
from torch.distributions import Normal

from textvae.config import ModelConfig, ObjectiveConfig, TokenizerConfig
from textvae.config_files import load_config
from textvae.errors import ConfigError
from textvae.latents import LATENTS, GaussianLatent, Latent, build_latent
from textvae.latents.gaussian import homotopy as gaussian_homotopy
from textvae.model import TextVAE
from textvae.objectives import vae_loss
from textvae.tokenizers import train_tokenizer

TEXTS = ["the cat sat on the mat .", "a dog ran in the park .", "the bird sang a song ."]


def test_latent_table_and_config_key():
    assert list(LATENTS) == ["gaussian", "gumbel", "vq"] and all(issubclass(c, Latent) for c in LATENTS.values())
    assert LATENTS["gaussian"] is GaussianLatent and load_config().model.latent == "gaussian"
    with pytest.raises(ConfigError, match=r"model.latent='flow' is not one of 'gaussian', 'gumbel', 'vq'"):
        load_config(overrides=["model.latent=flow"])
    latent = build_latent(ModelConfig(latent_dim=3, bn_gamma=0.5), in_dim=7)
    assert isinstance(latent, GaussianLatent) and latent.head.in_features == 7 and latent.head.out_features == 6
    assert latent.mu_bn.weight.tolist() == [0.5] * 3


def test_gaussian_sample_scores_and_geometry():
    torch.manual_seed(0)
    latent = GaussianLatent(5, 3)
    mu, logvar = latent.posterior(torch.randn(4, 5))
    eps = latent.noise(4, torch.Generator().manual_seed(1))
    assert torch.equal(eps, torch.randn(4, 3, generator=torch.Generator().manual_seed(1)))
    z = latent.sample((mu, logvar), eps)
    assert torch.allclose(z, mu + eps * (0.5 * logvar).exp())
    q = Normal(mu, (0.5 * logvar).exp())
    assert torch.allclose(latent.log_q(z, (mu, logvar)), q.log_prob(z).sum(-1), atol=1e-5)
    assert torch.allclose(latent.log_q_per_dim(z, (mu, logvar)), q.log_prob(z), atol=1e-5)
    assert torch.allclose(latent.log_prior(z), Normal(0.0, 1.0).log_prob(z).sum(-1), atol=1e-5)
    assert torch.all(latent.kl((torch.zeros(2, 3), torch.zeros(2, 3))) == 0)
    assert torch.equal(latent.point((mu, logvar)), mu)
    path = latent.interpolate(mu[0], mu[1], 3)
    assert path.shape == (5, 3) and torch.equal(path[0], mu[0]) and torch.equal(path[-1], mu[1])
    assert latent.prior_sample(2, torch.Generator().manual_seed(0)).shape == (2, 3)


def test_logvar_is_clamped():
    latent = GaussianLatent(2, 2, logvar_min=-1.0, logvar_max=1.0)
    with torch.no_grad():
        latent.head.bias.copy_(torch.tensor([0.0, 0.0, -50.0, 50.0]))
        latent.head.weight.zero_()
    _, logvar = latent.posterior(torch.zeros(1, 2))
    assert logvar.tolist() == [[-1.0, 1.0]]


class ExtraLossLatent(GaussianLatent):
    """A Gaussian with a made-up extra term, standing in for a VQ codebook loss."""

    def extra_losses(self, params, z, weight=None):
        return {"codebook": z.pow(2).mean()}


def test_forward_carries_a_latents_own_loss_terms_into_the_objective(monkeypatch):
    monkeypatch.setitem(LATENTS, "extra", ExtraLossLatent)
    tok = train_tokenizer(TokenizerConfig(kind="word"), TEXTS)
    torch.manual_seed(0)
    model = TextVAE(ModelConfig(emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=3, latent="extra"), tok)
    tokens, lengths = model._tokenize(TEXTS)
    eps = model.noise(3, torch.Generator().manual_seed(0))
    out = model(tokens, lengths, eps)
    assert set(out.losses) == {"codebook"} and torch.allclose(out.losses["codebook"], out.z.pow(2).mean())
    plain = out.rec.mean() + 0.5 * out.kl.sum(1).mean()
    assert torch.allclose(vae_loss(out, 0.5, ObjectiveConfig()), plain + out.losses["codebook"])
    assert torch.equal(out.mu, out.params[0]) and torch.equal(out.logvar, out.params[1])


def test_noise_passed_to_forward_decides_the_sample():
    tok = train_tokenizer(TokenizerConfig(kind="word"), TEXTS)
    torch.manual_seed(0)
    model = TextVAE(ModelConfig(emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=3), tok).eval()
    tokens, lengths = model._tokenize(TEXTS)
    eps = model.noise(3, torch.Generator().manual_seed(5))
    a, b = model(tokens, lengths, eps), model(tokens, lengths, eps.clone())
    assert torch.equal(a.z, b.z) and torch.equal(a.rec, b.rec)
    mu, logvar = model.encode_posterior(tokens, lengths)
    assert torch.allclose(a.z, mu + eps * (0.5 * logvar).exp())
    lm = TextVAE(ModelConfig(emb_dim=8, dec_hidden=8, latent_dim=0), tok)
    assert lm.noise(3).shape == (3, 0) and lm.prior_sample(3) is None
    assert math.isclose(float(lm(tokens, lengths, lm.noise(3)).kl.numel()), 0.0)


def test_homotopy_is_bowmans_linear_path():
    a, b = torch.randn(5), torch.randn(5)
    h = gaussian_homotopy(a, b, 3)
    assert h.shape == (5, 5)
    assert torch.equal(h[0], a) and torch.equal(h[-1], b)
    assert torch.allclose(h[2], (a + b) / 2, atol=1e-6)
    assert torch.allclose(h[1:] - h[:-1], (b - a).expand(4, -1) / 4, atol=1e-6)
    assert gaussian_homotopy(a, b, 0).shape == (2, 5)


# --------------------------------------------------------------------------- the clamp inside a trained model

def test_logvar_is_clamped_to_the_configured_range(tiny_run):
    model = TextVAE.from_pretrained(tiny_run)
    lo, hi = model.config.logvar_min, model.config.logvar_max
    assert (lo, hi) == (-20.0, 10.0)  # documented in ModelConfig
    Z = model.latent_dim
    with torch.no_grad():
        for sign, bound in ((1, hi), (-1, lo)):
            model.latent.head.bias[Z:] = sign * 1e6  # the log-variance half
            _, logvar = model.encode(["the dog ran ."])
            assert torch.all(logvar == bound)
