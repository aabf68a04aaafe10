"""KL weighting (textvae.objectives): the annealing schedules (constant, linear, Bowman's logistic, Fu et
al.'s cyclical), free bits (Kingma et al. 2016; Li et al. 2019) and the VAE loss that combines the terms."""
import math

import pytest
import torch

from textvae.config import ObjectiveConfig
from textvae.objectives import free_bits_kingma, free_bits_li, kl_term, kl_weight


def test_constant_is_beta_everywhere():
    c = ObjectiveConfig(kl_schedule="constant", kl_weight=0.3)
    assert [kl_weight(s, c) for s in (0, 10, 10**6)] == [0.3, 0.3, 0.3]


def test_linear_warmup_values():
    c = ObjectiveConfig(kl_schedule="linear", kl_start=0.1, kl_weight=1.0, kl_warmup_steps=100)
    assert kl_weight(0, c) == pytest.approx(0.1)
    assert kl_weight(50, c) == pytest.approx(0.55)
    assert kl_weight(100, c) == pytest.approx(1.0)
    assert kl_weight(1000, c) == pytest.approx(1.0)


def test_logistic_matches_bowman_formula():
    c = ObjectiveConfig(kl_schedule="logistic", logistic_k=0.0025, logistic_x0=2500)
    assert kl_weight(2500, c) == pytest.approx(0.5)
    assert kl_weight(0, c) == pytest.approx(1 / (1 + math.exp(0.0025 * 2500)))
    assert kl_weight(10**7, c) == pytest.approx(1.0)
    assert kl_weight(-10**7, c) == 0.0  # no overflow
    assert kl_weight(1000, c) < kl_weight(2000, c) < kl_weight(3000, c)


def test_cyclical_fu_et_al():
    # 4 cycles over 400 steps, R = 0.5: rise over 50 steps, flat at 1 for 50 steps, restart.
    c = ObjectiveConfig(kl_schedule="cyclical", cycles=4, cycle_ratio=0.5, cycle_steps=400)
    assert kl_weight(0, c) == 0.0
    assert kl_weight(25, c) == pytest.approx(0.5)
    assert kl_weight(50, c) == pytest.approx(1.0)
    assert kl_weight(99, c) == pytest.approx(1.0)
    assert kl_weight(100, c) == 0.0  # second cycle starts again at 0
    assert kl_weight(125, c) == pytest.approx(0.5)
    assert kl_weight(400, c) == 1.0 and kl_weight(5000, c) == 1.0  # after the cycles: stays at the weight


def test_cyclical_uses_run_length_when_not_given():
    c = ObjectiveConfig(kl_schedule="cyclical", cycles=2, cycle_ratio=1.0)
    assert kl_weight(50, c, total_steps=200) == pytest.approx(0.5)
    assert kl_weight(100, c, total_steps=200) == 0.0


def test_kl_term_without_free_bits_is_the_kl():
    kl = torch.rand(8, 5)
    assert torch.allclose(kl_term(kl, ObjectiveConfig()), kl.sum(1).mean())


def test_kingma_free_bits_no_gradient_below_lambda():
    # Dimension 0 has batch-mean KL 0.1 < lambda = 0.5: no gradient; dimension 1 has 2.0: gradient 1/B.
    kl = torch.tensor([[0.1, 2.0], [0.1, 2.0], [0.1, 2.0]], requires_grad=True)
    free_bits_kingma(kl, 0.5).backward()
    assert torch.all(kl.grad[:, 0] == 0)
    assert torch.allclose(kl.grad[:, 1], torch.full((3,), 1 / 3))
    assert free_bits_kingma(kl.detach(), 0.5).item() == pytest.approx(0.5 + 2.0)


def test_kingma_is_batch_averaged_not_per_example():
    # Example 0 is below lambda, example 1 above; the batch mean (0.6) is above, so both get gradient.
    kl = torch.tensor([[0.2], [1.0]], requires_grad=True)
    free_bits_kingma(kl, 0.5).backward()
    assert torch.all(kl.grad > 0)


def test_li_free_bits_masks_per_example_and_dimension():
    kl = torch.tensor([[0.2, 3.0], [1.0, 0.1]], requires_grad=True)
    value = free_bits_li(kl, 0.5)
    value.backward()
    assert value.item() == pytest.approx((3.0 + 1.0) / 2)
    assert kl.grad.tolist() == [[0.0, 0.5], [0.5, 0.0]]


def test_kl_term_dispatches_on_mode():
    kl = torch.tensor([[0.2, 3.0], [1.0, 0.1]])
    li = ObjectiveConfig(free_bits=0.5, free_bits_mode="li")
    kingma = ObjectiveConfig(free_bits=0.5, free_bits_mode="kingma")
    assert kl_term(kl, li).item() == pytest.approx(2.0)
    assert kl_term(kl, kingma).item() == pytest.approx(0.6 + 1.55)


