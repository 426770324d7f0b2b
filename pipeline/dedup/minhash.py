"""MinHash signatures, LSH bands and their parameters, vectorised over whole batches of shingles.

The permutations are datasketch 2's default `affine32` scheme, bit for bit: the 32-bit input hash is
pre-mixed with MurmurHash3's 32-bit finaliser, then permuted as `a * h + b mod 2^32` with `a` odd, and
`a`, `b` drawn from `numpy.random.RandomState(seed)` in the same order. So for the same shingles and the
same hash function (`pipeline.dedup.shingles.span_hash32`) a signature here equals
`datasketch.MinHash(num_perm, seed, hashfunc=span_hash32)` after `update_batch(shingles)`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pipeline.dedup.kernels import band_keys_kernel, minhash_kernel

EMPTY = np.uint32(0xFFFFFFFF)
"""The value of every slot of an empty signature (datasketch's initial hash values)."""
ROWS_PER_CHUNK = 16_384
"""Shingles permuted at once: a (num_perm x 16384) uint32 block is 8 MB at 128 permutations."""


@lru_cache(maxsize=4)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) as datasketch.MinHash(num_perm, seed).permutations draws them for the affine32 scheme."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser (datasketch's pre-mix of every input hash)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def signatures(doc: np.ndarray, hash32: np.ndarray, num_docs: int, num_perm: int, seed: int) -> np.ndarray:
    """(num_docs, num_perm) uint32 signatures; `doc` (ascending) names the document of each input hash.

    Hashes are permuted in blocks laid out permutation-major (num_perm x block: each permutation's row is
    contiguous, which is what makes numpy fast here) and reduced per document with `np.minimum.reduceat`;
    a document split across blocks is merged with a minimum, so the block size never changes the result.
    """
    a, b = permutations(num_perm, seed)
    out = np.full((num_perm, num_docs), EMPTY, dtype=np.uint32)
    mixed = fmix32(hash32.astype(np.uint32, copy=False))
    block = np.empty((num_perm, min(ROWS_PER_CHUNK, max(len(mixed), 1))), dtype=np.uint32)
    a_col, b_col = a[:, None], b[:, None]
    for lo in range(0, len(mixed), ROWS_PER_CHUNK):
        h = mixed[lo: lo + ROWS_PER_CHUNK]
        d = doc[lo: lo + ROWS_PER_CHUNK]
        m = block[:, : len(h)]
        np.multiply(a_col, h[None, :], out=m)
        np.add(m, b_col, out=m)
        cuts = np.concatenate([[0], np.flatnonzero(d[1:] != d[:-1]) + 1])
        owners = d[cuts]
        out[:, owners] = np.minimum(out[:, owners], np.minimum.reduceat(m, cuts, axis=1))
    return np.ascontiguousarray(out.T)


def compiled_signatures(doc: np.ndarray, hash32: np.ndarray, num_docs: int, num_perm: int,
                        seed: int) -> np.ndarray:
    """`signatures` by the compiled kernel (`doc` ascending): the same (num_docs, num_perm) uint32."""
    a, b = permutations(num_perm, seed)
    return minhash_kernel(doc.astype(np.int64, copy=False), hash32.astype(np.uint32, copy=False),
                          np.int64(num_docs), a, b)


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(num_docs, bands) int64: a 64-bit hash of each band's `rows` values, salted by the band number."""
    from pipeline.dedup.shingles import fmix64

    keys = np.empty((len(sigs), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            h = np.full(len(sigs), np.uint64(band + 1) * np.uint64(0x9E3779B97F4A7C15), dtype=np.uint64)
            for col in range(band * rows, (band + 1) * rows):
                h = fmix64(h ^ sigs[:, col].astype(np.uint64))
            keys[:, band] = h
    return keys.view(np.int64)


def compiled_band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """`band_keys` by the compiled kernel: the same (num_docs, bands) int64."""
    sigs = np.ascontiguousarray(sigs, dtype=np.uint32)
    return band_keys_kernel(sigs, np.int64(bands), np.int64(rows)).view(np.int64)


def signature_jaccard(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of row-aligned signatures: the share of equal slots."""
    return (left == right).mean(axis=1)


def layout_for_recall(threshold: float, num_perm: int, recall_jaccard: float,
                      target_recall: float) -> tuple[int, int]:
    """(bands, rows): datasketch's optimal parameters for `threshold` (its weighted areas under the S-curve)
    with the lowest false-negative weight, in steps of 0.01 from 0.5, whose probability of making a pair of
    true Jaccard `recall_jaccard` a candidate reaches `target_recall`; the most bands if none does."""
    return _layout_for_recall(round(threshold, 6), num_perm, round(recall_jaccard, 6), round(target_recall, 6))


@lru_cache(maxsize=64)
def _layout_for_recall(threshold: float, num_perm: int, recall_jaccard: float,
                       target_recall: float) -> tuple[int, int]:
    from datasketch.lsh import _optimal_param

    def layout(step: int) -> tuple[int, int]:
        return _optimal_param(threshold, num_perm, 0.5 - step / 100, 0.5 + step / 100)

    def reaches(step: int) -> bool:
        return candidate_probability(recall_jaccard, *layout(step)) >= target_recall

    # More weight on false negatives only ever adds bands, so the recall grows with it: bisect.
    low, high = 0, 49
    if not reaches(high):
        return layout(high)
    while low < high:
        middle = (low + high) // 2
        if reaches(middle):
            high = middle
        else:
            low = middle + 1
    return layout(low)


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that two documents of this Jaccard share at least one band."""
    return 1 - (1 - similarity ** rows) ** bands
