"""Vectorised shingling: n-grams of normalised tokens, hashed straight from an Arrow string buffer.

Input: a string array whose tokens are separated by exactly one space (see `pipeline.dedup.normalize`).
A shingle is the byte span from the start of token i to the end of token i+n-1, i.e. the UTF-8 bytes of
`" ".join(tokens[i:i+n])`; a document with fewer than n tokens has one shingle, all of it. Every span is
hashed with a polynomial hash computed from prefix sums over the whole buffer, so a batch costs a fixed
number of numpy passes over its bytes whatever its documents look like: no Python loop per token.

`span_hash64(bytes)` is the same hash for one byte string in plain Python: the reference for tests and
the `hashfunc` that makes `datasketch.MinHash` produce our signatures.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa

_MASK64 = (1 << 64) - 1
_P = 0x100000001B3  # odd, so invertible modulo 2^64 (FNV's 64-bit prime)
_Q = pow(_P, -1, 1 << 64)  # the hash weights byte i by Q^i; P^s shifts a span starting at s back to 0
_LENGTH_SALT = 0x9E3779B97F4A7C15
_SPACE = 32


@dataclass(frozen=True)
class Shingles:
    """The shingles of a batch: `doc[k]` is the document (row) of shingle k, ascending; `hash64[k]` its hash."""

    doc: np.ndarray
    hash64: np.ndarray
    num_docs: int

    @property
    def hash32(self) -> np.ndarray:
        """The top 32 bits: the input hash MinHash's 32-bit permutations expect."""
        return (self.hash64 >> np.uint64(32)).astype(np.uint32)

    def counts(self) -> np.ndarray:
        return np.bincount(self.doc, minlength=self.num_docs)


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (a bijection that spreads every input bit over the output)."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _fmix64_int(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK64
    return h ^ (h >> 33)


def span_hash64(data: bytes) -> int:
    """The hash of one byte string, exactly as the vectorised path computes it for a span."""
    h, weight = 0, 1
    for byte in data:
        h = (h + byte * weight) & _MASK64
        weight = (weight * _Q) & _MASK64
    return _fmix64_int(h ^ ((len(data) * _LENGTH_SALT) & _MASK64))


def span_hash32(data: bytes) -> int:
    """Top 32 bits of `span_hash64`: pass as `hashfunc` to `datasketch.MinHash` to get our signatures."""
    return span_hash64(data) >> 32


@lru_cache(maxsize=1)
def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Q^i and P^i for i < size (a power of two of at least 2^21, so one size serves almost every chunk)."""
    q = np.full(size, _Q, dtype=np.uint64)
    q[0] = 1
    p = np.full(size, _P, dtype=np.uint64)
    p[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(q), np.cumprod(p)


def string_buffers(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets relative to the first byte, bytes) of a string array, without copying the text."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    texts = texts.fill_null("")
    width = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    buffers = texts.buffers()
    offsets = np.frombuffer(buffers[1], dtype=width)[texts.offset: texts.offset + len(texts) + 1].astype(np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    data = data[offsets[0]: offsets[-1]]
    return offsets - offsets[0], data


def token_bounds(offsets: np.ndarray, data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document, start byte, end byte) of every token, in order; tokens are single-space separated."""
    word = data != _SPACE
    nonempty = offsets[1:] > offsets[:-1]
    boundary_before = np.ones(len(data), dtype=bool)
    boundary_before[1:] = ~word[:-1]
    boundary_before[offsets[:-1][nonempty]] = True
    boundary_after = np.ones(len(data), dtype=bool)
    boundary_after[:-1] = ~word[1:]
    boundary_after[offsets[1:][nonempty] - 1] = True
    starts = np.flatnonzero(word & boundary_before)
    ends = np.flatnonzero(word & boundary_after) + 1
    docs = np.searchsorted(offsets, starts, side="right") - 1
    return docs, starts, ends


def ngram_bounds(offsets: np.ndarray, data: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document, start byte, end byte) of every n-gram; a document with 1..n-1 tokens gives one."""
    docs, starts, ends = token_bounds(offsets, data)
    num_docs = len(offsets) - 1
    per_doc = np.bincount(docs, minlength=num_docs)
    first = np.concatenate([[0], np.cumsum(per_doc)[:-1]])
    local = np.arange(len(docs)) - first[docs]
    count = per_doc[docs]
    opens = (local <= count - n) | ((local == 0) & (count < n))
    index = np.flatnonzero(opens)
    last = np.minimum(index + n - 1, first[docs[index]] + count[index] - 1)
    return docs[index], starts[index], ends[last]


def span_hashes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """`span_hash64(data[s:e])` for every (s, e), from one prefix sum over the buffer."""
    if len(starts) == 0:
        return np.zeros(0, dtype=np.uint64)
    size = max(1 << 21, 1 << int(len(data) + 1).bit_length())
    q_pow, p_pow = _powers(size)
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(data) + 1, dtype=np.uint64)
        np.cumsum(data.astype(np.uint64) * q_pow[: len(data)], out=prefix[1:])
        h = (prefix[ends] - prefix[starts]) * p_pow[starts]
        lengths = (ends - starts).astype(np.uint64) * np.uint64(_LENGTH_SALT)
        return fmix64(h ^ lengths)


MAX_CHUNK_BYTES = 1 << 20
"""Text hashed at once: the prefix sums take ~16 bytes per text byte, so 1 MB chunks stay small."""


def shingle_hashes(texts: pa.Array, n: int) -> Shingles:
    """Hashes of every n-gram of every (normalised) text, in document order."""
    offsets, data = string_buffers(texts)
    num_docs = len(offsets) - 1
    docs_out, hashes_out = [], []
    for lo, hi in _chunks(offsets):
        sub = offsets[lo: hi + 1]
        docs, starts, ends = ngram_bounds(sub - sub[0], data[sub[0]: sub[-1]], n)
        docs_out.append(docs + lo)
        hashes_out.append(span_hashes(data[sub[0]: sub[-1]], starts, ends))
    if not docs_out:
        return Shingles(np.zeros(0, np.int64), np.zeros(0, np.uint64), num_docs)
    return Shingles(np.concatenate(docs_out), np.concatenate(hashes_out), num_docs)


def _chunks(offsets: np.ndarray):
    """Document ranges [lo, hi) of about MAX_CHUNK_BYTES each (a longer document gets a range of its own)."""
    num_docs = len(offsets) - 1
    lo = 0
    while lo < num_docs:
        hi = int(np.searchsorted(offsets, offsets[lo] + MAX_CHUNK_BYTES, side="right")) - 1
        hi = min(max(hi, lo + 1), num_docs)
        yield lo, hi
        lo = hi


def shingle_bytes(texts: pa.Array, n: int) -> list[list[bytes]]:
    """The shingles themselves, per document, as the vectorised path sees them (for tests and benchmarks)."""
    offsets, data = string_buffers(texts)
    docs, starts, ends = ngram_bounds(offsets, data, n)
    raw = data.tobytes()
    out: list[list[bytes]] = [[] for _ in range(len(offsets) - 1)]
    for d, s, e in zip(docs.tolist(), starts.tolist(), ends.tolist()):
        out[d].append(raw[s:e])
    return out
