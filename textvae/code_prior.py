"""An autoregressive prior over a VQ model's M codes, fitted after the autoencoder.

van den Oord et al. (2017), sec. 3.1: a VQ-VAE is trained with a uniform prior over codes, then a
second model p(k_1..k_M) = prod_m p(k_m | k_<m) is fitted to the codes of the training set and used
to sample. Here a small LSTM over code ids (BOS = id K) with a softmax over the K entries.

It is stored beside the model's weights as ``code_prior.safetensors`` (shapes in its metadata) and
named in config.json under ``code_prior`` with the file's SHA-256, so a model directory whose prior
file is missing, damaged or swapped fails to load with a message naming the file. Never unpickled.
"""

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointError, DataError, TextVAEError

PRIOR_FILE = "code_prior.safetensors"


class CodePrior(nn.Module):
    """p(k_1..k_M) = prod_m softmax(W h_m)[k_m], h_m = LSTM(embedding of BOS, k_1 .. k_{m-1})."""

    def __init__(self, vars: int, classes: int, emb_dim: int = 64, hidden: int = 128):
        super().__init__()
        self.vars, self.classes, self.emb_dim, self.hidden = vars, classes, emb_dim, hidden
        self.embedding = nn.Embedding(classes + 1, emb_dim)  # id K is BOS
        self.rnn = nn.LSTM(emb_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, classes)

    def log_prob(self, ids: torch.Tensor) -> torch.Tensor:
        """log p(ids) for code ids (..., M), summed over the M positions: (...)."""
        shape = ids.shape[:-1]
        ids = ids.reshape(-1, self.vars)  # (N, M)
        bos = ids.new_full((ids.size(0), 1), self.classes)
        h, _ = self.rnn(self.embedding(torch.cat([bos, ids[:, :-1]], 1)))  # (N, M, H)
        logp = F.log_softmax(self.out(h), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # (N, M)
        return logp.sum(-1).reshape(shape)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n code sequences (n, M) drawn ancestrally, on the CPU."""
        device = self.out.weight.device
        prev, state, out = torch.full((n, 1), self.classes, dtype=torch.long, device=device), None, []
        for _ in range(self.vars):
            h, state = self.rnn(self.embedding(prev), state)
            probs = F.softmax(self.out(h[:, -1]).float(), -1).cpu()
            prev = torch.multinomial(probs, 1, generator=generator).to(device)  # (n, 1)
            out.append(prev.cpu())
        return torch.cat(out, 1)


def encoder_codes(model, split, batch_size: int = 64) -> torch.Tensor:
    """The code ids (N, M) the encoder gives each example of ``split``."""
    from .batching import collate
    from .generate import eval_mode
    from .metrics import _batches

    out = torch.zeros(len(split.ids), model.latent.vars, dtype=torch.long)
    with eval_mode(model):
        for idx in _batches(split, batch_size):
            b = collate(split, idx).to(model.device)
            out[idx] = model.latent.code_ids(model.posterior_params(b.tokens, b.lengths, b.label_ids)[0]).cpu()
    return out


def fit_code_prior(model, split, epochs: int = 20, batch_size: int = 64, lr: float = 3e-3, hidden: int = 128,
                   seed: int = 0, log=None) -> CodePrior:
    """Fit a :class:`CodePrior` by maximum likelihood to the encoder's codes of ``split`` (the
    training split), attach it to the model's VQ latent and return it. A DataError when ``split`` has no
    sentence with a token: there are no codes to fit."""
    if model.is_lm or model.config.latent != "vq":
        raise TextVAEError(f"a code prior is fitted to a VQ model's codes; this model's latent is "
                           f"{'none (a language model)' if model.is_lm else repr(model.config.latent)}")
    blank = int((split.lengths == 0).sum())
    if blank == len(split):  # nothing to fit: Adam would leave the prior as initialised, with no word said
        what = "has no sentences" if not blank else f"has only blank sentences (all {blank} have no tokens)"
        raise DataError(f"the split given to fit_code_prior {what}, so there are no codes to fit a prior to; pass "
                        f"the model's training split, e.g. textvae.metrics.model_split(model, 'train')")
    codes = encoder_codes(model, split)
    torch.manual_seed(seed)
    prior = CodePrior(model.latent.vars, model.latent.classes, hidden=hidden)
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        total = 0.0
        for rows in torch.randperm(len(codes), generator=g).split(batch_size):
            loss = -prior.log_prob(codes[rows]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
        if log:
            log(f"code prior epoch {epoch + 1}/{epochs}: {total / len(codes):.3f} nats per sentence "
                f"(uniform: {model.latent.vars * torch.log(torch.tensor(float(model.latent.classes))):.3f})")
    model.latent.attach_prior(prior.eval())
    return prior


def save_code_prior(prior: CodePrior, directory: Path) -> dict:
    """Write ``code_prior.safetensors``; returns the config.json entry that names it."""
    from safetensors.torch import save

    from .checkpoint import atomic_write

    meta = {"vars": prior.vars, "classes": prior.classes, "emb_dim": prior.emb_dim, "hidden": prior.hidden}
    data = save({k: v.detach().cpu().contiguous() for k, v in prior.state_dict().items()},
                metadata={"format": "pt", "textvae_code_prior": json.dumps(meta)})
    atomic_write(Path(directory) / PRIOR_FILE, data)
    return {"file": PRIOR_FILE, "sha256": hashlib.sha256(data).hexdigest(), **meta}


def load_code_prior(directory: Path, entry: dict, latent) -> CodePrior:
    """The prior that config.json's ``code_prior`` entry names, checked against the file's hash and
    the latent's M and K."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(directory) / str(entry.get("file", PRIOR_FILE))
    try:
        data = path.read_bytes()
    except OSError:
        raise CheckpointError(f"{path} is missing: the model's config.json says it has a fitted code prior; copy "
                              f"the file from the model it came with, or refit it (textvae fit-prior)") from None
    if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise CheckpointError(f"{path} does not match the SHA-256 in config.json's code_prior: the file is damaged "
                              f"or was replaced; refit it (textvae fit-prior)")
    if (entry.get("vars"), entry.get("classes")) != (latent.vars, latent.classes):
        raise CheckpointError(f"{path} is a prior over {entry.get('vars')} codes of {entry.get('classes')} entries; "
                              f"the model has {latent.vars} of {latent.classes}")
    try:
        prior = CodePrior(latent.vars, latent.classes, int(entry["emb_dim"]), int(entry["hidden"]))
        prior.load_state_dict(load(data))
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as e:
        raise CheckpointError(f"{path} does not hold the code prior config.json's code_prior describes ({e}); "
                              f"refit it (textvae fit-prior)") from None
    return prior.eval()
