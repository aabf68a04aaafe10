"""The sentence VAE of Bowman et al. (2016), "Generating Sentences from a Continuous Space".

Data flow, top to bottom::

    tokens (B, T) = BOS x_1 .. x_n EOS PAD..
      -> Encoder: embedding -> LSTM|GRU (packed) -> final hidden (B, H_enc)
      -> Posterior head: linear -> mu, logvar (B, Z); z = mu + sigma * eps
      -> Decoder: word dropout (<unk>) -> embedding [+ z] -> LSTM|GRU with initial state from z
         -> output projection on real tokens only -> reconstruction NLL per sentence

``forward`` returns the terms (reconstruction NLL per sentence, KL per dimension); the training
loop decides how to weight them (see objectives.py). With ``latent_dim=0`` the same decoder is a
plain RNN language model, the baseline of the papers' tables.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from .config import FORMAT_VERSION, ModelConfig, SampleConfig
from .errors import CheckpointError

RNN = {"lstm": nn.LSTM, "gru": nn.GRU}
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class VAEOutput:
    """What one forward pass computes. The loss is the trainer's business."""

    rec: torch.Tensor  # (B,) reconstruction NLL in nats, summed over words + EOS
    kl: torch.Tensor  # (B, Z) KL(q(z|x) || N(0, I)) per dimension; (B, 0) for the LM
    mu: torch.Tensor  # (B, Z)
    logvar: torch.Tensor  # (B, Z)
    z: torch.Tensor  # (B, Z) the sample the decoder saw


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per dimension, in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def word_dropout(tokens: torch.Tensor, p: float, unk_id: int, keep: torch.Tensor) -> torch.Tensor:
    """Bowman et al. (2016) word dropout: replace tokens by <unk> with probability p.

    ``keep`` (same shape, bool) marks positions never replaced (BOS, padding). p = 1 gives the
    inputless decoder: it sees only BOS and <unk>s, so everything must come from z.
    """
    if p <= 0.0:
        return tokens
    drop = torch.rand(tokens.shape, device=tokens.device) < p
    return tokens.masked_fill(drop & ~keep, unk_id)


class Encoder(nn.Module):
    """Embedding -> (bi)LSTM|GRU over the whole sentence -> final hidden state of the top layer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.emb_dim, padding_idx=0)
        self.dropout = nn.Dropout(cfg.emb_dropout)
        self.rnn = RNN[cfg.cell](cfg.emb_dim, cfg.enc_hidden, cfg.enc_layers, batch_first=True,
                                 bidirectional=cfg.bidirectional)
        self.out_dim = cfg.enc_hidden * (2 if cfg.bidirectional else 1)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        emb = self.dropout(self.embedding(tokens))  # (B, T, E)
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.rnn(packed)
        h = h[0] if isinstance(h, tuple) else h  # LSTM: (h, c) -> h; (layers * dirs, B, H)
        dirs = 2 if self.rnn.bidirectional else 1
        return h[-dirs:].transpose(0, 1).reshape(tokens.size(0), -1)  # (B, dirs * H)


class Decoder(nn.Module):
    """LSTM|GRU language model whose initial state and (optionally) every input carry z."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        z_in = cfg.latent_dim if cfg.z_to_input else 0
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.emb_dim, padding_idx=0)
        self.dropout = nn.Dropout(cfg.emb_dropout)
        self.rnn = RNN[cfg.cell](cfg.emb_dim + z_in, cfg.dec_hidden, cfg.dec_layers, batch_first=True)
        self.out_dropout = nn.Dropout(cfg.out_dropout)
        self.use_z_state = cfg.latent_dim > 0 and cfg.z_to_state
        if self.use_z_state:
            # z -> initial hidden state of every layer (and cell state for the LSTM)
            self.z_to_hidden = nn.Linear(cfg.latent_dim, cfg.dec_layers * cfg.dec_hidden)
        if cfg.tie_embeddings:
            self.bottleneck = (nn.Linear(cfg.dec_hidden, cfg.emb_dim) if cfg.dec_hidden != cfg.emb_dim
                               else nn.Identity())
            self.proj = nn.Linear(cfg.emb_dim, cfg.vocab_size)
            self.proj.weight = self.embedding.weight
        else:
            self.bottleneck = nn.Identity()
            self.proj = nn.Linear(cfg.dec_hidden, cfg.vocab_size)

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
        if z is not None and self.cfg.z_to_input and self.cfg.latent_dim > 0:
            emb = torch.cat([emb, z.unsqueeze(1).expand(-1, tokens.size(1), -1)], dim=-1)  # (N, T, E+Z)
        return emb

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(self.bottleneck(self.out_dropout(hidden)))  # (..., V)


