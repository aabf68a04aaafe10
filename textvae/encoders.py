"""The encoders: what reads a sentence into the summary vector the latent's posterior is computed from.

    Encoder           embedding -> (bi)LSTM|GRU over the packed sentence -> final hidden state
    GatedCNNEncoder   embedding -> residual gated convolutions (Dauphin et al. 2017) -> mean over
                      the real positions
    ENCODERS          ``model.encoder`` -> its class (rnn | gcnn); each has ``out_dim``

Also the pieces encoders and the decoder share: the word-embedding table (``word_embedding``) and
the recurrent cells (``RNN``). M2's classifier q(y|x) (textvae/m2.py) is an encoder plus a linear layer.
"""

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from .config import ModelConfig

RNN = {"lstm": nn.LSTM, "gru": nn.GRU}


def word_embedding(cfg: ModelConfig) -> nn.Embedding:
    """The word embedding table (row 0, PAD, stays zero): PyTorch's N(0, 1) init, or U(-a, a) for
    ``cfg.emb_init`` = a > 0."""
    emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim, padding_idx=0)
    if cfg.emb_init > 0:
        with torch.no_grad():
            nn.init.uniform_(emb.weight, -cfg.emb_init, cfg.emb_init)
            emb.weight[0].zero_()
    return emb


def encoder_dropout(cfg: ModelConfig) -> float:
    """Dropout on the encoder's embeddings: ``cfg.enc_dropout``, or ``cfg.emb_dropout`` when unset."""
    return cfg.emb_dropout if cfg.enc_dropout is None else cfg.enc_dropout


class Encoder(nn.Module):
    """Embedding -> (bi)LSTM|GRU over the whole sentence -> final hidden state of the top layer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embedding = word_embedding(cfg)
        self.dropout = nn.Dropout(encoder_dropout(cfg))
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


class GatedCNNEncoder(nn.Module):
    """Dauphin et al. (2017), "Language Modeling with Gated Convolutional Networks", as an encoder.

    Embedding -> linear to H = enc_hidden channels -> ``gcnn_layers`` residual blocks
    h <- h + conv_A(h) * sigmoid(conv_B(h)), two same-shaped convolutions of width ``gcnn_kernel``
    (one through a sigmoid, multiplied elementwise) -> mean over the real positions -> (B, H).

    Padding never reaches a real position: each block's input is zeroed at padded positions, so a
    convolution sees there the same zeros as beyond its border, and the mean counts only the n + 2
    real positions (BOS, words, EOS); appending PAD to a batch changes nothing. Unlike Dauphin et
    al.'s language model, the convolutions are centred, not causal: an encoder sees the whole sentence.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        H, k = cfg.enc_hidden, cfg.gcnn_kernel
        self.embedding = word_embedding(cfg)
        self.dropout = nn.Dropout(encoder_dropout(cfg))
        self.inp = nn.Linear(cfg.emb_dim, H)
        # each Conv1d is conv_A and conv_B side by side: 2H output channels, split in halves
        self.blocks = nn.ModuleList(nn.Conv1d(H, 2 * H, k, padding=k // 2) for _ in range(cfg.gcnn_layers))
        self.out_dim = H

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.inp(self.dropout(self.embedding(tokens))).transpose(1, 2)  # (B, H, T)
        real = torch.arange(tokens.size(1), device=tokens.device) < lengths.unsqueeze(1)  # (B, T)
        real = real.unsqueeze(1).to(h.dtype)  # (B, 1, T): 1 at BOS, words, EOS; 0 at padding
        for conv in self.blocks:
            a, b = conv(h * real).chunk(2, dim=1)  # (B, H, T) each
            h = h + a * torch.sigmoid(b)
        return (h * real).sum(-1) / real.sum(-1)  # (B, H): mean over real positions


ENCODERS = {"rnn": Encoder, "gcnn": GatedCNNEncoder}
