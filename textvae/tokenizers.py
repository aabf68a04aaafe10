"""Word-level and SentencePiece tokenizers behind one small interface.

Both kinds share the special ids, so the model and the data code never ask which kind they have::

    PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3      pieces <pad> <unk> <s> </s>

``encode`` never adds BOS/EOS (collate does); ``decode`` stops at the first EOS and skips PAD/BOS.
A literal ``<unk>`` in the text (Penn Treebank has them) encodes to UNK_ID with either kind, and
UNK_ID decodes to ``<unk>``; the other special pieces cannot be typed in as text (they encode to
UNK_ID too), so a stray ``</s>`` in a corpus never ends a sentence early. A SentencePiece char model
gives one id per character, unknown characters included (one UNK_ID each).

A tokenizer lives in a model directory as plain files, never pickles, because model directories are
downloaded from strangers and unpickling runs code:

    tokenizer.json    {"format_version": 1, "kind": "word", "lowercase": false, "vocab": [...]}
                      (a word tokenizer that splits punctuation off adds "pretokenize": "punctuation";
                      a file without the key is whitespace. textvae 0.1.0, which would ignore the
                      key, refuses these model directories anyway: their config.json is format 2)
    tokenizer.model   the serialized SentencePiece model (sentencepiece only)

The word tokenizer refuses text written without spaces (Chinese, Japanese) when it is trained:
see :func:`check_spaced_text`.

``fingerprint()`` hashes everything that determines the ids; it keys the ``datasets`` encoding
cache and lets a model directory detect a tokenizer that does not belong to its weights.
"""

import abc
import functools
import hashlib
import io
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from .checkpoint import atomic_write
from .config import TokenizerConfig
from .errors import CheckpointError, ConfigError, DataError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_PIECES = ("<pad>", "<unk>", "<s>", "</s>")  # indexed by the ids above
FORMAT_VERSION = 1  # of tokenizer.json; bump when a change makes old files unreadable
JSON_FILE = "tokenizer.json"
MODEL_FILE = "tokenizer.model"


class Tokenizer(abc.ABC):
    """Text <-> token ids. Subclasses: :class:`WordTokenizer`, :class:`SentencePieceTokenizer`."""

    kind: str
    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(self, lowercase: bool = False):
        self.lowercase = lowercase

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, the four specials included."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without BOS/EOS."""

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """``[encode(t) for t in texts]``, faster where the implementation allows."""
        return [self.encode(t) for t in texts]

    def decode(self, ids) -> str:
        """Text of ``ids`` (a list, tensor or numpy array): stops at the first EOS, skips PAD and BOS."""
        if hasattr(ids, "tolist"):  # torch.Tensor, np.ndarray
            ids = ids.tolist()
        kept: list[int] = []
        for i in ids:
            if not isinstance(i, int):  # also catches a nested list: decode takes one sequence
                try:
                    i = int(i)
                except (TypeError, ValueError):
                    raise TypeError(f"decode takes one sequence of ints; got an element {i!r} "
                                    f"(for a batch, use [tokenizer.decode(row) for row in batch])") from None
            if i == EOS_ID:
                break
            if i in (PAD_ID, BOS_ID):
                continue
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"id {i} is outside this tokenizer's vocabulary (0..{self.vocab_size - 1})")
            kept.append(i)
        return self._decode(kept)

    @abc.abstractmethod
    def _decode(self, ids: list[int]) -> str:
        """Text of ids that are all in range and none PAD, BOS or EOS."""

    @abc.abstractmethod
    def id_to_token(self, i: int) -> str:
        """The vocabulary entry (word or piece) of id ``i``."""

    @abc.abstractmethod
    def save(self, directory: str | Path) -> None:
        """Write this tokenizer's files into ``directory`` (created if missing)."""

    @abc.abstractmethod
    def _identity(self) -> bytes:
        """Canonical bytes of everything that determines the ids."""

    def fingerprint(self) -> str:
        """Stable hex hash of everything that determines the ids (same on every machine and run)."""
        return hashlib.sha256(b"textvae-tokenizer-v1\0" + self._identity()).hexdigest()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, lowercase={self.lowercase})"


