"""M2 (Kingma et al. 2014): textvae.m2, its sampler, `model.classify`, `textvae classify`."""
import json

import numpy as np
import pytest
import torch

from helpers import cli, expect_error, write_corpus, write_lines
from textvae.batching import MixedBatchSampler, collate_ids
from textvae.config import ModelConfig, ObjectiveConfig
from textvae.errors import ConfigError
from textvae.m2 import expand_unlabelled
from textvae.model import TextVAE
from textvae.objectives import vae_loss


def tiny_m2(unlabelled="enumerate", seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=20, emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=3, conditional=True,
                      classifier=True, id2label={0: "a", 1: "b", 2: "c"}, unlabelled=unlabelled)
    return TextVAE(cfg).eval()


BATCH = collate_ids([[5, 6, 7], [8, 9], [10, 11, 12, 13], [4, 4]], 2, 3)


def test_unlabelled_loss_equals_the_enumerated_expectation_by_hand():
    model = tiny_m2()
    tokens, lengths = BATCH
    eps = model.noise(4, torch.Generator().manual_seed(1))
    y = torch.tensor([1, -1, -1, 0])
    out = model(tokens, lengths, eps, y)
    q = model.classifier(tokens, lengths).softmax(-1)  # (B, K)
    rec, kl, ce, neg_h = [], [], 0.0, 0.0
    for b in range(4):
        def one(k, b=b):  # the conditional VAE's terms of example b with label k, alone
            return model.vae_terms(tokens[b:b + 1], lengths[b:b + 1], eps[b:b + 1], torch.tensor([k]))
        if y[b] >= 0:
            o = one(int(y[b]))
            rec.append(o.rec[0])
            kl.append(o.kl[0])
            ce = ce - torch.log(q[b, y[b]])
        else:  # sum over the K labels of q(k|x) times the conditional terms, minus H(q(y|x))
            rec.append(sum(q[b, k] * one(k).rec[0] for k in range(3)))
            kl.append(sum(q[b, k] * one(k).kl[0] for k in range(3)))
            neg_h = neg_h + (q[b] * q[b].log()).sum()
    torch.testing.assert_close(out.rec, torch.stack(rec), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.kl, torch.stack(kl), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.losses["classification"], ce / 4)
    torch.testing.assert_close(out.losses["entropy"], neg_h / 4)
    alpha, beta = 2.5, 0.3
    loss = vae_loss(out, beta, ObjectiveConfig(m2_alpha=alpha))
    hand = (torch.stack(rec) + beta * torch.stack(kl).sum(1)).mean() + alpha * ce / 4 + neg_h / 4
    torch.testing.assert_close(loss, hand, rtol=1e-5, atol=1e-5)


def test_enumeration_is_one_batched_pass():
    model = tiny_m2()
    calls = []
    model.decoder.rnn.register_forward_hook(lambda m, i, o: calls.append(i[0].batch_sizes[0].item()))
    encoded = []
    model.encoder.register_forward_hook(lambda m, i, o: encoded.append(o.size(0)))
    tokens, lengths = BATCH
    model(tokens, lengths, None, torch.tensor([1, -1, -1, 0]))
    assert calls == [2 + 3 * 2]  # one decoder call: 2 labelled rows + K=3 copies of 2 unlabelled rows
    assert encoded == [4]  # q(z|x, y)'s encoder reads each sentence once, not once per label
    rows, labels, unl = expand_unlabelled(torch.tensor([1, -1, -1, 0]), 3)
    assert rows.tolist() == [0, 3, 1, 2, 1, 2, 1, 2] and labels.tolist() == [1, 0, 0, 0, 1, 1, 2, 2]


