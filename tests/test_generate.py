"""Decoding: greedy, sampling, nucleus, beam search; no global RNG use."""
import itertools

import pytest
import torch

from textvae.config import ModelConfig, SampleConfig
from textvae.generate import PAD_ID, beam_search, generate
from textvae.model import TextVAE

V, Z = 12, 4


def tiny(latent_dim=Z, cell="lstm", seed=0, vocab=V) -> TextVAE:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab, emb_dim=8, enc_hidden=8, dec_hidden=16, latent_dim=latent_dim, cell=cell)
    model = TextVAE(cfg)
    # sharper, z-dependent output distributions than at initialisation
    with torch.no_grad():
        model.decoder.proj.weight *= 3
        if latent_dim:
            model.decoder.z_to_hidden.weight *= 3
    return model


@torch.no_grad()
def next_token_log_probs(model, z, prefix: list[int]) -> torch.Tensor:
    """log p(w | prefix, z) for every token w (V,), from model.log_likelihood: it scores
    BOS prefix w as log p(prefix) + log p(w | prefix), and the V continuations sum to one."""
    V = model.config.vocab_size
    rows = torch.tensor([[model.bos_id, *prefix, w] for w in range(V)])
    ll = model.log_likelihood(rows, torch.full((V,), len(prefix) + 2), None if z is None else z.expand(V, -1))
    return ll - ll.logsumexp(0)


def decoding_log_prob(model, z, seq: list[int], max_len: int) -> float:
    """log-probability of ``seq`` under the decoders' distribution: PAD, BOS and a first EOS
    excluded and the rest renormalised; EOS scored after it unless it has ``max_len`` words."""
    model.eval()
    targets = seq + ([model.eos_id] if len(seq) < max_len else [])
    total = 0.0
    for t, y in enumerate(targets):
        logp = next_token_log_probs(model, z, seq[:t])
        logp[[PAD_ID, model.bos_id] + ([model.eos_id] if t == 0 else [])] = float("-inf")
        total += float((logp - logp.logsumexp(0))[y])
    return total


def decoding_log_probs(model, z, seqs, max_len) -> torch.Tensor:
    return torch.tensor([decoding_log_prob(model, z[i:i + 1], s, max_len) for i, s in enumerate(seqs)])