# --------------------------------------------------------------------------- pre-tokenizers

# Inside a word, these characters do not split it: apostrophes and hyphens between two letters or
# digits (don't, rock'n'roll, well-known), a decimal point or thousands separator between two
# digits (3.14, 1,000). Everywhere else a Unicode punctuation character is a token of its own.
_JOIN_BETWEEN_ALNUM = "'\u2019-\u2010\u2011"  # ' ’ - ‐ ‑
_JOIN_BETWEEN_DIGITS = ".,"


@functools.cache
def _punctuation_re() -> re.Pattern:
    """Special pieces | words (with the joiners above) | one punctuation character.

    Punctuation is Unicode's general category P* (Pc Pd Ps Pe Pi Pf Po), as this Python's
    ``unicodedata`` defines it; symbols (S*: $ + < > = ...) stay inside words, so ``<unk>``, ``$5``
    and ``a+b`` are single tokens. Built once, on first use (it scans every code point, ~0.2 s).
    """
    ranges, start = [], None
    for c in range(0x110001):
        is_p = c < 0x110000 and unicodedata.category(chr(c)).startswith("P")
        if is_p and start is None:
            start = c
        elif not is_p and start is not None:
            ranges.append(re.escape(chr(start)) + ("-" + re.escape(chr(c - 1)) if c - 1 > start else ""))
            start = None
    punct = "".join(ranges)
    alnum, joiners = r"[^\W_]", "".join(map(re.escape, _JOIN_BETWEEN_ALNUM))
    digits = "".join(map(re.escape, _JOIN_BETWEEN_DIGITS))
    specials = "|".join(re.escape(p) for p in SPECIAL_PIECES)
    run = rf"[^\s{punct}]+"  # letters, digits, symbols
    word = rf"{run}(?:(?<={alnum})[{joiners}](?={alnum}){run}|(?<=\d)[{digits}](?=\d){run})*"
    # a special piece only as a whole token: "<unk>s" is one (unknown) word, as with whitespace
    return re.compile(rf"(?:{specials})(?![^\s{punct}])|{word}|[{punct}]")


def split_whitespace(text: str) -> list[str]:
    """``text.split()``: for corpora that are already tokenised (PTB: ``do n't``, ``gate !``)."""
    return text.split()


def split_punctuation(text: str) -> list[str]:
    """Whitespace words with Unicode punctuation split off: ``"gate!"`` -> ``["gate", "!"]``,
    ``"(hello),"`` -> ``["(", "hello", ")", ","]``, ``"..."`` -> three ``"."``. An apostrophe or
    hyphen between letters/digits and a point or comma between digits stay inside the word
    (``don't``, ``well-known``, ``3.14``); ``<unk>`` and the other special pieces stay whole.
    """
    return _punctuation_re().findall(text)


# tokenizer.pretokenize -> how a word tokenizer cuts text into words
PRETOKENIZERS: dict[str, Callable[[str], list[str]]] = {"whitespace": split_whitespace,
                                                       "punctuation": split_punctuation}


# --------------------------------------------------------------------------- text without spaces

# A line that is one whitespace token is rare in text written with spaces (PTB: 0.3% of training
# lines, dbpedia14 and the built-in corpus: 0%) and the rule in Chinese and Japanese (tang5: 100%).
# Half is far from both, and a corpus with most lines one word long gains nothing from a word model.
ONE_TOKEN_LINE_SHARE = 0.5
# The characters (whitespace not counted) must also be mostly CJK, so that a list of single English
# words, or English text quoting Chinese names, is never refused. Chinese and Japanese prose is
# > 90% CJK (tang5: 100%, punctuation ，。 included); PTB, dbpedia14 and the built-in corpus: 0%.
CJK_CHAR_SHARE = 0.5
# Lines examined: evenly spread over the corpus, enough for shares within a few percent.
SPACING_SAMPLE = 5000
# Han (with extensions and compatibility ideographs), kana, Hangul, CJK punctuation and full-width forms
_CJK_RE = re.compile("[\u1100-\u11ff\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff"
                     "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
                     "\U00020000-\U0003134f]")