class TextVAE(nn.Module):
    """Bowman et al. (2016) sentence VAE (or, with ``latent_dim=0``, the RNN LM baseline).

    ``tokenizer`` is kept on the module (not a submodule) so the high-level helpers
    ``encode``/``sample``/``reconstruct``/``interpolate`` accept and return strings.
    """

    def __init__(self, config: ModelConfig, tokenizer=None):
        super().__init__()
        if config.vocab_size <= 0:
            if tokenizer is None:
                raise ValueError("ModelConfig.vocab_size is 0: pass a tokenizer or set vocab_size")
            config.vocab_size = tokenizer.vocab_size
        self.config = config
        self.tokenizer = tokenizer
        self.extra_config: dict = {}  # e.g. {"data": {...}} from the training run, kept on save
        self.unk_id = getattr(tokenizer, "unk_id", 1)
        self.bos_id = getattr(tokenizer, "bos_id", 2)
        self.eos_id = getattr(tokenizer, "eos_id", 3)
        if config.latent_dim > 0:
            self.encoder = Encoder(config)
            self.posterior = nn.Linear(self.encoder.out_dim, 2 * config.latent_dim)
        self.decoder = Decoder(config)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def is_lm(self) -> bool:
        return self.config.latent_dim == 0

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ the probabilistic model

    def encode_posterior(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) = N(mu, diag(exp(logvar))); both (B, Z). The LM returns (B, 0) tensors."""
        if self.is_lm:
            empty = tokens.new_zeros((tokens.size(0), 0), dtype=torch.float32)
            return empty, empty
        mu, logvar = self.posterior(self.encoder(tokens, lengths)).chunk(2, dim=-1)
        return mu, logvar.clamp(self.config.logvar_min, self.config.logvar_max)

    def log_likelihood(self, tokens: torch.Tensor, lengths: torch.Tensor,
                       z: torch.Tensor | None) -> torch.Tensor:
        """log p(x|z) per sentence, summed over the n words and EOS (BOS is given, never predicted).

        tokens (N, T), lengths (N,) with BOS and EOS counted, z (N, Z) or None for the LM.
        Logits and softmax are computed only for real target tokens (packed), not for padding.
        """
        n = tokens.size(0)
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

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, eps: torch.Tensor | None = None) -> VAEOutput:
        """One sample z ~ q(z|x) per sentence; returns reconstruction NLL and per-dimension KL.

        ``eps`` (B, Z) is the standard-normal noise of the reparameterisation (drawn here when
        None); the trainer passes its own so that data-parallel runs see the same noise."""
        mu, logvar = self.encode_posterior(tokens, lengths)
        if self.is_lm:
            z = mu
        else:
            eps = torch.randn_like(mu) if eps is None else eps
            z = mu + eps * (0.5 * logvar).exp()  # reparameterisation trick
        rec = -self.log_likelihood(tokens, lengths, None if self.is_lm else z)
        return VAEOutput(rec=rec, kl=gaussian_kl(mu, logvar), mu=mu, logvar=logvar, z=z)

    def step(self, prev: torch.Tensor, state, z: torch.Tensor | None):
        """One decoding step for N sequences: prev (N,) token ids -> logits (N, V), new state."""
        out, state = self.decoder.rnn(self.decoder.inputs(prev.unsqueeze(1), z), state)
        return self.decoder.logits(out[:, 0]), state

    def init_state(self, z: torch.Tensor | None, n: int):
        return self.decoder.init_state(z, n, self.device)

    # ------------------------------------------------------------------ strings in, strings out

    def _tokenize(self, sentences: list[str]):
        from .data import collate_ids

        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer; use the tensor methods")
        ids = [self.tokenizer.encode(s) for s in sentences]
        for s, i in zip(sentences, ids):
            if not i:
                raise ValueError(f"sentence {s!r} is empty after tokenisation; give at least one token")
        tokens, lengths = collate_ids(ids, self.bos_id, self.eos_id)
        return tokens.to(self.device), lengths.to(self.device)

    @torch.no_grad()
    def encode(self, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance (each (B, Z)) for a list of sentences."""
        was = self.training
        self.eval()
        mu, logvar = self.encode_posterior(*self._tokenize(list(sentences)))
        self.train(was)
        return mu, logvar

    def decode(self, z: torch.Tensor | None, sample: SampleConfig | None = None, n: int | None = None,
               generator: torch.Generator | None = None) -> list[str]:
        """Decode latent codes (N, Z) to strings (for the LM, z=None and n sentences)."""
        from .generate import generate

        ids = generate(self, z, sample or SampleConfig(), n=n, generator=generator)
        return [self.tokenizer.decode(s) for s in ids]

    def sample(self, n: int, sample: SampleConfig | None = None, seed: int | None = None) -> list[str]:
        """n sentences from the prior: z ~ N(0, I), then decode."""
        g = torch.Generator(device="cpu")
        g.manual_seed(0 if seed is None else seed)
        z = None if self.is_lm else torch.randn(n, self.latent_dim, generator=g).to(self.device)
        return self.decode(z, sample, n=n, generator=g)

    def reconstruct(self, sentences: list[str], sample: SampleConfig | None = None) -> list[str]:
        """Greedy decoding from the posterior mean (unless ``sample`` says otherwise)."""
        mu, _ = self.encode(sentences)
        return self.decode(mu, sample or SampleConfig(greedy=True))

    def interpolate(self, a: str, b: str, steps: int, sample: SampleConfig | None = None) -> list[str]:
        """Homotopy (Bowman et al. 2016, sec. 5): decode steps + 2 evenly spaced points between the
        posterior means of a and b, endpoints included."""
        from .generate import homotopy

        mu, _ = self.encode([a, b])
        return self.decode(homotopy(mu[0], mu[1], steps), sample or SampleConfig(greedy=True))

    # ------------------------------------------------------------------ model directories

    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> None:
        """Write config.json, model.safetensors and the tokenizer files into ``directory``.

        ``extra`` sections (the trainer stores its ``data`` config) go into config.json too."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        module = getattr(self, "_orig_mod", self)  # unwrap torch.compile
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        if self.config.tie_embeddings:
            state.pop("decoder.proj.weight", None)  # shared with decoder.embedding.weight
        save_file(state, str(d / WEIGHTS_FILE), metadata={"format": "pt"})
        from dataclasses import asdict

        meta = {"format_version": FORMAT_VERSION, "model": asdict(self.config),
                "tokenizer_fingerprint": self.tokenizer.fingerprint() if self.tokenizer else None,
                **(extra or self.extra_config)}
        (d / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if self.tokenizer is not None:
            self.tokenizer.save(d)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "TextVAE":
        """Load a model directory (or a run directory: its best checkpoint). Never unpickles."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from .config import _build
        from .tokenizers import load_tokenizer

        d = resolve_model_dir(directory)
        try:
            meta = json.loads((d / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{d / CONFIG_FILE} is missing or not valid JSON ({e}); "
                                  f"is {d} a textvae model directory?") from None
        if not isinstance(meta, dict) or "model" not in meta:
            raise CheckpointError(f"{d / CONFIG_FILE} has no 'model' section; is {d} a textvae model directory?")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"{d} was written by a newer textvae (format_version "
                                  f"{meta['format_version']} > {FORMAT_VERSION}); upgrade textvae to load it")
        cfg = _build(ModelConfig, meta["model"], str(d / CONFIG_FILE), "model.")
        tokenizer = load_tokenizer(d)
        fp = meta.get("tokenizer_fingerprint")
        if fp is not None and tokenizer.fingerprint() != fp:
            raise CheckpointError(f"the tokenizer files in {d} do not match the model's config.json "
                                  f"(fingerprint {tokenizer.fingerprint()[:12]} != {fp[:12]}); "
                                  f"the directory mixes files from different models")
        if tokenizer.vocab_size != cfg.vocab_size:
            raise CheckpointError(f"tokenizer in {d} has {tokenizer.vocab_size} tokens but the model "
                                  f"expects {cfg.vocab_size}; the directory mixes files from different models")
        model = cls(cfg, tokenizer)
        model.extra_config = {k: v for k, v in meta.items() if k == "data"}
        try:
            state = load_file(str(d / WEIGHTS_FILE))
        except FileNotFoundError:
            raise CheckpointError(f"{d / WEIGHTS_FILE} is missing") from None
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{d / WEIGHTS_FILE} is not a valid safetensors file ({e}); "
                                  f"textvae never unpickles weights. Re-download or re-train the model.") from None
        if cfg.tie_embeddings:
            state.setdefault("decoder.proj.weight", state.get("decoder.embedding.weight"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{d / WEIGHTS_FILE} does not fit the config: missing {missing[:5]}, "
                                  f"unexpected {unexpected[:5]}")
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
    raise CheckpointError(f"{d} is neither a model directory (no {CONFIG_FILE} + {WEIGHTS_FILE}) nor a run "
                          f"directory with a best/ or checkpoints/ model")


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension."""
    return -0.5 * (((z - mu) ** 2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)
