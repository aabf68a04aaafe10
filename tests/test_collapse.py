"""Posterior-collapse remedies: each rule does what its paper says (tiny corpus, tiny models).

Annealing schedules and free bits are tested in test_objectives.py; word dropout in test_model.py.
"""
import json

import pytest
import torch

from helpers import TINY, cli, crash_after_checkpoint, load_script, records, same_weights, tiny_cfg, without_speed
from textvae import collapse
from textvae.config import ModelConfig, ObjectiveConfig, TokenizerConfig
from textvae.config_files import load_config
from textvae.batching import collate
from textvae.errors import ConfigError
from textvae.model import Decoder, TextVAE
from textvae.objectives import kl_weight
from textvae.plot import read_metrics
from textvae.run_summary import describe_phase, strategy_phases
from textvae.tokenizers import train_tokenizer
from textvae.checkpoint import list_checkpoints
from textvae.train import Trainer, train

SMALL = ("data.builtin_size=200",)  # 180 training sentences: 6 batches of 32 per epoch


def small_cfg(*overrides):
    return tiny_cfg(*SMALL, *overrides)


def snapshot(params):
    return [p.detach().clone() for p in params]


def changed(before, params):
    return any(not torch.equal(a, p) for a, p in zip(before, params))


# --------------------------------------------------------------------------- He et al. (2019): aggressive


def test_inner_loop_stops_when_the_window_loss_rises():
    rule = collapse.InnerLoop(max_updates=100, window=3)
    # windows of mean loss per token 5.0, 4.0, then 4.5: stop at the end of the third window
    losses = [5.0] * 3 + [4.0] * 3 + [4.5] * 3
    stops = [rule.update(10 * loss, 10) for loss in losses]
    assert stops == [False] * 8 + [True] and rule.updates == 9


def test_inner_loop_stops_at_max_updates():
    rule = collapse.InnerLoop(max_updates=7, window=2)
    stops = [rule.update(100.0 - i, 10) for i in range(7)]  # always improving
    assert stops == [False] * 6 + [True]


def test_aggressive_step_updates_encoder_only_then_decoder_once(tmp_path):
    cfg = small_cfg("objective.aggressive=true", "objective.aggressive_max_inner=4", "objective.aggressive_window=2")
    tr = Trainer(cfg, tmp_path / "run", log=lambda m: None)
    enc, dec = collapse.encoder_parameters(tr.model), collapse.decoder_parameters(tr.model)
    assert [len(g["params"]) for g in tr.optimizer.param_groups] == [len(enc), len(dec)]
    assert {id(p) for p in enc}.isdisjoint(id(p) for p in dec)
    assert len(enc) + len(dec) == len(list(tr.model.parameters()))
    moves, original = [], tr.optimizer.step

    def step(*a, **kw):
        e, d = snapshot(enc), snapshot(dec)
        out = original(*a, **kw)
        moves.append((changed(e, enc), changed(d, dec)))
        return out

    grads = []
    tr.optimizer.step = step
    original_backward = tr.backward

    def backward(*a, **kw):  # which decoder weights got a gradient in this backward pass
        out = original_backward(*a, **kw)
        grads.append(sum(p.grad is not None for p in dec))
        return out

    tr.backward = backward
    dec_start = snapshot(dec)
    idx = tr.sampler.global_batches(0)[0]
    batch = collate(tr.train_data, idx.tolist())
    aggressive = next(s for s in tr.strategies if isinstance(s, collapse.Aggressive))
    n = aggressive.encoder_updates(tr, batch, 0, len(idx))
    assert n == 4 and moves == [(True, False)] * 4
    assert not changed(dec_start, dec)  # the inner loop never touched the decoder
    assert grads == [0] * 4  # ... nor computed its gradients (one process: frozen, not dropped)
    assert all(p.requires_grad for p in tr.model.parameters())  # and gave them back
    moves.clear()
    terms = tr.step(batch, 0, len(idx))  # inner loop again, then one decoder-only update
    assert terms["encoder_updates"] == 4
    assert moves == [(True, False)] * 4 + [(False, True)]