def latents(n, seed=1):
    return torch.randn(n, Z, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model():
    return tiny()


def test_greedy_is_deterministic_and_matches_a_step_by_step_argmax(model):
    z = latents(6)
    cfg = SampleConfig(greedy=True, max_len=12)
    out = generate(model, z, cfg)
    assert out == generate(model, z, cfg)
    assert len(out) == 6 and len({tuple(s) for s in out}) > 1
    # reference: one sentence at a time, argmax over the tokens other than PAD and BOS
    with torch.no_grad():
        for i in range(6):
            zi = z[i:i + 1]
            state, prev, ref = model.init_state(zi, 1), torch.tensor([model.bos_id]), []
            for t in range(cfg.max_len):
                logits, state = model.step(prev, state, zi)
                logits[0, [0, model.bos_id] + ([model.eos_id] if t == 0 else [])] = float("-inf")
                tok = int(logits.argmax())
                if tok == model.eos_id:
                    break
                ref.append(tok)
                prev = torch.tensor([tok])
            assert out[i] == ref


def test_eos_stops_and_max_len_is_respected():
    m = tiny()
    z = latents(5)
    with torch.no_grad():
        m.decoder.proj.bias[m.eos_id] = 1e4  # EOS as soon as allowed: after one token
    for cfg in (SampleConfig(greedy=True), SampleConfig(), SampleConfig(beam=3)):
        out = generate(m, z, cfg)
        assert [len(s) for s in out] == [1] * 5 and all(s[0] not in (0, m.bos_id, m.eos_id) for s in out)
    with torch.no_grad():
        m.decoder.proj.bias[m.eos_id] = -1e4  # EOS never
    for cfg in (SampleConfig(greedy=True, max_len=7), SampleConfig(max_len=7, top_p=0.9), SampleConfig(beam=2, max_len=7)):
        out = generate(m, z, cfg, generator=torch.Generator().manual_seed(0))
        assert [len(s) for s in out] == [7] * 5
        assert all(t not in (0, m.bos_id, m.eos_id) for s in out for t in s)


def test_sampling_uses_only_the_generator(model):
    z = latents(8)
    cfg = SampleConfig(max_len=10, temperature=1.5)
    before = torch.get_rng_state()
    a = generate(model, z, cfg, generator=torch.Generator().manual_seed(5))
    b = generate(model, z, cfg, generator=torch.Generator().manual_seed(5))
    c = generate(model, z, cfg, generator=torch.Generator().manual_seed(6))
    beam_search(model, z, 3, 10)
    assert torch.equal(before, torch.get_rng_state())
    assert a == b and a != c


def test_tiny_top_p_and_low_temperature_equal_greedy(model):
    z = latents(8)
    greedy = generate(model, z, SampleConfig(greedy=True, max_len=10))
    g = torch.Generator().manual_seed(0)
    assert generate(model, z, SampleConfig(top_p=1e-6, max_len=10), generator=g) == greedy
    assert generate(model, z, SampleConfig(temperature=1e-4, max_len=10), generator=g) == greedy
    # full nucleus at T=1 is ordinary sampling: it should not collapse onto the greedy path
    assert generate(model, z, SampleConfig(max_len=10), generator=g) != greedy


def test_nucleus_draws_only_from_the_nucleus(model):
    from textvae.generate import _nucleus_sample

    logits = torch.log(torch.tensor([[0.0, 0.0, 0.0, 0.5, 0.3, 0.15, 0.05]])).repeat(4000, 1)
    tok = _nucleus_sample(logits, 1.0, 0.75, torch.Generator().manual_seed(0))
    counts = torch.bincount(tok, minlength=7).float() / 4000
    assert set(tok.tolist()) == {3, 4}  # 0.5 < 0.75, 0.5 + 0.3 >= 0.75: the nucleus is {3, 4}
    assert counts[3] == pytest.approx(0.5 / 0.8, abs=0.03)


def test_beam_one_is_greedy_and_wider_beams_score_at_least_greedy(model):
    z = latents(16, seed=3)
    greedy = generate(model, z, SampleConfig(greedy=True, max_len=10))
    seqs, scores = beam_search(model, z, beam=1, max_len=10)
    assert seqs == greedy
    g_scores = decoding_log_probs(model, z, greedy, max_len=10)
    assert torch.allclose(scores, g_scores, atol=1e-4)
    seqs5, scores5 = beam_search(model, z, beam=5, max_len=10)
    assert torch.allclose(scores5, decoding_log_probs(model, z, seqs5, max_len=10), atol=1e-4)
    assert (scores5 >= g_scores - 1e-4).all()
    assert (scores5 > g_scores + 1e-3).any()  # the search does find better sequences


def test_exhaustive_beam_finds_the_most_probable_sequence():
    m = tiny(vocab=6)  # generable tokens: <unk>=1, EOS=3, 4, 5
    z = latents(3)
    max_len = 3
    words = [1, 4, 5]
    cands = [list(s) for n in range(max_len + 1) for s in itertools.product(words, repeat=n)]
    for i in range(3):
        scores = torch.tensor([decoding_log_prob(m, z[i:i + 1], c, max_len) for c in cands])
        best = cands[int(scores.argmax())]
        seqs, s = beam_search(m, z[i:i + 1], beam=len(cands), max_len=max_len)
        assert seqs[0] == best and float(s[0]) == pytest.approx(float(scores.max()), abs=1e-5)


def test_language_model_and_gru():
    lm = tiny(latent_dim=0)
    out = generate(lm, None, SampleConfig(max_len=6), n=4, generator=torch.Generator().manual_seed(0))
    assert len(out) == 4 and all(len(s) <= 6 for s in out)
    assert beam_search(lm, None, 3, 6, n=2)[0][0] == beam_search(lm, None, 3, 6, n=2)[0][1]
    with pytest.raises(ValueError, match="n"):
        generate(lm, None, SampleConfig())
    gru = tiny(cell="gru")
    z = latents(3)
    assert generate(gru, z, SampleConfig(beam=1, greedy=True)) == beam_search(gru, z, 1, 50)[0]
    with pytest.raises(ValueError, match="shape"):
        generate(gru, torch.zeros(3, Z + 1), SampleConfig())


def test_training_flag_is_restored(model):
    model.train()
    generate(model, latents(2), SampleConfig(max_len=3))
    assert model.training
    model.eval()


class NoRepeat:
    """A prefix-dependent constraint: never the token just decoded; EOS only after 4 tokens."""

    steps = None

    def __init__(self, model):
        self.model, self.prefixes = model, []

    def allowed(self, step, prefix):
        self.prefixes.append(prefix.clone())
        V = self.model.config.vocab_size
        mask = torch.ones(prefix.size(0), V, dtype=torch.bool)
        if step > 0:
            mask[torch.arange(prefix.size(0)), prefix[:, -1]] = False
        if step < 4:
            mask[:, self.model.eos_id] = False
        return mask


@pytest.mark.parametrize("cfg", [SampleConfig(max_len=10), SampleConfig(greedy=True, max_len=10),
                                 SampleConfig(beam=3, max_len=10)])
def test_every_decoder_obeys_a_constraint_given_what_it_decoded(model, cfg):
    rule = NoRepeat(model)
    out = generate(model, latents(8, seed=4), cfg, generator=torch.Generator().manual_seed(0), constraint=rule)
    assert all(len(s) >= 4 for s in out)
    assert all(a != b for s in out for a, b in zip(s, s[1:]))
    # the hook saw the tokens decoded so far: (rows, step) at each step
    assert [p.size(1) for p in rule.prefixes] == list(range(len(rule.prefixes)))
    assert rule.prefixes[0].size(0) == 8 * cfg.beam
    free = generate(model, latents(8, seed=4), cfg, generator=torch.Generator().manual_seed(0))
    assert any(a == b for s in free for a, b in zip(s, s[1:])) or any(len(s) < 4 for s in free)


def test_codes_in_another_dtype_decode_as_the_models_own(model):
    z = latents(3)
    for cfg in (SampleConfig(greedy=True), SampleConfig(beam=2)):
        assert generate(model, z.double(), cfg) == generate(model, z, cfg)  # e.g. torch.from_numpy's float64
