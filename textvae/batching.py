"""Batches of an encoded split: length buckets (or uniform batches) and collate.

    BucketBatchSampler          index lists of similar length (or, by_length=False, uniformly random);
                                deterministic for (seed, epoch)
    MixedBatchSampler           M2: labelled and unlabelled examples in a set ratio per batch
    collate(split, indices)     Batch: tokens (B, T) = BOS x_1..x_n EOS PAD.., lengths n + 2
"""

import copy
from dataclasses import dataclass

import numpy as np
import torch

from .data import EncodedSplit
from .tokenizers import BOS_ID, EOS_ID, PAD_ID


class BucketBatchSampler:
    """Batches of similar length: sort by (length, random tie-break), cut into batches, shuffle the
    batch order. Deterministic for (seed, epoch); no global RNG state is touched.

    With ``by_length=False`` there are no buckets: the examples are shuffled uniformly and cut into
    batches, so each batch is a uniform sample of the split (more padding, so slower). An objective
    that estimates the aggregate posterior q(z) from the batch needs this (beta-TCVAE: on a batch of
    one length it sees the total correlation within that length, not over the data set).

    With ``shuffle=False`` the order is fixed: sorted by length (for evaluation). Every example
    appears exactly once per epoch when ``num_replicas=1`` and ``drop_last=False``; with
    ``drop_last=True`` the one incomplete batch (of the longest examples) is left out.

    Data parallel: with ``num_replicas=R`` every global batch of ``batch_size`` examples is split into
    R contiguous parts whose sizes differ by at most one, and rank r gets part r, so the ranks
    together train on exactly the global batch. All ranks get the same number of batches: the
    incomplete last global batch is left out when it has fewer than R examples (at most R - 1
    examples per epoch), so no rank ever gets an empty batch.
    """

    def __init__(self, lengths, batch_size: int, shuffle: bool = True, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0, drop_last: bool = False, by_length: bool = True):
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas; got {num_replicas=}, {rank=}")
        if batch_size < num_replicas:
            raise ValueError(f"batch_size ({batch_size}) is the global batch split over {num_replicas} ranks; "
                             f"it must be at least num_replicas")
        self.batch_size, self.shuffle, self.drop_last, self.by_length = batch_size, shuffle, drop_last, by_length
        self.seed = seed % 2**64  # default_rng takes non-negative seeds; distinct seeds stay distinct
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch ``iter(sampler)`` uses (as torch's DistributedSampler)."""
        self.epoch = epoch

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """All ranks' batches of that epoch, each an array of ``batch_size`` (or fewer) indices."""
        n, bs = len(self.lengths), self.batch_size
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch])
            ties = rng.random(n)
            order = np.lexsort((ties, self.lengths)) if self.by_length else np.argsort(ties)  # by length, ties random
        else:
            order = np.argsort(self.lengths, kind="stable") if self.by_length else np.arange(n)
        batches = [order[i:i + bs] for i in range(0, n, bs)]
        if batches and (len(batches[-1]) < self.num_replicas or (self.drop_last and len(batches[-1]) < bs)):
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's index lists for ``epoch``; the training loop indexes it to resume mid-epoch."""
        return [np.array_split(b, self.num_replicas)[self.rank].tolist() for b in self.global_batches(epoch)]

    def __iter__(self):
        return iter(self.batches(self.epoch))

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size)
        keep_rest = rest >= self.num_replicas and not (self.drop_last and rest > 0)
        return full + int(rest > 0 and keep_rest)