def aggressive_steps_with_mi(monkeypatch, mis: list[float]) -> list[int]:
    """Make the validation MI checks return ``mis`` in turn; returns the list that then collects the
    steps at which the encoder's inner loop ran."""
    values, inner_steps, original = iter(mis), [], collapse.Aggressive.encoder_updates
    monkeypatch.setattr(collapse, "validation_mi", lambda *a, **kw: next(values))

    def spy(self, tr, *a):
        inner_steps.append(tr.progress.step)
        return original(self, tr, *a)

    monkeypatch.setattr(collapse.Aggressive, "encoder_updates", spy)
    return inner_steps


def test_aggressive_switches_off_for_good_when_mi_falls(tmp_path, monkeypatch):
    # epoch 3's MI is below epoch 2's: off after epoch 3
    inner_steps = aggressive_steps_with_mi(monkeypatch, [0.5, 0.9, 0.7, 1.2])
    run = tmp_path / "run"
    cfg = small_cfg("objective.aggressive=true", "objective.aggressive_max_inner=2", "objective.aggressive_window=1",
                   "train.max_epochs=4")
    tr = Trainer(cfg, run, log=lambda m: None)
    tr.fit()
    per_epoch = tr.batches_per_epoch
    assert inner_steps == list(range(3 * per_epoch))  # aggressive in epochs 1-3, plain VAE steps in epoch 4
    logs = records(run, "aggressive")
    assert [(r["epoch"], r["mi"], r["aggressive"]) for r in logs] == [(1, 0.5, True), (2, 0.9, True), (3, 0.7, False)]
    aggressive = next(s for s in tr.strategies if isinstance(s, collapse.Aggressive))
    assert aggressive.on is False and aggressive.mi_prev == 0.7


def test_aggressive_mi_every_checks_within_the_epoch(tmp_path, monkeypatch):
    # the third check (step 12) is below the second: off from step 12 on
    inner_steps = aggressive_steps_with_mi(monkeypatch, [0.5, 0.9, 0.7, 1.2])
    run = tmp_path / "run"
    cfg = small_cfg("objective.aggressive=true", "objective.aggressive_max_inner=2", "objective.aggressive_window=1",
                   "objective.aggressive_mi_every=4", "train.max_epochs=3")
    tr = Trainer(cfg, run, log=lambda m: None)
    assert tr.batches_per_epoch == 6  # so the checks at steps 4, 8, 12 fall inside epochs, not at their ends
    tr.fit()
    assert inner_steps == list(range(12))
    assert [(r["step"], r["mi"], r["aggressive"]) for r in records(run, "aggressive")] == [
        (4, 0.5, True), (8, 0.9, True), (12, 0.7, False)]
    phase, = strategy_phases(read_metrics(run), tr.progress.step)  # what the tables and the summary report
    assert phase == {"phase": "aggressive", "steps": 12, "ended": True, "mi_checks": 3, "mi_first": 0.5,
                     "mi_peak": 0.9, "mi_last": 0.7, "encoder_updates_per_step": phase["encoder_updates_per_step"]}
    assert 1 <= phase["encoder_updates_per_step"] <= 2  # aggressive_max_inner=2
    assert describe_phase(phase, 18) == ("aggressive training for the first 12 of 18 steps (66.7%), "
                                         f"{phase['encoder_updates_per_step']:.1f} encoder updates per step; "
                                         "validation MI 0.500 at the first of 3 checks, peak 0.900, switched off "
                                         "when it fell to 0.700")


def test_strategy_phases_of_runs_that_never_switched_or_pretrained():
    records = [{"kind": "train", "step": 2, "encoder_updates": 3.0}, {"kind": "aggressive", "step": 2, "mi": 1.0,
               "aggressive": True}, {"kind": "train", "step": 4, "encoder_updates": 5.0},
               {"kind": "aggressive", "step": 4, "mi": 1.5, "aggressive": True}]
    phase, = strategy_phases(records, 5)
    assert (phase["steps"], phase["ended"], phase["encoder_updates_per_step"]) == (5, False, 4.0)
    assert describe_phase(phase, 5).startswith("aggressive training throughout (5 of 5 steps (100.0%), 4.0 encoder")
    assert strategy_phases([{"kind": "train", "step": 1}, {"kind": "valid", "step": 1}], 1) == []  # no strategy


