"""The sentence VAE of Bowman et al. (2016), "Generating Sentences from a Continuous Space".

Data flow, top to bottom::

    tokens (B, T) = BOS x_1 .. x_n EOS PAD..
      -> Encoder (encoders.py): embedding -> LSTM|GRU (packed) -> final hidden (B, H_enc)
         [or GatedCNNEncoder: embedding -> gated convolutions -> mean over real positions (B, H_enc)]
      -> Latent (textvae/latents/, chosen by ``model.latent``): posterior parameters from the
         encoder summary, z sampled with the noise of ``Latent.noise`` [gaussian: linear -> mu,
         logvar (B, Z), BN-VAE's fixed-scale batch norm on mu; z = mu + sigma * eps]
      -> Decoder: word dropout (<unk>) -> embedding [+ z] -> LSTM|GRU with initial state from z
         -> output projection on real tokens only -> reconstruction NLL per sentence

Conditional VAE (Sohn et al. 2015, ``model.conditional``): every example has a label y; its
embedding joins the encoder's final hidden state (q(z|x, y)) and z at the decoder (p(x|z, y): the
decoder's code is [z; e_y], see ``decoder_code``). The prior stays p(z|y) = N(0, I): a label-dependent
N(mu_y, I) is the same model reparameterised (z' = z - mu_y; every use of z in the decoder is affine,
so the shift becomes a label-dependent bias the label embedding already provides), and with N(0, I)
the KL, IW-NLL, MI and AU estimators stay as they are.

M2 (Kingma et al. 2014, ``model.classifier``): the conditional VAE plus a classifier q(y|x), the label
a latent variable where it is missing; its forward is :func:`textvae.m2.m2_forward`.

``forward`` returns the terms (reconstruction NLL per sentence, KL per dimension, any loss terms
of the latent family itself); the training loop decides how to weight them (see objectives.py). With ``latent_dim=0`` the same decoder is a
plain RNN language model, the baseline of the papers' tables.
"""

import json
import operator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from .config import FORMAT_VERSION, ModelConfig, SampleConfig, saved_header
from .encoders import ENCODERS, RNN, word_embedding
from .errors import CheckpointError
from .generate import eval_mode, generate
from .latents import Latent, build_latent

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def embed_labels(table: nn.Embedding, y: torch.Tensor) -> torch.Tensor:
    """Label embeddings (N, label_dim) of label ids y (N,), or of a distribution over the labels
    y (N, K) float (a Gumbel-softmax sample, see m2.py): the embeddings' mixture y @ E."""
    return y.to(table.weight.dtype) @ table.weight if y.is_floating_point() else table(y)


@dataclass
class VAEOutput:
    """What one forward pass computes. The loss is the trainer's business (objectives.vae_loss)."""

    rec: torch.Tensor  # (B,) reconstruction NLL in nats, summed over words + EOS
    kl: torch.Tensor  # (B, Z) KL(q(z|x) || p(z)) per dimension; (B, 0) for the LM
    params: tuple[torch.Tensor, ...]  # the posterior's parameters (gaussian: mu, logvar, each (B, Z))
    z: torch.Tensor  # (B, Z) the sample the decoder saw
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # the latent's own terms (Latent.extra_losses)

    @property
    def mu(self) -> torch.Tensor:
        """The Gaussian posterior's mean (B, Z): ``params[0]``."""
        return self.params[0]

    @property
    def logvar(self) -> torch.Tensor:
        """The Gaussian posterior's log-variance (B, Z): ``params[1]``."""
        return self.params[1]


def word_dropout(tokens: torch.Tensor, p: float, unk_id: int, keep: torch.Tensor) -> torch.Tensor:
    """Bowman et al. (2016) word dropout: replace tokens by <unk> with probability p.

    ``keep`` (same shape, bool) marks positions never replaced (BOS, padding). p = 1 gives the
    inputless decoder: it sees only BOS and <unk>s, so everything must come from z.
    """
    if p <= 0.0:
        return tokens
    drop = torch.rand(tokens.shape, device=tokens.device) < p
    return tokens.masked_fill(drop & ~keep, unk_id)