class MixedBatchSampler:
    """M2's batches (Kingma et al. 2014): ``round(ratio * batch_size)`` labelled examples (at least
    one) and the rest unlabelled in every global batch. The unlabelled examples make the epoch (each
    once, in :class:`BucketBatchSampler`'s length buckets); the labelled few are cycled through,
    reshuffled every pass. Deterministic for (seed, epoch); same interface as BucketBatchSampler.
    Data parallel: an incomplete last global batch with fewer than ``num_replicas`` examples is
    left out, as BucketBatchSampler does, so no rank ever gets an empty batch."""

    def __init__(self, lengths, labelled, batch_size: int, ratio: float, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0, by_length: bool = True):
        labelled = np.asarray(labelled, dtype=bool)
        self.labelled, self.unlabelled = np.flatnonzero(labelled), np.flatnonzero(~labelled)
        self.n_labelled = min(batch_size - 1, max(1, round(ratio * batch_size)))
        # the inner sampler leaves out a last batch of fewer than its num_replicas examples: with the
        # labelled ones added, a global batch then always has at least num_replicas examples
        self.inner = BucketBatchSampler(np.asarray(lengths)[self.unlabelled], batch_size - self.n_labelled,
                                        shuffle=True, seed=seed, num_replicas=max(1, num_replicas - self.n_labelled),
                                        by_length=by_length)
        self.seed, self.num_replicas, self.rank = seed % 2**64, num_replicas, rank

    @property
    def by_length(self) -> bool:
        """Whether the unlabelled part comes in length buckets (as BucketBatchSampler's)."""
        return self.inner.by_length

    @by_length.setter
    def by_length(self, value: bool) -> None:
        self.inner.by_length = value

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """All ranks' batches of that epoch: labelled indices first, then unlabelled ones."""
        unlabelled = [self.unlabelled[b] for b in self.inner.global_batches(epoch)]
        if not unlabelled:  # fewer unlabelled examples than a global batch needs: no batch, as BucketBatchSampler
            return []
        rng = np.random.default_rng([self.seed, epoch, 2])
        need = len(unlabelled) * self.n_labelled
        passes = -(-need // len(self.labelled))
        stream = np.concatenate([rng.permutation(self.labelled) for _ in range(passes)])
        return [np.concatenate([stream[i * self.n_labelled:(i + 1) * self.n_labelled], b])
                for i, b in enumerate(unlabelled)]

    def batches(self, epoch: int) -> list[list[int]]:
        return [np.array_split(b, self.num_replicas)[self.rank].tolist() for b in self.global_batches(epoch)]

    def __len__(self) -> int:
        return len(self.inner)


def batch_sampler(split: EncodedSplit, t, num_replicas: int = 1, rank: int = 0, by_length: bool = True):
    """The training sampler of ``split`` under TrainConfig ``t``: :class:`MixedBatchSampler` when
    ``t.labelled_ratio`` is set and the split has both labelled and unlabelled (id -1) examples (M2),
    else :class:`BucketBatchSampler`; length buckets unless ``by_length`` is False (see
    textvae.objectives.uniform_batches)."""
    ids = split.label_ids
    if t.labelled_ratio is not None and ids is not None and (ids < 0).any() and (ids >= 0).any():
        return MixedBatchSampler(split.lengths, ids >= 0, t.batch_size, t.labelled_ratio, seed=t.seed,
                                 num_replicas=num_replicas, rank=rank, by_length=by_length)
    return BucketBatchSampler(split.lengths, t.batch_size, shuffle=True, seed=t.seed,
                              num_replicas=num_replicas, rank=rank, by_length=by_length)


@dataclass
class Batch:
    """Padded token ids of a few examples, as the model takes them."""

    tokens: torch.Tensor  # (B, T) long: BOS x_1 .. x_n EOS PAD ..
    lengths: torch.Tensor  # (B,) long: n + 2, BOS and EOS included
    labels: list[str] | None
    indices: list[int]  # example indices in the split
    label_ids: torch.Tensor | None = None  # (B,) long, for a conditional model (see attach_label_ids)

    def __post_init__(self):
        # counted once here, where the tensors are still on the CPU: no device sync in the loop
        self._num_tokens = int(self.lengths.sum()) - self.lengths.numel()

    @property
    def num_tokens(self) -> int:
        """sum(n + 1): words + EOS, the perplexity denominator (BOS is given, never predicted)."""
        return self._num_tokens

    def to(self, device, non_blocking: bool = False) -> "Batch":
        """A copy with the tensors on ``device``."""
        moved = copy.copy(self)
        moved.tokens = self.tokens.to(device, non_blocking=non_blocking)
        moved.lengths = self.lengths.to(device, non_blocking=non_blocking)
        if self.label_ids is not None:
            moved.label_ids = self.label_ids.to(device, non_blocking=non_blocking)
        return moved

    def __len__(self) -> int:
        return self.tokens.size(0)


def collate_ids(ids, bos_id: int = BOS_ID, eos_id: int = EOS_ID,
                pad_id: int = PAD_ID) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences of ids (no BOS/EOS) -> tokens (B, T) long ``BOS x EOS PAD..`` and lengths (B,) n + 2."""
    if len(ids) == 0:
        raise ValueError("collate needs at least one sequence")
    n = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    rows = np.arange(len(ids))
    tokens = np.full((len(ids), int(n.max()) + 2), pad_id, dtype=np.int64)  # (B, T)
    tokens[:, 0] = bos_id
    for row, x in enumerate(ids):
        tokens[row, 1:1 + len(x)] = x
    tokens[rows, n + 1] = eos_id
    return torch.from_numpy(tokens), torch.from_numpy(n + 2)


def collate(split: EncodedSplit, indices) -> Batch:
    """The examples ``indices`` of ``split`` as one padded :class:`Batch`."""
    indices = [int(i) for i in indices]
    tokens, lengths = collate_ids([split.ids[i] for i in indices])
    labels = [split.labels[i] for i in indices] if split.labels is not None else None
    label_ids = torch.from_numpy(split.label_ids[indices]) if split.label_ids is not None else None
    return Batch(tokens, lengths, labels, indices, label_ids)