@pytest.mark.parametrize("value", [-1, -10])
def test_aggressive_mi_every_must_not_be_negative(value):
    with pytest.raises(ConfigError, match=f"objective.aggressive_mi_every={value} must be >= 0"):
        load_config(overrides=["objective.aggressive=true", f"objective.aggressive_mi_every={value}"])


def test_validation_mi_is_he_et_al_calc_mi(tmp_path):
    """validation_mi = metrics.mi_batch over length-sorted minibatches of the posterior means."""
    from textvae.metrics import _batches, mi_batch, posterior_parameters

    tr = Trainer(small_cfg(), tmp_path / "run", log=lambda m: None)
    mu, logvar = posterior_parameters(tr.model, tr.valid_data, 16)
    expected = mi_batch(mu, logvar, _batches(tr.valid_data, 16), generator=3)
    assert collapse.validation_mi(tr.model, tr.valid_data, 16, 3) == pytest.approx(expected)
    assert not collapse.mi_stopped_rising(None, -1.0)
    assert collapse.mi_stopped_rising(0.9, 0.7) and not collapse.mi_stopped_rising(0.7, 0.7)


def _assert_same_runs(a, b):
    assert same_weights(list_checkpoints(a)[-1], list_checkpoints(b)[-1])
    for kind in ("valid", "train", "aggressive"):
        assert without_speed(records(a, kind)) == without_speed(records(b, kind))