def spacing_stats(texts: list[str]) -> dict[str, float | int]:
    """Shares the unspaced-text check uses, over at most :data:`SPACING_SAMPLE` lines of ``texts``:
    ``lines`` examined, ``one_token_share`` (lines that are one whitespace token) and
    ``cjk_share`` (CJK characters among the non-whitespace characters)."""
    sample = texts[::-(-len(texts) // SPACING_SAMPLE) or 1]  # every k-th line, k = ceil(n / SPACING_SAMPLE)
    one = sum(len(t.split()) == 1 for t in sample)
    chars = sum(len(t) - sum(map(str.isspace, t)) for t in sample)
    cjk = sum(len(_CJK_RE.findall(t)) for t in sample)
    return {"lines": len(sample), "one_token_share": one / max(1, len(sample)), "cjk_share": cjk / max(1, chars)}


def check_spaced_text(texts: list[str]) -> None:
    """Refuse to train a word tokenizer on text written without spaces (Chinese, Japanese).

    The word tokenizer would make each line one "word": a vocabulary of whole training lines, a
    model that can only copy them, and samples that are training lines. Detected when at least
    :data:`ONE_TOKEN_LINE_SHARE` of the lines are one whitespace token and at least
    :data:`CJK_CHAR_SHARE` of the characters are CJK (see the constants for why).

    This stops with a :class:`ConfigError` naming the fix rather than switching to a character
    model on its own: the run's config.json would then describe a tokenizer it does not have, a
    character model needs settings of its own (vocab_size, character_coverage) the user should
    see, and the fix is one copy-and-paste. A corpus that really is one word per line can keep
    whitespace words with ``tokenizer.kind=sentencepiece tokenizer.model_type=word``.
    """
    s = spacing_stats(texts)
    if s["one_token_share"] >= ONE_TOKEN_LINE_SHARE and s["cjk_share"] >= CJK_CHAR_SHARE:
        raise ConfigError(
            f"tokenizer.kind=word splits text at spaces, but the training text looks written without "
            f"spaces (Chinese or Japanese): {s['one_token_share']:.0%} of {s['lines']} sampled lines are a "
            f"single space-separated token and {s['cjk_share']:.0%} of their characters are CJK, so each "
            f"line would become one word and the model could only copy training lines. Tokenize by "
            f"characters instead: tokenizer.kind=sentencepiece tokenizer.model_type=char "
            f"(the tang5 and tang7 presets do)")


# --------------------------------------------------------------------------- word level

class WordTokenizer(Tokenizer):
    """Words split by ``pretokenize`` (:data:`PRETOKENIZERS`); ids 4.. are the vocabulary, most
    frequent first. Decoding joins the words with single spaces."""

    kind = "word"

    def __init__(self, words: list[str], lowercase: bool = False, pretokenize: str = "whitespace"):
        super().__init__(lowercase)
        if pretokenize not in PRETOKENIZERS:
            raise ValueError(f"pretokenize={pretokenize!r} is not one of {', '.join(map(repr, PRETOKENIZERS))}")
        self.pretokenize = pretokenize
        self._split = PRETOKENIZERS[pretokenize]
        self.vocab = list(SPECIAL_PIECES) + list(words)  # id -> token
        # token -> id; the specials other than <unk> are not words (they encode to UNK_ID)
        self._ids = {w: i for i, w in enumerate(self.vocab) if i >= len(SPECIAL_PIECES)}
        self._ids[SPECIAL_PIECES[UNK_ID]] = UNK_ID

    @classmethod
    def train(cls, texts: Iterable[str], min_count: int = 1, max_vocab: int | None = None,
              lowercase: bool = False, pretokenize: str = "whitespace") -> "WordTokenizer":
        """Vocabulary of the words seen at least ``min_count`` times, the ``max_vocab`` most frequent
        (ties broken alphabetically, so the result does not depend on the order of ``texts``)."""
        split = PRETOKENIZERS[pretokenize]
        counts = Counter(w for t in texts for w in split(t.lower() if lowercase else t))
        for special in SPECIAL_PIECES:
            counts.pop(special, None)
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(ranked[:max_vocab] if max_vocab is not None else ranked, lowercase, pretokenize)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        if self.lowercase:
            text = text.lower()  # "<unk>" stays "<unk>"
        ids = self._ids
        return [ids.get(w, UNK_ID) for w in self._split(text)]

    def _decode(self, ids: list[int]) -> str:
        return " ".join(self.vocab[i] for i in ids)

    def id_to_token(self, i: int) -> str:
        return self.vocab[i]

    def _settings(self) -> dict:
        """What tokenizer.json and the fingerprint hold besides the vocabulary. ``pretokenize`` only
        when it is not whitespace, so whitespace tokenizers keep their files and their fingerprints
        (saved models check them) as before the key existed."""
        if self.pretokenize == "whitespace":
            return {"kind": self.kind, "lowercase": self.lowercase}
        return {"kind": self.kind, "lowercase": self.lowercase, "pretokenize": self.pretokenize}

    def save(self, directory: str | Path) -> None:
        settings = self._settings()
        meta = {"format_version": FORMAT_VERSION, **settings, "vocab": self.vocab}
        atomic_write(Path(directory) / JSON_FILE, _json_bytes(meta))

    def _identity(self) -> bytes:
        return json.dumps({**self._settings(), "vocab": self.vocab},
                          ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def __repr__(self) -> str:
        return (f"WordTokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase}, "
                f"pretokenize={self.pretokenize!r})")

    @classmethod
    def _load(cls, directory: Path, meta: dict) -> "WordTokenizer":
        where = directory / JSON_FILE
        vocab = meta.get("vocab")
        if not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab):
            raise CheckpointError(f"{where}: 'vocab' must be a list of strings")
        if tuple(vocab[:len(SPECIAL_PIECES)]) != SPECIAL_PIECES:
            raise CheckpointError(f"{where}: the vocabulary must start with {list(SPECIAL_PIECES)}, "
                                  f"got {vocab[:len(SPECIAL_PIECES)]}")
        words = vocab[len(SPECIAL_PIECES):]
        bad = [w for w in words if not w or w != "".join(w.split()) or w in SPECIAL_PIECES]
        if bad:
            raise CheckpointError(f"{where}: vocabulary entries must be non-empty, whitespace-free and not "
                                  f"special pieces; bad: {bad[:5]}")
        if len(set(words)) != len(words):
            dup = [w for w, c in Counter(words).items() if c > 1]
            raise CheckpointError(f"{where}: duplicate vocabulary entries {dup[:5]}")
        pretokenize = meta.get("pretokenize", "whitespace")  # absent: whitespace, and in files before the key
        if not isinstance(pretokenize, str) or pretokenize not in PRETOKENIZERS:
            raise CheckpointError(f"{where}: 'pretokenize' is {pretokenize!r}, not one of "
                                  f"{', '.join(map(repr, PRETOKENIZERS))}; the file is damaged, or from a "
                                  f"newer textvae (pip install -U textvae)")
        return cls(words, lowercase=meta["lowercase"], pretokenize=pretokenize)


# --------------------------------------------------------------------------- SentencePiece

# SentencePiece does not recognise special pieces in input text: "<unk>" would be cut into pieces,
# and as the trainer drops such strings from its input, "<" and ">" may not be in the vocabulary at
# all (on PTB "<unk>" encodes to UNK u n k UNK and decodes to "<unk>unk<unk>"). Before encoding, each literal special piece is replaced by U+FFFF, a Unicode noncharacter that
# is never in the vocabulary (it is removed from training text), so it encodes to UNK_ID and
# decodes to <unk>. SentencePiece merges a run of unknown characters into one UNK_ID: "<unk><unk>"
# or two unseen characters are one UNK_ID, except in a model whose pieces are all single characters
# (a char model), where each is its own UNK_ID (see SentencePieceTokenizer._unk_per_character).
_NOT_A_CHAR = "\uffff"
# The trainer silently drops every training sentence that contains U+2585 (SentencePiece's internal
# piece-boundary mark; when all contain it, training fails with an empty message). It is removed from
# training text, like U+FFFF, so the rest of such a sentence is learnt; when encoding, it is an unseen
# character (UNK).
_NOT_FOR_TRAINING = str.maketrans("", "", _NOT_A_CHAR + "\u2585")
_SPECIALS_RE = re.compile("|".join(re.escape(p) for p in SPECIAL_PIECES))
# The trainer also silently drops every training sentence longer than this many UTF-8 bytes. Longer
# ones are cut to their first this many bytes instead, so their start is learnt (the start is what
# data.max_len keeps); raising the limit would make unigram training slow (seconds for one 64 KiB line,
# growing faster than the length).
MAX_TRAINING_BYTES = 1 << 16


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model (Kudo & Richardson 2018): BPE, unigram, char or word pieces."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes, lowercase: bool = False, model_type: str = "unknown"):
        import sentencepiece as spm

        super().__init__(lowercase)
        self.model_proto = bytes(model_proto)  # kept verbatim: saved as-is and hashed
        self.model_type = model_type  # informational (the model proto holds the real one)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        got = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
        if got != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise ValueError(f"SentencePiece model has special ids pad/unk/bos/eos = {got}; "
                             f"textvae needs {(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}")
        # One token per character (a char model; decided by the pieces, which the fingerprint covers):
        # a run of unknown characters is then one UNK_ID per character, as every known one is one id
        self.per_character = all(len(self.sp.id_to_piece(i)) == 1
                                 for i in range(len(SPECIAL_PIECES), self.vocab_size))

    @classmethod
    def train(cls, texts: list[str], vocab_size: int = 8000, model_type: str = "unigram",
              character_coverage: float = 1.0, lowercase: bool = False) -> "SentencePieceTokenizer":
        """Train in memory on ``texts`` (one sentence each). Deterministic for the same texts."""
        import sentencepiece as spm

        texts = [_head((t.lower() if lowercase else t).translate(_NOT_FOR_TRAINING)) for t in texts]
        if not any(t and not t.isspace() for t in texts):
            raise DataError("cannot train a SentencePiece model: no training text (the texts are blank or "
                            "hold only characters SentencePiece cannot learn, U+2585 and U+FFFF)")
        buf = io.BytesIO()
        spm.set_random_generator_seed(0)  # only used when sampling input sentences; fixed anyway
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(texts), model_writer=buf,
                vocab_size=vocab_size, model_type=model_type, character_coverage=character_coverage,
                pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
                pad_piece=SPECIAL_PIECES[PAD_ID], unk_piece=SPECIAL_PIECES[UNK_ID],
                bos_piece=SPECIAL_PIECES[BOS_ID], eos_piece=SPECIAL_PIECES[EOS_ID],
                unk_surface=SPECIAL_PIECES[UNK_ID],  # UNK decodes to "<unk>" as in the word tokenizer
                # exact round trips: no NFKC (it would turn the full-width "，" into ","), spaces kept
                normalization_rule_name="identity", remove_extra_whitespaces=False,
                # the "▁" prefix makes a sentence's first word look like the others; for char models
                # it would only add a "▁" token to every sentence (every sentence in Chinese text)
                add_dummy_prefix=model_type != "char",
                hard_vocab_limit=False,  # a small corpus gives a smaller vocabulary instead of failing
                max_sentence_length=MAX_TRAINING_BYTES,  # bytes; _head cut longer sentences
                num_threads=4,  # fixed, not os.cpu_count(): the result must not depend on the machine
                minloglevel=2,  # silence the training log on stderr
            )
        except RuntimeError as e:
            # drop the "INTERNAL: src/x.cc(123) [check]" prefix
            reason = str(e).rpartition("] ")[2].strip() or str(e).strip() or "no reason given"
            raise ConfigError(f"SentencePiece training failed (tokenizer.vocab_size={vocab_size}, "
                              f"tokenizer.model_type={model_type}, tokenizer.character_coverage="
                              f"{character_coverage}, {len(texts)} training sentences): {reason} "
                              f"(its vocab_size and character_coverage are textvae's tokenizer.vocab_size "
                              f"and tokenizer.character_coverage)") from None
        return cls(buf.getvalue(), lowercase, model_type)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def _prepare(self, text: str) -> str:
        if self.lowercase:
            text = text.lower()
        return _SPECIALS_RE.sub(_NOT_A_CHAR, text) if "<" in text else text

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        prepared = [self._prepare(t) for t in texts]
        ids = self.sp.encode(prepared)
        if self.per_character:
            for k, row in enumerate(ids):
                if UNK_ID in row:
                    ids[k] = self._unk_per_character(prepared[k], row)
        return ids

    def _unk_per_character(self, text: str, ids: list[int]) -> list[int]:
        """``ids`` with each UNK_ID repeated once per character it stands for. SentencePiece merges a run
        of unknown characters into one UNK_ID (with no option to stop it), so in a char model a line
        with two unseen characters side by side would be one token short: the wrong length for a
        poem form, and one token fewer in the perplexity's denominator. The pieces as strings are the
        (normalised, "▁" for " ") text each id covers, one character per character of the input."""
        pieces = self.sp.encode(text, out_type=str)
        out: list[int] = []
        for i, piece in zip(ids, pieces, strict=True):
            out.extend([UNK_ID] * max(1, len(piece)) if i == UNK_ID else [i])
        return out

    def _decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def id_to_token(self, i: int) -> str:
        return self.sp.id_to_piece(i)

    def save(self, directory: str | Path) -> None:
        settings = {"kind": self.kind, "lowercase": self.lowercase, "model_type": self.model_type}
        meta = {"format_version": FORMAT_VERSION, **settings}
        atomic_write(Path(directory) / MODEL_FILE, self.model_proto)
        atomic_write(Path(directory) / JSON_FILE, _json_bytes(meta))

    def _identity(self) -> bytes:
        return f"{self.kind}\0lowercase={self.lowercase}\0".encode() + self.model_proto

    # For copy.deepcopy and multiprocessing: the state is the model bytes, the processor is rebuilt
    # from them. Files on disk never use pickle.
    def __getstate__(self):
        return {"model_proto": self.model_proto, "lowercase": self.lowercase, "model_type": self.model_type}

    def __setstate__(self, state):
        self.__init__(**state)

    @classmethod
    def _load(cls, directory: Path, meta: dict) -> "SentencePieceTokenizer":
        path = directory / MODEL_FILE
        try:
            proto = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{path} is missing ({JSON_FILE} says the tokenizer is sentencepiece); "
                                  f"copy it from the model it came with, or re-save the model") from None
        except OSError as e:
            raise CheckpointError(f"cannot read {path}: {e}") from None
        try:
            return cls(proto, lowercase=meta["lowercase"], model_type=str(meta.get("model_type", "unknown")))
        except (RuntimeError, ValueError) as e:
            raise CheckpointError(f"{path} is not a valid textvae SentencePiece model ({e}); "
                                  f"re-download or re-train the model") from None


