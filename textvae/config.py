"""Configuration dataclasses, their validation, and building them from dicts.

A run is described by one :class:`Config` with five sections::

    data       where the corpus is and how examples are cleaned
    tokenizer  word-level vocabulary or SentencePiece
    model      encoder/decoder shapes, latent size, word dropout, BN-VAE
    objective  KL weight schedule, free bits, aggressive training, AE pretraining
    train      optimiser, evaluation, checkpoints, stopping

Unknown keys and wrong types are errors that list every problem at once. Reading a config from a
preset, a YAML/JSON file and ``key=value`` overrides (``load_config``) is :mod:`textvae.config_files`.
"""

import dataclasses
import datetime
import json
import numbers
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .version import __version__

# Version of the on-disk layout of config.json, model and checkpoint directories. 2: labels as
# model.id2label (1: model.num_labels + a top-level "labels" list), the Gaussian latent's weights
# under latent.* (1: posterior.*, mu_bn.*), the writing library's version as "textvae_version".
FORMAT_VERSION = 2


def _choice(problems: list[str], name: str, value: Any, choices) -> None:
    if value not in choices:
        problems.append(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")


def _positive(problems: list[str], name: str, value, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value != value or value in (float("inf"), float("-inf")):  # NaN passes every comparison below
        problems.append(f"{name}={value!r} must be a finite number")
    elif value < 0 or (value == 0 and not allow_zero):
        problems.append(f"{name}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


def _prob(problems: list[str], name: str, value: float, closed: bool = True) -> None:
    if not (0.0 <= value <= 1.0) or (not closed and value == 1.0):
        problems.append(f"{name}={value!r} must be in [0, 1{']' if closed else ')'}")


# datasets' packaged loaders that read local files: as data.dataset without data_files they parse
# whatever is in the working directory
FILE_LOADERS = ("csv", "json", "text", "parquet", "arrow", "pandas", "xml")


@dataclass
class DataConfig:
    """Where the corpus comes from. With nothing set, the built-in corpus is used."""

    # folder with train/valid/test .txt, .jsonl or .csv (ptb.train.txt names too), or one such file
    # (or a folder with only a train file) that is split by split_ratio; the CLI stores it absolute
    data_dir: str | None = None
    dataset: str | None = None  # Hugging Face hub dataset name (needs internet)
    dataset_config: str | None = None  # hub dataset config name
    text_field: str = "text"  # column / JSON field / CSV header holding the text
    # optional column / JSON field / CSV header with a label per example (the built-in corpus: which of its
    # factors is the label, topic by default)
    label_field: str | None = None
    # columns / JSON fields / CSV headers read as known factors of variation (evaluate --disentanglement,
    # traverse --factors), never trained on; .txt corpora use {split}.{factor}.labels.txt files instead
    factor_fields: list[str] = field(default_factory=list)
    # one file split into train/valid/test: proportions of its lines (normalised to sum 1), default
    # 0.9/0.05/0.05; valid and test get at least one line each
    split_ratio: dict[str, float] = field(default_factory=lambda: {"train": 0.9, "valid": 0.05, "test": 0.05})
    split_seed: int = 0  # which lines go to which split of one file (a fixed shuffle per seed)
    # split name -> file stem / hub split; data.splits.valid=dev changes one entry
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "valid": "valid", "test": "test"})
    max_len: int = 100  # tokens per example, BOS/EOS excluded
    long_policy: str = "truncate"  # what to do with longer examples: truncate | drop
    encoding_errors: str = "strict"  # strict: invalid UTF-8 is an error; replace: use U+FFFD
    builtin_size: int = 6000  # sentences generated for the built-in corpus (all splits)
    # M2 (model.classifier): keep the labels of this many training examples per class, drawn with
    # label_seed (textvae.semisup.draw_labelled, stratified); the other examples are unlabelled. None: all
    labelled_per_class: int | None = None
    label_seed: int = 0  # which examples labelled_per_class keeps labelled (one draw per seed)

    def validate(self, p: list[str]) -> None:
        if self.data_dir and self.dataset:
            p.append("data.data_dir and data.dataset are both set; choose one source")
        if self.dataset in FILE_LOADERS:
            p.append(f"data.dataset={self.dataset!r} names datasets' {self.dataset} loader, which needs files "
                     f"(without them it reads the working directory); for your own file use --data FILE "
                     f"(data.data_dir=FILE: .txt, .jsonl or .csv with data.text_field / data.label_field)")
        if set(self.split_ratio) != {"train", "valid", "test"}:
            p.append(f"data.split_ratio has keys {sorted(self.split_ratio)}; it needs exactly train, valid "
                     f"and test (e.g. data.split_ratio.test=0.1)")
        elif any(not v > 0 for v in self.split_ratio.values()):
            p.append(f"data.split_ratio={self.split_ratio} must be positive proportions (train, valid and test "
                     f"each need lines), e.g. 0.9/0.05/0.05")
        for f in self.factor_fields:
            if not f or f == self.text_field:
                p.append(f"data.factor_fields has {f!r}: each entry names a label column other than the text "
                         f"({self.text_field!r})")
        if len(set(self.factor_fields)) != len(self.factor_fields):
            p.append(f"data.factor_fields={self.factor_fields} names a field twice")
        _positive(p, "data.max_len", self.max_len)
        _choice(p, "data.long_policy", self.long_policy, ("truncate", "drop"))
        _choice(p, "data.encoding_errors", self.encoding_errors, ("strict", "replace"))
        _positive(p, "data.builtin_size", self.builtin_size)
        _positive(p, "data.labelled_per_class", self.labelled_per_class)
        missing = {"train", "valid", "test"} - set(self.splits)
        if missing:
            p.append(f"data.splits lacks {sorted(missing)}; it maps train/valid/test to source split names")


@dataclass
class TokenizerConfig:
    """``word``: whitespace tokens (optionally with punctuation split off). ``sentencepiece``:
    BPE/unigram/char/word model trained on train; use ``model_type=char`` for text without spaces
    (Chinese, Japanese), which the word tokenizer refuses."""

    kind: str = "word"  # word: whitespace-separated words | sentencepiece: learnt subwords or characters
    lowercase: bool = False  # lowercase the text before tokenising
    # word: whitespace: split on spaces only (for pre-tokenised corpora such as PTB) | punctuation: also
    # split Unicode punctuation off words ("gate!" -> gate !), keeping don't, well-known, 3.14 whole
    pretokenize: str = "whitespace"
    min_count: int = 1  # word: drop rarer words (they become <unk>)
    max_vocab: int | None = None  # word: keep the most frequent (specials not counted)
    vocab_size: int = 8000  # sentencepiece: target size, specials included
    model_type: str = "unigram"  # sentencepiece: bpe | unigram | char | word
    character_coverage: float = 1.0  # sentencepiece: 0.9995 for CJK-heavy corpora, 1.0 keeps all

    def validate(self, p: list[str]) -> None:
        _choice(p, "tokenizer.kind", self.kind, ("word", "sentencepiece"))
        _choice(p, "tokenizer.pretokenize", self.pretokenize, ("whitespace", "punctuation"))
        _positive(p, "tokenizer.min_count", self.min_count)
        _positive(p, "tokenizer.max_vocab", self.max_vocab)
        _positive(p, "tokenizer.vocab_size", self.vocab_size)
        _choice(p, "tokenizer.model_type", self.model_type, ("bpe", "unigram", "char", "word"))
        if not 0.0 < self.character_coverage <= 1.0:
            p.append(f"tokenizer.character_coverage={self.character_coverage!r} must be in (0, 1]")


@dataclass
class ModelConfig:
    """Bowman et al. (2016) sentence VAE; ``latent_dim=0`` gives the plain RNN language model."""

    cell: str = "lstm"  # lstm | gru (encoder and decoder)
    emb_dim: int = 256  # word embedding size (encoder and decoder)
    enc_hidden: int = 256  # encoder hidden size (per direction)
    enc_layers: int = 1  # stacked encoder RNN layers
    bidirectional: bool = False  # encoder reads both ways; its summary is both final states
    latent: str = "gaussian"  # latent family (textvae.latents.LATENTS): gaussian | gumbel | vq (docs/latents.md)
    encoder: str = "rnn"  # rnn: LSTM|GRU (cell, enc_layers, bidirectional) | gcnn: gated CNN, Dauphin et al. 2017
    gcnn_layers: int = 4  # gcnn: residual gated-convolution blocks, enc_hidden channels each
    gcnn_kernel: int = 3  # gcnn: kernel width, odd (centred: (k - 1) / 2 tokens either side)
    dec_hidden: int = 256  # decoder hidden size
    dec_layers: int = 1  # stacked decoder RNN layers
    # gaussian: the size Z of z; 0: no encoder, no latent: the LM baseline. gumbel and vq: > 0 turns the
    # latent on; the decoder reads latent_vars x code_dim numbers of their codes
    latent_dim: int = 32
    latent_vars: int = 8  # gumbel, vq: M, the categorical variables (gumbel) or vectors quantised (vq)
    latent_classes: int = 256  # gumbel, vq: K, the classes of each variable (gumbel) or codebook entries (vq)
    # gumbel, vq: D, the size of each code's vector: vq's M vectors and codebook entries; gumbel's learned
    # embedding of each class, which the decoder reads (it sees M x D numbers)
    code_dim: int = 32
    # gumbel: the temperature of the Gumbel-softmax relaxation after t training steps is
    # max(gumbel_tau_min, gumbel_tau * exp(-gumbel_tau_decay * t)) (Jang et al. 2017)
    gumbel_tau: float = 1.0
    gumbel_tau_min: float = 0.5  # gumbel: the temperature's floor
    gumbel_tau_decay: float = 1e-4  # gumbel: r, the temperature's exponential decay rate per step (0: constant)
    gumbel_hard: bool = False  # gumbel: straight-through: one-hot samples forward, relaxed gradients back
    vq_beta: float = 0.25  # vq: the commitment loss weight beta (van den Oord et al. 2017)
    vq_ema: bool = False  # vq: codebook moves by exponential moving averages instead of the codebook loss
    vq_ema_decay: float = 0.99  # vq: the decay of those averages
    vq_restart: bool = True  # vq: re-seed codebook entries unused for vq_restart_window steps (dead codes)
    vq_restart_window: int = 100  # vq: training steps without use after which an entry is re-seeded
    z_to_input: bool = True  # concatenate z to every decoder input embedding
    z_to_state: bool = True  # initial decoder state computed from z
    # conditional VAE (Sohn et al. 2015): each example's label (the corpus's labels) is embedded and joins
    # the encoder's final hidden state and, at the decoder, z; the prior stays N(0, I) (see model.py)
    conditional: bool = False
    label_dim: int = 16  # conditional: size of the label embeddings
    # conditional: label names by id (transformers' id2label); filled in from the training labels
    id2label: dict[int, str] | None = None
    # Kingma et al. (2014) M2 (needs conditional): a classifier q(y|x) with the encoder's architecture;
    # the label is a latent variable, observed where the corpus gives it (textvae/m2.py, docs/semisup.md)
    classifier: bool = False
    # M2, an unlabelled example: enumerate: the expectation over q(y|x) of the conditional ELBO, all K labels
    # in one batched pass | gumbel: one straight-through Gumbel-softmax sample of y (for many labels)
    unlabelled: str = "enumerate"
    gumbel_temperature: float = 0.5  # M2 with unlabelled=gumbel: the relaxation's temperature tau
    tie_embeddings: bool = False  # output projection shares the decoder embedding
    # > 0: word embeddings start U(-emb_init, emb_init), as He et al.'s and Li et al.'s code (0.1), instead
    # of PyTorch's N(0, 1). Matters most with tie_embeddings, where the table is also the output layer
    # and N(0, 1) rows give very large initial logits.
    emb_init: float = 0.0
    share_embedding: bool = False  # encoder and decoder use one embedding table (as the Sentence-VAE port)
    word_dropout: float = 0.0  # Bowman: decoder inputs replaced by <unk> with this probability (1 = inputless)
    emb_dropout: float = 0.0  # ordinary dropout on embeddings (encoder and decoder)
    # dropout on the encoder's embeddings alone; None: emb_dropout. 0 matches He et al.'s, Li et al.'s
    # and Zhu et al.'s code, which has no dropout in the encoder.
    enc_dropout: float | None = None
    out_dropout: float = 0.0  # dropout on decoder outputs before the projection
    logvar_min: float = -20.0  # log sigma^2 is clamped to [logvar_min, logvar_max]
    logvar_max: float = 10.0  # upper end of that clamp
    # Zhu et al. (2020), "A Batch Normalized Inference Network Keeps the KL Vanishing Away" (BN-VAE):
    # batch normalisation of mu with its scale fixed at gamma (not learned; the shift is learned).
    # Each mu_d then has mean beta_d and variance gamma^2 over the data, and since
    # KL = 1/2 sum_d (mu_d^2 + sigma_d^2 - log sigma_d^2 - 1) >= 1/2 sum_d mu_d^2, the expected KL
    # per sentence is >= 1/2 sum_d (gamma^2 + beta_d^2) >= latent_dim * gamma^2 / 2. None: off.
    bn_gamma: float | None = None
    vocab_size: int = 0  # filled in from the tokenizer

    @property
    def num_labels(self) -> int:
        """How many labels a conditional model has: ``len(id2label)``."""
        return len(self.id2label or {})

    def validate(self, p: list[str]) -> None:
        from .latents import LATENTS

        _choice(p, "model.cell", self.cell, ("lstm", "gru"))
        _choice(p, "model.latent", self.latent, tuple(LATENTS))
        _choice(p, "model.encoder", self.encoder, ("rnn", "gcnn"))
        _positive(p, "model.gcnn_layers", self.gcnn_layers)
        if self.gcnn_kernel < 1 or self.gcnn_kernel % 2 == 0:
            p.append(f"model.gcnn_kernel={self.gcnn_kernel!r} must be an odd number >= 1 (the convolution is centred)")
        _positive(p, "model.label_dim", self.label_dim)
        if self.id2label is not None and sorted(self.id2label) != list(range(len(self.id2label))):
            p.append(f"model.id2label must map the ids 0..K-1 to label names, got ids {sorted(self.id2label)[:10]}")
        if self.id2label is not None and len(set(self.id2label.values())) != len(self.id2label):
            p.append("model.id2label names a label twice; label names must be distinct")
        _choice(p, "model.unlabelled", self.unlabelled, ("enumerate", "gumbel"))
        _positive(p, "model.gumbel_temperature", self.gumbel_temperature)
        if self.classifier and not self.conditional:
            p.append("model.classifier (M2) needs model.conditional=true: the decoder is p(x|y, z)")
        if self.conditional and self.latent_dim == 0:
            p.append("model.conditional is set but model.latent_dim=0; the conditional VAE needs a latent")
        for name in ("emb_dim", "enc_hidden", "enc_layers", "dec_hidden", "dec_layers"):
            _positive(p, f"model.{name}", getattr(self, name))
        _positive(p, "model.latent_dim", self.latent_dim, allow_zero=True)
        _prob(p, "model.word_dropout", self.word_dropout)
        _prob(p, "model.emb_dropout", self.emb_dropout, closed=False)
        if self.enc_dropout is not None:
            _prob(p, "model.enc_dropout", self.enc_dropout, closed=False)
        _prob(p, "model.out_dropout", self.out_dropout, closed=False)
        if self.logvar_min >= self.logvar_max:
            p.append("model.logvar_min must be < model.logvar_max")
        _positive(p, "model.vocab_size", self.vocab_size, allow_zero=True)
        _positive(p, "model.emb_init", self.emb_init, allow_zero=True)
        _positive(p, "model.bn_gamma", self.bn_gamma)
        if self.bn_gamma is not None and self.latent_dim == 0:
            p.append("model.bn_gamma is set but model.latent_dim=0 (the LM has no posterior to normalise); "
                     "unset model.bn_gamma or give a latent_dim")
        if self.latent in ("gumbel", "vq"):
            self._validate_discrete(p)

    def _validate_discrete(self, p: list[str]) -> None:
        if self.latent_vars < 1:
            p.append(f"model.latent_vars={self.latent_vars!r} must be >= 1 (M, the number of codes per sentence)")
        if self.latent_classes < 2:
            p.append(f"model.latent_classes={self.latent_classes!r} must be >= 2 (K, the classes or codebook "
                     f"entries; one class carries no information)")
        if self.bn_gamma is not None:
            p.append(f"model.bn_gamma (BN-VAE) normalises Gaussian means; model.latent={self.latent!r} has none: "
                     f"unset it")
        _positive(p, "model.code_dim", self.code_dim)
        if self.latent == "gumbel":
            _positive(p, "model.gumbel_tau", self.gumbel_tau)
            _positive(p, "model.gumbel_tau_min", self.gumbel_tau_min)
            _positive(p, "model.gumbel_tau_decay", self.gumbel_tau_decay, allow_zero=True)
        else:
            _positive(p, "model.vq_beta", self.vq_beta, allow_zero=True)
            _prob(p, "model.vq_ema_decay", self.vq_ema_decay, closed=False)
            if self.vq_restart_window < 1:
                p.append(f"model.vq_restart_window={self.vq_restart_window!r} must be >= 1 (training steps an "
                         f"entry may go unused before it is re-seeded); turn restarts off with model.vq_restart=false")


@dataclass
class ObjectiveConfig:
    """Loss = rec + kl_weight(step) * KL', KL' the free-bits-adjusted KL (see objectives.py); how the
    updates are made: aggressive training and autoencoder pretraining (see collapse.py)."""

    kl_schedule: str = "constant"  # constant | linear | logistic | cyclical
    kl_weight: float = 1.0  # the weight reached (constant: always; beta-VAE when != 1)
    kl_start: float = 0.0  # linear: weight at step 0
    kl_warmup_steps: int = 10000  # linear: steps to reach kl_weight
    logistic_k: float = 0.0025  # logistic: slope (Bowman et al. 2016)
    logistic_x0: int = 2500  # logistic: midpoint step
    cycles: int = 4  # cyclical: number of cycles M over total_steps (Fu et al. 2019)
    cycle_ratio: float = 0.5  # cyclical: proportion R of each cycle spent increasing
    cycle_steps: int | None = None  # cyclical: total steps the cycles span (default: train.max_steps or epochs)
    free_bits: float = 0.0  # lambda in nats; 0 disables
    free_bits_mode: str = "kingma"  # kingma: batch-mean KL per dim clamped at lambda; li: per example and dim, masked
    # He et al. (2019), "Lagging Inference Networks and Posterior Collapse in Variational Autoencoders":
    # before every step, encoder-only updates (first on the step's batch, then on random training
    # batches) until their loss stops improving, then one decoder-only update on the step's batch;
    # switched off for good at the first validation MI below the previous one (measured after every
    # epoch, or every aggressive_mi_every steps). The encoder (encoder + posterior head) and decoder
    # are separate optimiser groups.
    aggressive: bool = False
    aggressive_max_inner: int = 100  # most encoder-only updates per step (theirs: 99)
    aggressive_window: int = 15  # every this many inner updates, stop if the mean loss per token of the
    #                              last window is above the previous window's (their text.py: 15); with
    #                              2 x window > aggressive_max_inner it never fires: always max_inner updates
    aggressive_mi_every: int = 0  # measure the validation MI every this many steps; 0: after every epoch (theirs)
    # Li et al. (2019), "A Surprisingly Effective Fix for Deep Latent Variable Modeling of Text via a
    # Simple Pretraining and Free-Bits": phase 1 trains an autoencoder (KL weight 0) for this many
    # steps, or until early stopping fires, whichever is first; phase 2 then goes back to the best
    # autoencoder on validation, restarts the KL schedule, the optimiser, learning rate and early
    # stopping, and trains the VAE (use free_bits_mode=li).
    pretrain_ae_steps: int = 0  # 0: no pretraining
    reset_decoder: bool = True  # at the start of phase 2, re-initialise the decoder (the encoder is kept)
    # beta-TCVAE (Chen et al. 2018): the KL term becomes KL + (tc_alpha - 1) MI + (tc_beta - 1) TC +
    # (tc_gamma - 1) dimension-wise KL, estimated on each minibatch (see objectives.py); on when any
    # weight differs from 1. alpha = gamma = 1, beta > 1 is beta-TCVAE; all 1 is the plain ELBO.
    tc_alpha: float = 1.0  # weight of the index-code mutual information
    tc_beta: float = 1.0  # weight of the total correlation
    tc_gamma: float = 1.0  # weight of the dimension-wise KL
    tc_estimator: str = "mws"  # log q(z) from a minibatch: mws (weighted) | mss (stratified sampling)
    # true: the KL weight schedule multiplies the extra terms too (ratios alpha : beta : gamma kept);
    # false: they weigh in at full strength from step 0 while the KL warms up, as the TC term does
    # in Chen et al.'s code without --beta-anneal
    tc_anneal: bool = True
    # > 0: log q(z) of the joint (not the per-dimension marginals) also sums over the detached posteriors
    # of the last this many training sentences, a first-in-first-out queue kept in checkpoints: in Z
    # dimensions a batch's sharp posteriors barely overlap and the batch-only estimate (0) falls far
    # below the split's TC (docs/disentangle.md). mws only; tc_queue + batch_size <= training sentences
    tc_queue: int = 0
    tc_queue_marginals: int = 192  # the queue's newest entries that the 1-D marginals log q(z_j) use too
    # M2 (model.classifier): Kingma et al.'s alpha, the weight of the classifier's cross-entropy on each
    # labelled example, in nats per sentence like the ELBO (their 0.1 N is for objectives summed over N)
    m2_alpha: float = 1.0

    def validate(self, p: list[str]) -> None:
        _choice(p, "objective.kl_schedule", self.kl_schedule, ("constant", "linear", "logistic", "cyclical"))
        _positive(p, "objective.kl_weight", self.kl_weight, allow_zero=True)
        _positive(p, "objective.kl_start", self.kl_start, allow_zero=True)
        _positive(p, "objective.kl_warmup_steps", self.kl_warmup_steps)
        _positive(p, "objective.logistic_k", self.logistic_k)
        _positive(p, "objective.cycles", self.cycles)
        if not 0.0 < self.cycle_ratio <= 1.0:
            p.append(f"objective.cycle_ratio={self.cycle_ratio!r} must be in (0, 1]")
        _positive(p, "objective.cycle_steps", self.cycle_steps)
        _positive(p, "objective.free_bits", self.free_bits, allow_zero=True)
        _choice(p, "objective.free_bits_mode", self.free_bits_mode, ("kingma", "li"))
        _positive(p, "objective.aggressive_max_inner", self.aggressive_max_inner)
        _positive(p, "objective.aggressive_window", self.aggressive_window)
        if self.aggressive_mi_every < 0:
            p.append(f"objective.aggressive_mi_every={self.aggressive_mi_every} must be >= 0 (0: check the "
                     f"validation MI after every epoch, as He et al.; N: every N training steps)")
        _positive(p, "objective.pretrain_ae_steps", self.pretrain_ae_steps, allow_zero=True)
        for name in ("tc_alpha", "tc_beta", "tc_gamma"):
            _positive(p, f"objective.{name}", getattr(self, name), allow_zero=True)
        _choice(p, "objective.tc_estimator", self.tc_estimator, ("mws", "mss"))
        _positive(p, "objective.tc_queue", self.tc_queue, allow_zero=True)
        if self.tc_queue and (self.tc_alpha, self.tc_beta, self.tc_gamma) == (1.0, 1.0, 1.0):
            p.append(f"objective.tc_queue={self.tc_queue} enlarges beta-TCVAE's estimate of log q(z), but "
                     f"tc_alpha, tc_beta and tc_gamma are all 1 (the plain ELBO, no estimate): set tc_beta or "
                     f"leave tc_queue at 0")
        _positive(p, "objective.tc_queue_marginals", self.tc_queue_marginals, allow_zero=True)
        if self.tc_queue and self.tc_queue_marginals > self.tc_queue:
            p.append(f"objective.tc_queue_marginals={self.tc_queue_marginals} is more than the queue holds "
                     f"(objective.tc_queue={self.tc_queue}); make it at most tc_queue")
        if self.tc_queue and self.tc_estimator != "mws":
            p.append(f"objective.tc_queue={self.tc_queue} needs objective.tc_estimator=mws: minibatch "
                     f"stratified sampling is defined over the batch alone")
        _positive(p, "objective.m2_alpha", self.m2_alpha, allow_zero=True)


@dataclass
class TrainConfig:
    """Optimisation, evaluation, checkpoints and stopping."""

    seed: int = 1234  # initialisation, batch order, dropout and reparameterisation noise
    batch_size: int = 32  # sentences per optimiser step (the global batch under torchrun)
    max_epochs: int = 30  # passes over the training split at most
    max_steps: int | None = None  # stop after this many optimiser steps (overrides epochs when reached first)
    max_minutes: float | None = None  # wall-clock budget per sitting: then validate (for best/), checkpoint, stop
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3  # learning rate
    momentum: float = 0.0  # sgd only
    weight_decay: float = 0.0  # L2 penalty of the optimiser
    grad_clip: float = 5.0  # max global grad norm; 0 disables
    eval_every: int = 0  # evaluate on valid every N steps; 0: at the end of every epoch
    lr_decay: float = 0.5  # multiply lr by this when valid loss does not improve for lr_patience evals
    lr_patience: int = 2  # evaluations without improvement tolerated: the next one decays
    max_decays: int = 5  # early stopping: stop after this many lr decays (0: never decay, never stop early)
    min_lr: float = 0.0  # decays never go below this
    checkpoint_every: int = 0  # also save a resumable checkpoint every N steps; 0: at every evaluation
    # also save one when this many minutes have passed since the last (long steps: aggressive training)
    checkpoint_minutes: float | None = None
    keep_checkpoints: int = 2  # resumable checkpoints kept in run/checkpoints
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    nonfinite: str = "stop"  # what a NaN/inf loss does: stop | skip (skip the step, stop after 10 in a row)
    progress: bool = True  # tqdm progress bar
    tensorboard: bool = False  # also write TensorBoard events (needs the tensorboard package)
    eval_samples: int = 1  # z samples per sentence for the ELBO during validation
    # training step arithmetic on a GPU: fp32 | bf16 | fp16 (autocast; fp16 with a gradient scaler)
    precision: str = "fp32"
    # M2 with data.labelled_per_class: the share of every batch drawn from the labelled examples (the
    # rest from the unlabelled ones); None: batches as they come (the labelled few are then rare)
    labelled_ratio: float | None = None

    def validate(self, p: list[str]) -> None:
        for name in ("batch_size", "max_epochs", "max_steps", "max_minutes", "lr", "eval_samples",
                     "keep_checkpoints", "checkpoint_minutes"):
            _positive(p, f"train.{name}", getattr(self, name))
        for name in ("momentum", "weight_decay", "grad_clip", "eval_every", "lr_patience", "max_decays",
                     "min_lr", "checkpoint_every"):
            _positive(p, f"train.{name}", getattr(self, name), allow_zero=True)
        if not -2**63 <= self.seed < 2**63:  # torch's generators take 64 bits; the run seeds them with seed + 1
            p.append(f"train.seed={self.seed!r} must be in [-2**63, 2**63) (a 64-bit seed)")
        _choice(p, "train.optimizer", self.optimizer, ("adam", "sgd"))
        _choice(p, "train.nonfinite", self.nonfinite, ("stop", "skip"))
        _choice(p, "train.precision", self.precision, ("fp32", "bf16", "fp16"))
        if self.labelled_ratio is not None and not 0.0 < self.labelled_ratio < 1.0:
            p.append(f"train.labelled_ratio={self.labelled_ratio!r} must be in (0, 1): a share of each batch")
        elif self.labelled_ratio is not None and self.batch_size < 2:
            p.append(f"train.labelled_ratio={self.labelled_ratio!r} needs train.batch_size >= 2 (each batch mixes "
                     f"at least one labelled and one unlabelled example), got {self.batch_size}")
        if self.min_lr > self.lr > 0:
            p.append(f"train.min_lr={self.min_lr!r} is above train.lr={self.lr!r}: a decay would raise the learning "
                     f"rate to it; make it at most train.lr")
        if not 0.0 < self.lr_decay <= 1.0:
            p.append(f"train.lr_decay={self.lr_decay!r} must be in (0, 1]")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:(0|[1-9][0-9]*)", self.device)):
            p.append(f"train.device={self.device!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N'")


@dataclass
class Config:
    """A complete, serialisable description of a training run."""

    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        self.validate()

    def validate(self) -> "Config":
        problems = _type_problems(self)  # a Config built in Python: its values are not coerced as a file's are
        if problems:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate(problems)
        o = self.objective
        if self.model.latent_dim == 0 and (o.aggressive or o.pretrain_ae_steps):
            problems.append("objective.aggressive / objective.pretrain_ae_steps need an encoder, but "
                            "model.latent_dim=0 (the LM); give a latent_dim or turn them off")
        if self.model.latent != "gaussian" and self.model.latent_dim and (
                o.aggressive or o.tc_alpha != 1 or o.tc_beta != 1 or o.tc_gamma != 1):
            problems.append(f"objective.aggressive and objective.tc_alpha/tc_beta/tc_gamma estimate mutual "
                            f"information and total correlation of a Gaussian posterior; model.latent="
                            f"{self.model.latent!r} is discrete: turn them off")
        if o.pretrain_ae_steps and self.train.max_steps and o.pretrain_ae_steps >= self.train.max_steps:
            problems.append(f"objective.pretrain_ae_steps={o.pretrain_ae_steps} leaves no VAE phase within "
                            f"train.max_steps={self.train.max_steps}; make it smaller")
        if self.model.classifier and (o.tc_alpha, o.tc_beta, o.tc_gamma) != (1.0, 1.0, 1.0):
            problems.append("objective.tc_alpha/tc_beta/tc_gamma (beta-TCVAE) do not apply to M2 "
                            "(model.classifier): its enumerated rows are not one sample per sentence")
        if not self.model.classifier and (self.data.labelled_per_class or self.train.labelled_ratio):
            problems.append("data.labelled_per_class / train.labelled_ratio choose M2's labelled examples; "
                            "set model.classifier=true and model.conditional=true, or unset them")
        if problems:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "Config":
        return _build(cls, d, source, "")

    def save(self, path: str | Path) -> None:
        """Write the config as JSON, with the layout's ``format_version`` and the ``textvae_version``;
        atomically, so a run killed while it writes keeps a whole config.json (or none) for --resume."""
        from .checkpoint import atomic_write

        atomic_write(path, json.dumps(saved_header() | self.to_dict(), indent=2) + "\n")


def _is_a(tp, value) -> bool:
    """Whether ``value`` is of the annotated type ``tp`` as a file would give it (an int is a float)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(arg, value) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_is_a(args[0], v) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_is_a(args[0], k) and _is_a(args[1], v) for k, v in value.items())
    if tp is type(None):
        return value is None
    if tp in (int, float):
        return isinstance(value, int if tp is int else (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_problems(cfg: "Config") -> list[str]:
    """Each section of ``cfg`` that is not its dataclass, and each key whose value is not of its type."""
    out = []
    for name, cls in typing.get_type_hints(Config).items():
        section = getattr(cfg, name)
        if not isinstance(section, cls):
            out.append(f"{name} must be a {cls.__name__}, got {section!r:.60}")
            continue
        for key, tp in typing.get_type_hints(cls).items():
            if not _is_a(tp, getattr(section, key)):
                written = tp.__name__ if isinstance(tp, type) else str(tp).replace("NoneType", "None")
                out.append(f"{name}.{key}={getattr(section, key)!r:.60} is not of type {written}")
    return out


def saved_header() -> dict:
    """What every config.json textvae writes begins with: the layout version and the library version."""
    return {"format_version": FORMAT_VERSION, "textvae_version": __version__}


@dataclass
class SampleConfig:
    """Generation settings, kept apart from model settings."""

    max_len: int = 50  # decoding steps at most, EOS included: a sentence without EOS by then is cut at max_len words
    temperature: float = 1.0  # softmax temperature of sampling (< 1: more conservative)
    top_p: float = 1.0  # nucleus sampling; 1 disables
    greedy: bool = False  # argmax decoding (temperature and top_p ignored)
    beam: int = 1  # beam size; > 1 uses beam search (deterministic)
    # poem form "LxN": N lines of L characters, "，" after odd lines and "。" after even lines and the
    # last; decoding is constrained to it and its length replaces max_len (see generate.py). None: free
    form: str | None = None

    def __post_init__(self):
        p: list[str] = []
        kinds = {"max_len": (numbers.Integral, "a whole number"), "beam": (numbers.Integral, "a whole number"),
                 "temperature": (numbers.Real, "a number"), "top_p": (numbers.Real, "a number"),
                 "greedy": (bool, "True or False"), "form": ((str, type(None)), "a string \"LxN\" or None")}
        wrong = {name for name, (kind, _) in kinds.items()
                 if not isinstance(getattr(self, name), kind)
                 or (kind is not bool and isinstance(getattr(self, name), bool))}  # True is no length
        p += [f"{name}={getattr(self, name)!r} must be {kinds[name][1]}" for name in kinds if name in wrong]
        if "max_len" not in wrong:
            _positive(p, "max_len", self.max_len)
        if "temperature" not in wrong:
            _positive(p, "temperature", self.temperature)
        if "top_p" not in wrong and not 0.0 < self.top_p <= 1.0:
            p.append(f"top_p={self.top_p!r} must be in (0, 1]")
        if "beam" not in wrong:
            _positive(p, "beam", self.beam)
        if self.form is not None and "form" not in wrong:
            from .poems import parse_form

            try:
                parse_form(self.form)
            except ConfigError as e:
                p.append(str(e))
        if p:
            raise ConfigError("invalid sampling settings: " + "; ".join(p))


# --------------------------------------------------------------------------- building from dicts

def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "None")


# numbers as an override wrote them (textvae.config_files.parse_overrides makes them)
class _WrittenInt(int):
    """A whole number from an override that keeps its text (``.text``) for a text key: YAML 1.1 reads
    ``010`` as 8 and ``1:30`` as 90, but data.splits.valid=010 means the split named '010'."""


class _WrittenFloat(float):
    """A number from an override that keeps its text (``.text``): data.dataset_config=1.10 is '1.10'."""


def _kind(value) -> str:
    return {_WrittenInt: "int", _WrittenFloat: "float"}.get(type(value), type(value).__name__)


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _coerce(tp, value, key: str, source: str):
    """Return ``value`` as type ``tp`` or raise a ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        candidates = [arg for arg in args if arg is not type(None)]
        if value in ("None", "none") and str not in candidates:  # Python's spelling, a string to YAML
            raise ConfigError(f"{source}: key {key!r} expects {' or '.join(map(_type_name, candidates))} or null, "
                              f"got the string {value!r}; YAML writes None as null (or ~): {key}=null")
        for arg in candidates:
            try:
                return _coerce(arg, value, key, source)
            except ConfigError:
                if len(candidates) == 1:
                    raise  # its own message is the most precise (e.g. which entry of a mapping)
        raise ConfigError(f"{source}: key {key!r} expects {' or '.join(_type_name(a) for a in args)}, "
                          f"got {value!r}")
    if origin is list:
        if isinstance(value, str):  # key=a,b on the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{source}: key {key!r} expects a list, got {value!r}")
        (item_type,) = typing.get_args(tp)
        return [_coerce(item_type, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key {key!r} expects a mapping, got {value!r}")
        key_type, value_type = typing.get_args(tp)
        return {_coerce(key_type, k, f"{key}.{k}", source): _coerce(value_type, v, f"{key}.{k}", source)
                for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, str):  # YAML 1.1 reads "1e3" as a string
            value = _number(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            value = _number(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value or abs(value) == float("inf"):
                raise ConfigError(f"{source}: key {key!r} must be a finite number, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return getattr(value, "text", None) or str(value)  # an override's number as written
        if isinstance(value, (bool, datetime.date)):  # YAML 1.1's yes/no/on/off and dates
            example = value if isinstance(value, datetime.date) else "yes"
            raise ConfigError(f"{source}: key {key!r} expects str, got {value!r} ({type(value).__name__}): YAML "
                              f"reads yes/no/on/off/true/false as true or false and YYYY-MM-DD as a date; for the "
                              f"text, quote it as written, e.g. {key}='{example}'")
    raise ConfigError(f"{source}: key {key!r} expects {_type_name(tp)}, got {value!r} ({_kind(value)})")


def read_format_version(meta: dict, source: str, error: type = ConfigError, default: int = 0) -> int:
    """``meta["format_version"]`` (``default`` when absent); an ``error`` naming ``source`` unless an int."""
    version = meta.get("format_version", default)
    if not isinstance(version, int) or isinstance(version, bool):
        raise error(f"{source}: 'format_version' must be a whole number, got {version!r}; "
                    f"the file is damaged or was not written by textvae")
    return version


def _upgrade_model(d: dict) -> dict:
    """A format-1 model section: ``num_labels`` is now ``len(id2label)``; the label names themselves
    were a top-level "labels" list of the model's config.json (``TextVAE.from_pretrained`` moves them)."""
    return {k: v for k, v in d.items() if k != "num_labels"}


# keys of older formats, rewritten before a section is built: section -> (the first format that needs no
# rewriting, the rewrite). Only a saved config.json says it is older; a config without format_version is
# written by hand in today's keys, so an old key there is an unknown one.
UPGRADES = {ModelConfig: (2, _upgrade_model)}
HEADER_KEYS = ("format_version", "textvae_version")  # top-level keys of a saved config.json


def _build(cls, d: dict, source: str, prefix: str, problems: list[str] | None = None, version: int | None = None):
    """``cls`` built from mapping ``d``. Every unknown key and wrong type is gathered (``problems``,
    shared by the nested sections) and raised at the end as one ConfigError; with problems in a
    Config, the sections that could be built are also validated, so bad values show up beside them.
    ``version``: the format of the keys (a Config reads its own ``format_version``; None: any, as a
    section from a model's config.json, whose reader upgrades by version itself)."""
    top = problems is None
    problems = [] if top else problems
    if not isinstance(d, dict):
        where = f"section {prefix.rstrip('.')!r}" if prefix else "the top level"
        problems.append(f"{source}: {where} must be a mapping of keys to values, got {d!r:.60}")
        return _raise_gathered(problems, source) if top else None
    if cls is Config:
        version = read_format_version(d, source, default=FORMAT_VERSION)
    if cls in UPGRADES and (version is None or version < UPGRADES[cls][0]):
        d = UPGRADES[cls][1](d)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in d if k not in names and not (cls is Config and k in HEADER_KEYS)]
    if unknown:
        problems.append(f"{source}: unknown key(s) {', '.join(repr(prefix + str(k)) for k in unknown)}; valid keys"
                        f"{' in ' + prefix.rstrip('.') if prefix else ''}: {', '.join(sorted(names))}")
    if cls is Config and version > FORMAT_VERSION:
        raise ConfigError(f"{source}: format_version {d['format_version']} is newer than this textvae "
                          f"understands ({FORMAT_VERSION}); upgrade textvae (pip install -U textvae)")
    kwargs = {}
    for k, v in d.items():
        if k in unknown or (cls is Config and k in HEADER_KEYS):
            continue
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            section = _build(tp, v, source, f"{prefix}{k}.", problems, version)
            if section is not None:  # None: not a mapping (a problem listed)
                kwargs[k] = section
            continue
        try:
            kwargs[k] = _coerce(tp, v, prefix + k, source)
        except ConfigError as e:
            problems.append(str(e))
    if cls is Config and problems:  # the values of the sections, checked too, before the one error
        for section in kwargs.values():
            section.validate(problems)
    if top and problems:
        _raise_gathered(problems, source)
    return cls(**kwargs)  # a section with bad keys is built from its good ones; a Config validates here


def _raise_gathered(problems: list[str], source: str):
    """One ConfigError for every problem found: the message itself when there is one, else a list
    (each without the ``source:`` prefix the heading names once)."""
    if len(problems) == 1:
        raise ConfigError(problems[0])
    lead = f"{source}: "
    items = [p[len(lead):] if p.startswith(lead) else p for p in problems]
    raise ConfigError(f"{source}: {len(items)} problems:\n  - " + "\n  - ".join(items))


def __getattr__(name: str):
    """``textvae.config.load_config`` and ``list_presets``, public names from before they moved to
    :mod:`textvae.config_files`; imported on first use, as that module imports this one."""
    if name in ("load_config", "list_presets"):
        from . import config_files

        return getattr(config_files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