@pytest.mark.integration  # three whole trainings: uninterrupted, crashed, resumed
@pytest.mark.parametrize("mi_every", [0, 5])  # MI checked after each epoch (step 6) / at steps 5 and 10
def test_aggressive_resume_is_exact(tmp_path, monkeypatch, mi_every):
    # crash in the middle of epoch 2 (steps 6..11): after the first MI check, with random inner batches
    crash_step = 8
    cfg = ("objective.aggressive=true", "objective.aggressive_max_inner=3", "objective.aggressive_window=1",
           "train.max_epochs=2", "train.checkpoint_every=4", "model.emb_dropout=0.1", "model.bn_gamma=0.5",
           f"objective.aggressive_mi_every={mi_every}")
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    train(small_cfg(*cfg), full)
    original = crash_after_checkpoint(monkeypatch, crash_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(small_cfg(*cfg), crashed)
    monkeypatch.setattr(Trainer, "_save_checkpoint", original)
    train(small_cfg(*cfg), crashed, resume=True)
    assert len(records(full, "aggressive")) == 2  # the MI checks ran (and are part of what must match)
    _assert_same_runs(full, crashed)


@pytest.mark.integration  # three whole trainings: uninterrupted, crashed, resumed
def test_a_crash_after_an_mi_check_at_a_checkpoint_step_resumes_exactly(tmp_path, monkeypatch):
    # the check at step 8 comes after the step-8 checkpoint; killed between them and resumed from
    # that checkpoint, the run checks again and must not keep the first record of it too
    cfg = ("objective.aggressive=true", "objective.aggressive_max_inner=2", "objective.aggressive_window=1",
           "objective.aggressive_mi_every=4", "train.checkpoint_every=4", "train.max_steps=12")
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    train(small_cfg(*cfg), full)
    original = collapse.Aggressive.check_mi

    def check_then_crash(self, tr):
        original(self, tr)
        if tr.progress.step == 8:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(collapse.Aggressive, "check_mi", check_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(small_cfg(*cfg), crashed)
    assert [r["step"] for r in records(crashed, "aggressive")] == [4, 8]
    monkeypatch.setattr(collapse.Aggressive, "check_mi", original)
    train(small_cfg(*cfg), crashed, resume=True)
    assert [r["step"] for r in records(full, "aggressive")] == [4, 8]  # none before a step 13
    _assert_same_runs(full, crashed)


# --------------------------------------------------------------------------- Li et al. (2019): pretraining


def test_kl_weight_is_zero_while_pretraining_then_the_schedule_restarts():
    c = ObjectiveConfig(kl_schedule="linear", kl_start=0.2, kl_weight=1.0, kl_warmup_steps=10, pretrain_ae_steps=5)
    assert kl_weight(0, c) == 0.0 and kl_weight(1000, c, pretrain_end=None) == 0.0
    assert kl_weight(5, c, 100, pretrain_end=5) == pytest.approx(0.2)  # phase 2 starts at the schedule's step 0
    assert kl_weight(7, c, 100, pretrain_end=5) == pytest.approx(0.2 + 0.8 * 2 / 10)
    cyc = ObjectiveConfig(kl_schedule="cyclical", cycles=2, cycle_ratio=1.0, pretrain_ae_steps=50)
    assert kl_weight(75, cyc, 250, pretrain_end=50) == pytest.approx(0.25)  # cycles span the 200 VAE steps
    assert not collapse.pretraining(ObjectiveConfig(), None)
    assert collapse.pretraining(c, None) and not collapse.pretraining(c, 5)


def test_pretraining_then_decoder_reset_keeps_the_encoder(tmp_path, monkeypatch):
    betas, resets = {}, []
    original_loss, original_reset = Trainer.loss, collapse.reset_decoder

    def loss_spy(self, *a):
        out = original_loss(self, *a)
        betas[self.progress.step] = out[3]
        return out

    def reset_spy(model, seed):
        enc, dec = collapse.encoder_parameters(model), collapse.decoder_parameters(model)
        before = (snapshot(enc), snapshot(dec))
        original_reset(model, seed)
        resets.append((seed, before, snapshot(enc), snapshot(dec)))

    monkeypatch.setattr(Trainer, "loss", loss_spy)
    monkeypatch.setattr(collapse, "reset_decoder", reset_spy)
    cfg = small_cfg("objective.pretrain_ae_steps=5", "objective.kl_schedule=constant", "objective.free_bits=0.1",
                   "objective.free_bits_mode=li", "train.max_steps=8", "train.seed=7")
    tr = Trainer(cfg, tmp_path / "run", log=lambda m: None)
    decoder_at_init = snapshot(collapse.decoder_parameters(tr.model))
    tr.fit()
    assert [betas[s] for s in range(8)] == [0.0] * 5 + [1.0] * 3  # autoencoder, then the VAE objective
    assert tr.strategies[0].kl_schedule_start == 5 and len(resets) == 1
    seed, (enc_before, dec_before), enc_after, dec_after = resets[0]
    assert all(torch.equal(a, b) for a, b in zip(enc_before, enc_after))  # encoder kept
    assert changed(dec_before, dec_after)  # the trained decoder is gone ...
    assert changed(decoder_at_init, dec_before)  # ... (it had been trained) ...
    torch.manual_seed(seed)
    fresh = list(Decoder(tr.model.decoder.cfg).parameters())
    assert all(torch.equal(a, b) for a, b in zip(dec_after, fresh))  # ... replaced by a fresh initialisation


def test_the_vae_phase_starts_from_the_best_autoencoder_on_validation(tmp_path, monkeypatch):
    """Li et al.'s second run loads the first run's best saved autoencoder. Pretraining ends at step 5
    (steps done) after validations at steps 2 and 4: the encoder that goes on is best/'s, not step 5's."""
    from safetensors.torch import load_file

    seen, original_reset = [], collapse.reset_decoder

    def reset_spy(model, seed):
        best = load_file(str(tmp_path / "run" / "best" / "model.safetensors"))
        state = model.state_dict()
        seen.append(all(torch.equal(state[k], best[k]) for k in best if not k.startswith("decoder.")))
        original_reset(model, seed)

    monkeypatch.setattr(collapse, "reset_decoder", reset_spy)
    logs = []
    cfg = small_cfg("objective.pretrain_ae_steps=5", "train.eval_every=2", "train.max_steps=6", "train.lr=1e-2")
    tr = Trainer(cfg, tmp_path / "run", log=logs.append)
    tr.fit()
    end, = [r for r in read_metrics(tmp_path / "run") if r.get("kind") == "pretrain_end"]
    assert end["step"] == 5 and end["autoencoder_step"] in (2, 4) and seen == [True]
    assert any(f"the best autoencoder (step {end['autoencoder_step']}) restored" in line for line in logs)


def test_reset_decoder_leaves_the_global_rng_alone():
    tok = train_tokenizer(TokenizerConfig(kind="word"), ["a b c .", "b c d ."])
    model = TextVAE(ModelConfig(emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=2), tok)
    state = torch.get_rng_state()
    collapse.reset_decoder(model, 3)
    assert torch.equal(state, torch.get_rng_state())


def test_reset_decoder_keeps_a_shared_embedding():
    # model.share_embedding: the table is the encoder's input too; the reset must not wipe it
    tok = train_tokenizer(TokenizerConfig(kind="word"), ["a b c .", "b c d ."])
    model = TextVAE(ModelConfig(emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=2, share_embedding=True), tok)
    with torch.no_grad():
        model.decoder.embedding.weight.add_(1.0)
        for p in model.decoder.rnn.parameters():
            p.add_(1.0)
    table = model.decoder.embedding.weight.detach().clone()
    rnn = [p.detach().clone() for p in model.decoder.rnn.parameters()]
    collapse.reset_decoder(model, 3)
    assert model.encoder.embedding is model.decoder.embedding
    assert torch.equal(model.decoder.embedding.weight, table)
    assert all(not torch.equal(a, b) for a, b in zip(rnn, model.decoder.rnn.parameters()))


@pytest.mark.parametrize("tie", [False, True])
def test_reset_decoder_of_a_shared_embedding_leaves_the_encoder_alone(tie):
    """share_embedding: the encoder's embedding weights are identical before and after the reset;
    every decoder tensor of its own is re-initialised (as a fresh Decoder for that seed)."""
    tok = train_tokenizer(TokenizerConfig(kind="word"), ["a b c .", "b c d ."])
    model = TextVAE(ModelConfig(emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=2, share_embedding=True,
                                tie_embeddings=tie), tok)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # "trained": nothing equals its initial value
    encoder = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("decoder.")}
    collapse.reset_decoder(model, 3)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in encoder.items())
    assert torch.equal(model.encoder.embedding.weight, encoder["encoder.embedding.weight"])
    torch.manual_seed(3)
    fresh = Decoder(model.decoder.cfg).state_dict()
    shared = {"embedding.weight"} | ({"proj.weight"} if tie else set())
    for k, v in model.decoder.state_dict().items():
        assert torch.equal(v, fresh[k]) != (k in shared), k  # re-initialised exactly when not shared


