"""Vectorised shingling: hashes of n-grams of tokens, straight from an Arrow string buffer.

A token's hash is a 64-bit polynomial hash of its bytes, computed for every token of a batch from one
prefix sum over the buffer (then MurmurHash3's finaliser). A shingle is n consecutive tokens of one
document (a document with 1..n-1 tokens has one shingle, all of them); its hash combines the token hashes
by Horner's rule, so the spacing between tokens never matters and no normalised string is ever built.
A batch costs a fixed number of numpy passes over its bytes and tokens: no Python loop per token.

`shingle_hash64(b"tok tok tok")` is the same hash for one shingle written as its space-joined tokens:
the reference for tests and the `hashfunc` (via `shingle_hash32`) that makes `datasketch.MinHash`
produce our signatures.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pipeline.dedup.kernels import shingle_kernel
from pipeline.dedup.normalize import (  # noqa: F401  (string_buffers: re-exported)
    Tokens,
    code_bytes,
    code_classes,
    prose_bytes,
    string_buffers,
)

_MASK64 = (1 << 64) - 1
_P = 0x100000001B3  # odd, so invertible modulo 2^64 (FNV's 64-bit prime)
_Q = pow(_P, -1, 1 << 64)  # the hash weights byte i by Q^i; P^s shifts a span starting at s back to 0
_R = 0x9FB21C651E98DF25  # Horner multiplier over token hashes
_LENGTH_SALT = 0x9E3779B97F4A7C15
_COUNT_SALT = 0xC2B2AE3D27D4EB4F


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
        """Shingles per document (`doc` is ascending: a search per document, not a pass over the shingles)."""
        return np.diff(np.searchsorted(self.doc, np.arange(self.num_docs + 1)))


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (a bijection that spreads every input bit over the output)."""
    h = h ^ (h >> np.uint64(33))
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def _fmix64_int(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK64
    return h ^ (h >> 33)


def span_hash64(data: bytes) -> int:
    """The hash of one token's bytes, exactly as the vectorised path computes it."""
    h, weight = 0, 1
    for byte in data:
        h = (h + byte * weight) & _MASK64
        weight = (weight * _Q) & _MASK64
    return _fmix64_int(h ^ ((len(data) * _LENGTH_SALT) & _MASK64))


def shingle_hash64(shingle: bytes) -> int:
    """The hash of one shingle given as its tokens joined by single spaces."""
    tokens = shingle.split(b" ")
    h = 0
    for token in tokens:
        h = (h * _R + span_hash64(token)) & _MASK64
    return _fmix64_int(h ^ ((len(tokens) * _COUNT_SALT) & _MASK64))


def shingle_hash32(shingle: bytes) -> int:
    """Top 32 bits of `shingle_hash64`: pass as `hashfunc` to `datasketch.MinHash` to get our signatures."""
    return shingle_hash64(shingle) >> 32


@lru_cache(maxsize=2)
def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Q^i and P^i for i < size (a power of two of at least 2^21, so one size serves almost every chunk)."""
    q = np.full(size, _Q, dtype=np.uint64)
    q[0] = 1
    p = np.full(size, _P, dtype=np.uint64)
    p[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(q), np.cumprod(p)


def span_hashes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """`span_hash64(data[s:e])` for every (s, e), from one prefix sum over the buffer."""
    if len(starts) == 0:
        return np.zeros(0, dtype=np.uint64)
    size = max(1 << 21, 1 << int(len(data) + 1).bit_length())
    q_pow, p_pow = _powers(size)
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(data) + 1, dtype=np.uint64)
        weighted = data.astype(np.uint64)
        weighted *= q_pow[: len(data)]
        np.cumsum(weighted, out=prefix[1:])
        h = prefix[ends] - prefix[starts]
        h *= p_pow[starts]
        h ^= (ends - starts).astype(np.uint64) * np.uint64(_LENGTH_SALT)
        return fmix64(h)


MAX_CHUNK_BYTES = 1 << 20
"""Text hashed at once: the prefix sums take ~16 bytes per text byte, so 1 MB chunks stay in cache."""


def token_hashes(tokens: Tokens) -> np.ndarray:
    """`span_hash64` of every token, hashed in chunks of about MAX_CHUNK_BYTES of the buffer."""
    out = np.empty(len(tokens.start), dtype=np.uint64)
    lo = 0
    while lo < len(tokens.start):
        base = tokens.start[lo]
        hi = int(np.searchsorted(tokens.start, base + MAX_CHUNK_BYTES, side="left"))
        hi = max(hi, lo + 1)
        top = tokens.end[hi - 1]
        out[lo:hi] = span_hashes(tokens.data[base:top], tokens.start[lo:hi] - base, tokens.end[lo:hi] - base)
        lo = hi
    return out


def shingle_hashes(tokens: Tokens, n: int) -> Shingles:
    """Hashes of every n-gram of tokens of every document, in document order."""
    if len(tokens.doc) == 0:
        return Shingles(np.zeros(0, np.int64), np.zeros(0, np.uint64), tokens.num_docs)
    hashes = token_hashes(tokens)
    docs = tokens.doc
    per_doc = np.bincount(docs, minlength=tokens.num_docs)
    first = np.concatenate([[0], np.cumsum(per_doc)[:-1]])
    local = np.arange(len(docs)) - first[docs]
    count = per_doc[docs]
    full = local <= count - n
    short = np.flatnonzero((local == 0) & (count < n))  # documents with fewer than n tokens: one shingle
    r = np.uint64(_R)
    with np.errstate(over="ignore"):
        # full windows: Horner's rule over shifted views of the token hashes (no gathers, no masks)
        width = len(hashes) - n + 1
        h = hashes[:width].copy() if width > 0 else np.zeros(0, np.uint64)
        for j in range(1, n):
            h *= r
            h += hashes[j: j + width]
        h ^= np.uint64(n) * np.uint64(_COUNT_SALT)
        opens = np.flatnonzero(full)
        whole = h[opens] if width > 0 else np.zeros(0, np.uint64)
        if len(short):
            widths = count[short]
            tail = np.zeros(len(short), dtype=np.uint64)
            for j in range(int(widths.max())):
                inside = j < widths
                tail[inside] = tail[inside] * r + hashes[short[inside] + j]
            tail ^= widths.astype(np.uint64) * np.uint64(_COUNT_SALT)
            starts = np.concatenate([opens, short])
            order = np.argsort(starts, kind="stable")
            return Shingles(docs[starts[order]], fmix64(np.concatenate([whole, tail])[order]), tokens.num_docs)
        return Shingles(docs[opens], fmix64(whole), tokens.num_docs)


def prose_shingles(texts, n: int, map_digits: bool = True) -> Shingles:
    """`shingle_hashes(prose_tokens(texts, map_digits), n)` by the compiled kernel: one pass over the bytes."""
    offsets, data, table = prose_bytes(texts, map_digits)
    word = _prose_word_table()
    return _compiled(offsets, data, table, word, word, n)


def code_shingles(texts, n: int) -> Shingles:
    """`shingle_hashes(code_tokens_of(texts), n)` by the compiled kernel."""
    offsets, data = code_bytes(texts)
    token, glue = code_classes()
    return _compiled(offsets, data, _IDENTITY, token, glue, n)


_IDENTITY = np.arange(256, dtype=np.uint8)


@lru_cache(maxsize=1)
def _prose_word_table() -> np.ndarray:
    word = np.ones(256, dtype=np.bool_)
    word[ord(" ")] = False
    return word


def _compiled(offsets: np.ndarray, data: np.ndarray, table: np.ndarray, token: np.ndarray, glue: np.ndarray,
              n: int) -> Shingles:
    doc, hashes = shingle_kernel(np.ascontiguousarray(data, dtype=np.uint8), offsets.astype(np.int64, copy=False),
                                 table, token, glue, np.int64(n))
    return Shingles(doc, hashes, len(offsets) - 1)


def shingle_bytes(tokens: Tokens, n: int) -> list[list[bytes]]:
    """The shingles themselves, per document, as space-joined tokens (for tests and benchmarks)."""
    raw = tokens.data.tobytes()
    words: list[list[bytes]] = [[] for _ in range(tokens.num_docs)]
    for d, s, e in zip(tokens.doc.tolist(), tokens.start.tolist(), tokens.end.tolist()):
        words[d].append(raw[s:e])
    out = []
    for doc in words:
        if not doc:
            out.append([])
        elif len(doc) < n:
            out.append([b" ".join(doc)])
        else:
            out.append([b" ".join(doc[i: i + n]) for i in range(len(doc) - n + 1)])
    return out
