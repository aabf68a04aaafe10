"""Estimators with known answers, and the validate/evaluate passes on a tiny model."""
import json
import math
import os
import signal

import numpy as np
import pytest
import torch

from helpers import load_script, signal_on_call
from textvae.batching import collate
from textvae.config import ModelConfig, SampleConfig
from textvae.data import EncodedSplit
from textvae.metrics import (active_units, elbo_terms, evaluate, iw_bound, iw_log_likelihood, iw_log_weights,
                             length_batches, mi_batch, mi_full, model_split, mutual_information, posterior_parameters,
                             validate)
from textvae.errors import DataError
from textvae.model import TextVAE
from textvae.tokenizers import WordTokenizer

V, Z = 20, 4


def tiny(latent_dim=Z, seed=0) -> TextVAE:
    torch.manual_seed(seed)
    tok = WordTokenizer([f"w{i}" for i in range(4, V)])
    return TextVAE(ModelConfig(vocab_size=V, emb_dim=8, enc_hidden=16, dec_hidden=16, latent_dim=latent_dim), tok)


def make_split(n=40, seed=0) -> EncodedSplit:
    rng = np.random.default_rng(seed)
    ids = [rng.integers(4, V, size=int(rng.integers(2, 9))).astype(np.int32) for _ in range(n)]
    return EncodedSplit(ids=ids, texts=[" ".join(f"w{i}" for i in x) for x in ids])


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def split():
    return make_split()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- IW on a linear-Gaussian toy

def log_gauss(x, mean, var):
    """log N(x; mean, diag(var)) summed over the last dim."""
    return -0.5 * (((x - mean) ** 2) / var + var.log() + math.log(2 * math.pi)).sum(-1)