def test_strategies_come_from_the_objective_through_the_table():
    assert collapse.strategies_for(ObjectiveConfig()) == []
    both = collapse.strategies_for(ObjectiveConfig(aggressive=True, pretrain_ae_steps=5))
    assert [type(s) for s in both] == [collapse.PretrainThenReset, collapse.Aggressive]  # hook order
    assert set(collapse.STRATEGIES) == {"pretrain_then_reset", "aggressive"}
    aggressive = both[1]
    assert aggressive.splits_optimizer and aggressive.state() == {"aggressive": True, "mi_prev": None}
    assert both[0].state() == {"pretrain_end": None} and both[0].score({"rec": 3.0, "elbo": 4.0}) == 3.0


def test_pretraining_ends_early_when_the_autoencoder_converges(tmp_path):
    # lr ~ 0: no improvement; patience 0 and one decay allowed: phase 1 "converges" at step 2,
    # phase 2 starts afresh (its own decay, then early stopping) instead of the run ending.
    logs = []
    result = train(small_cfg("objective.pretrain_ae_steps=50", "train.lr=1e-12", "train.lr_patience=0",
                            "train.max_decays=1", "train.eval_every=1", "train.max_epochs=5"),
                   tmp_path / "run", log=logs.append)
    assert any("autoencoder pretraining ends, it converged" in line for line in logs)
    assert any("warning: objective.pretrain_ae_steps=50 is at least the 30 steps of train.max_epochs=5" in line
               for line in logs)
    meta = json.loads((list_checkpoints(tmp_path / "run")[-1] / "trainer_state.json").read_text())
    assert meta["progress"]["pretrain_end"] == 2 and result["step"] == 5
    phase, = strategy_phases(read_metrics(tmp_path / "run"), result["step"])
    assert phase == {"phase": "pretrain", "steps": 2, "decoder_reset": True,
                     "reason": "it converged (no improvement after 1 learning-rate decays)"}
    assert describe_phase(phase, 5) == ("autoencoder pretraining for the first 2 of 5 steps (40.0%), ended because it "
                                         "converged (no improvement after 1 learning-rate decays); the decoder "
                                         "re-initialised, then the VAE phase")


