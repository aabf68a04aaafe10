"""The KL decomposition of Chen et al. (2018) (textvae.decomposition): the full-split estimator against
analytic total correlations, the telescoping sum, and the minibatch estimators (mws, mss)."""
import math

import pytest
import torch

from helpers import load_script
from textvae.decomposition import PosteriorQueue, kl_decomposition, minibatch_log_qz
from textvae.latents.gaussian import GaussianLatent

LATENT = GaussianLatent(in_dim=1, dim=3)
S2 = 0.5  # posterior variance of every sentence


def _posteriors(corr: torch.Tensor, n: int, seed: int):
    """n Gaussian posteriors N(mu_n, S2 I) with mu_n ~ N(0, corr - S2 I): their aggregate q(z) tends
    to N(0, corr) as n grows, whose total correlation is -1/2 log det(corr) (unit variances).
    (Posteriors of tiny variance would not do: their mixture is a spiky density whose TC grows
    like (Z - 1) log n, not the TC of the Gaussian the centres are drawn from.)"""
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(corr - S2 * torch.eye(len(corr)))
    mu = torch.randn(n, len(corr), generator=g, dtype=torch.float64) @ chol.T
    return mu, torch.full_like(mu, math.log(S2)), g


def _equicorrelated(rho: float) -> torch.Tensor:
    return (1 - rho) * torch.eye(3, dtype=torch.float64) + rho


def test_full_split_tc_approaches_the_analytic_total_correlation_of_a_correlated_gaussian():
    corr = _equicorrelated(0.4)
    analytic = -0.5 * torch.logdet(corr).item()  # 0.217 nats
    mu, logvar, g = _posteriors(corr, 4000, seed=0)
    d = kl_decomposition(mu, logvar, LATENT, generator=g, chunk=500)
    assert d["tc"] == pytest.approx(analytic, abs=0.04)


def test_full_split_tc_is_near_zero_for_independent_dimensions():
    mu, logvar, g = _posteriors(torch.eye(3, dtype=torch.float64), 4000, seed=1)
    d = kl_decomposition(mu, logvar, LATENT, generator=g, chunk=333)
    assert abs(d["tc"]) < 0.04


def test_the_three_terms_sum_to_the_average_kl():
    g = torch.Generator().manual_seed(2)
    mu = 1.5 * torch.randn(3000, 3, generator=g, dtype=torch.float64)
    logvar = torch.rand(3000, 3, generator=g, dtype=torch.float64) * 3 - 2.5
    d = kl_decomposition(mu, logvar, LATENT, generator=g)
    total = d["mi"] + d["tc"] + d["dimwise_kl"]
    assert total == pytest.approx(d["kl"], rel=0.03)  # one-sample Monte Carlo noise, ~0.5% sd here
    assert 0 < d["mi"] <= math.log(3000)
    assert d["dimwise_kl"] > 0


def test_chunking_does_not_change_the_estimate():
    mu, logvar, _ = _posteriors(_equicorrelated(0.3), 300, seed=3)
    a = kl_decomposition(mu, logvar, LATENT, generator=torch.Generator().manual_seed(0), chunk=7)
    b = kl_decomposition(mu, logvar, LATENT, generator=torch.Generator().manual_seed(0), chunk=1000)
    assert a == pytest.approx(b, rel=1e-9)


@pytest.mark.parametrize("method", ["mws", "mss"])
def test_minibatch_estimators_agree_in_expectation_with_the_full_split(method):
    n, b = 2000, 64
    mu, logvar, g = _posteriors(_equicorrelated(0.4), n, seed=4)
    full = kl_decomposition(mu, logvar, LATENT, generator=torch.Generator().manual_seed(5))
    tcs = []
    for _ in range(200):
        idx = torch.randperm(n, generator=g)[:b]
        z = mu[idx] + torch.randn(b, 3, generator=g, dtype=torch.float64) * math.sqrt(S2)
        log_qz, log_marg = minibatch_log_qz(z, (mu[idx], logvar[idx]), LATENT, n, method)
        tcs.append((log_qz - log_marg).mean().item())
    # minibatch estimates are log-of-unbiased, biased low by O(1/B): close, not equal, to the full split
    assert sum(tcs) / len(tcs) == pytest.approx(full["tc"], abs=0.06)


def test_minibatch_estimator_needs_two_sentences():
    z = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="batch size"):
        minibatch_log_qz(z, (z, z), LATENT, 100)


