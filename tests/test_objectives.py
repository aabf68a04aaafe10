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