def test_textvae_train_says_how_long_the_strategy_phase_lasted(tmp_path, capsys):
    out, _ = cli(capsys, ["train", *TINY, "--out", tmp_path / "run", "objective.pretrain_ae_steps=2",
                          "train.max_steps=4"])
    assert ("autoencoder pretraining for the first 2 of 4 steps (50.0%), ended because objective.pretrain_ae_steps=2 "
            "steps are done; the decoder re-initialised, then the VAE phase") in out
    out, _ = cli(capsys, ["train", *TINY, "--out", tmp_path / "plain", "train.max_steps=2"])
    assert "trained to step 2" in out and "pretraining" not in out and "aggressive" not in out


@pytest.mark.integration  # three whole trainings: uninterrupted, crashed, resumed
def test_pretraining_resume_across_the_switch_is_exact(tmp_path, monkeypatch):
    cfg = ("objective.pretrain_ae_steps=5", "train.max_steps=9", "train.checkpoint_every=3", "model.emb_dropout=0.1")
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    train(small_cfg(*cfg), full)
    original = crash_after_checkpoint(monkeypatch, 6)  # after the switch at step 5
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(small_cfg(*cfg), crashed)
    monkeypatch.setattr(Trainer, "_save_checkpoint", original)
    train(small_cfg(*cfg), crashed, resume=True)
    _assert_same_runs(full, crashed)


# --------------------------------------------------------------------------- Zhu et al. (2020): BN-VAE


def bn_model(gamma=0.7, latent_dim=8):
    tok = train_tokenizer(TokenizerConfig(kind="word"), [" ".join(f"w{i}" for i in range(40))])
    torch.manual_seed(0)
    return TextVAE(ModelConfig(emb_dim=8, enc_hidden=16, dec_hidden=8, latent_dim=latent_dim, bn_gamma=gamma), tok)