def test_a_queue_holding_the_rest_of_the_data_set_gives_the_exact_log_qz():
    """Batch + queue = the whole data set: the mws weights become 1/N each, so the joint estimate is
    the exact mixture log (1/N) sum_n q(z|x_n); the marginals stay the batch's (queue or not)."""
    n, b = 300, 16
    mu, logvar, g = _posteriors(_equicorrelated(0.4), n, seed=6)
    z = mu[:b] + torch.randn(b, 3, generator=g, dtype=torch.float64) * math.sqrt(S2)
    exact = torch.logsumexp(LATENT.log_q_per_dim(z.unsqueeze(1), (mu, logvar)).sum(-1), dim=1) - math.log(n)
    log_qz, marg = minibatch_log_qz(z, (mu[:b], logvar[:b]), LATENT, n, reference=(mu[b:], logvar[b:]))
    assert torch.allclose(log_qz, exact, atol=1e-9)
    _, batch_marg = minibatch_log_qz(z, (mu[:b], logvar[:b]), LATENT, n)
    assert torch.equal(marg, batch_marg)


def test_pairwise_log_q_matches_the_per_dimension_sum_for_sharp_posteriors():
    g = torch.Generator().manual_seed(7)
    mu, z = 3 * torch.randn(50, 3, generator=g), 3 * torch.randn(8, 3, generator=g)
    logvar = torch.full((50, 3), -12.0)  # 1 / v ~ 1.6e5: float32's expanded square would cancel badly
    z[:4] = mu[:4] + 1e-3 * torch.randn(4, 3, generator=g)
    pairs = LATENT.log_q_pairs(z, (mu, logvar))
    ref = LATENT.log_q_per_dim(z.double().unsqueeze(1), (mu.double(), logvar.double())).sum(-1)
    assert pairs.dtype == torch.float32 and pairs.shape == (8, 50)
    assert torch.allclose(pairs.double(), ref, rtol=1e-6, atol=1e-3)


def test_a_queue_brings_the_tc_of_sharp_posteriors_near_the_full_split_where_the_batch_falls_short():
    """Sharp posteriors barely overlap: a batch of 32 sees almost only each sample's own posterior in
    the joint and reads a TC far below the split's. 1500 queued posteriors for the joint read it
    closely when 224 of them serve the marginals too; with none, the batch's marginals fall short."""
    n, b, k, s2 = 4000, 32, 1500, 0.02
    g = torch.Generator().manual_seed(8)
    corr = _equicorrelated(0.6)
    mu = torch.randn(n, 3, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(corr - s2 * torch.eye(3)).T
    logvar = torch.full_like(mu, math.log(s2))
    full = kl_decomposition(mu, logvar, LATENT, generator=torch.Generator().manual_seed(9))["tc"]
    batch, queued, joint_only = [], [], []
    for _ in range(60):
        idx = torch.randperm(n, generator=g)[:b + k]
        z = mu[idx[:b]] + torch.randn(b, 3, generator=g, dtype=torch.float64) * math.sqrt(s2)
        params, ref = (mu[idx[:b]], logvar[idx[:b]]), (mu[idx[b:]], logvar[idx[b:]])
        for out, reference, m in ((batch, None, 0), (queued, ref, 224), (joint_only, ref, 0)):
            log_qz, marg = minibatch_log_qz(z, params, LATENT, n, reference=reference, marginal_reference=m)
            out.append((log_qz - marg).mean().item())
    batch, queued, joint_only = (sum(x) / len(x) for x in (batch, queued, joint_only))
    assert abs(queued - full) < 0.1 < min(full - batch, joint_only - full), (batch, queued, joint_only, full)


def test_posterior_queue_keeps_the_newest_and_round_trips():
    q = PosteriorQueue(5)
    assert len(q) == 0 and q.params is None and q.state_dict() == {}
    for start in (0, 3, 6):
        rows = torch.arange(start, start + 3, dtype=torch.float32).unsqueeze(1)
        q.push((rows.requires_grad_(), -rows))
    assert len(q) == 5 and q.params[0].squeeze(1).tolist() == [4, 5, 6, 7, 8]  # first in, first out
    assert not q.params[0].requires_grad
    q.push((torch.tensor([[float("nan")]]), torch.zeros(1, 1)))  # a diverged batch stays out
    assert len(q) == 5 and torch.isfinite(q.params[0]).all()
    again = PosteriorQueue(5)
    again.load_state_dict(q.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(again.params, q.params))
    with pytest.raises(ValueError, match=">= 1"):
        PosteriorQueue(0)


def test_bad_arguments_are_errors_that_name_them():
    """They were a bare KeyError: 'MWS', range()'s 'arg 3 must not be zero' and torch.cat's 'expected a
    non-empty list of Tensors'."""
    z = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="method 'MWS' is unknown; choose one of 'mws', 'mss'"):
        minibatch_log_qz(z, (z, z), LATENT, 100, "MWS")
    with pytest.raises(ValueError, match="chunk=0"):
        kl_decomposition(z, z, LATENT, chunk=0)
    with pytest.raises(ValueError, match=r"N >= 1 sentences; got \(0, 3\)"):
        kl_decomposition(z[:0], z[:0], LATENT)
    with pytest.raises(ValueError, match=r"same shape \(N, Z\).*got \(4, 3\) and \(4, 2\)"):
        kl_decomposition(z, z[:, :2], LATENT)


