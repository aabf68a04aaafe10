"""Kingma et al. (2014), "Semi-Supervised Learning with Deep Generative Models": the M2 model.

The label y is a latent variable that is observed for some examples. M2 is the conditional VAE of
model.py (p(x | y, z), q(z | x, y), p(z) = N(0, I)) plus a classifier q(y | x) (``model.classifier``,
:class:`Classifier`: the encoder architecture of ``model.encoder`` with its own weights, then a
linear layer to the K label logits). Per example, with ELBO(x, y) = E_q(z|x,y)[log p(x|y, z)] -
KL(q(z|x, y) || p(z)) the conditional VAE's bound:

    labelled (x, y)     -ELBO(x, y) + alpha * (-log q(y|x))                 (Kingma's eq. 9, alpha
                                                                             = ``objective.m2_alpha``)
    unlabelled x        sum_y q(y|x) (-ELBO(x, y)) - H(q(y|x))              (their eq. 7)

Their uniform log p(y) = -log K is a constant of every example's bound and is left out (no gradient).

:func:`m2_forward` returns these as the terms of a :class:`~textvae.model.VAEOutput`, so the loop and
``objectives.vae_loss`` weight them as every model's: ``rec`` (B,) and ``kl`` (B, Z) are each
example's reconstruction NLL and per-dimension KL, for an unlabelled example their expectations
under q(y|x); KL annealing and free bits act on that KL as on any other. ``losses`` holds the
latent's own terms (VQ's codebook and commitment), the same expectations, and
``classification`` (the cross-entropy of the labelled rows; vae_loss multiplies it by alpha) and
``entropy`` (-H(q(y|x)) of the unlabelled rows), both summed over their rows and divided by B like
the batch means of rec and kl.

Unlabelled examples, ``model.unlabelled``:

    enumerate   the expectation computed exactly: each unlabelled row is repeated once per label and
                the L labelled + K * U unlabelled rows go through the decoder in ONE batched pass (the
                K copies of a row share its noise eps and its encoder summary, computed once per
                sentence: the label joins q(z|x, y) after the encoder); cost ~ K decoder passes
    gumbel      one relaxed sample y~ ~ Gumbel-softmax(q(y|x), ``model.gumbel_temperature``),
                straight-through (a one-hot forward, the relaxed gradient; Jang et al. 2017), whose
                label embedding is the mixture y~ @ E: -ELBO(x, y~) - H(q(y|x)); cost ~ one pass
"""

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import ENCODERS
from .model import VAEOutput


class Classifier(nn.Module):
    """q(y|x): the encoder architecture of ``cfg.encoder`` (own weights) -> linear -> (B, K) logits.
    The from-scratch supervised baseline of scripts/semisup.py is this module trained on labels alone."""

    def __init__(self, cfg, num_classes: int):
        super().__init__()
        self.encoder = ENCODERS[cfg.encoder](cfg)
        self.out = nn.Linear(self.encoder.out_dim, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.out(self.encoder(tokens, lengths))  # (B, K)


def expand_unlabelled(y: torch.Tensor, num_labels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rows of the enumerated pass: (rows, labels, unlabelled) where ``rows`` (L + K * U,) index
    the batch (labelled rows once, then every unlabelled row once per label, label-major),
    ``labels`` the label of each row and ``unlabelled`` (U,) the batch rows whose y is -1."""
    labelled, unlabelled = (y >= 0).nonzero().squeeze(1), (y < 0).nonzero().squeeze(1)  # (L,), (U,)
    k = torch.arange(num_labels, device=y.device).repeat_interleave(unlabelled.numel())  # (K * U,)
    rows = torch.cat([labelled, unlabelled.repeat(num_labels)])
    return rows, torch.cat([y[labelled], k]), unlabelled


def m2_forward(model, tokens: torch.Tensor, lengths: torch.Tensor, eps: torch.Tensor | None,
               y: torch.Tensor | None) -> VAEOutput:
    """M2's terms (see the module docstring) for a batch whose labels y (B,) are -1 where unknown.

    ``params`` and ``z`` of the result are those of the rows that went through the decoder
    (enumerate: L + K * U rows; gumbel: B), not one per example."""
    cfg, K, B = model.config, model.config.num_labels, tokens.size(0)
    if y is None:
        y = torch.full((B,), -1, dtype=torch.long, device=tokens.device)
    eps = model.noise(B).to(tokens.device) if eps is None else eps
    logits = model.classifier(tokens, lengths).float()  # (B, K)
    log_q = logits.log_softmax(-1)
    entropy = -(log_q.exp() * log_q).sum(-1)  # (B,) H(q(y|x))
    lab = y >= 0
    if cfg.unlabelled == "gumbel":
        soft = F.one_hot(y.clamp(min=0), K).to(logits.dtype)  # (B, K) observed labels as one-hot
        relaxed = F.gumbel_softmax(logits, tau=cfg.gumbel_temperature, hard=True)  # (B, K)
        soft = torch.where(lab.unsqueeze(1), soft, relaxed)
        out = model.vae_terms(tokens, lengths, eps, soft)
        rec, kl = out.rec, out.kl
    else:
        rows, labels, unlabelled = expand_unlabelled(y, K)
        summary = model.encoder(tokens, lengths)[rows]  # (L + K * U, H): each sentence encoded once
        q_rows = log_q[unlabelled].t().reshape(-1).exp()  # (K * U,) q(k|x) of each copy, label-major
        weight = torch.cat([torch.ones(int(lab.sum()), device=tokens.device, dtype=q_rows.dtype), q_rows])
        out = model.vae_terms(tokens[rows], lengths[rows], eps[rows], labels, summary, weight)  # one decoder pass
        rec = torch.zeros(B, device=tokens.device, dtype=out.rec.dtype).index_add_(0, rows, weight * out.rec)
        kl = torch.zeros(B, out.kl.size(1), device=tokens.device, dtype=out.kl.dtype)
        kl = kl.index_add_(0, rows, weight.unsqueeze(1).to(kl.dtype) * out.kl)  # (B, Z)
    ce = F.cross_entropy(logits[lab], y[lab], reduction="sum") if lab.any() else logits.sum() * 0
    losses = {**out.losses, "classification": ce / B, "entropy": -entropy[~lab].sum() / B}
    return VAEOutput(rec=rec, kl=kl, params=out.params, z=out.z, losses=losses)