def test_vae_loss_is_rec_plus_weighted_kl_term_plus_the_latents_own_terms():
    from types import SimpleNamespace

    from textvae.objectives import vae_loss

    kl = torch.tensor([[0.1, 2.0], [0.3, 1.0]])
    out = SimpleNamespace(rec=torch.tensor([3.0, 5.0]), kl=kl, losses={"commitment": torch.tensor(0.25)})
    cfg = ObjectiveConfig(free_bits=0.5, free_bits_mode="kingma")
    # kingma: batch-mean KL per dimension (0.2, 1.5) clamped at 0.5 -> 0.5 + 1.5
    assert torch.isclose(vae_loss(out, 0.5, cfg), torch.tensor(4.0 + 0.5 * 2.0 + 0.25))
    out.losses = {}
    assert torch.isclose(vae_loss(out, 2.0, ObjectiveConfig()), torch.tensor(4.0 + 2.0 * 1.7))


def _tc_batch(seed: int, b: int = 32):
    from types import SimpleNamespace

    from textvae.latents.gaussian import GaussianLatent

    latent = GaussianLatent(in_dim=1, dim=4)
    g = torch.Generator().manual_seed(seed)
    mu, logvar = torch.randn(b, 4, generator=g), torch.rand(b, 4, generator=g) - 1.0
    z = mu + torch.randn(b, 4, generator=g) * (0.5 * logvar).exp()
    out = SimpleNamespace(rec=torch.zeros(b), kl=latent.kl((mu, logvar)), params=(mu, logvar), z=z, losses={})
    return out, latent


def test_tc_weights_of_one_are_the_plain_elbo_loss():
    # weights 1, 1, 1: the decomposed KL is the analytic KL itself (not only in expectation)
    from textvae.objectives import tc_enabled, vae_loss

    out, latent = _tc_batch(0)
    cfg = ObjectiveConfig(tc_estimator="mss")
    assert not tc_enabled(cfg)
    assert vae_loss(out, 0.7, cfg, dataset_size=1000, latent=latent) == vae_loss(out, 0.7, ObjectiveConfig())


def test_tc_extra_is_zero_at_weights_one_and_the_three_terms_telescope():
    # (w - 1)-weighted terms: with every weight 2 the extra is MI + TC + DWKL = log q(z|x) - log p(z),
    # whatever the estimator of log q(z); its batch mean estimates the analytic KL
    from textvae.objectives import decomposed_kl_extra

    out, latent = _tc_batch(1)
    mc_kl = (latent.log_q(out.z, out.params) - latent.log_prior(out.z)).mean()
    for est in ("mws", "mss"):
        doubled = ObjectiveConfig(tc_alpha=2.0, tc_beta=2.0, tc_gamma=2.0, tc_estimator=est)
        assert torch.isclose(decomposed_kl_extra(out, doubled, latent, 1000), mc_kl, atol=1e-5)
        assert decomposed_kl_extra(out, ObjectiveConfig(tc_estimator=est), latent, 1000).item() == 0.0
    # in expectation over the posterior samples, the Monte Carlo KL is the analytic KL the ELBO uses
    means = [(latent.log_q(o.z, o.params) - latent.log_prior(o.z)).mean() - o.kl.sum(1).mean()
             for o, _ in (_tc_batch(s, b=256) for s in range(20))]
    assert abs(sum(means).item() / 20) < 0.05


def test_beta_tcvae_loss_penalises_total_correlation_and_has_gradients():
    from textvae.decomposition import minibatch_log_qz
    from textvae.objectives import vae_loss

    out, latent = _tc_batch(2)
    out.params[0].requires_grad_(True)
    cfg = ObjectiveConfig(tc_beta=6.0)
    log_qz, log_marg = minibatch_log_qz(out.z, out.params, latent, 500, "mws")
    expected = out.kl.sum(1).mean() + 5.0 * (log_qz - log_marg).mean()
    loss = vae_loss(out, 1.0, cfg, dataset_size=500, latent=latent)
    assert torch.isclose(loss, expected)
    loss.backward()
    assert out.params[0].grad is not None and out.params[0].grad.abs().sum() > 0


def test_tc_anneal_off_adds_the_extra_terms_at_full_weight_while_the_kl_warms_up():
    from textvae.decomposition import minibatch_log_qz
    from textvae.objectives import vae_loss

    out, latent = _tc_batch(4)
    log_qz, log_marg = minibatch_log_qz(out.z, out.params, latent, 500, "mws")
    tc = (log_qz - log_marg).mean()
    kl = out.kl.sum(1).mean()
    annealed = vae_loss(out, 0.25, ObjectiveConfig(tc_beta=3.0), dataset_size=500, latent=latent)
    constant = vae_loss(out, 0.25, ObjectiveConfig(tc_beta=3.0, tc_anneal=False), dataset_size=500,
                        latent=latent)
    assert torch.isclose(annealed, 0.25 * (kl + 2.0 * tc))
    assert torch.isclose(constant, 0.25 * kl + 2.0 * tc)
    # at KL weight 1 the two schedules are the same loss
    assert torch.isclose(vae_loss(out, 1.0, ObjectiveConfig(tc_beta=3.0, tc_anneal=False), dataset_size=500,
                                  latent=latent),
                         vae_loss(out, 1.0, ObjectiveConfig(tc_beta=3.0), dataset_size=500, latent=latent))


