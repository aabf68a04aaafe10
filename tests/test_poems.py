"""Poems: form-aware decoding (SampleConfig.form, --form), well_formed, the tang presets."""
import json
import random
import re

import numpy as np
import pytest
import torch

from helpers import write_corpus, write_lines
from textvae.cli import main
from textvae.config import ModelConfig, SampleConfig
from textvae.config_files import load_config
from textvae.errors import ConfigError
from textvae.generate import beam_search, generate
from textvae.metrics import evaluate
from textvae.poems import FormConstraint, form_masks, form_regex, parse_form, well_formed
from textvae.model import TextVAE
from textvae.tokenizers import SentencePieceTokenizer, WordTokenizer, train_tokenizer

CHARS = "春江花月夜山水風雲雨雪天地日星人家門前後上下東西南北紅綠青白黃金玉石秋"
ACCEPT_5x4 = re.compile(r"^([^，。]{5}，[^，。]{5}。){2}$")  # a 5x4 quatrain written out by hand
ACCEPT_7x4 = re.compile(r"^([^，。]{7}，[^，。]{7}。){2}$")


def poem(rng: random.Random, chars: int) -> str:
    lines = ["".join(rng.choice(CHARS) for _ in range(chars)) for _ in range(4)]
    return f"{lines[0]}，{lines[1]}。{lines[2]}，{lines[3]}。"


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [poem(rng, 5 if i % 2 else 7) for i in range(n)]


@pytest.fixture(scope="module")
def char_tok():
    return SentencePieceTokenizer.train(corpus(60), vocab_size=200, model_type="char")


def tiny_poet(tokenizer, seed: int = 0, latent_dim: int = 4) -> TextVAE:
    """A randomly initialised character-level VAE with sharp, z-dependent output distributions."""
    torch.manual_seed(seed)
    model = TextVAE(ModelConfig(emb_dim=8, enc_hidden=8, dec_hidden=16, latent_dim=latent_dim), tokenizer)
    with torch.no_grad():
        model.decoder.proj.weight *= 3
    return model.eval()


@pytest.fixture(scope="module")
def poet(char_tok):
    return tiny_poet(char_tok)


def test_the_char_tokenizer_gives_one_token_per_character(char_tok):
    for text in corpus(10, seed=1):
        ids = char_tok.encode(text)
        assert len(ids) == len(text) and char_tok.decode(ids) == text
    assert len(char_tok.encode("，")) == 1 and len(char_tok.encode("。")) == 1


def test_well_formed_agrees_with_a_hand_written_regex():
    good = "自君之出矣，不復理殘機。思君如滿月，夜夜減清輝。"
    assert well_formed(good, "5x4") and ACCEPT_5x4.match(good)
    assert not well_formed(good, "7x4") and not well_formed(good, "5x2")
    assert well_formed("自君之出矣，不復理殘機。", "5x2")
    bad = [good[:-1], good + "。", good.replace("，", "。", 1), "自君之出，矣不復理殘機。思君如滿月，夜夜減清輝。",
           "自君之出矣，不復理殘機。思君如滿月，夜夜減清輝，", " " + good, "<unk>，不復理殘機。思君如滿月，夜夜減清輝。",
           "自君 出矣，不復理殘機。思君如滿月，夜夜減清輝。", ""]
    for text in bad:
        assert not well_formed(text, "5x4"), text
    seven = "".join("一二三四五六七" + p for p in "，。，。")
    assert well_formed(seven, "7x4") and ACCEPT_7x4.match(seven)
    assert form_regex("5x3").pattern.count("。") == 2  # an odd last line ends in 。 too
    for bad_form in ("5", "x4", "5x", "0x4", "5x0", "5*4", "a5x4", "5x4x1", "\u00b2x4", "5x\u00b2"):  # ² is a digit to isdigit
        with pytest.raises(ConfigError, match="LxN"):
            parse_form(bad_form)
        with pytest.raises(ConfigError, match="LxN"):
            SampleConfig(form=bad_form)
    assert SampleConfig(form="7x4").form == "7x4" and SampleConfig().form is None


