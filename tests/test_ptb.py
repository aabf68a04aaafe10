"""Checks on the real Penn Treebank when it is beside the checkout (../shared/data/ptb) or at
$TEXTVAE_PTB; skipped otherwise (the package and the other tests never need it)."""
import os
from pathlib import Path

import pytest

from textvae.config import DataConfig, TokenizerConfig
from textvae.data import encode_split, load_splits
from textvae.tokenizers import train_tokenizer

PTB = Path(os.environ.get("TEXTVAE_PTB", Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptb"))
pytestmark = pytest.mark.skipif(not (PTB / "train.txt").is_file(), reason=f"PTB not found at {PTB}")


def test_ptb_sizes_vocabulary_and_token_count(tmp_path):
    cfg = DataConfig(data_dir=str(PTB))
    splits = load_splits(cfg, cache_dir=str(tmp_path))
    assert {k: len(v) for k, v in splits.items()} == {"train": 42068, "valid": 3370, "test": 3761}
    tok = train_tokenizer(TokenizerConfig(kind="word"), splits["train"]["text"])
    assert tok.vocab_size == 10000 + 2  # Mikolov's 10k types (incl. <unk>, which maps to our unk id) + <pad> <s> </s>
    test = encode_split(splits["test"], tok, cfg)
    # 78,669 words + 3,761 EOS = 82,430, the test-set token count perplexities are usually quoted over
    assert test.stats["tokens"] == 82430
    assert test.stats["truncated"] == 0 and test.stats["dropped"] == 0