def test_a_reference_queue_needs_mws_and_room_in_the_data_set():
    z = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="mws"):
        minibatch_log_qz(z, (z, z), LATENT, 100, "mss", reference=(z, z))
    with pytest.raises(ValueError, match=r"batch size \+ reference \(4\) <= dataset_size \(7\)"):
        minibatch_log_qz(z, (z, z), LATENT, 7, reference=(z, z))


def test_the_tcvae_step_benchmark_runs_side_by_side(tmp_path):
    import json

    bench = load_script("benchmark_tcvae")
    out = tmp_path / "b.json"
    assert bench.main(["--preset", "tiny", "--set", "data.builtin_size=200", "--rounds", "2", "--steps", "2",
                       "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["plain_ms_per_step"] > 0 and r["tcvae_ms_per_step"] > 0 and r["ratio"] > 0
    assert r["tc"] == ["objective.tc_beta=6.0", "objective.tc_estimator=mws"]


@pytest.mark.parametrize("method", ["mws", "mss"])
def test_own_share_script_known_answers(method):
    # identical posteriors: every sentence's term is equal, so the own one has its weight, 1/N;
    # posteriors far apart: the own term is the whole estimate of the joint q(z_i)
    script = load_script("tc_own_share")

    class Stub:
        latent = LATENT

        def __init__(self, mu):
            self.mu = mu

        def encode(self, sentences):
            return self.mu, torch.full_like(self.mu, math.log(0.01))

    g = torch.Generator().manual_seed(0)
    joint, _ = script.own_share(Stub(torch.zeros(8, 3)), ["s"] * 8, 100, method, g)
    assert joint == pytest.approx(1 / 100, rel=1e-4)
    far = torch.arange(8.0).unsqueeze(1).repeat(1, 3) * 10  # (8, 3): centres 100 posterior sd apart
    joint, marg = script.own_share(Stub(far), ["s"] * 8, 100, method, g)
    assert joint == pytest.approx(1.0) and marg == pytest.approx(1.0)


def test_estimator_bias_script_known_answers():
    # the whole data set as batch + queue (marginals too): each sample's estimate is the exact mixture's,
    # so the mean meets the whole-set value; sharp posteriors in a batch of 16 are misread by far
    script = load_script("tc_estimator_bias")
    n, b, s2 = 400, 16, 0.01
    g = torch.Generator().manual_seed(10)
    mu = torch.randn(n, 3, generator=g, dtype=torch.float64)
    logvar = torch.full((n, 3), math.log(s2), dtype=torch.float64)
    full = kl_decomposition(mu, logvar, LATENT, generator=g)["tc"]
    batch = script.minibatch_tc(mu, logvar, LATENT, b, 0, 0, 100, g)
    queued = script.minibatch_tc(mu, logvar, LATENT, b, n - b, n - b, 100, g)
    assert abs(queued - full) < 0.2 < 0.5 < abs(batch - full), (full, batch, queued)  # sd of the gap ~0.08


def test_estimator_bias_script_reads_length_bucketed_batches_apart_from_uniform_ones():
    # two sentence lengths that set two latent dimensions together (+3 / -3): that shared cause is total
    # correlation, which a uniform batch sees and a batch of one length cannot (it holds one group only)
    script = load_script("tc_estimator_bias")
    from textvae.batching import BucketBatchSampler

    n, b = 384, 16  # 192 sentences of each length: 12 whole batches each
    g = torch.Generator().manual_seed(3)
    lengths = torch.tensor([5, 12] * (n // 2))
    sign = (lengths == 12).double() * 2 - 1
    mu = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.3
    mu[:, 0] += 3 * sign
    mu[:, 1] += 3 * sign
    logvar = torch.full((n, 3), math.log(0.05), dtype=torch.float64)
    full = kl_decomposition(mu, logvar, LATENT, generator=g)["tc"]
    batches = [x for x in BucketBatchSampler(lengths.numpy(), b, seed=0).global_batches(0) if len(x) == b]
    assert all(len(set(lengths[torch.as_tensor(x)].tolist())) == 1 for x in batches)  # one length each
    uniform = script.minibatch_tc(mu, logvar, LATENT, b, 0, 0, len(batches), g)
    bucketed = script.minibatch_tc(mu, logvar, LATENT, b, 0, 0, len(batches), g, batches)
    assert full > 0.5 and bucketed < uniform - 0.4, (full, uniform, bucketed)