def test_form_masks_allow_content_punctuation_and_eos_at_their_places(char_tok):
    masks = form_masks(char_tok, "5x4")
    V = char_tok.vocab_size
    assert masks.shape == (6 * 4 + 1, V)
    comma, stop = char_tok.encode("，")[0], char_tok.encode("。")[0]
    content = masks[0]
    assert not content[[0, 1, 2, 3, comma, stop]].any()  # specials, <unk> and punctuation never
    assert int(content.sum()) == V - 6  # every other (single-character) piece
    for line, end in enumerate([comma, stop, comma, stop]):
        for j in range(5):
            assert torch.equal(masks[line * 6 + j], content)
        assert masks[line * 6 + 5].nonzero().flatten().tolist() == [end]
    assert masks[-1].nonzero().flatten().tolist() == [char_tok.eos_id]


@pytest.mark.parametrize("form,accept", [("5x4", ACCEPT_5x4), ("7x4", ACCEPT_7x4)])
def test_constrained_decoding_always_gives_the_form(poet, form, accept):
    for cfg in (SampleConfig(form=form), SampleConfig(form=form, temperature=2.0, top_p=0.9),
                SampleConfig(form=form, greedy=True), SampleConfig(form=form, beam=3),
                SampleConfig(form=form, max_len=3)):  # the form's length replaces max_len
        samples = poet.sample(20, cfg, seed=1)
        assert len(samples) == 20
        assert all(accept.match(s) and well_formed(s, form) for s in samples), (cfg, samples)
    assert len(set(poet.sample(20, SampleConfig(form=form), seed=1))) > 10  # still sampled, not one poem


def test_beam_search_under_a_form_is_at_least_as_good_as_greedy(poet):
    z = torch.randn(6, poet.latent_dim, generator=torch.Generator().manual_seed(2))
    greedy = generate(poet, z, SampleConfig(greedy=True, form="5x4"))
    form = FormConstraint(poet, "5x4")
    seqs, scores = beam_search(poet, z, 4, 50, constraint=form)
    assert all(len(s) == 24 for s in seqs + greedy)
    seqs1, scores1 = beam_search(poet, z, 1, 50, constraint=form)
    assert seqs1 == greedy
    assert (scores >= scores1 - 1e-4).all()


def test_free_samples_of_an_untrained_model_are_rarely_well_formed(poet):
    samples = poet.sample(50, SampleConfig(), seed=0)
    assert sum(well_formed(s, "5x4") for s in samples) <= 5


def test_reconstruct_interpolate_and_lm_obey_the_form(poet, char_tok):
    texts = corpus(2, seed=5)
    for s in poet.reconstruct(texts, SampleConfig(greedy=True, form="5x4")):
        assert ACCEPT_5x4.match(s)
    for s in poet.interpolate(texts[0], texts[1], steps=3, sample=SampleConfig(greedy=True, form="7x4")):
        assert ACCEPT_7x4.match(s)
    lm = tiny_poet(char_tok, latent_dim=0)
    assert all(ACCEPT_5x4.match(s) for s in lm.sample(5, SampleConfig(form="5x4")))


def test_form_needs_a_character_level_tokenizer_with_verse_punctuation(char_tok):
    texts = corpus(40)
    words = WordTokenizer.train([" ".join(t) for t in texts])  # single characters, joined by spaces
    with pytest.raises(ConfigError, match="separators"):
        tiny_poet(words).sample(2, SampleConfig(form="5x4"))
    bpe = SentencePieceTokenizer.train(texts, vocab_size=120, model_type="bpe")
    with pytest.raises(ConfigError, match="not character-level.*model_type=char"):
        tiny_poet(bpe).sample(2, SampleConfig(form="5x4"))
    plain = SentencePieceTokenizer.train([t.replace("，", "").replace("。", "") for t in texts], vocab_size=100,
                                         model_type="char")
    with pytest.raises(ConfigError, match="no token for"):
        tiny_poet(plain).sample(2, SampleConfig(form="5x4"))


def test_evaluate_reports_the_well_formed_fraction_of_free_samples(poet, char_tok):
    from textvae.data import EncodedSplit

    texts = corpus(8, seed=3)
    split = EncodedSplit([np.array(char_tok.encode(t), dtype=np.int32) for t in texts], texts)
    r = evaluate(poet, split, iw_samples=2, n_samples=20, form="5x4")
    assert 0.0 <= r["well_formed"] <= 0.25
    r = evaluate(poet, split, iw_samples=2, n_samples=20, form="5x4", sample_cfg=SampleConfig(form="5x4"))
    assert r["well_formed"] == 1.0
    assert "well_formed" not in evaluate(poet, split, iw_samples=0, n_samples=5)