def random_batch(n=64, T=9, vocab=44):
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(4, vocab, (n, T), generator=g)
    lengths = torch.randint(3, T + 1, (n,), generator=g)
    tokens[:, 0] = 2
    tokens[torch.arange(n), lengths - 1] = 3
    tokens[torch.arange(T).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    return tokens, lengths


def test_bn_vae_mu_has_mean_beta_and_std_gamma_and_the_kl_bound_holds():
    gamma, Z = 0.7, 8
    model = bn_model(gamma, Z).train()
    with torch.no_grad():
        model.latent.mu_bn.bias.copy_(torch.linspace(-1, 1, Z))
        model.latent.head.weight.mul_(30)  # raw mu spread well above BatchNorm's eps = 1e-5
    tokens, lengths = random_batch()
    out = model(tokens, lengths)
    assert torch.allclose(out.mu.mean(0), model.latent.mu_bn.bias, atol=1e-5)
    assert torch.allclose(out.mu.std(0, unbiased=False), torch.full((Z,), gamma), rtol=1e-3)
    bound = 0.5 * (gamma ** 2 * Z + model.latent.mu_bn.bias.pow(2).sum())  # 1/2 sum_d (gamma^2 + beta_d^2)
    assert out.kl.sum(1).mean() >= 0.999 * bound and bound > Z * gamma ** 2 / 2
    with torch.no_grad():
        model.latent.mu_bn.bias.zero_()  # beta = 0: the KL still cannot fall below Z gamma^2 / 2
    assert model(tokens, lengths).kl.sum(1).mean() >= 0.999 * Z * gamma ** 2 / 2


def test_bn_vae_gamma_is_fixed_and_beta_is_learned():
    model = bn_model().train()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    beta = model.latent.mu_bn.bias.detach().clone()
    out = model(*random_batch())
    (out.rec.mean() + out.kl.sum(1).mean()).backward()
    opt.step()
    assert torch.all(model.latent.mu_bn.weight == 0.7) and not model.latent.mu_bn.weight.requires_grad
    assert not torch.equal(beta, model.latent.mu_bn.bias)


def test_bn_vae_eval_uses_running_statistics_and_round_trips(tmp_path):
    model = bn_model().train()
    tokens, lengths = random_batch()
    with torch.no_grad():
        for _ in range(5):
            model(tokens, lengths)  # accumulate running statistics
    bn = model.latent.mu_bn
    assert int(bn.num_batches_tracked) == 5
    model.eval()
    with torch.no_grad():
        mu_all, _ = model.encode_posterior(tokens, lengths)
        mu_one, _ = model.encode_posterior(tokens[:1], lengths[:1])
        raw, _ = model.latent.head(model.encoder(tokens, lengths)).chunk(2, -1)
    expected = bn.weight * (raw - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) + bn.bias
    assert torch.allclose(mu_all, expected, atol=1e-5)
    assert torch.allclose(mu_one[0], mu_all[0], atol=1e-5)  # a sentence's code no longer depends on its batch
    model.save_pretrained(tmp_path / "m")
    loaded = TextVAE.from_pretrained(tmp_path / "m")
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    with torch.no_grad():
        assert torch.equal(loaded.encode_posterior(tokens, lengths)[0], mu_all)


def test_bn_vae_single_sentence_training_batch_uses_running_statistics():
    model = bn_model().train()
    tokens, lengths = random_batch()
    out = model(tokens[:1], lengths[:1])  # BatchNorm1d alone would raise: one value per channel
    assert torch.isfinite(out.rec).all() and int(model.latent.mu_bn.num_batches_tracked) == 0


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("overrides, message", [
    (["model.latent_dim=0", "model.bn_gamma=0.5"], "model.bn_gamma"),
    (["model.bn_gamma=0"], "model.bn_gamma"),
    (["model.latent_dim=0", "objective.aggressive=true"], "objective.aggressive"),
    (["objective.aggressive_max_inner=0"], "objective.aggressive_max_inner"),
    (["objective.pretrain_ae_steps=10", "train.max_steps=10"], "objective.pretrain_ae_steps"),
])
def test_config_rejects_impossible_settings(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(preset="tiny", overrides=overrides)


@pytest.mark.integration  # two short trainings in subprocesses
def test_the_aggressive_benchmark_times_both_runs_and_measures_the_phase(tmp_path):
    bench = load_script("benchmark_aggressive")
    out = tmp_path / "b.json"
    assert bench.main(["--preset", "tiny", "--set", "data.builtin_size=200", "--set", "train.max_epochs=2",
                       "--set", "objective.aggressive_mi_every=2", "--set", "objective.aggressive_max_inner=2",
                       "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    plain, aggressive = r["plain"], r["aggressive"]
    assert plain["seconds"] > 0 and r["ratio"] == pytest.approx(aggressive["seconds"] / plain["seconds"])
    assert plain["steps"] == aggressive["steps"] > 0 and "encoder_updates_per_step" not in plain
    checks = records(tmp_path / "runs" / "aggressive", "aggressive")
    assert [c["step"] for c in checks] == list(range(2, 2 * len(checks) + 1, 2))  # every 2 steps while on
    off = [c["step"] for c in checks if not c["aggressive"]]
    assert aggressive["aggressive_steps"] == (off[0] if off else aggressive["steps"])
    assert 0 < aggressive["encoder_updates_per_step"] <= 2
