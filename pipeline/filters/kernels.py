"""Compiled kernel of the prose filters' repetition signals (Gopher's top and duplicated word n-grams).

`ngram_fractions` computes, for one document, exactly what `prose._Ngrams.top_fraction` and `dup_fraction`
compute with numpy (the tests hold it to them, bit for bit), in one call instead of a dozen numpy calls per n:
at a few hundred words per document, numpy's per-call overhead, not the work, was the cost.

As in pipeline/dedup/kernels.py, the kernel is compiled once per machine (`cache=True`), releases the GIL
(`nogil=True`), and callers pass fixed dtypes (int64 arrays) so that it has exactly one compiled signature.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def ngram_fractions(ids, lengths, top_ns, dup_ns):
    """(top fraction for each n of `top_ns`, duplicated fraction for each n of `dup_ns`) of one document
    whose words are `ids` (int64: each word's rank in the sorted list of the document's distinct words, so
    that comparing id sequences compares word tuples) with `lengths` (int64: characters per word).

    The n-gram at i gets the group of the pair (group of the (n-1)-gram at i, word at i+n-1), relabelled
    densely, so equal groups are equal n-grams (exact: no hashing)."""
    words = len(ids)
    top = np.zeros(len(top_ns), dtype=np.float64)
    dup = np.zeros(len(dup_ns), dtype=np.float64)
    total = 0
    for i in range(words):
        total += lengths[i]
    longest = 0
    for n in top_ns:
        longest = max(longest, n)
    for n in dup_ns:
        longest = max(longest, n)
    groups = ids.copy()
    for n in range(1, longest + 1):
        grams = words - n + 1
        if grams <= 0:
            break
        if n > 1:
            groups = _pair_groups(groups[:grams], ids[n - 1:], words)
        counts = np.bincount(groups)
        if counts.max() < 2:
            break  # no n-gram repeats, so no longer one does either: every fraction left is 0
        for k in range(len(top_ns)):
            if top_ns[k] == n:
                top[k] = _top_fraction(ids, lengths, groups, counts, n, total)
        for k in range(len(dup_ns)):
            if dup_ns[k] == n:
                dup[k] = _dup_fraction(lengths, groups, counts, n, total)
    return top, dup


@njit(cache=True, nogil=True)
def _pair_groups(first, second, size):
    """Dense labels of the pairs (first[i], second[i]), both in [0, size): equal pairs, equal labels. Linear:
    positions are bucketed by `first` (a counting sort), and within a bucket `second` is looked up in a
    table that is cleared again after the bucket."""
    count = len(first)
    starts = np.zeros(size + 1, dtype=np.int64)
    for i in range(count):
        starts[first[i] + 1] += 1
    for v in range(size):
        starts[v + 1] += starts[v]
    fill = starts[:size].copy()
    order = np.empty(count, dtype=np.int64)
    for i in range(count):
        order[fill[first[i]]] = i
        fill[first[i]] += 1
    label_of = np.full(size, -1, dtype=np.int64)
    labels = np.empty(count, dtype=np.int64)
    label = 0
    for v in range(size):
        for j in range(starts[v], starts[v + 1]):
            b = second[order[j]]
            if label_of[b] < 0:
                label_of[b] = label
                label += 1
            labels[order[j]] = label_of[b]
        for j in range(starts[v], starts[v + 1]):
            label_of[second[order[j]]] = -1
    return labels


@njit(cache=True, nogil=True)
def _top_fraction(ids, lengths, groups, counts, n, total):
    """Characters of the most frequent n-gram times its count over all word characters; ties go to the
    greatest n-gram (as a word tuple); 0 when no n-gram repeats."""
    top = counts.max()
    if top < 2:
        return 0.0
    best = -1
    for i in range(len(groups)):
        if counts[groups[i]] == top and (best < 0 or _greater(ids, i, best, n)):
            best = i
    characters = 0
    for j in range(best, best + n):
        characters += lengths[j]
    return _ratio(top * characters, total)


@njit(cache=True, nogil=True, inline="always")
def _greater(ids, a, b, n):
    """The n words at `a` compare greater than the n words at `b`."""
    for j in range(n):
        if ids[a + j] != ids[b + j]:
            return ids[a + j] > ids[b + j]
    return False


@njit(cache=True, nogil=True)
def _dup_fraction(lengths, groups, counts, n, total):
    """Characters of words inside n-grams that occur more than once (each word once) over all word characters."""
    words = len(lengths)
    cover = np.zeros(words + 1, dtype=np.int64)
    for i in range(len(groups)):
        if counts[groups[i]] > 1:
            cover[i] += 1
            cover[i + n] -= 1
    covered = 0
    running = 0
    for i in range(words):
        running += cover[i]
        if running > 0:
            covered += lengths[i]
    return _ratio(covered, total)


@njit(cache=True, nogil=True, inline="always")
def _ratio(part, whole):
    return part / whole if whole else 0.0