def test_cli_sample_reconstruct_interpolate_evaluate_with_form(poet, tmp_path, capsys):
    data = tmp_path / "poems"
    data.mkdir()
    for name, seed in (("train", 0), ("valid", 1), ("test", 2)):
        write_lines(data / f"{name}.txt", corpus(12, seed))
    model_dir = tmp_path / "model"
    poet.save_pretrained(model_dir)
    assert main(["sample", "--model", str(model_dir), "--form", "5x4", "-n", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 20 and all(ACCEPT_5x4.match(l) for l in lines)
    assert main(["sample", "--model", str(model_dir), "--form", "7x4", "-n", "3", "--beam", "2"]) == 0
    assert all(ACCEPT_7x4.match(l) for l in capsys.readouterr().out.splitlines())
    two = corpus(2, seed=9)
    assert main(["reconstruct", "--model", str(model_dir), "--form", "5x4", *two]) == 0
    assert all(ACCEPT_5x4.match(l) for l in capsys.readouterr().out.splitlines())
    assert main(["interpolate", "--model", str(model_dir), "--form", "5x4", "--steps", "2", *two]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(ACCEPT_5x4.match(l) for l in lines)
    assert main(["evaluate", "--model", str(model_dir), "--data-dir", str(data), "--form", "5x4", "--json",
                 "--iw-samples", "2", "--n-samples", "10"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["well_formed"] <= 1.0
    assert main(["sample", "--model", str(model_dir), "--form", "5y4"]) == 2
    assert "LxN" in capsys.readouterr().err


@pytest.mark.parametrize("preset,chars", [("tang5", 5), ("tang7", 7)])
def test_tang_presets_use_a_character_tokenizer(preset, chars):
    cfg = load_config(preset=preset)
    t = cfg.tokenizer
    assert (t.kind, t.model_type, t.character_coverage) == ("sentencepiece", "char", 1.0)
    assert cfg.data.max_len >= 4 * (chars + 1)
    # every character of the training text is kept, as one token each, and vocab_size is only a bound
    texts = corpus(30)
    tok = train_tokenizer(t, texts)
    assert tok.vocab_size == len(set("".join(texts))) + 4 <= t.vocab_size
    assert all(len(tok.encode(x)) == len(x) and 1 not in tok.encode(x) for x in texts)


# --------------------------------------------------------------------------- conditional VAE

FORMS = ["5x4", "7x4"]


def tiny_cvae(tokenizer, seed: int = 0) -> TextVAE:
    torch.manual_seed(seed)
    cfg = ModelConfig(emb_dim=8, enc_hidden=8, dec_hidden=16, latent_dim=4, conditional=True, label_dim=3)
    model = TextVAE(cfg, tokenizer, labels=FORMS)
    with torch.no_grad():  # labels as different as at the end of training, not at initialisation
        model.decoder.label_embedding.weight.mul_(5)
        model.label_embedding.weight.mul_(5)
    return model.eval()


def test_conditioning_reaches_encoder_and_decoder(char_tok):
    model = tiny_cvae(char_tok)
    assert model.conditional and model.label_names == FORMS and model.config.num_labels == 2
    texts = corpus(4, seed=4)
    tokens, lengths = model._tokenize(texts)
    five, seven = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    z = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # the decoder: p(x|z, y) changes with y for the same z and x
        assert not torch.allclose(model.log_likelihood(tokens, lengths, z, five),
                                  model.log_likelihood(tokens, lengths, z, seven))
        code = model.decoder_code(z, seven)
        assert code.shape == (4, 4 + 3) and torch.equal(code[:, :4], z)
        first5, _ = model.step(torch.full((4,), model.bos_id), model.init_state(model.decoder_code(z, five), 4),
                               model.decoder_code(z, five))
        first7, _ = model.step(torch.full((4,), model.bos_id), model.init_state(code, 4), code)
        assert not torch.allclose(first5.softmax(-1), first7.softmax(-1))
        # the encoder: q(z|x, y) changes with y for the same x
        assert not torch.allclose(model.encode_posterior(tokens, lengths, five)[0],
                                  model.encode_posterior(tokens, lengths, seven)[0])
    model.train()
    out = model(tokens, lengths, y=torch.tensor([0, 1, 0, 1]))
    (out.rec.mean() + out.kl.sum(1).mean()).backward()
    for emb in (model.label_embedding, model.decoder.label_embedding):
        assert emb.weight.grad is not None and (emb.weight.grad.abs().sum(1) > 0).all()
    # the prior is N(0, I): the KL is the unconditional one
    assert out.kl.shape == (4, 4)


def test_conditional_string_api_and_errors(char_tok):
    model = tiny_cvae(char_tok)
    texts = corpus(2, seed=6)
    assert model.sample(4, SampleConfig(form="7x4"), seed=0, label="7x4") != \
        model.sample(4, SampleConfig(form="7x4"), seed=0, label="5x4")
    assert len(model.sample(3, seed=0)) == 3  # without a label: the labels in turn
    assert model.sample(2, seed=0) == model.sample(2, seed=0, label=["5x4", "7x4"])
    assert len(model.reconstruct(texts, label=["7x4", "5x4"])) == 2
    assert len(model.interpolate(texts[0], texts[1], steps=2, label="7x4")) == 4
    with pytest.raises(ConfigError, match="unknown label.*'6x4'.*'5x4', '7x4'"):
        model.sample(2, label="6x4")
    with pytest.raises(ConfigError, match="conditional: give a label"):
        model.encode(texts)
    with pytest.raises(ValueError, match="conditional: pass y"):
        model.encode_posterior(*model._tokenize(texts))
    with pytest.raises(ConfigError, match="not conditional"):
        tiny_poet(char_tok).sample(2, label="5x4")
    with pytest.raises(ValueError, match="needs labels"):
        TextVAE(ModelConfig(latent_dim=4, conditional=True), char_tok)
    with pytest.raises(ConfigError, match="conditional VAE needs a latent"):
        load_config(overrides=["model.conditional=true", "model.latent_dim=0"])


def test_conditional_save_load_round_trip(char_tok, tmp_path):
    model = tiny_cvae(char_tok)
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model"]["id2label"] == {"0": "5x4", "1": "7x4"}
    again = TextVAE.from_pretrained(tmp_path / "m")
    assert again.label_names == FORMS and again.config == model.config
    assert again.sample(4, seed=2, label="7x4") == model.sample(4, seed=2, label="7x4")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    del meta["model"]["id2label"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    from textvae.errors import CheckpointError

    with pytest.raises(CheckpointError, match="conditional but 'model.id2label' is missing"):
        TextVAE.from_pretrained(tmp_path / "m")


def test_label_agreement_checks_forms_only():
    from textvae.poems import label_agreement

    five = "一二三四五，一二三四五。一二三四五，一二三四五。"
    seven = "一二三四五六七，一二三四五六七。"
    r = label_agreement([five, seven, five, "一二三", "x"], ["5x4", "7x4", "7x4", "5x4", "topic"])
    assert r["label_line_length"] == pytest.approx(2 / 4)  # five as 5x4, seven (two verses) as 7x4
    assert r["label_well_formed"] == pytest.approx(1 / 4)  # only five as 5x4 is the whole form
    assert r["label_match"] == {"5x4": {"line_length": 0.5, "well_formed": 0.5, "samples": 2},
                                "7x4": {"line_length": 0.5, "well_formed": 0.0, "samples": 2}}
    assert label_agreement(["a"], ["topic"])["label_line_length"] is None


def test_attach_label_ids_names_missing_and_unknown_labels():
    from textvae.data import EncodedSplit, attach_label_ids
    from textvae.errors import DataError

    ids = [np.array([4, 5], dtype=np.int32)] * 3
    split = attach_label_ids(EncodedSplit(ids, ["a"] * 3, ["7x4", "5x4", "7x4"]), FORMS)
    assert split.label_ids.tolist() == [1, 0, 1]
    assert attach_label_ids(EncodedSplit(ids, ["a"] * 3), None).label_ids is None
    with pytest.raises(DataError, match="has no labels"):
        attach_label_ids(EncodedSplit(ids, ["a"] * 3), FORMS)
    with pytest.raises(DataError, match=r"not trained with: \['6x4'\]"):
        attach_label_ids(EncodedSplit(ids, ["a"] * 3, ["6x4", "5x4", "7x4"]), FORMS, "the valid split")


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cvae")
    splits = {name: corpus(n, seed) for name, n, seed in (("train", 200, 0), ("valid", 40, 1), ("test", 40, 2))}
    data = write_corpus(root / "forms", splits)  # 7x4 and 5x4 poems in turn
    write_corpus(data, {name: ["7x4" if len(t) == 32 else "5x4" for t in texts] for name, texts in splits.items()},
                 suffix=".labels.txt")
    run = root / "run"
    assert main(["train", "--preset", "tiny", "--data-dir", str(data), "--out", str(run), "train.max_steps=30",
                 "tokenizer.kind=sentencepiece", "tokenizer.model_type=char", "tokenizer.vocab_size=100",
                 "model.conditional=true", "model.label_dim=4"]) == 0
    return data, run


def test_conditional_training_and_cli(cvae_run, capsys):
    data, run = cvae_run
    capsys.readouterr()
    model = TextVAE.from_pretrained(run)
    assert model.label_names == FORMS
    assert main(["sample", "--model", str(run), "--label", "7x4", "--form", "7x4", "-n", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all(ACCEPT_7x4.match(l) for l in lines)
    assert main(["sample", "--model", str(run), "--label", "9x4"]) == 2
    assert "unknown label" in capsys.readouterr().err
    two = corpus(2, seed=8)
    assert main(["reconstruct", "--model", str(run), "--label", "5x4", *two]) == 0
    assert main(["interpolate", "--model", str(run), "--label", "7x4", "--steps", "1", *two]) == 0
    assert main(["interpolate", "--model", str(run), "--label", "7x4", "--prior", "--steps", "1"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run), "--json", "--iw-samples", "3", "--n-samples", "10"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert 0.0 <= r["label_line_length"] <= 1.0 and 0.0 <= r["label_well_formed"] <= r["label_line_length"]
    assert {k: v["samples"] for k, v in r["label_match"].items()} == {"5x4": 5, "7x4": 5}
    # probing the forms the encoder is given would read them back from q(z|x, y): refused
    assert main(["probe", "--model", str(run), "--n", "20", "--json"]) == 2
    assert "follow from the label this conditional model is given" in capsys.readouterr().err
    # --resume keeps the filled-in num_labels
    assert main(["train", "--preset", "tiny", "--data-dir", str(data), "--out", str(run), "--resume",
                 "--no-summary", "train.max_steps=32", "tokenizer.kind=sentencepiece", "tokenizer.model_type=char",
                 "tokenizer.vocab_size=100", "model.conditional=true", "model.label_dim=4"]) == 0


def test_a_conditional_model_needs_labelled_data(tmp_path, capsys):
    data = tmp_path / "nolabels"
    data.mkdir()
    for name in ("train", "valid", "test"):
        write_lines(data / f"{name}.txt", corpus(20))
    assert main(["train", "--preset", "tiny", "--data-dir", str(data), "--out", str(tmp_path / "r"),
                 "model.conditional=true", "tokenizer.kind=sentencepiece", "tokenizer.model_type=char",
                 "tokenizer.vocab_size=100"]) == 2
    assert "the train split has no labels" in capsys.readouterr().err


def test_the_sample_checks_evaluate_gets_from_poems():
    from textvae.poems import form_sample_checks, is_form, label_agreement

    assert label_agreement(["白日依山盡"], None) == {}  # an unconditional model: no label keys
    assert is_form("5x4") and not is_form("topic") and not is_form("0x4") and not is_form("\u00b2x4")
    assert label_agreement(["a"], ["\u00b2x4"])["label_line_length"] is None  # a label, not a form
    five = "自君之出矣，不復理殘機。思君如滿月，夜夜減清輝。"
    checks = form_sample_checks("5x4")
    assert len(checks) == 2 and len(form_sample_checks()) == 1
    assert checks[1]([five, "x"], None) == {"well_formed": 0.5}
    with pytest.raises(ConfigError, match="LxN"):
        form_sample_checks("5y4")  # before any pass over data


def test_a_form_too_long_to_be_a_poem_is_refused_before_decoding(poet):
    """--form 5x40000 (a typo) was accepted: decoding then built a 240,001 x V mask and took as many steps;
    100000x100000 tried to allocate terabytes."""
    for form in ("5x40000", "100000x100000", "10001x1"):
        with pytest.raises(ConfigError, match=rf"form='{form}' asks for [\d,]+ characters; a form has at most 10,000"):
            SampleConfig(form=form)
        with pytest.raises(ConfigError, match="at most 10,000"):
            FormConstraint(poet, form)
    assert parse_form("100x100") == (100, 100) and parse_form("7x8") == (7, 8)


# --------------------------------------------------------------------------- room for long forms

ACCEPT_7x8 = re.compile(r"^([^，。]{7}，[^，。]{7}。){4}$")


class LearnedForms:
    """A decoding constraint that stands in for a model which has learned its forms: row i writes a
    poem of ``forms[i]``, then EOS (``go_on``: then more characters, never EOS). It has no fixed
    length (``steps`` None), so ``SampleConfig.max_len`` cuts its rows as it cuts any free sample."""

    steps = None

    def __init__(self, model, forms: list[str], go_on: bool = False):
        tables = {f: form_masks(model.tokenizer, f, model.config.vocab_size) for f in set(forms)}
        self.rows = [tables[f] for f in forms]  # each (L + 1) N + 1 by V; its last row: EOS only
        self.go_on = go_on

    def allowed(self, step: int, prefix: torch.Tensor) -> torch.Tensor:
        def row(masks):
            if step < len(masks) - 1:
                return masks[step]
            return masks[0] if self.go_on else masks[-1]  # a content character, or EOS

        return torch.stack([row(m) for m in self.rows])  # (rows, V)


def decode_as_learned(monkeypatch, forms_of, go_on=False) -> list:
    """evaluate's prior samples written by :class:`LearnedForms`; returns the SampleConfigs they were
    decoded with. ``forms_of(model, n, labels)``: the form of each of the n rows."""
    import textvae.metrics

    used = []

    def generate_learned(model, z, cfg, n=None, generator=None, labels=None):
        used.append(cfg)
        forms = forms_of(model, n, labels)
        return generate(model, z, cfg, n=n, generator=generator, labels=labels,
                    constraint=LearnedForms(model, forms, go_on) if forms else None)

    monkeypatch.setattr(textvae.metrics, "generate", generate_learned)
    return used


def poem_split(tokenizer, texts, labels=None, names=None):
    from textvae.data import EncodedSplit, attach_label_ids

    split = EncodedSplit([np.array(tokenizer.encode(t), dtype=np.int32) for t in texts], texts, labels)
    return attach_label_ids(split, names) if names else split


def test_evaluate_form_gives_free_samples_room_for_a_long_form(poet, char_tok, monkeypatch):
    """--form 7x8 scored free samples decoded with the default max_len 50: a 7x8 poem is 64 tokens + EOS,
    so even a model that writes nothing but 7x8 poems had well_formed 0."""
    split = poem_split(char_tok, corpus(4, seed=3))
    used = decode_as_learned(monkeypatch, lambda model, n, labels: ["7x8"] * n)
    r = evaluate(poet, split, iw_samples=1, n_samples=6, bleu_sentences=0, form="7x8")
    assert r["well_formed"] == 1.0 and r["mean_len"] == 64
    assert used[-1].max_len == 65  # the form, its EOS; no more
    # a model that goes on after the form: cut one token past it, never to its length
    decode_as_learned(monkeypatch, lambda model, n, labels: ["7x8"] * n, go_on=True)
    r = evaluate(poet, split, iw_samples=1, n_samples=6, bleu_sentences=0, form="7x8")
    assert r["well_formed"] == 0.0 and r["mean_len"] == 65
    # settings of one's own are kept, max_len raised only where the form needs it (80 tokens cut from
    # a longer sample would be ten whole verses of 7 + "，")
    used = decode_as_learned(monkeypatch, lambda model, n, labels: [])
    for form, cfg in (("7x8", SampleConfig(temperature=0.5, max_len=90)), ("7x8", SampleConfig(max_len=80)),
                      ("7x8", SampleConfig(top_p=0.9)), ("5x4", None)):
        evaluate(poet, split, iw_samples=1, n_samples=2, bleu_sentences=0, form=form, sample_cfg=cfg)
    assert [(c.max_len, c.temperature, c.top_p) for c in used] == [(90, 0.5, 1.0), (81, 1.0, 1.0), (65, 1.0, 0.9),
                                                                   (50, 1.0, 1.0)]
    # no form to check (and a check of one's own): the samples are decoded exactly as asked
    cfg = SampleConfig(max_len=20)
    evaluate(poet, split, iw_samples=1, n_samples=2, bleu_sentences=0, sample_cfg=cfg)
    evaluate(poet, split, iw_samples=1, n_samples=2, bleu_sentences=0, sample_cfg=cfg, form="7x8",
             sample_checks=[lambda samples, labels: {}])
    evaluate(poet, split, iw_samples=1, n_samples=2, bleu_sentences=0)
    assert used[-3] is cfg and used[-2] is cfg and used[-1] == SampleConfig()


def test_label_checks_give_samples_room_for_the_longest_label_form(char_tok, monkeypatch):
    """A conditional model with the labels 5x4 and 7x8: its 7x8 samples were cut at 50 tokens, so
    label_well_formed was at most one half however well the model had learned the forms."""
    names = ["5x4", "7x8"]
    torch.manual_seed(0)
    model = TextVAE(ModelConfig(emb_dim=8, enc_hidden=8, dec_hidden=16, latent_dim=4, conditional=True,
                                label_dim=3), char_tok, labels=names).eval()
    split = poem_split(char_tok, corpus(4, seed=3), ["5x4", "7x8"] * 2, names)
    used = decode_as_learned(monkeypatch, lambda m, n, labels: [m.label_names[i] for i in labels.tolist()])
    r = evaluate(model, split, iw_samples=1, n_samples=8, bleu_sentences=0)
    assert (r["label_line_length"], r["label_well_formed"]) == (1.0, 1.0)
    assert r["label_match"]["7x8"] == {"line_length": 1.0, "well_formed": 1.0, "samples": 4}
    assert used[-1].max_len == 65
    decode_as_learned(monkeypatch, lambda m, n, labels: [m.label_names[i] for i in labels.tolist()], go_on=True)
    r = evaluate(model, split, iw_samples=1, n_samples=8, bleu_sentences=0)
    assert (r["label_line_length"], r["label_well_formed"]) == (0.0, 0.0)  # cut, never to whole verses


@pytest.mark.parametrize("forms,at_least,steps", [
    (["7x8"], 50, 65), (["5x4", "7x4"], 50, 50), (["5x4", "7x8"], 50, 65), (["5x8"], 50, 50),
    (["4x4"], 50, 51),  # 50 characters are ten whole verses of 4 + "，"
    (["5x4"], 48, 49), (["7x4", "5x2"], 1, 33), (["3x2", "1x1"], 7, 9),
])
def test_the_check_limit_never_cuts_a_sample_into_a_form_or_whole_verses(forms, at_least, steps):
    from textvae.poems import check_max_len, has_line_length

    assert check_max_len(forms, at_least) == steps
    for form in forms:
        chars, lines = parse_form(form)
        rng = random.Random(0)
        verse = lambda end: "".join(rng.choice(CHARS) for _ in range(chars)) + end  # noqa: E731
        exact = "".join(verse("。" if i % 2 or i == lines - 1 else "，") for i in range(lines))
        assert well_formed(exact, form) and len(exact) < steps  # a poem of the form ends inside the limit
        longer = exact + "".join(verse("，。"[i % 2]) for i in range(steps))  # one that goes on
        cut = longer[:steps]  # as decoding cuts it (one character a token)
        assert not any(well_formed(cut, f) or has_line_length(cut, parse_form(f)[0]) for f in forms)


def test_sample_and_interpolate_with_a_form_longer_than_max_len(poet, tmp_path, capsys):
    """The form's length replaces --max-len: a 7x8 poem (64 tokens) comes whole from sample, reconstruct and
    interpolate with the default --max-len 50, and from --max-len 5."""
    model_dir = tmp_path / "model"
    poet.save_pretrained(model_dir)
    assert main(["sample", "--model", str(model_dir), "--form", "7x8", "-n", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(ACCEPT_7x8.match(l) for l in lines)
    two = corpus(2, seed=9)
    for verb in (["sample", "-n", "2", "--max-len", "5"], ["reconstruct", *two], ["interpolate", "--steps", "1", *two]):
        assert main([verb[0], "--model", str(model_dir), "--form", "7x8", *verb[1:]]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines and all(ACCEPT_7x8.match(l) for l in lines)