def test_iw_bound_converges_to_the_true_marginal_likelihood_on_a_linear_gaussian():
    # x ~ N(W z + b, s2 I), z ~ N(0, I): log p(x) = log N(x; b, W W^T + s2 I) exactly
    g = gen(0)
    D, K, s2, X = 3, 2, 0.25, 20
    W = torch.randn(D, K, generator=g, dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    x = torch.randn(X, K, generator=g, dtype=torch.float64) @ W.T + b + 0.5 * torch.randn(X, D, generator=g, dtype=torch.float64)
    true = torch.distributions.MultivariateNormal(b, W @ W.T + s2 * torch.eye(D, dtype=torch.float64)).log_prob(x)
    # exact posterior, then a deliberately imperfect diagonal q: shifted mean, inflated variances
    post_cov = torch.linalg.inv(torch.eye(K, dtype=torch.float64) + W.T @ W / s2)
    post_mean = (x - b) @ W @ post_cov / s2  # (X, K)
    q_mean, q_var = post_mean + 0.3, post_cov.diagonal() * 2.0  # (X, K), (K,)
    elbo = (log_gauss(x, q_mean @ W.T + b, torch.full((D,), s2, dtype=torch.float64))
            - (W.pow(2) @ q_var).sum() / (2 * s2)  # E_q log p(x|z)
            - 0.5 * (q_var + q_mean.pow(2) - 1 - q_var.log()).sum(-1))  # KL(q || p)

    def estimates(k, repeats=200):
        z = q_mean + q_var.sqrt() * torch.randn(repeats, k, X, K, generator=g, dtype=torch.float64)
        log_w = (log_gauss(x, z @ W.T + b, torch.full((D,), s2, dtype=torch.float64))
                 + log_gauss(z, torch.zeros(K, dtype=torch.float64), torch.ones(K, dtype=torch.float64))
                 - log_gauss(z, q_mean, q_var))  # (R, k, X)
        return iw_bound(log_w, dim=1)  # (R, X)

    est = {k: estimates(k, 200 if k <= 100 else 40) for k in (1, 10, 100, 1000)}
    gap = {k: float((true - e.mean(0)).mean()) for k, e in est.items()}
    assert gap[1] > 0.3  # q is bad enough for the bound to be loose
    assert gap[1] > gap[10] > gap[100] > gap[1000] >= -0.01
    assert gap[1000] < 0.05 * gap[1]
    # k = 1 is the ELBO in expectation; k > 1 is never worse on average
    e1 = est[1]
    se = float(e1.std(0).mean() / math.sqrt(e1.size(0)))
    assert abs(float(e1.mean(0).mean() - elbo.mean())) < 4 * se
    assert (est[10].mean(0) > elbo).all()


# --------------------------------------------------------------------------- IW on the model

def test_iw_k1_is_the_elbo_in_expectation(model, split):
    b = collate(split, range(16))
    S = 400
    log_w = iw_log_weights(model, b.tokens, b.lengths, k=S, generator=gen(1))  # (B, S): S draws of L_1
    rec, kl, _, _ = elbo_terms(model, b.tokens, b.lengths, samples=S, generator=gen(2))
    per_draw = log_w.mean(0)  # batch-mean L_1 per draw
    se = float(per_draw.std() / math.sqrt(S))
    assert abs(float(per_draw.mean() + (rec + kl.sum(1)).mean())) < 4 * se + 0.02
    # iw_log_likelihood with k = 1 is one such draw
    one = iw_log_likelihood(model, b.tokens, b.lengths, k=1, generator=gen(1))
    assert torch.allclose(one, log_w[:, 0], atol=1e-5)


def test_iw_chunking_does_not_change_the_estimate(model, split):
    b = collate(split, range(10))
    full = iw_log_likelihood(model, b.tokens, b.lengths, k=12, chunk=12, generator=gen(3))
    for chunk in (1, 5):
        part = iw_log_likelihood(model, b.tokens, b.lengths, k=12, chunk=chunk, generator=gen(3))
        assert torch.allclose(full, part, atol=1e-5)
    other = iw_log_likelihood(model, b.tokens, b.lengths, k=12, generator=gen(4))
    assert not torch.allclose(full, other)


def test_language_model_likelihood_is_exact(split):
    lm = tiny(latent_dim=0)
    b = collate(split, range(8))
    exact = iw_log_likelihood(lm, b.tokens, b.lengths, k=50)
    # teacher forcing one step at a time gives the same log p(x)
    with torch.no_grad():
        state, total = lm.init_state(None, 8), torch.zeros(8)
        for t in range(b.tokens.size(1) - 1):
            logits, state = lm.step(b.tokens[:, t], state, None)
            lp = torch.log_softmax(logits, -1).gather(1, b.tokens[:, t + 1:t + 2]).squeeze(1)
            total += torch.where(t + 1 < b.lengths, lp, 0.0)
    assert torch.allclose(exact, total, atol=1e-4)
    r = evaluate(lm, split, iw_samples=10, batch_size=16, n_samples=5)
    assert r["nll_iw"] == pytest.approx(r["rec"]) and r["elbo"] == pytest.approx(r["rec"])
    assert r["ppl_iw"] == pytest.approx(r["ppl_elbo"])
    assert r["ppl_iw"] == pytest.approx(math.exp(r["nll_iw"] * r["sentences"] / r["tokens"]))
    assert (r["kl"], r["mi_batch"], r["mi_full"], r["au"], r["kl_per_dim"], r["bleu_rec"]) == (0, 0, 0, 0, [], None)
    assert r["iw_samples"] == 0
    v = validate(lm, split, batch_size=16)
    assert v["elbo"] == pytest.approx(r["nll_iw"]) and v["kl"] == 0


# --------------------------------------------------------------------------- mutual information, AU

def brute_force_mi(mu, logvar, z):
    log_density = log_gauss(z.unsqueeze(1), mu.unsqueeze(0), logvar.exp().unsqueeze(0))  # (N, N)
    neg_entropy = (-0.5 * mu.size(1) * math.log(2 * math.pi) - 0.5 * (1 + logvar).sum(-1)).mean()
    return float(neg_entropy - (torch.logsumexp(log_density, 1) - math.log(mu.size(0))).mean())


def test_mutual_information_known_values():
    g = gen(0)
    N = 400

    def sampling_noise(mu, logvar, z):
        """-H(q(z|x)) (analytic) minus its one-sample estimate: zero-mean noise of the estimator."""
        neg_entropy = (-0.5 * Z * math.log(2 * math.pi) - 0.5 * (1 + logvar).sum(-1)).mean()
        return float(neg_entropy - log_gauss(z.double(), mu.double(), logvar.double().exp()).mean())

    # the same posterior for every x: log q(z) = log q(z|x), so I(x; z) = 0 up to that noise
    mu, logvar = torch.randn(1, Z, generator=g).expand(N, -1), torch.full((N, Z), -1.0)
    z = mu + torch.randn(N, Z, generator=g) * (0.5 * logvar).exp()
    noise = sampling_noise(mu, logvar, z)
    assert abs(noise) < 0.3
    assert mutual_information(mu, logvar, z=z) == pytest.approx(noise, abs=1e-6)
    assert abs(mutual_information(mu, logvar, generator=g)) < 0.3
    # well separated, sharp posteriors: z identifies x, I = log N (the estimator's ceiling)
    mu, logvar = 10 * torch.randn(N, Z, generator=g), torch.full((N, Z), -8.0)
    z = mu + torch.randn(N, Z, generator=g) * (0.5 * logvar).exp()
    assert mutual_information(mu, logvar, z=z) == pytest.approx(math.log(N) + sampling_noise(mu, logvar, z), abs=1e-4)
    assert mutual_information(mu, logvar, generator=g) == pytest.approx(math.log(N), abs=0.3)
    # chunking changes nothing; agrees with the (N, N, Z) formula
    mu, logvar = torch.randn(50, Z, generator=g), torch.randn(50, Z, generator=g) - 1
    z = mu + torch.randn(50, Z, generator=g) * (0.5 * logvar).exp()
    ref = brute_force_mi(mu.double(), logvar.double(), z.double())
    assert mutual_information(mu, logvar, z=z) == pytest.approx(ref, abs=1e-6)
    assert mutual_information(mu, logvar, z=z, chunk=7) == pytest.approx(ref, abs=1e-6)
    # per-minibatch aggregates see fewer posteriors: about log(batch size) here
    mu, logvar = 10 * torch.randn(N, Z, generator=g), torch.full((N, Z), -8.0)
    batches = [list(range(i, min(i + 16, N))) for i in range(0, N, 16)]
    assert mi_batch(mu, logvar, batches, g) == pytest.approx(math.log(16), abs=0.1)
    assert mi_full(mu, logvar, g) == pytest.approx(math.log(N), abs=0.3)


def test_mi_and_au_on_the_model():
    split = make_split(240, seed=1)
    N, B = 240, 60
    m = tiny()
    with torch.no_grad():  # q(z|x) independent of x
        m.latent.head.weight.zero_()
    r = evaluate(m, split, iw_samples=0, batch_size=B, n_samples=0, bleu_sentences=0)
    assert abs(r["mi_batch"]) < 0.4 and abs(r["mi_full"]) < 0.4  # one-sample noise: sd ~ 0.1
    assert r["au"] == 0 and max(r["au_variances"]) < 1e-10
    assert r["nll_iw"] is None and r["ppl_iw"] is None and r["distinct_1"] is None
    with torch.no_grad():  # sharp posteriors whose means depend strongly on x
        m.latent.head.weight.normal_(0, 1, generator=gen(0))
        m.latent.head.weight[:Z] *= 30
        m.latent.head.weight[Z:] = 0
        m.latent.head.bias[Z:] = -6
    r = evaluate(m, split, iw_samples=0, batch_size=B, n_samples=0, bleu_sentences=0)
    assert 0.6 * math.log(N) < r["mi_full"] <= math.log(N) + 0.4
    # He et al.'s batches (32 sentences of one length, whatever batch_size is): each batch's
    # estimate is log |batch| when every posterior is far from the others
    batches = length_batches(split.lengths, 32)
    assert r["mi_batch_size"] == 32 and max(map(len, batches)) == 32
    expected = sum(len(b) * math.log(len(b)) for b in batches) / N
    assert r["mi_batch"] == pytest.approx(expected, abs=0.3)
    assert r["mi_full"] > r["mi_batch"] + 0.5
    assert r["au"] == Z


def test_active_units_on_hand_built_means():
    g = gen(0)
    N = 500
    mu = torch.stack([torch.randn(N, generator=g), 0.5 * torch.randn(N, generator=g), torch.full((N,), 3.0),
                      0.01 * torch.randn(N, generator=g), 0.2 * torch.randn(N, generator=g)], 1)
    count, var = active_units(mu)
    assert count == 3  # variances ~1, ~0.25, 0, ~1e-4, ~0.04 against 0.01
    assert torch.allclose(var, mu.double().var(0), rtol=1e-6)
    assert active_units(mu, threshold=0.1)[0] == 2


# --------------------------------------------------------------------------- text metrics

def test_length_batches_group_one_length_in_batches_of_at_most_size():
    lengths = [3, 5, 3, 3, 5, 4, 3]
    assert length_batches(lengths, 2) == [[0, 2], [3, 6], [5], [1, 4]]
    assert sorted(i for b in length_batches(lengths) for i in b) == list(range(7))


# --------------------------------------------------------------------------- the passes over a split

def test_validate_and_evaluate(model, split):
    before = torch.get_rng_state()
    model.train()
    v = validate(model, split, batch_size=16, seed=0)
    r = evaluate(model, split, iw_samples=50, batch_size=16, seed=0, n_samples=12,
                 sample_cfg=SampleConfig(max_len=10))
    assert model.training  # restored
    model.eval()
    assert torch.equal(before, torch.get_rng_state())
    # deterministic for a seed, different for another
    assert validate(model, split, batch_size=16, seed=0) == v
    r2 = evaluate(model, split, iw_samples=50, batch_size=16, seed=0, n_samples=12,
                  sample_cfg=SampleConfig(max_len=10))
    assert {k: x for k, x in r.items() if k != "seconds"} == {k: x for k, x in r2.items() if k != "seconds"}
    assert validate(model, split, batch_size=16, seed=1)["rec"] != v["rec"]
    # conventions
    tokens = int(sum(len(x) + 1 for x in split.ids))
    for d in (v, r):
        assert d["tokens"] == tokens and d["sentences"] == len(split.ids)
        assert sum(d["kl_per_dim"]) == pytest.approx(d["kl"], rel=1e-9)
        assert d["elbo"] == pytest.approx(d["rec"] + d["kl"])
        assert d["ppl_elbo"] == pytest.approx(math.exp(d["elbo"] * d["sentences"] / d["tokens"]))
    assert r["kl"] == pytest.approx(v["kl"]) and r["au"] == v["au"]
    assert r["nll_iw"] <= r["elbo"] + 0.01  # k = 50 is at least as tight as the ELBO
    assert r["ppl_iw"] == pytest.approx(math.exp(r["nll_iw"] * r["sentences"] / r["tokens"]))
    assert 0.0 <= r["bleu_rec"] <= 100.0 and 0.0 <= r["self_bleu"] <= 100.0
    assert 0.0 < r["distinct_1"] <= 1.0 and 0 < r["mean_len"] <= 10
    assert r["iw_samples"] == 50 and r["au_threshold"] == 0.01 and len(r["au_variances"]) == Z
    json.loads(json.dumps(r))  # plain Python types
    assert all(type(x) in (float, int, type(None), list, str) for x in r.values())
    assert r["bleu_tokenize"] == "none"  # a word-level tokenizer's text is scored as tokenised


def test_reconstruction_bleu_uses_decoded_inputs(split, monkeypatch):
    import textvae.metrics as metrics

    m = tiny()

    def perfect(model, z, cfg=None, n=None, generator=None, labels=None):
        if cfg is not None and cfg.greedy:  # reconstructions: echo the batch's inputs
            return [list(map(int, split.ids[i])) for i in perfect.rows.pop(0)]
        return [[4, 5, 6]] * (n or z.size(0))

    perfect.rows = [b for b in metrics._batches(split, 16)]
    monkeypatch.setattr(metrics, "generate", perfect)
    r = evaluate(m, split, iw_samples=0, batch_size=16, n_samples=3)
    assert r["bleu_rec"] == pytest.approx(100.0)
    assert r["self_bleu"] == pytest.approx(100.0) and r["mean_len"] == 3.0
    assert r["distinct_1"] == pytest.approx(3 / 9)


def test_reconstruction_bleu_does_not_depend_on_the_batch_size(split):
    """An untrained model's greedy decodes run on; each is cut at its own input's length + 10 tokens, not at
    the longest input of its batch's, so batching the same sentences differently scores the same."""
    m = tiny()
    scores = [evaluate(m, split, iw_samples=0, n_samples=0, batch_size=b)["bleu_rec"] for b in (1, 8, 64)]
    assert scores[0] > 0 and scores == pytest.approx([scores[0]] * 3, abs=1e-9), scores


def test_bleu_cap_script_scores_both_cuts_and_its_own_cut_matches_evaluate(split):
    m = tiny()
    r = load_script("bleu_cap").both_caps(m, split, batch_size=8)
    assert r["sentences"] == len(split.ids) and r["mixed_length_batches"] > 0
    assert r["bleu_rec_own_cap"] == evaluate(m, split, iw_samples=0, n_samples=0, batch_size=8)["bleu_rec"]
    assert r["bleu_rec_batch_cap"] != r["bleu_rec_own_cap"]  # this untrained model's decodes run on


def test_self_bleu_of_chinese_samples_is_scored_per_character_without_reconstructions():
    # the tokenisation was chosen from the reconstructions' references only: with none (the LM,
    # bleu_sentences=0) CJK samples were scored with 13a, whole lines as single tokens
    from textvae.tokenizers import SentencePieceTokenizer

    rng = np.random.default_rng(0)
    chars = "春江花月夜山水風雲雨雪天地日星人家門前後上下東西南北"
    texts = ["".join(rng.choice(list(chars), 5)) + "，" + "".join(rng.choice(list(chars), 5)) + "。"
             for _ in range(40)]
    tok = SentencePieceTokenizer.train(texts, vocab_size=60, model_type="char")
    zh = EncodedSplit(ids=[np.asarray(tok.encode(t), dtype=np.int32) for t in texts[:12]], texts=texts[:12])
    for latent_dim in (Z, 0):
        torch.manual_seed(0)
        m = TextVAE(ModelConfig(emb_dim=8, enc_hidden=8, dec_hidden=16, latent_dim=latent_dim), tok)
        runs = [evaluate(m, zh, iw_samples=0, n_samples=8, sample_cfg=SampleConfig(max_len=12), bleu_sentences=b)
                for b in (None, 0)]
        for r in runs:
            assert r["bleu_tokenize"] == "zh"
        assert runs[0]["self_bleu"] == runs[1]["self_bleu"]


def test_default_chunk_fits_the_logit_budget_and_a_gpu_gets_a_larger_one():
    from textvae.metrics import LOGIT_BUDGET, LOGIT_BUDGET_CUDA, default_chunk
    cpu = default_chunk(500, 64, 24, 10_000)
    gpu = default_chunk(500, 64, 24, 10_000, LOGIT_BUDGET_CUDA)
    assert cpu * 64 * 24 * 10_000 <= LOGIT_BUDGET < (cpu + 1) * 64 * 24 * 10_000
    assert 4 * cpu <= gpu <= 4 * cpu + 3  # 4x the budget, floor division
    assert default_chunk(500, 1, 2, 3) == 500 and default_chunk(5, 10 ** 4, 100, 10 ** 5) == 1  # clamped to [1, k]


def test_posterior_parameters_are_the_encoder_outputs_in_split_order(model, split):
    mu, logvar = posterior_parameters(model, split, batch_size=7)
    b = collate(split, [3, 0, 11])
    with torch.no_grad():
        m, lv = model.eval().encode_posterior(b.tokens, b.lengths, None)
    assert torch.allclose(mu[[3, 0, 11]], m, atol=1e-5) and torch.allclose(logvar[[3, 0, 11]], lv, atol=1e-5)


def test_model_split_reads_the_models_corpus_or_the_one_given(tmp_path):
    from textvae.config import DataConfig
    from textvae.tokenizers import WordTokenizer

    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("train", "valid", "test"):
        (folder / f"{name}.txt").write_text("the cat sat\na dog ran\n\nthe end\n")
    tok = WordTokenizer.train(["the cat sat", "a dog ran", "the end"])
    m = TextVAE(ModelConfig(vocab_size=tok.vocab_size, emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=2), tok)
    data = DataConfig(data_dir=str(folder))
    split = model_split(m, "valid", data=data)
    assert split.texts == ["the cat sat", "a dog ran", "the end"] and split.labels is None
    assert model_split(m, "test", data=DataConfig(), data_dir=str(folder)).texts == split.texts
    assert data.data_dir == str(folder)  # the caller's config is not changed
    with pytest.raises(DataError, match="no labels"):
        model_split(m, "valid", data=data, need_labels=True)
    (tmp_path / "labels.txt").write_text("x\ny\n-\nz\n")  # one per line of the file, blank included
    assert model_split(m, "valid", data=data, labels_file=tmp_path / "labels.txt").labels == ["x", "y", "z"]


def test_mi_full_standard_error_covers_a_collapsed_posterior_and_shrinks_with_n():
    from textvae.metrics import mi_full_with_se

    def collapsed(n, seed):  # every posterior N(0, I): the true MI is 0
        return torch.zeros(n, 4), torch.zeros(n, 4), torch.Generator().manual_seed(seed)

    values, ses = zip(*(mi_full_with_se(*collapsed(400, seed)) for seed in range(20)))
    assert all(se > 0 for se in ses)
    assert all(abs(v) < 4 * se for v, se in zip(values, ses))  # the estimate scatters around 0 within its SE
    assert min(values) < 0  # and so it is sometimes negative: what docs/metrics.md explains
    small = mi_full_with_se(*collapsed(100, 0))[1]
    large = mi_full_with_se(*collapsed(1600, 0))[1]
    assert 2.5 < small / large < 6.5  # ~ 1/sqrt(N): a factor of 4
    mu, logvar, g = collapsed(50, 3)
    assert mi_full_with_se(mu, logvar, g)[0] == mi_full(mu, logvar, torch.Generator().manual_seed(3))


def test_evaluate_reports_mi_full_se():
    torch.manual_seed(0)
    model = TextVAE(ModelConfig(vocab_size=20, emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=4))
    rng = np.random.default_rng(0)
    ids = [rng.integers(4, 20, size=int(rng.integers(2, 9))).astype(np.int32) for _ in range(40)]
    r = evaluate(model, EncodedSplit(ids=ids, texts=["x"] * 40, labels=None), iw_samples=0, n_samples=0)
    assert r["mi_full_se"] > 0 and math.isfinite(r["mi_full"])


def test_evaluate_disentanglement_on_the_built_in_factors(tiny_run, capsys):
    """`textvae evaluate --disentanglement` on the built-in corpus: the KL decomposition, whose three
    terms sum to its KL within estimator noise, and MIG / DCI against topic, tense, sentiment, length."""
    from textvae.cli import main

    assert main(["evaluate", "--model", str(tiny_run), "--iw-samples", "2", "--n-samples", "5",
                 "--disentanglement", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    d = r["decomposition"]
    assert abs(d["mi"] + d["tc"] + d["dimwise_kl"] - d["kl"]) < 0.1 * max(d["kl"], 1.0)
    assert d["kl"] == pytest.approx(r["kl"], rel=0.05)  # the split's mean KL, as evaluate's own
    assert set(r["mig_per_factor"]) == {"topic", "tense", "sentiment", "length"} and 0 <= r["mig"] <= 1
    assert 0 <= r["dci_disentanglement"] <= 1 and 0 <= r["dci_completeness"] <= 1
    assert 0 < r["dci_informativeness"] <= 1
    main(["evaluate", "--model", str(tiny_run), "--iw-samples", "2", "--n-samples", "5", "--json"])
    assert "mig" not in json.loads(capsys.readouterr().out)  # only when asked



# --------------------------------------------------------------------------- resumable evaluation


def _without_seconds(r):
    return {k: x for k, x in r.items() if k != "seconds"}


@pytest.mark.parametrize("latent_dim", [Z, 0])  # a VAE and the LM
def test_an_interrupted_evaluation_resumes_to_the_same_numbers(split, tmp_path, monkeypatch, latent_dim):
    from textvae import eval_checkpoint

    m = tiny(latent_dim)
    kw = dict(iw_samples=20, batch_size=8, seed=3, n_samples=6, sample_cfg=SampleConfig(max_len=8))
    whole = evaluate(m, split, **kw)
    path, calls, logged = tmp_path / "pass.safetensors", [], []
    original = eval_checkpoint.PassCheckpoint.maybe_save

    def save_then_crash(self, state, generator):  # a save after every batch; killed after the third
        self.every = 0.0
        original(self, state, generator)
        calls.append(state.done)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(eval_checkpoint.PassCheckpoint, "maybe_save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        evaluate(m, split, resume_file=path, **kw)
    assert path.exists() and calls == [1, 2, 3]
    # the time of the earlier sitting is carried on: say it took 1,000 s
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta, tensors = json.loads(f.metadata()["textvae_pass"]), {k: f.get_tensor(k) for k in f.keys()}
    assert meta["seconds"] > 0
    save_file(tensors, str(path), metadata={"textvae_pass": json.dumps({**meta, "seconds": 1000.0})})
    monkeypatch.setattr(eval_checkpoint.PassCheckpoint, "maybe_save", original)
    resumed = evaluate(m, split, resume_file=path, log=logged.append, **kw)
    assert _without_seconds(resumed) == _without_seconds(whole)  # bit for bit
    assert 1000.0 < resumed["seconds"] < 1000.0 + 60
    assert any("after 3 batches" in msg for msg in logged)
    assert not path.exists()  # a complete pass leaves nothing behind


def test_a_saved_evaluation_of_another_pass_is_not_continued(split, tmp_path, monkeypatch):
    from textvae import eval_checkpoint

    m = tiny()
    kw = dict(iw_samples=10, batch_size=8, n_samples=4, sample_cfg=SampleConfig(max_len=8))
    path = tmp_path / "pass.safetensors"
    original = eval_checkpoint.PassCheckpoint.maybe_save

    def save_then_crash(self, state, generator):
        self.every = 0.0
        original(self, state, generator)
        raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(eval_checkpoint.PassCheckpoint, "maybe_save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        evaluate(m, split, resume_file=path, seed=1, **kw)
    monkeypatch.setattr(eval_checkpoint.PassCheckpoint, "maybe_save", original)
    logged = []
    other_seed = evaluate(m, split, resume_file=path, seed=2, log=logged.append, **kw)
    assert _without_seconds(other_seed) == _without_seconds(evaluate(m, split, seed=2, **kw))
    assert any("another pass" in msg for msg in logged)


def test_a_resume_file_that_is_not_a_saved_evaluation_is_refused_and_left_alone(split, tmp_path):
    """A pass overwrites its resume file and removes it at the end: pointed at a file it did not write
    (a model's weights, a damaged file), it stops before touching it."""
    from safetensors.torch import save_file

    from textvae.errors import CheckpointError

    m, kw = tiny(), dict(iw_samples=2, batch_size=8, n_samples=0)
    weights, other = tmp_path / "model.safetensors", tmp_path / "notes.txt"
    save_file({"w": torch.ones(3)}, str(weights), metadata={"format": "pt"})
    other.write_bytes(b"not a safetensors file")
    for path, why in ((weights, "no saved evaluation in it"), (other, "unreadable")):
        before = path.read_bytes()
        with pytest.raises(CheckpointError, match=rf"{path} is not a saved evaluation \({why}.*another resume file"):
            evaluate(m, split, resume_file=path, **kw)
        assert path.read_bytes() == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("latent_dim, inside", [(Z, "iw_log_likelihood"), (0, "elbo_terms")])
def test_a_signal_mid_batch_saves_the_whole_batches_and_the_pass_resumes_to_the_same_numbers(
        split, tmp_path, monkeypatch, sig, latent_dim, inside):
    """A real signal while the third batch is computed (its noise partly drawn): the two whole batches
    are saved with the noise generator as they left it, the message says so, and the resumed pass
    ends with the uninterrupted numbers, bit for bit."""
    import textvae.metrics as metrics

    m = tiny(latent_dim)
    kw = dict(iw_samples=20, batch_size=8, seed=3, n_samples=6, sample_cfg=SampleConfig(max_len=8))
    whole = evaluate(m, split, **kw)
    path, original = tmp_path / "pass.safetensors", getattr(metrics, inside)
    monkeypatch.setattr(metrics, inside, signal_on_call(original, 3, sig))
    before = signal.getsignal(sig)
    with pytest.raises(KeyboardInterrupt) as e:
        evaluate(m, split, resume_file=path, **kw)
    batches = -(-len(split) // 8)
    assert str(e.value) == (f"{sig.name} received during the evaluation: 2 of {batches} batches saved in {path}; "
                            f"run the same command again to continue from there")
    assert signal.getsignal(sig) == before  # the handlers are put back
    monkeypatch.setattr(metrics, inside, original)
    logged = []
    resumed = evaluate(m, split, resume_file=path, log=logged.append, **kw)
    assert _without_seconds(resumed) == _without_seconds(whole)
    assert any("after 2 batches" in msg for msg in logged) and not path.exists()


def test_a_signal_while_a_batch_is_added_to_the_sums_waits_for_the_end_of_it():
    from textvae.signals import StopSignals

    reached = []
    with pytest.raises(KeyboardInterrupt, match="SIGTERM received during the evaluation"):
        with StopSignals("the evaluation") as stop:
            with stop.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                reached.append("after the signal")
            reached.append("after the block")
    assert reached == ["after the signal"]


def test_a_signal_while_evaluate_adds_a_batch_to_its_sums_stops_after_that_batch(split, tmp_path, monkeypatch):
    """SIGTERM inside the block that adds batch 2 to the sums (sent from the noise generator's
    get_state, called there): batch 2 is kept whole, with the generator as it left it, and the
    resumed pass still gives the uninterrupted numbers bit for bit."""
    import textvae.metrics as metrics

    m = tiny()
    kw = dict(iw_samples=20, batch_size=8, seed=3, n_samples=6, sample_cfg=SampleConfig(max_len=8))
    whole = evaluate(m, split, **kw)

    class Signalling(torch.Generator):  # get_state: once before the pass, then in each batch's commit
        get_state = signal_on_call(torch.Generator.get_state, 3)

    made = metrics._generator
    monkeypatch.setattr(metrics, "_generator", lambda seed: made(seed) if isinstance(seed, torch.Generator)
                        else Signalling().manual_seed(seed))
    path = tmp_path / "pass.safetensors"
    with pytest.raises(KeyboardInterrupt, match="SIGTERM received during the evaluation: 2 of "):
        evaluate(m, split, resume_file=path, **kw)
    monkeypatch.undo()
    assert _without_seconds(evaluate(m, split, resume_file=path, **kw)) == _without_seconds(whole)
