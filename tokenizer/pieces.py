"""A faster encoder for rnj's own trained tokenizers: split in Python, merge each distinct piece once.

The Hugging Face encoder spends about half its time in its regular-expression split and in building one
`Encoding` per document. For a tokenizer trained by tokenizer/train.py (no normaliser, the split of
PRETOKENIZE_PATTERN then byte-level mapping, a plain BPE model) this encoder gives the same ids, about twice
as fast on code and prose:
  1. split every text of a batch with PRETOKENIZE_PATTERN (the `regex` package's engine);
  2. give each distinct piece of the batch a number (source code repeats its pieces a lot; Arrow's hashing);
  3. encode the distinct pieces once, as one pre-tokenised sequence, with the same BPE model behind the
     byte-level mapping only, and read each piece's ids from the encoding's word ids;
  4. gather every document's ids from its piece numbers (numpy).

The two engines agree on every character below U+0558 (tests/tokenizer/test_pieces.py checks every one
in several contexts), but Unicode versions differ between them above it (characters assigned in recent
versions are letters to one and not the other). So a document with a character at or above U+0558, or
holding the text of an added token (the trace markers are split out before BPE), goes to the Hugging
Face encoder itself, the reference. A tokenizer laid out otherwise (a loaded Llama tokenizer, the NFC
normaliser) uses the reference throughout: `PieceEncoder.for_tokenizer` returns None.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import chain

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tokenizers import Tokenizer

from tokenizer.train import PRETOKENIZE_PATTERN

AGREED_BELOW = "\u0558"
"""The first character on which the `regex` package and the tokenizers library's engine may disagree."""

_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
_SPLIT = {"type": "Split", "pattern": {"Regex": PRETOKENIZE_PATTERN}, "behavior": "Isolated", "invert": False}


def _load_regex():
    """The `regex` package, or None where it is not installed (then every text takes the reference)."""
    try:
        import regex
    except ImportError:
        return None
    return regex


class PieceEncoder:
    """Encodes texts like `tokenizer.encode_batch_fast(texts, add_special_tokens=False)`, faster."""

    def __init__(self, tokenizer: Tokenizer, pieces_tokenizer: Tokenizer, split: Callable, reference_only: Callable):
        self._tokenizer = tokenizer
        self._pieces = pieces_tokenizer
        self._split = split
        self._reference_only = reference_only

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer) -> PieceEncoder | None:
        """The fast encoder of `tokenizer`, or None when it is not laid out as tokenizer/train.py lays it out."""
        regex = _load_regex()
        spec = json.loads(tokenizer.to_str())
        model = spec.get("model") or {}
        if (regex is None or spec.get("normalizer") is not None
                or spec.get("pre_tokenizer") != {"type": "Sequence", "pretokenizers": [_SPLIT, _BYTE_LEVEL]}
                or model.get("type") != "BPE" or model.get("dropout") is not None):
            return None
        added = sorted({t["content"] for t in spec.get("added_tokens", [])})
        # The same BPE model behind the byte-level mapping alone: each piece handed to it is one word.
        spec.update(normalizer=None, post_processor=None, added_tokens=[], pre_tokenizer=_BYTE_LEVEL)
        pieces = Tokenizer.from_str(json.dumps(spec))
        return cls(tokenizer, pieces, regex.compile(PRETOKENIZE_PATTERN).findall, _reference_only(added))

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(offsets int64 of len(texts) + 1, ids int32): document i's ids are ids[offsets[i]:offsets[i + 1]]."""
        reference = [i for i, text in enumerate(texts) if self._reference_only(text)]
        if not reference:
            return self._encode_split(texts)
        by_reference = dict(zip(reference, self._encode_reference([texts[i] for i in reference])))
        chosen = set(reference)
        offsets, ids = self._encode_split([t for i, t in enumerate(texts) if i not in chosen])
        parts, split_index = [], 0
        for i in range(len(texts)):
            if i in chosen:
                parts.append(by_reference[i])
            else:
                parts.append(ids[offsets[split_index]:offsets[split_index + 1]])
                split_index += 1
        return _flatten(parts)

    def _encode_reference(self, texts: list[str]) -> list[np.ndarray]:
        encodings = self._tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encodings]

    def _encode_split(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        split = [self._split(text) for text in texts]
        pieces_per_text = np.fromiter(map(len, split), dtype=np.int64, count=len(split))
        if not pieces_per_text.any():
            return np.zeros(len(texts) + 1, dtype=np.int64), np.zeros(0, dtype=np.int32)
        # Numbered by Arrow's hash table (C++), a Python dict costing twice as much per piece.
        numbered = pc.dictionary_encode(pa.array(list(chain.from_iterable(split)), pa.string()))
        codes = numbered.indices.to_numpy().astype(np.int64)
        distinct = numbered.dictionary.to_pylist()
        encoding = self._pieces.encode(distinct, is_pretokenized=True, add_special_tokens=False)
        distinct_ids = np.asarray(encoding.ids, dtype=np.int32)
        piece_lengths = np.bincount(np.asarray(encoding.word_ids, dtype=np.int64), minlength=len(distinct))
        piece_starts = _starts(piece_lengths)
        lengths = piece_lengths[codes]
        out_starts = _starts(lengths)
        gather = np.repeat(piece_starts[:-1][codes] - out_starts[:-1], lengths) + np.arange(out_starts[-1])
        offsets = out_starts[np.concatenate([[0], np.cumsum(pieces_per_text)])]
        return offsets, distinct_ids[gather]


def _reference_only(added: list[str]) -> Callable[[str], bool]:
    """Whether a text must take the reference encoder: a character the engines may disagree on, or an
    added token's text. Plain substring tests (C speed; a regular expression of 256 alternatives is not)."""
    prefixes = sorted({a[:2] for a in added})

    def reference_only(text: str) -> bool:
        if not text.isascii() and max(text) >= AGREED_BELOW:
            return True
        return any(p in text for p in prefixes) and any(a in text for a in added)

    return reference_only


def _starts(lengths: np.ndarray) -> np.ndarray:
    """[0, cumulative sums of `lengths`...]: len(lengths) + 1 values."""
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    return starts


def _flatten(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = _starts(np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)))
    ids = np.concatenate(parts).astype(np.int32, copy=False) if parts else np.zeros(0, dtype=np.int32)
    return offsets, ids