def test_beta_tcvae_loss_without_dataset_size_says_what_to_pass():
    from textvae.errors import ConfigError
    from textvae.objectives import vae_loss

    out, latent = _tc_batch(3)
    with pytest.raises(ConfigError, match="dataset_size"):
        vae_loss(out, 1.0, ObjectiveConfig(tc_beta=2.0))


@pytest.mark.parametrize("key", ["tc_alpha", "tc_beta", "tc_gamma"])
def test_negative_tc_weight_is_a_config_error_naming_the_key(key):
    from textvae.config import Config
    from textvae.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"objective\.{key}=-1\.0 must be >= 0"):
        Config(objective=ObjectiveConfig(**{key: -1.0})).validate()
    with pytest.raises(ConfigError, match="objective.tc_estimator='exact'"):
        Config(objective=ObjectiveConfig(tc_estimator="exact")).validate()
    Config(objective=ObjectiveConfig(**{key: 0.0})).validate()  # 0 switches a term off: allowed


@pytest.mark.parametrize("overrides, message", [
    (["objective.tc_queue=-1"], "objective.tc_queue=-1 must be >= 0"),
    (["objective.tc_queue=64"], "tc_alpha, tc_beta and tc_gamma are all 1"),
    (["objective.tc_queue=64", "objective.tc_beta=4", "objective.tc_estimator=mss"],
     "needs objective.tc_estimator=mws"),
    (["objective.tc_queue=64", "objective.tc_beta=4", "objective.tc_queue_marginals=100"],
     "tc_queue_marginals=100 is more than the queue holds"),
])
def test_tc_queue_settings_that_cannot_work_name_the_key(overrides, message):
    from helpers import tiny_cfg
    from textvae.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        tiny_cfg(*overrides)


def test_a_tc_queue_larger_than_the_training_split_is_refused_before_training(tmp_path):
    from helpers import tiny_cfg
    from textvae.errors import ConfigError
    from textvae.train import train

    with pytest.raises(ConfigError, match=r"objective.tc_queue=600 plus a batch of 32 is more than the \d+ training"):
        train(tiny_cfg("objective.tc_beta=4", "objective.tc_queue=600"), tmp_path / "run")


def test_the_loss_fills_the_tc_queue_and_refuses_to_run_without_it():
    from textvae.decomposition import PosteriorQueue
    from textvae.errors import ConfigError
    from textvae.latents.gaussian import GaussianLatent
    from textvae.model import VAEOutput
    from textvae.objectives import vae_loss

    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(8, 3, generator=g), torch.zeros(8, 3)
    z = mu + torch.randn(8, 3, generator=g)
    out = VAEOutput(rec=torch.ones(8), kl=0.5 * (mu ** 2), z=z, params=(mu, logvar))
    cfg, latent = ObjectiveConfig(tc_beta=4.0, tc_queue=20, tc_queue_marginals=5), GaussianLatent(1, 3)
    with pytest.raises(ConfigError, match="without its queue"):
        vae_loss(out, 1.0, cfg, dataset_size=100, latent=latent)
    queue = PosteriorQueue(20)
    first = vae_loss(out, 1.0, cfg, dataset_size=100, latent=latent, queue=queue)  # empty queue: the batch alone
    batch_only = vae_loss(out, 1.0, ObjectiveConfig(tc_beta=4.0), dataset_size=100, latent=latent)
    assert torch.allclose(first, batch_only) and len(queue) == 8
    second = vae_loss(out, 1.0, cfg, dataset_size=100, latent=latent, queue=queue)  # the same 8 posteriors queued
    assert len(queue) == 16 and not torch.allclose(second, first)


def _kingma_grad_on_one_rank(rank, world, port, kl, lam, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        rows = torch.tensor_split(torch.arange(kl.size(0)), world)[rank]  # the trainer's contiguous share
        share = kl[rows].clone().requires_grad_(True)
        # the trainer's scaling: DDP's mean over ranks of these gradients is the global batch's
        (free_bits_kingma(share, lam) * len(rows) * world / kl.size(0)).backward()
        grads = [torch.zeros(kl.size(1)) for _ in range(world)]
        dist.all_gather(grads, share.grad.sum(0) / world)
        if rank == 0:
            torch.save(torch.stack(grads).sum(0), out)
    finally:
        dist.destroy_process_group()


def test_kingma_free_bits_under_data_parallelism_clamp_the_global_batch_mean(tmp_path):
    # dimension 0: mean 0.3 over the first half, 0.1 over the second, 0.2 over the batch: below lambda 0.25,
    # so one process gives it no gradient; two processes clamping their own halves gave the first half one
    import socket

    import torch.multiprocessing as mp

    kl = torch.tensor([[0.3, 2.0]] * 4 + [[0.1, 2.0]] * 4)
    one = kl.clone().requires_grad_(True)
    free_bits_kingma(one, 0.25).backward()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_kingma_grad_on_one_rank, args=(2, port, kl, 0.25, str(tmp_path / "grad.pt")), nprocs=2)
    assert torch.allclose(torch.load(tmp_path / "grad.pt"), one.grad.sum(0))