def test_gumbel_option_trains_the_classifier_through_the_decoder():
    model = tiny_m2("gumbel").train()
    tokens, lengths = BATCH
    out = model(tokens, lengths, None, torch.tensor([-1, -1, -1, -1]))  # no labels: no cross-entropy
    assert out.rec.shape == (4,) and out.z.shape == (4, 3)
    vae_loss(out, 1.0, ObjectiveConfig()).backward()
    grad = model.classifier.out.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_mixed_batches_hold_the_set_ratio_and_every_unlabelled_example_once():
    lengths = np.arange(100) % 7 + 1
    labelled = np.zeros(100, dtype=bool)
    labelled[[3, 17, 42, 80, 99]] = True
    s = MixedBatchSampler(lengths, labelled, batch_size=10, ratio=0.3, seed=4)
    batches = s.global_batches(0)
    assert all(labelled[b[:3]].all() and not labelled[b[3:]].any() for b in batches)
    seen = np.concatenate([b[3:] for b in batches])
    assert sorted(seen.tolist()) == np.flatnonzero(~labelled).tolist()
    assert [b.tolist() for b in s.global_batches(1)] != [b.tolist() for b in batches]
    assert [b.tolist() for b in MixedBatchSampler(lengths, labelled, 10, 0.3, seed=4).global_batches(0)] \
        == [b.tolist() for b in batches]


def test_classify_refuses_a_model_without_classifier():
    cfg = ModelConfig(vocab_size=20, emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=3)
    with pytest.raises(ConfigError, match="model.classifier=true"):
        TextVAE(cfg).classify(["a"])


def test_config_needs_conditional_for_m2():
    from helpers import tiny_cfg

    with pytest.raises(ConfigError, match="needs model.conditional=true"):
        tiny_cfg("model.classifier=true")
    with pytest.raises(ConfigError, match="set model.classifier=true"):
        tiny_cfg("data.labelled_per_class=3")


def test_m2_on_a_corpus_without_labels_is_refused_before_training(tmp_path, capsys):
    data = write_corpus(tmp_path / "c", {"train": ["a b c"] * 20, "valid": ["a b"] * 4, "test": ["b c"] * 4})
    expect_error(capsys, ["train", "--preset", "tiny", "--no-summary", "--data", data, "--out", tmp_path / "r",
                          "model.conditional=true", "model.classifier=true"], "M2 (model.classifier)", "train.txt")
    assert not (tmp_path / "r" / "best").exists()


@pytest.mark.integration
def test_m2_trains_saves_and_classifies(tmp_path, capsys):
    run = tmp_path / "m2"
    cli(capsys, ["train", "--preset", "tiny", "--no-summary", "--out", run, "model.conditional=true",
                 "model.classifier=true", "data.labelled_per_class=5", "train.labelled_ratio=0.25",
                 "train.max_epochs=1", "objective.free_bits=0.2"])
    model = TextVAE.from_pretrained(run)
    labels, probs = model.classify(["the dog ran .", "it will rain tomorrow ."])
    assert set(labels) <= set(model.label_names) and probs.shape == (2, 5)
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    write_lines(tmp_path / "s.txt", ["the dog ran .", "", "it will rain tomorrow ."])
    out, _ = cli(capsys, ["classify", "--model", run, tmp_path / "s.txt", "--json"])
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["label"] for r in rows] == labels and len(rows[0]["probs"]) == 5
    out, _ = cli(capsys, ["sample", "--model", run, "-n", "2", "--label", "food"])
    assert len(out.splitlines()) == 2
    # every validation logs q(y|x)'s accuracy on the valid split, the share classify gets right
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = min((r for r in logged if r["kind"] == "valid"), key=lambda r: r["elbo"])  # the model saved
    from textvae.metrics import model_split
    valid = model_split(model, "valid")
    predicted, _ = model.classify(valid.texts)
    assert best["accuracy"] == pytest.approx(np.mean(np.array(predicted) == np.array(valid.labels)))