def _head(text: str) -> str:
    """``text`` cut to its first :data:`MAX_TRAINING_BYTES` UTF-8 bytes (whole characters)."""
    if len(text) <= MAX_TRAINING_BYTES // 4:  # at most 4 bytes a character: short enough
        return text
    return text.encode("utf-8")[:MAX_TRAINING_BYTES].decode("utf-8", errors="ignore")


TOKENIZERS: dict[str, type[Tokenizer]] = {"word": WordTokenizer, "sentencepiece": SentencePieceTokenizer}


# --------------------------------------------------------------------------- building and loading

def train_tokenizer(cfg: TokenizerConfig, texts: Iterable[str]) -> Tokenizer:
    """Build the tokenizer ``cfg`` describes from training ``texts`` (one example each).

    Raises ConfigError when ``cfg.kind`` is word and the texts are written without spaces
    (:func:`check_spaced_text`).
    """
    texts = [t for t in texts if t and not t.isspace()]
    if not texts:
        raise DataError("cannot build a tokenizer: the training texts are empty (no non-blank examples)")
    if cfg.kind == "word":
        check_spaced_text(texts)
        tok = WordTokenizer.train(texts, cfg.min_count, cfg.max_vocab, cfg.lowercase, cfg.pretokenize)
        if tok.vocab_size == len(SPECIAL_PIECES):  # every token would be <unk>
            _raise_no_words(cfg, texts)
        return tok
    if cfg.kind == "sentencepiece":
        return SentencePieceTokenizer.train(texts, cfg.vocab_size, cfg.model_type, cfg.character_coverage,
                                            cfg.lowercase)
    raise ConfigError(f"tokenizer.kind={cfg.kind!r} is not one of {', '.join(map(repr, TOKENIZERS))}")