class Decoder(nn.Module):
    """LSTM|GRU language model whose initial state and (optionally) every input carry its code:
    z, or [z; label embedding] for the conditional VAE (:meth:`code`)."""

    def __init__(self, cfg: ModelConfig, z_dim: int | None = None):
        super().__init__()
        self.cfg = cfg
        z_dim = cfg.latent_dim if z_dim is None else z_dim  # what it reads of a code (Latent.decoder_dim)
        self.code_dim = z_dim + (cfg.label_dim if cfg.conditional else 0)
        if cfg.conditional:
            self.label_embedding = nn.Embedding(cfg.num_labels, cfg.label_dim)
        z_in = self.code_dim if cfg.z_to_input else 0
        self.embedding = word_embedding(cfg)
        self.dropout = nn.Dropout(cfg.emb_dropout)
        self.rnn = RNN[cfg.cell](cfg.emb_dim + z_in, cfg.dec_hidden, cfg.dec_layers, batch_first=True)
        self.out_dropout = nn.Dropout(cfg.out_dropout)
        self.use_z_state = self.code_dim > 0 and cfg.z_to_state
        if self.use_z_state:
            # z -> initial hidden state of every layer (and cell state for the LSTM)
            self.z_to_hidden = nn.Linear(self.code_dim, cfg.dec_layers * cfg.dec_hidden)
        if cfg.tie_embeddings:
            self.bottleneck = (nn.Linear(cfg.dec_hidden, cfg.emb_dim) if cfg.dec_hidden != cfg.emb_dim
                               else nn.Identity())
            self.proj = nn.Linear(cfg.emb_dim, cfg.vocab_size)
            self.proj.weight = self.embedding.weight
        else:
            self.bottleneck = nn.Identity()
            self.proj = nn.Linear(cfg.dec_hidden, cfg.vocab_size)

    def code(self, z: torch.Tensor | None, y: torch.Tensor | None) -> torch.Tensor | None:
        """What the decoder is conditioned on: z (N, Z), or [z; e_y] (N, Z + label_dim) when conditional."""
        if not self.cfg.conditional:
            return z
        return torch.cat([z, embed_labels(self.label_embedding, y)], dim=-1)

    def init_state(self, z: torch.Tensor | None, n: int, device) -> torch.Tensor | tuple | None:
        """Initial RNN state for n sequences; None (zeros) for the LM or without z_to_state."""
        if not self.use_z_state:
            return None
        L, H = self.cfg.dec_layers, self.cfg.dec_hidden
        c = self.z_to_hidden(z).view(n, L, H).transpose(0, 1).contiguous()  # (L, N, H)
        if self.cfg.cell == "lstm":
            return (torch.tanh(c), c)
        return torch.tanh(c)

    def inputs(self, tokens: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        emb = self.dropout(self.embedding(tokens))  # (N, T, E)
        if z is not None and self.cfg.z_to_input and self.code_dim > 0:
            emb = torch.cat([emb, z.unsqueeze(1).expand(-1, tokens.size(1), -1)], dim=-1)  # (N, T, E+code)
        return emb

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(self.bottleneck(self.out_dropout(hidden)))  # (..., V)


class TextVAE(nn.Module):
    """Bowman et al. (2016) sentence VAE (or, with ``latent_dim=0``, the RNN LM baseline).

    ``tokenizer`` is kept on the module (not a submodule) so the high-level helpers
    ``encode``/``sample``/``reconstruct``/``interpolate`` accept and return strings. ``labels``: the
    label names of a conditional model (``config.conditional``), in id order; they are stored in
    ``config.id2label`` (given here, they replace it) and saved with the model.
    """

    def __init__(self, config: ModelConfig, tokenizer=None, labels: list[str] | None = None):
        super().__init__()
        if config.vocab_size <= 0:
            if tokenizer is None:
                raise ValueError("ModelConfig.vocab_size is 0: pass a tokenizer or set vocab_size")
            config.vocab_size = tokenizer.vocab_size
        if config.conditional:
            if labels is not None:
                config.id2label = {i: str(x) for i, x in enumerate(labels)}
            if not config.id2label:
                raise ValueError("a conditional model (model.conditional) needs labels: pass labels=[...] "
                                 "or set ModelConfig.id2label")
            names = _label_names(config)
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate label names in {names[:20]}")
        self.config = config
        self.tokenizer = tokenizer
        self.extra_config: dict = {}  # e.g. {"data": {...}} from the training run, kept on save
        self.unk_id = getattr(tokenizer, "unk_id", 1)
        self.bos_id = getattr(tokenizer, "bos_id", 2)
        self.eos_id = getattr(tokenizer, "eos_id", 3)
        self.latent: Latent | None = None
        if config.latent_dim > 0:
            self.encoder = ENCODERS[config.encoder](config)
            cond = config.label_dim if config.conditional else 0
            if config.conditional:
                self.label_embedding = nn.Embedding(config.num_labels, config.label_dim)  # q(z|x, y)'s
            self.latent = build_latent(config, self.encoder.out_dim + cond)  # posterior head and prior
        self.decoder = Decoder(config, 0 if self.latent is None else self.latent.decoder_dim)
        if config.share_embedding and config.latent_dim > 0:
            self.encoder.embedding = self.decoder.embedding  # one table for both, as in the Sentence-VAE port
        self.classifier = None
        if config.classifier:  # Kingma et al. (2014) M2: q(y|x), see m2.py
            from .m2 import Classifier

            self.classifier = Classifier(config, config.num_labels)

    @property
    def latent_dim(self) -> int:
        """The size of a code z (``Latent.dim``; gumbel: M K one-hot, vq: M D); 0 for the LM."""
        return 0 if self.latent is None else self.latent.dim

    @property
    def is_lm(self) -> bool:
        return self.config.latent_dim == 0

    @property
    def conditional(self) -> bool:
        return self.config.conditional

    @property
    def label_names(self) -> list[str] | None:
        """A conditional model's label names in id order (``config.id2label``); None otherwise."""
        return _label_names(self.config) if self.conditional else None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ the probabilistic model

    def _check_labels(self, y: torch.Tensor | None, n: int) -> None:
        soft = y is not None and y.is_floating_point() and y.shape == (n, self.config.num_labels)
        if self.conditional and (y is None or (y.shape != (n,) and not soft)):
            raise ValueError(f"this model is conditional: pass y, the (N,) = ({n},) ids of the examples' labels "
                             f"(model.label_ids(names)); got {None if y is None else tuple(y.shape)}")
        if not self.conditional and y is not None:
            raise ValueError("labels y were passed to a model that is not conditional (model.conditional=false)")

    def posterior_params(self, tokens: torch.Tensor, lengths: torch.Tensor,
                         y: torch.Tensor | None = None,
                         summary: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """The parameters of q(z|x) (q(z|x, y) for a conditional model, y (B,) label ids), as the
        latent defines them (gaussian: mu, logvar, each (B, Z)). The LM returns two (B, 0) tensors.
        ``summary``: the encoder's output for these rows when it is already computed (the label joins
        after the encoder, so one summary of a sentence serves all its labels: M2's enumeration)."""
        if self.is_lm:
            empty = tokens.new_zeros((tokens.size(0), 0), dtype=torch.float32)
            return empty, empty
        self._check_labels(y, tokens.size(0))
        h = self.encoder(tokens, lengths) if summary is None else summary  # (B, H_enc)
        if self.conditional:
            h = torch.cat([h, embed_labels(self.label_embedding, y)], dim=-1)  # (B, H_enc + label_dim)
        return self.latent.posterior(h)

    def encode_posterior(self, tokens: torch.Tensor, lengths: torch.Tensor,
                         y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) = N(mu, diag(exp(logvar))); both (B, Z), for the Gaussian latent (the LM: (B, 0)).
        A conditional model needs the labels ``y`` (B,): q(z|x, y). Other latents: :meth:`posterior_params`."""
        if self.latent is not None and self.latent.discrete:
            from .errors import TextVAEError

            raise TextVAEError(f"a posterior mean and log-variance belong to the Gaussian latent; this model's is "
                               f"model.latent={self.config.latent!r}: use posterior_params or encode_points")
        mu, logvar = self.posterior_params(tokens, lengths, y)
        return mu, logvar

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The noise of n posterior samples (n, noise_dim), on the CPU, for :meth:`forward`; (n, 0) for the LM."""
        return torch.zeros(n, 0) if self.is_lm else self.latent.noise(n, generator)

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """n codes z ~ p(z), (n, Z) on the model's device; None for the LM."""
        return None if self.is_lm else self.latent.prior_sample(n, generator).to(self.device)

    def log_likelihood(self, tokens: torch.Tensor, lengths: torch.Tensor,
                       z: torch.Tensor | None, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x|z) per sentence, summed over the n words and EOS (BOS is given, never predicted).

        tokens (N, T), lengths (N,) with BOS and EOS counted, z (N, Z) or None for the LM; y (N,)
        label ids for a conditional model (p(x|z, y)).
        Logits and softmax are computed only for real target tokens (packed), not for padding.
        """
        n = tokens.size(0)
        z = self.decoder_code(z, y)  # (N, Z [+ label_dim])
        inp = tokens[:, :-1]  # (N, T-1) decoder inputs: BOS x_1 .. x_n
        if self.training and self.config.word_dropout > 0:
            keep = torch.zeros_like(inp, dtype=torch.bool)
            keep[:, 0] = True  # BOS is always seen
            inp = word_dropout(inp, self.config.word_dropout, self.unk_id, keep)
        steps = (lengths - 1).cpu()  # targets per sentence: x_1 .. x_n EOS
        packed = pack_padded_sequence(self.decoder.inputs(inp, z), steps, batch_first=True, enforce_sorted=False)
        out, _ = self.decoder.rnn(packed, self.decoder.init_state(z, n, tokens.device))
        # Pack targets and sentence ids the same way so row i of out.data predicts target row i.
        target = pack_padded_sequence(tokens[:, 1:], steps, batch_first=True, enforce_sorted=False).data
        owner = torch.arange(n, device=tokens.device).unsqueeze(1).expand(-1, tokens.size(1) - 1)
        owner = pack_padded_sequence(owner, steps, batch_first=True, enforce_sorted=False).data
        nll = F.cross_entropy(self.decoder.logits(out.data), target, reduction="none")  # (sum steps,)
        return -torch.zeros(n, device=tokens.device, dtype=nll.dtype).index_add_(0, owner, nll)  # (N,)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, eps: torch.Tensor | None = None,
                y: torch.Tensor | None = None) -> VAEOutput:
        """One sample z ~ q(z|x) per sentence; returns the terms of the objective (:class:`VAEOutput`).

        ``eps`` (B, noise_dim) is the noise of the sample (:meth:`noise`; drawn here when None): the
        trainer draws it for the whole global batch so that data-parallel runs see the same noise.
        ``y`` (B,): label ids, for a conditional model only. A model with a classifier (M2,
        ``model.classifier``) takes y = -1 for an unlabelled example: :func:`textvae.m2.m2_forward`."""
        if self.classifier is not None:
            from .m2 import m2_forward

            return m2_forward(self, tokens, lengths, eps, y)
        return self.vae_terms(tokens, lengths, eps, y)

    def vae_terms(self, tokens: torch.Tensor, lengths: torch.Tensor, eps: torch.Tensor | None = None,
                  y: torch.Tensor | None = None, summary: torch.Tensor | None = None,
                  weight: torch.Tensor | None = None) -> VAEOutput:
        """:meth:`forward` of a model without a classifier: the (conditional) VAE's terms for the
        given labels y, ids (B,) or label distributions (B, K); ``summary`` as in :meth:`posterior_params`;
        ``weight`` (B,): each row's share in the latent's own terms (:meth:`Latent.extra_losses`)."""
        params = self.posterior_params(tokens, lengths, y, summary)
        if self.is_lm:
            z, kl, losses = params[0], params[0], {}
        else:
            eps = self.latent.noise(tokens.size(0)).to(tokens.device) if eps is None else eps
            z = self.latent.sample(params, eps)
            kl, losses = self.latent.kl(params), self.latent.extra_losses(params, z, weight)
        rec = -self.log_likelihood(tokens, lengths, None if self.is_lm else z, y)
        return VAEOutput(rec=rec, kl=kl, params=params, z=z, losses=losses)

    def decoder_code(self, z: torch.Tensor | None, y: torch.Tensor | None = None) -> torch.Tensor | None:
        """What the decoder is conditioned on, the ``z`` that ``step`` and ``init_state`` take: z itself,
        or [z; e_y] for a conditional model (y (N,) label ids)."""
        self._check_labels(y, 0 if z is None else z.size(0))
        if z is not None and self.latent is not None:
            z = self.latent.decoder_input(z)  # the code as the decoder reads it (gumbel: class embeddings)
        return self.decoder.code(z, None if y is None else y.to(z.device))

    def step(self, prev: torch.Tensor, state, z: torch.Tensor | None):
        """One decoding step for N sequences: prev (N,) token ids -> logits (N, V), new state.
        ``z``: the decoder's code (:meth:`decoder_code`; z itself unless the model is conditional)."""
        out, state = self.decoder.rnn(self.decoder.inputs(prev.unsqueeze(1), z), state)
        return self.decoder.logits(out[:, 0]), state

    def init_state(self, z: torch.Tensor | None, n: int):
        return self.decoder.init_state(z, n, self.device)

    # ------------------------------------------------------------------ strings in, strings out

    def _tokenize(self, sentences: list[str]):
        """Token ids (B, T) and lengths (B,) of sentences for the encoder. Words outside the
        vocabulary (they become ``<unk>``) and sentences longer than the model's ``data.max_len``
        (cut to it) each give a UserWarning naming them: ``warnings.filterwarnings`` silences them."""
        import warnings

        from .config import DataConfig
        from .batching import collate_ids

        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer; use the tensor methods")
        saved = self.extra_config.get("data") or {}
        max_len = saved.get("max_len") or DataConfig().max_len
        unk, ids, unknown, cut = self.tokenizer.unk_id, [], [], []
        for n, s in enumerate(sentences, 1):
            if not isinstance(s, str):
                raise TypeError(f"sentence {n} is {type(s).__name__} {s!r:.40}, not a string")
            i = self.tokenizer.encode(s)
            if not i:
                raise ValueError(f"sentence {s!r} is empty after tokenisation; give at least one token")
            if unk in i and self.tokenizer.kind == "word":  # one id per whitespace-separated word
                words = (s.lower() if self.tokenizer.lowercase else s).split()
                names = sorted({w for w, t in zip(words, i) if t == unk and w != "<unk>"})
                if names:
                    more = " ..." if len(names) > 10 else ""
                    unknown.append(f"sentence {n}: {', '.join(map(repr, names[:10]))}{more}")
            elif unk in i:
                unknown.append(f"sentence {n}: {i.count(unk)} piece(s)")
            if len(i) > max_len:
                cut.append(f"sentence {n} ({len(i)} tokens)")
                i = i[:max_len]
            ids.append(i)
        for problem, items in (("unknown word(s) read as <unk> (the model was trained without them)", unknown),
                               (f"cut to the model's maximum length, data.max_len={max_len}"
                                f"{'' if saved.get('max_len') else ' (the default)'}", cut)):
            if items:
                more = f"; and {len(items) - 5} more sentences" if len(items) > 5 else ""
                warnings.warn(f"{problem}: {'; '.join(items[:5])}{more}", UserWarning, stacklevel=2)
        tokens, lengths = collate_ids(ids, self.bos_id, self.eos_id)
        return tokens.to(self.device), lengths.to(self.device)

    def label_ids(self, labels: str | list[str] | None, n: int) -> torch.Tensor | None:
        """Ids (n,) of a conditional model's labels: one name for all n, or a list of n names.
        None for a model that is not conditional (a label given to it is an error)."""
        from .errors import ConfigError

        if not self.conditional:
            if labels is not None:
                raise ConfigError("this model is not conditional (it was trained without model.conditional): "
                                  "it takes no label")
            return None
        if labels is None:
            raise ConfigError(f"this model is conditional: give a label, one of {self.label_names[:20]}")
        names = [labels] * n if isinstance(labels, str) else list(labels)
        if len(names) != n:
            raise ConfigError(f"{len(names)} labels for {n} sentences; give one label, or one per sentence")
        index = {name: i for i, name in enumerate(self.label_names)}
        unknown = sorted({str(x) for x in names if x not in index})
        if unknown:
            raise ConfigError(f"unknown label(s) {unknown[:5]}; this model's labels are {self.label_names[:20]}")
        return torch.tensor([index[x] for x in names], dtype=torch.long, device=self.device)

    @torch.no_grad()
    def encode(self, sentences: list[str], label: str | list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance (each (B, Z)) for a list of sentences (and, for a
        conditional model, their label: one for all, or one per sentence)."""
        sentences = _sentence_list(sentences)
        with eval_mode(self):  # the training flag comes back on an error too
            return self.encode_posterior(*self._tokenize(sentences), self.label_ids(label, len(sentences)))

    @torch.no_grad()
    def classify(self, sentences: list[str], batch_size: int = 64) -> tuple[list[str], torch.Tensor]:
        """Labels predicted by an M2 model's classifier q(y|x) (``model.classifier``): the most probable
        label of each sentence and the probabilities q(y|x) (B, K) in ``label_names`` order (CPU)."""
        from .errors import ConfigError

        if self.classifier is None:
            raise ConfigError("this model has no classifier q(y|x): train one with model.classifier=true "
                              "(Kingma et al.'s M2, docs/semisup.md), or fit one on its posterior means "
                              "(scripts/semisup.py, M1)")
        sentences, probs = _sentence_list(sentences), []
        with eval_mode(self):
            for i in range(0, len(sentences), batch_size):
                probs.append(self.classifier(*self._tokenize(sentences[i:i + batch_size])).softmax(-1).float().cpu())
        probs = torch.cat(probs) if probs else torch.zeros(0, self.config.num_labels)
        return [self.label_names[k] for k in probs.argmax(-1).tolist()], probs

    @torch.no_grad()
    def encode_points(self, sentences: list[str], label: str | list[str] | None = None) -> torch.Tensor:
        """The latent's point code (B, Z) of each sentence's posterior (gaussian: the mean), in eval mode."""
        sentences = _sentence_list(sentences)
        with eval_mode(self):
            params = self.posterior_params(*self._tokenize(sentences), self.label_ids(label, len(sentences)))
        return params[0] if self.is_lm else self.latent.point(params)

    def decode(self, z: torch.Tensor | None, sample: SampleConfig | None = None, n: int | None = None,
               generator: torch.Generator | None = None, label: str | list[str] | None = None) -> list[str]:
        """Decode latent codes (N, Z) to strings (for the LM, z=None and n sentences); a conditional
        model decodes p(x|z, label)."""
        y = self.label_ids(label, z.size(0) if z is not None else n)
        ids = generate(self, z, sample or SampleConfig(), n=n, generator=generator, labels=y)
        return [self.tokenizer.decode(s) for s in ids]

    def sample(self, n: int, sample: SampleConfig | None = None, seed: int | None = None,
               label: str | list[str] | None = None) -> list[str]:
        """n sentences from the prior: z ~ p(z) (gaussian: N(0, I)), then decode. A conditional model
        decodes them with ``label`` (without one: the labels in turn, sample i with label i mod K)."""
        n = _count("n", n)
        g = _generator(seed)
        z = self.prior_sample(n, g)
        if self.conditional and label is None:
            label = [self.label_names[i % len(self.label_names)] for i in range(n)]
        return self.decode(z, sample, n=n, generator=g, label=label)

    def reconstruct(self, sentences: list[str], sample: SampleConfig | None = None,
                    label: str | list[str] | None = None, seed: int | None = None) -> list[str]:
        """Greedy decoding (unless ``sample`` says otherwise; ``seed``, default 0, seeds its sampling) from
        the latent's point code of each posterior (gaussian: the mean); a conditional model encodes and
        decodes with ``label`` (one for all, or one per sentence)."""
        return self.decode(self.encode_points(sentences, label), sample or SampleConfig(greedy=True),
                           generator=_generator(seed), label=label)

    def interpolate(self, a: str, b: str, steps: int, sample: SampleConfig | None = None,
                    label: str | None = None, path: str = "line", seed: int | None = None) -> list[str]:
        """Homotopy (Bowman et al. 2016, sec. 5): decode steps + 2 points on the latent's path
        between the path points of a and b (``Latent.path_point``; gaussian: evenly spaced between
        the posterior means; vq: the vectors before quantisation, each step quantised; gumbel: the
        log-probabilities, each step's arg max), endpoints included (a conditional model: all with
        ``label``). ``path="codes"``: the code homotopy of a discrete latent (``Latent.swap``), a's
        M codes replaced by b's one position at a time (M + 1 sentences; ``steps`` unused). Greedy
        unless ``sample`` says otherwise; ``seed`` (default 0) seeds its sampling."""
        steps = self._checked_steps(steps, path)
        with eval_mode(self):
            params = self.posterior_params(*self._tokenize([a, b]), self.label_ids(label, 2))
            ends = self.latent.point(params) if path == "codes" else self.latent.path_point(params)
        return self._homotopy(ends, steps, path, sample, label, _generator(seed))

    def interpolate_prior(self, steps: int, sample: SampleConfig | None = None, label: str | None = None,
                          path: str = "line", seed: int | None = None) -> list[str]:
        """The homotopy of :meth:`interpolate` between two codes drawn from the prior; ``seed`` (default 0)
        seeds the two draws, then the sampling."""
        steps = self._checked_steps(steps, path)
        g = _generator(seed)
        return self._homotopy(self.prior_sample(2, g), steps, path, sample, label, g)

    def _checked_steps(self, steps, path: str) -> int:
        """``steps`` as an int, once the model and ``path`` are known to allow a homotopy."""
        if self.is_lm:
            raise ValueError("the language model (latent_dim=0) has no latent space to interpolate in")
        if path not in ("line", "codes"):
            raise ValueError(f"path={path!r} is not one of 'line', 'codes' (the straight path, or a discrete "
                             f"latent's code homotopy)")
        return _count("steps", steps)

    def _homotopy(self, ends: torch.Tensor, steps: int, path: str, sample: SampleConfig | None, label,
                  generator: torch.Generator) -> list[str]:
        """Decode the path between the two rows of ``ends`` (path points; codes for ``path="codes"``)."""
        with eval_mode(self):
            codes = (self.latent.swap(ends[0], ends[1]) if path == "codes"
                     else self.latent.interpolate(ends[0], ends[1], steps))
        return self.decode(codes, sample or SampleConfig(greedy=True), generator=generator, label=label)

    # ------------------------------------------------------------------ model directories

    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> None:
        """Write config.json, model.safetensors and the tokenizer files into ``directory``.

        ``extra`` sections (the trainer stores its ``data`` config) go into config.json too."""
        from safetensors.torch import save

        from .checkpoint import atomic_write

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        module = getattr(self, "_orig_mod", self)  # unwrap torch.compile
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        for alias in shared_weights(self.config):
            state.pop(alias, None)  # the same tensor as another key; safetensors stores it once
        atomic_write(d / WEIGHTS_FILE, save(state, metadata={"format": "pt"}))
        meta = {**saved_header(), "model": asdict(self.config),
                "tokenizer_fingerprint": self.tokenizer.fingerprint() if self.tokenizer else None,
                **(extra or self.extra_config)}
        if getattr(self.latent, "prior", None) is not None:  # a VQ model's fitted code prior, its own file
            from .code_prior import save_code_prior

            meta["code_prior"] = save_code_prior(self.latent.prior, d)
        atomic_write(d / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
        if self.tokenizer is not None:
            self.tokenizer.save(d)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu", revision: str | None = None,
                        cache_dir: str | Path | None = None, token: str | bool | None = None) -> "TextVAE":
        """Load a model directory, a run directory (its best checkpoint) or a Hugging Face Hub repo
        id ``owner/name`` (at ``revision``; through huggingface_hub's cache, ``cache_dir``; needs
        ``pip install 'textvae[hub]'``). A local path that exists is always read as one. Never unpickles."""
        from . import hub

        if not hub.is_repo_id(directory):
            if revision is not None:
                raise CheckpointError(f"revision={revision!r} is for hub repos, but {directory} is a local path")
            return cls._from_dir(directory, device)
        snapshot = hub.download(str(directory), revision, cache_dir, token)
        try:
            return cls._from_dir(snapshot, device)
        except CheckpointError as e:
            raise CheckpointError(f"{hub.describe(str(directory), revision)}: {e}") from None

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Upload this model (weights, config, tokenizer files, a generated model card) to hub repo
        ``repo_id``; the keyword arguments (``metrics``, ``revision``, ``private``, ``token``, ...)
        are :func:`textvae.hub.push_to_hub`'s. Returns the commit URL."""
        from .hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    @classmethod
    def _from_dir(cls, directory: str | Path, device: str | torch.device = "cpu") -> "TextVAE":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from .config import _build, read_format_version
        from .tokenizers import load_tokenizer

        d = resolve_model_dir(directory)
        try:
            meta = json.loads((d / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{d / CONFIG_FILE} is missing or not valid JSON ({e}); "
                                  f"is {d} a textvae model directory?") from None
        if not isinstance(meta, dict) or "model" not in meta:
            raise CheckpointError(f"{d / CONFIG_FILE} has no 'model' section; is {d} a textvae model directory?")
        version = read_format_version(meta, str(d / CONFIG_FILE), CheckpointError)
        if version > FORMAT_VERSION:
            raise CheckpointError(f"{d} was written by a newer textvae (format_version "
                                  f"{meta['format_version']} > {FORMAT_VERSION}); upgrade textvae to load it")
        if version < 2 and isinstance(meta["model"], dict):
            meta["model"] = _labels_into_model(meta, d / CONFIG_FILE)
        cfg = _build(ModelConfig, meta["model"], str(d / CONFIG_FILE), "model.")
        problems: list[str] = []
        cfg.validate(problems)  # _build checks types only; values as a training config would
        if problems:
            raise CheckpointError(f"{d / CONFIG_FILE}: invalid model settings: {'; '.join(problems)}; the file is "
                                  f"damaged or was edited: re-save or re-download the model")
        for key, kind, what in (("tokenizer_fingerprint", str, "a string"), ("code_prior", dict, "a mapping"),
                                ("data", dict, "a mapping")):
            if meta.get(key) is not None and not isinstance(meta[key], kind):
                raise CheckpointError(f"{d / CONFIG_FILE}: '{key}' must be {what} or null, got {meta[key]!r:.60}; "
                                      f"the file is damaged: re-save or re-download the model")
        tokenizer = load_tokenizer(d)
        fp = meta.get("tokenizer_fingerprint")
        if fp is not None and tokenizer.fingerprint() != fp:
            raise CheckpointError(f"the tokenizer files in {d} do not match the model's config.json "
                                  f"(fingerprint {tokenizer.fingerprint()[:12]} != {fp[:12]}); "
                                  f"the directory mixes files from different models")
        if tokenizer.vocab_size != cfg.vocab_size:
            raise CheckpointError(f"tokenizer in {d} has {tokenizer.vocab_size} tokens but the model "
                                  f"expects {cfg.vocab_size}; the directory mixes files from different models")
        if cfg.conditional and not cfg.id2label:
            raise CheckpointError(f"{d / CONFIG_FILE}: the model is conditional but 'model.id2label' is missing; "
                                  f"the file is damaged or incomplete")
        model = cls(cfg, tokenizer)
        model.extra_config = {k: v for k, v in meta.items() if k == "data"}
        try:
            state = load_file(str(d / WEIGHTS_FILE))
        except FileNotFoundError:
            raise CheckpointError(f"{d / WEIGHTS_FILE} is missing") from None
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{d / WEIGHTS_FILE} is not a valid safetensors file ({e}); "
                                  f"textvae never unpickles weights. Re-download or re-train the model.") from None
        state = upgrade_state_dict(state, cfg)
        own = model.state_dict()  # load_state_dict raises a bare RuntimeError on a shape mismatch
        resized = [f"{k} {tuple(v.shape)} (config.json makes {tuple(own[k].shape)})" for k, v in state.items()
                   if k in own and v.shape != own[k].shape]
        if resized:
            raise CheckpointError(f"{d / WEIGHTS_FILE} does not fit the config: {', '.join(resized[:5])}"
                                  f"{' ...' if len(resized) > 5 else ''}; the directory mixes files from "
                                  f"different models: copy the weights and config.json of one save_pretrained")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{d / WEIGHTS_FILE} does not fit the config: missing {missing[:5]}, "
                                  f"unexpected {unexpected[:5]}")
        if meta.get("code_prior") is not None:
            from .code_prior import load_code_prior

            if model.is_lm or cfg.latent != "vq":
                raise CheckpointError(f"{d / CONFIG_FILE} names a code prior, but the model is not a VQ model")
            model.latent.attach_prior(load_code_prior(d, meta["code_prior"], model.latent))
        return model.to(device).eval()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def resolve_model_dir(path: str | Path) -> Path:
    """A model directory, or a run directory whose ``best`` (else newest checkpoint) is used."""
    d = Path(path)
    if not d.exists():
        raise CheckpointError(f"model directory {d} does not exist; pass a run directory (textvae train "
                              f"--out DIR) or a model directory with {CONFIG_FILE}")
    if (d / CONFIG_FILE).is_file() and (d / WEIGHTS_FILE).exists():
        return d
    for candidate in (d / "best", d / "best.old"):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    ckpts = sorted((d / "checkpoints").glob("step-*[0-9]")) if (d / "checkpoints").is_dir() else []
    if ckpts:
        return ckpts[-1]
    if (d / "metrics.jsonl").is_file():  # a run directory (textvae train --out d) killed before its first save
        raise CheckpointError(f"{d} is a run directory that has saved no model yet (no best/ or checkpoints/): it "
                              f"stopped before its first checkpoint; run its training command again with --resume "
                              f"(textvae train ... --out {d} --resume) to train it from the start")
    if (d / CONFIG_FILE).is_file():
        raise CheckpointError(f"{d / WEIGHTS_FILE} is missing: {d} has a {CONFIG_FILE} but no weights; copy the "
                              f"weights file from the model it came with, or re-save the model")
    raise CheckpointError(f"{d} is neither a model directory (no {CONFIG_FILE} + {WEIGHTS_FILE}) nor a run "
                          f"directory with a best/ or checkpoints/ model")


def _generator(seed: int | None) -> torch.Generator:
    """The CPU generator of a call's sampling noise (seed 0 unless given): the same seed, the same text on any device."""
    return torch.Generator(device="cpu").manual_seed(0 if seed is None else seed)


def _count(name: str, value) -> int:
    """``value`` (an int, or a numpy or 0-d tensor integer) as an int >= 0; else a ValueError naming ``name``."""
    try:
        n = -1 if isinstance(value, bool) else operator.index(value)
    except TypeError:
        n = -1
    if n < 0:
        raise ValueError(f"{name}={value!r} must be a whole number >= 0")
    return n


def _sentence_list(sentences) -> list:
    """``sentences`` as a list; one string is refused, as list() would make each character a sentence."""
    if isinstance(sentences, str):
        raise TypeError(f"give a list of sentences, e.g. [{sentences[:40]!r}], not one string")
    return list(sentences)


def _label_names(cfg: ModelConfig) -> list[str]:
    """``cfg.id2label`` as a list in id order."""
    return [cfg.id2label[i] for i in range(cfg.num_labels)]


def _labels_into_model(meta: dict, source: Path) -> dict:
    """A format-1 model config.json kept a conditional model's label names in a top-level "labels"
    list beside ``model.num_labels``; return its model section with them as ``id2label``."""
    model = dict(meta["model"])
    if not model.get("conditional") or "id2label" in model:
        return model
    labels, count = meta.get("labels"), model.get("num_labels")
    if not (isinstance(labels, list) and len(labels) == count and all(isinstance(x, str) for x in labels)):
        raise CheckpointError(f"{source}: the model is conditional but 'labels' is not a list of its "
                              f"{count} label names; the file is damaged or incomplete")
    model["id2label"] = dict(enumerate(labels))
    return model


# State-dict keys of format 1 -> today's (the Gaussian latent moved into textvae.latents).
RENAMED_KEYS = {"posterior.": "latent.head.", "mu_bn.": "latent.mu_bn."}


def upgrade_state_dict(state: dict, cfg: ModelConfig) -> dict:
    """Make a loaded state dict (a model directory's or a resumable checkpoint's, of any format
    version) fit today's :class:`TextVAE`: rename the keys of older layouts (:data:`RENAMED_KEYS`)
    and put back the aliases of :func:`shared_weights`, which are saved once. In place; returns ``state``."""
    for key in list(state):
        for old, new in RENAMED_KEYS.items():
            if key.startswith(old):
                state[new + key[len(old):]] = state.pop(key)
    for alias, owner in shared_weights(cfg).items():
        if owner in state:
            state.setdefault(alias, state[owner])
    return state


def shared_weights(cfg: ModelConfig) -> dict[str, str]:
    """State-dict keys that are the same tensor as another key (tied or shared embeddings):
    alias -> owner. Saved once, under the owner's name."""
    out = {}
    if cfg.tie_embeddings:
        out["decoder.proj.weight"] = "decoder.embedding.weight"
    if cfg.share_embedding and cfg.latent_dim > 0:
        out["encoder.embedding.weight"] = "decoder.embedding.weight"
    return out