@pytest.mark.integration
def test_m2_trains_on_a_corpus_whose_blank_labels_are_unlabelled(tmp_path, capsys):
    texts = {"train": ["the cat sat .", "rain fell today .", "a dog ran .", "snow fell again ."] * 10,
             "valid": ["the cat ran .", "rain fell ."], "test": ["a dog sat .", "snow fell ."]}
    data = write_corpus(tmp_path / "c", texts)
    write_lines(data / "train.labels.txt", ["pets", "weather", "", ""] * 10)  # half unlabelled
    for split in ("valid", "test"):
        write_lines(data / f"{split}.labels.txt", ["pets", "weather"])
    _, err = cli(capsys, ["train", "--preset", "tiny", "--no-summary", "--data", data, "--out", tmp_path / "r",
                          "model.conditional=true", "model.classifier=true", "train.labelled_ratio=0.5",
                          "train.max_steps=3"])
    model = TextVAE.from_pretrained(tmp_path / "r")
    assert model.label_names == ["pets", "weather"]
    # read outside training, the train split's blank labels are named as such, not as an unknown label ''
    from textvae.errors import DataError
    from textvae.metrics import model_split

    with pytest.raises(DataError, match=r"has 20 example\(s\) with a blank label.*use a split whose examples all"):
        model_split(model, "train")


@pytest.mark.parametrize("latent", ["gaussian", "gumbel", "vq"])
def test_validation_reports_the_classifier_accuracy_for_every_latent(latent):
    """train logs M2's q(y|x) accuracy from validate; a discrete latent's validate dropped it."""
    from textvae.data import EncodedSplit
    from textvae.metrics import validate

    torch.manual_seed(0)
    model = TextVAE(ModelConfig(vocab_size=20, emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=3, latent=latent,
                                latent_vars=2, latent_classes=4, code_dim=3, conditional=True, classifier=True,
                                id2label={0: "a", 1: "b", 2: "c"})).eval()
    ids = [np.array(s, dtype=np.int32) for s in ([5, 6, 7], [8, 9], [10, 11, 12, 13], [4, 4], [7], [9, 9, 9])]
    y = np.array([0, 1, 2, 0, 1, 2])
    split = EncodedSplit(ids=ids, texts=[""] * 6, labels=[["a", "b", "c"][k] for k in y], label_ids=y)
    tokens, lengths = collate_ids(ids, 2, 3)
    with torch.no_grad():
        pred = model.classifier(tokens, lengths).argmax(-1).numpy()
    assert validate(model, split, batch_size=4)["accuracy"] == pytest.approx(float((pred == y).mean()))


def test_a_vq_latents_own_terms_are_expectations_under_q_y_too():
    """M2 with a VQ latent: the commitment and codebook terms of an unlabelled sentence are the q(y|x)-weighted
    sum over its K enumerated rows, as rec and kl are, and its codebook statistics count it once."""
    torch.manual_seed(0)
    model = TextVAE(ModelConfig(vocab_size=20, emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=3, latent="vq",
                                latent_vars=2, latent_classes=4, code_dim=3, vq_restart=False, conditional=True,
                                classifier=True, id2label={0: "a", 1: "b", 2: "c"})).eval()
    with torch.no_grad():
        model.classifier.out.bias.copy_(torch.tensor([4.0, 0.0, -4.0]))  # q(y|x) far from uniform
        model.label_embedding.weight.mul_(10)  # z_e depends on the label
    tokens, lengths = BATCH
    y = torch.tensor([1, -1, -1, 0])
    out = model(tokens, lengths, None, y)
    q = model.classifier(tokens, lengths).softmax(-1)
    for name in ("commitment", "codebook"):
        hand = []
        for b in range(4):
            def one(k, b=b):
                return model.vae_terms(tokens[b:b + 1], lengths[b:b + 1], None, torch.tensor([k])).losses[name]
            hand.append(one(int(y[b])) if y[b] >= 0 else sum(q[b, k] * one(k) for k in range(3)))
        torch.testing.assert_close(out.losses[name], torch.stack(hand).mean(), rtol=1e-5, atol=1e-6)
    out.losses["commitment"].backward()
    assert model.classifier.out.weight.grad.abs().sum() > 0  # q(y|x) weighs the terms, so it gets their gradient
    model.config.vq_ema = True  # the EMA counts of one training step: 4 sentences x 2 positions
    ema = TextVAE(model.config).train()
    ema.load_state_dict(model.state_dict(), strict=False)
    start = ema.latent.ema_count.clone()
    ema(tokens, lengths, None, y)
    added = (ema.latent.ema_count - 0.99 * start) / 0.01
    torch.testing.assert_close(added.sum(), torch.tensor(8.0))