def _raise_no_words(cfg: TokenizerConfig, texts: list[str]):
    """The error for a word vocabulary left empty: min_count above every word's count, or no words."""
    split = PRETOKENIZERS[cfg.pretokenize]
    counts = Counter(w for t in texts for w in split(t.lower() if cfg.lowercase else t) if w not in SPECIAL_PIECES)
    if counts:
        word, most = counts.most_common(1)[0]
        raise ConfigError(f"tokenizer.min_count={cfg.min_count} leaves the word vocabulary empty, so every token "
                          f"would read as <unk>: the most frequent of the {len(counts):,} words in the "
                          f"{len(texts):,} training texts, {word!r}, occurs {most:,} times; lower "
                          f"tokenizer.min_count (or use tokenizer.max_vocab to bound the vocabulary)")
    raise DataError(f"cannot build a word vocabulary: the {len(texts):,} training texts hold no words but special "
                    f"pieces ({', '.join(SPECIAL_PIECES)}); check the training text")


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Load the tokenizer saved in ``directory`` (a model directory). Never unpickles.

    Raises CheckpointError when the files are missing, malformed, or from a newer textvae.
    """
    directory = Path(directory)
    path = directory / JSON_FILE
    if not directory.is_dir():
        raise CheckpointError(f"tokenizer directory {directory} does not exist")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{directory} has no {JSON_FILE}; is it a textvae model directory "
                              f"(written by save_pretrained or textvae train)?") from None
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); "
                              f"the file is damaged, re-download the model") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno} ({e.msg}); "
                              f"the file is damaged, re-download the model") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: 'format_version' is missing or not an integer")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format_version {version}, newer than this textvae understands "
                              f"({FORMAT_VERSION}); upgrade textvae (pip install -U textvae)")
    kind = meta.get("kind")
    if not isinstance(kind, str) or kind not in TOKENIZERS:
        raise CheckpointError(f"{path}: unknown tokenizer kind {kind!r}; expected one of "
                              f"{', '.join(map(repr, TOKENIZERS))}")
    if not isinstance(meta.get("lowercase"), bool):
        raise CheckpointError(f"{path}: 'lowercase' is missing or not true/false")
    return TOKENIZERS[kind]._load(directory, meta)


# --------------------------------------------------------------------------- helpers

def _json_bytes(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


