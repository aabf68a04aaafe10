"""textvae.batching: length buckets (every example once, deterministic, data-parallel shards) and collate."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from textvae.batching import Batch, BucketBatchSampler, MixedBatchSampler, collate, collate_ids
from textvae.data import EncodedSplit
from textvae.tokenizers import BOS_ID, EOS_ID, PAD_ID


# --------------------------------------------------------------------------- bucketing

lengths_st = st.lists(st.integers(1, 12), min_size=1, max_size=120)


@settings(max_examples=80, deadline=None)
@given(lengths=lengths_st, batch_size=st.integers(1, 17), seed=st.integers(0, 2**32), epoch=st.integers(0, 5))
def test_bucketing_covers_every_example_once(lengths, batch_size, seed, epoch):
    sampler = BucketBatchSampler(lengths, batch_size, shuffle=True, seed=seed)
    batches = sampler.batches(epoch)
    assert len(batches) == len(sampler) == -(-len(lengths) // batch_size)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(len(b) == batch_size for b in batches if len(b) != len(lengths) % batch_size)
    # buckets: the batches are consecutive chunks of the length-sorted order
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    assert all(hi <= lo_next for (_, hi), (lo_next, _) in zip(spans, spans[1:]))


def test_bucketing_determinism_epochs_and_eval_order():
    lengths = np.random.default_rng(0).integers(1, 30, size=500)
    sampler = BucketBatchSampler(lengths, 16, seed=7)
    assert sampler.batches(3) == BucketBatchSampler(lengths, 16, seed=7).batches(3)
    assert sampler.batches(0) != sampler.batches(1)
    assert sampler.batches(0) != BucketBatchSampler(lengths, 16, seed=8).batches(0)
    sampler.set_epoch(2)
    assert list(sampler) == sampler.batches(2)
    fixed = BucketBatchSampler(lengths, 16, shuffle=False)
    assert fixed.batches(0) == fixed.batches(5)
    flat = [i for b in fixed.batches(0) for i in b]
    assert np.all(np.diff(lengths[flat]) >= 0)  # sorted by length
    dropped = BucketBatchSampler(lengths, 16, drop_last=True)
    assert len(dropped.batches(0)) == len(dropped) == 500 // 16
    assert all(len(b) == 16 for b in dropped.batches(0))


@settings(max_examples=60, deadline=None)
@given(lengths=lengths_st, batch_size=st.integers(1, 17), seed=st.integers(0, 2**32), epoch=st.integers(0, 5),
       replicas=st.integers(1, 3))
def test_uniform_batches_cover_every_example_once(lengths, batch_size, seed, epoch, replicas):
    batch_size = max(batch_size, replicas)
    ranks = [BucketBatchSampler(lengths, batch_size, seed=seed, num_replicas=replicas, rank=r, by_length=False)
             for r in range(replicas)]
    bucketed = BucketBatchSampler(lengths, batch_size, seed=seed, num_replicas=replicas)
    assert len(ranks[0]) == len(bucketed) == len(ranks[0].global_batches(epoch))  # the same epoch length
    flat = [i for s in ranks for b in s.batches(epoch) for i in b]
    assert len(set(flat)) == len(flat) == sum(map(len, bucketed.global_batches(epoch)))  # each once, none lost
    if replicas == 1:
        assert sorted(flat) == list(range(len(lengths)))


def test_uniform_batches_mix_lengths_and_are_deterministic():
    lengths = np.random.default_rng(0).integers(1, 30, size=640)
    uniform = BucketBatchSampler(lengths, 32, seed=7, by_length=False)
    assert uniform.batches(2) == BucketBatchSampler(lengths, 32, seed=7, by_length=False).batches(2)
    assert uniform.batches(0) != uniform.batches(1)
    # a uniform batch of 32 spans most of the 1..29 range; a length bucket of 640/29 per length, at most 2
    assert min(np.ptp(lengths[b]) for b in uniform.batches(0)) >= 15
    assert max(np.ptp(lengths[b]) for b in BucketBatchSampler(lengths, 32, seed=7).batches(0)) <= 2
    fixed = BucketBatchSampler(lengths, 32, shuffle=False, by_length=False)
    assert [i for b in fixed.batches(0) for i in b] == list(range(640))  # unshuffled: the split's order
    mixed = MixedBatchSampler(lengths, np.arange(640) < 64, 32, 0.25, seed=1, by_length=False)
    assert not mixed.by_length and min(np.ptp(lengths[b[8:]]) for b in mixed.batches(0)) >= 10


@settings(max_examples=80, deadline=None)
@given(lengths=lengths_st, replicas=st.integers(1, 4), extra=st.integers(0, 9), epoch=st.integers(0, 3))
def test_ddp_sharding_splits_each_global_batch(lengths, replicas, extra, epoch):
    batch_size = replicas + extra
    ranks = [BucketBatchSampler(lengths, batch_size, seed=1, num_replicas=replicas, rank=r)
             for r in range(replicas)]
    per_rank = [s.batches(epoch) for s in ranks]
    global_batches = ranks[0].global_batches(epoch)
    assert all(len(b) == len(global_batches) == len(s) for b, s in zip(per_rank, ranks))  # same count everywhere
    for k, g in enumerate(global_batches):
        parts = [per_rank[r][k] for r in range(replicas)]
        assert [i for p in parts for i in p] == g.tolist()  # contiguous parts, in rank order, each once
        assert min(map(len, parts)) >= 1 and max(map(len, parts)) - min(map(len, parts)) <= 1
    covered = sum(len(g) for g in global_batches)
    assert len(lengths) - covered == (len(lengths) % batch_size if len(lengths) % batch_size < replicas else 0)


def test_m2_ddp_sharding_never_gives_a_rank_an_empty_batch():
    # 7 unlabelled examples in batches of 3 leave a last batch of 1, which with 1 labelled example
    # makes a global batch of 2 for 4 ranks
    labelled = np.arange(10) < 3
    ranks = [MixedBatchSampler(np.arange(10) % 5 + 1, labelled, batch_size=4, ratio=0.25, seed=0, num_replicas=4,
                               rank=r) for r in range(4)]
    per_rank = [s.batches(0) for s in ranks]
    assert all(len(b) == len(ranks[0].global_batches(0)) == len(s) for b, s in zip(per_rank, ranks))
    assert all(len(batch) >= 1 for batches in per_rank for batch in batches)
    # one unlabelled example cannot fill 3 ranks with the one labelled one: no batch (it was a bare
    # ValueError from np.concatenate), as BucketBatchSampler gives none for fewer examples than ranks
    tiny = MixedBatchSampler([3, 4], [True, False], batch_size=3, ratio=0.25, num_replicas=3)
    assert tiny.global_batches(0) == [] and tiny.batches(0) == [] and len(tiny) == 0


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        BucketBatchSampler([1, 2], 4, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="at least num_replicas"):
        BucketBatchSampler([1, 2], 2, num_replicas=4, rank=0)


# --------------------------------------------------------------------------- collate

def test_collate_shapes_bos_eos_pad():
    split = EncodedSplit(ids=[np.array([5, 6, 7], np.int32), np.array([8], np.int32), np.array([9, 9], np.int32)],
                         texts=["a b c", "d", "e e"], labels=["x", "y", "z"])
    batch = collate(split, np.array([1, 0]))
    assert isinstance(batch, Batch) and batch.indices == [1, 0] and batch.labels == ["y", "x"]
    assert batch.tokens.dtype == torch.long and batch.tokens.shape == (2, 5)
    assert batch.tokens.tolist() == [[BOS_ID, 8, EOS_ID, PAD_ID, PAD_ID], [BOS_ID, 5, 6, 7, EOS_ID]]
    assert batch.lengths.tolist() == [3, 5] and batch.lengths.dtype == torch.long
    assert batch.num_tokens == (1 + 1) + (3 + 1)
    moved = batch.to("cpu")
    assert moved.num_tokens == batch.num_tokens and torch.equal(moved.tokens, batch.tokens)
    assert collate(EncodedSplit(split.ids, split.texts), [2]).labels is None
    tokens, lengths = collate_ids([[4], [4, 5, 6]])
    assert tokens.tolist() == [[BOS_ID, 4, EOS_ID, PAD_ID, PAD_ID], [BOS_ID, 4, 5, 6, EOS_ID]]
    assert lengths.tolist() == [3, 5]


# --------------------------------------------------------------------------- property: bucketing

@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(0, 12), min_size=1, max_size=100), batch_size=st.integers(1, 17),
       shuffle=st.booleans(), drop_last=st.booleans(), seed=st.integers(0, 2**32), epoch=st.integers(0, 3))
def test_bucketing_never_drops_or_duplicates(lengths, batch_size, shuffle, drop_last, seed, epoch):
    """Every example exactly once per epoch, in either order mode; drop_last leaves out only the
    one incomplete batch (the cases test_data.py does not cover: shuffle=False, drop_last)."""
    sampler = BucketBatchSampler(lengths, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
    batches = sampler.batches(epoch)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) and len(batches) == len(sampler)
    missing = set(range(len(lengths))) - set(flat)
    if drop_last:
        assert len(missing) == len(lengths) % batch_size and all(len(b) == batch_size for b in batches)
    else:
        assert not missing
