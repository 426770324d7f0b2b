"""Compiled kernels of the features and rewrite passes: one loop over a batch's UTF-8 buffer instead of a dozen
numpy or Arrow passes.

Each kernel computes exactly what its numpy reference computes (the tests hold them to it, bit for bit):
- `shingle_kernel`: the tokens of every document (`normalize._bounds`), their hashes
  (`shingles.span_hashes`) and the hashes of their n-grams (`shingles.shingle_hashes`), without
  materialising a token.
- `minhash_kernel`: the MinHash signatures of `minhash.signatures` (datasketch's affine32 permutations).
- `collapse_kernel`: `normalize.collapse_spaces(normalize.blank_to_space(...))` in one pass.
- `line_form_kernel`, `join_lines_kernel`: `collapse_kernel`'s line form split on newlines
  (`boilerplate.split_lines`), and its exact form from those lines (`normalize.normal_forms`).
- `drop_lines_kernel`: texts without some of their lines (split, filter and `binary_join` in Arrow).
- `band_keys_kernel`, `distinct_per_doc_kernel`, `insert_spaces_kernel`: `minhash.band_keys`, the
  sorted distinct values of each document, `np.insert` of spaces.

Every kernel is compiled once per machine (`cache=True` keeps the machine code next to this module) and
releases the GIL (`nogil=True`). Callers pass fixed dtypes (bytes uint8, offsets int64, tables uint8 or
bool) so that each kernel has exactly one compiled signature. Unicode classes are not decided here: callers
mark the bytes of non-ASCII spaces and marks first (`normalize.non_ascii_bytes_of`).

Arithmetic is unsigned and wraps, as numpy's does: every constant is a `np.uint64`/`np.uint32` so numba
never promotes a mix of signed and unsigned integers to floats. Flags that are added or masked byte by
byte are int64: numba converts uint8 arithmetic on every byte, which halves the speed of a byte loop.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_P = np.uint64(0x100000001B3)
_Q = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_R = np.uint64(0x9FB21C651E98DF25)
_LENGTH_SALT = np.uint64(0x9E3779B97F4A7C15)
_COUNT_SALT = np.uint64(0xC2B2AE3D27D4EB4F)
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_ZERO = np.uint64(0)
_ONE = np.uint64(1)
_SPACE = np.uint8(0x20)
_NEWLINE = np.uint8(0x0A)
_EMPTY32 = np.uint32(0xFFFFFFFF)
_C1 = np.uint32(0x85EBCA6B)
_C2 = np.uint32(0xC2B2AE35)
_S16 = np.uint32(16)
_S13 = np.uint32(13)


@njit(cache=True, nogil=True, inline="always")
def fmix64(h):
    h ^= h >> _S33
    h *= _M1
    h ^= h >> _S33
    h *= _M2
    return h ^ (h >> _S33)


@njit(cache=True, nogil=True)
def shingle_kernel(data, offsets, byte_map, token, glue, n):
    """(document of each shingle, its 64-bit hash) for n-grams of tokens: the bytes of document d are
    `byte_map[data[offsets[d]:offsets[d + 1]]]`; a `token` byte starts a token unless it and the byte
    before it in the document both `glue` (glue bytes must be token bytes). A document with 1..n-1
    tokens has one shingle of all of them; one without tokens has none.

    The loop over bytes has no branch that depends on the text (token boundaries are unpredictable):
    flags are added as integers and every byte stores a candidate hash that only a boundary keeps."""
    num_docs = len(offsets) - 1
    longest = 0
    for d in range(num_docs):
        longest = max(longest, offsets[d + 1] - offsets[d])
    hashes = np.empty(longest + 1, np.uint64)  # a document's token hashes: at most one token per byte
    q_pow = np.empty(longest + 1, np.uint64)  # Q^p: the weight of a token's byte p
    q_pow[0] = _ONE
    for p in range(1, longest + 1):
        q_pow[p] = q_pow[p - 1] * _Q
    doc = np.empty(max(len(data) // 4, 16), np.int64)  # grown by doubling
    out = np.empty(len(doc), np.uint64)
    salt_n = np.uint64(n) * _COUNT_SALT
    k = 0
    for d in range(num_docs):
        found = 0
        previous_glues = 0  # flags as int64: uint8 arithmetic costs numba conversions on every byte
        open_token = 0  # the previous byte belongs to a token
        h = _ZERO
        length = _ZERO
        for i in range(offsets[d], offsets[d + 1]):
            byte = byte_map[data[i]]
            glues = np.int64(glue[byte])
            joined = glues & previous_glues
            hashes[found] = h ^ (length * _LENGTH_SALT)  # kept only if a token ends here (mixed below)
            found += open_token & (1 - joined)
            keep = _ZERO - np.uint64(joined)  # all ones inside a token, else zero: continue or restart
            length &= keep
            h = (h & keep) + np.uint64(byte) * q_pow[length]  # a table, not a running product: no chain
            length += _ONE  # of multiplications from byte to byte
            open_token = np.int64(token[byte])
            previous_glues = glues
        if open_token:
            hashes[found] = h ^ (length * _LENGTH_SALT)
            found += 1
        for j in range(found):
            hashes[j] = fmix64(hashes[j])
        if found == 0:
            continue
        if k + found >= len(doc):
            doc, out = _grown(doc, k + found), _grown(out, k + found)
        if found < n:
            h = _ZERO
            for j in range(found):
                h = h * _R + hashes[j]
            doc[k] = d
            out[k] = fmix64(h ^ (np.uint64(found) * _COUNT_SALT))
            k += 1
            continue
        for start in range(found - n + 1):
            h = _ZERO
            for j in range(start, start + n):
                h = h * _R + hashes[j]
            doc[k] = d
            out[k] = fmix64(h ^ salt_n)
            k += 1
    return doc[:k].copy(), out[:k].copy()


@njit(cache=True, nogil=True, inline="always")
def _grown(values, needed):
    bigger = np.empty(max(2 * len(values), needed), values.dtype)
    bigger[: len(values)] = values
    return bigger


@njit(cache=True, nogil=True)
def minhash_kernel(doc, hash32, num_docs, a, b):
    """(num_docs, len(a)) uint32: per document, the minimum over its hashes of `a * fmix32(h) + b mod 2^32`
    (`doc` ascending); an empty document keeps 0xFFFFFFFF in every slot. Hashes are mixed first, then
    permuted four at a time: one pass over the row of minima (and over `a`, `b`) serves four hashes."""
    num_perm = len(a)
    out = np.full((num_docs, num_perm), _EMPTY32, np.uint32)
    row = np.empty(num_perm, np.uint32)
    mixed = np.empty(len(hash32), np.uint32)
    for k in range(len(hash32)):
        h = hash32[k]
        h ^= h >> _S16
        h = np.uint32(h * _C1)
        h ^= h >> _S13
        h = np.uint32(h * _C2)
        h ^= h >> _S16
        mixed[k] = h
    total = len(hash32)
    lo = 0
    while lo < total:
        d = doc[lo]
        hi = lo + 1
        while hi < total and doc[hi] == d:
            hi += 1
        row[:] = _EMPTY32
        k = lo
        while k + 4 <= hi:
            h1 = mixed[k]
            h2 = mixed[k + 1]
            h3 = mixed[k + 2]
            h4 = mixed[k + 3]
            for p in range(num_perm):
                v1 = np.uint32(a[p] * h1 + b[p])
                v2 = np.uint32(a[p] * h2 + b[p])
                v3 = np.uint32(a[p] * h3 + b[p])
                v4 = np.uint32(a[p] * h4 + b[p])
                row[p] = min(row[p], min(min(v1, v2), min(v3, v4)))
            k += 4
        while k < hi:
            h1 = mixed[k]
            for p in range(num_perm):
                row[p] = min(row[p], np.uint32(a[p] * h1 + b[p]))
            k += 1
        for p in range(num_perm):
            out[d, p] = min(out[d, p], row[p])
        lo = hi
    return out


@njit(cache=True, nogil=True)
def collapse_kernel(data, offsets, blanks, extra_blanks):
    """For each row of `blanks` (a (forms, 256) bool table, one or two rows), (offsets, bytes) of the texts
    with every byte that the row marks, and every position in `extra_blanks` (ascending), read as a
    space; then each run of spaces dropped, except its first byte where the run has a byte other than a
    newline on both sides inside its text. Two forms cost one pass over the bytes."""
    num_docs = len(offsets) - 1
    forms = blanks.shape[0]
    out = np.empty((forms, len(data) + 1), np.uint8)  # every byte stores; kept ones advance (no branches)
    out_offsets = np.zeros((forms, num_docs + 1), np.int64)
    k0 = 0
    k1 = 0
    x = 0
    for d in range(num_docs):
        after0 = np.uint8(0)
        after1 = np.uint8(0)
        previous0 = _NEWLINE  # the last byte kept; the text's start counts like a newline
        previous1 = _NEWLINE
        for i in range(offsets[d], offsets[d + 1]):
            byte = data[i]
            extra = x < len(extra_blanks) and extra_blanks[x] == i
            x += extra
            k0, after0, previous0 = _collapse_step(out[0], k0, byte, blanks[0, byte] | extra, after0, previous0)
            if forms == 2:
                k1, after1, previous1 = _collapse_step(out[1], k1, byte, blanks[1, byte] | extra, after1, previous1)
        out_offsets[0, d + 1] = k0
        if forms == 2:
            out_offsets[1, d + 1] = k1
    return out_offsets, out, np.array([k0, k1])


@njit(cache=True, nogil=True, inline="always")
def _collapse_step(out, k, byte, blank, after_space, previous):
    """One byte of `collapse_kernel`: (next write position, this byte is a space, last byte kept)."""
    space = np.uint8(blank)
    byte = _SPACE if space else byte
    word = np.uint8(1) - space
    out[k] = _SPACE  # the run's one space, kept between two bytes of a line
    k += word & after_space & np.uint8(previous != _NEWLINE) & np.uint8(byte != _NEWLINE)
    out[k] = byte
    k += word
    return k, space, previous if space else byte


@njit(cache=True, nogil=True)
def line_form_kernel(data, offsets, blank_line, max_lines):
    """The lines of `collapse_kernel`'s line form (`blank_line`: newlines not blank; the caller sets the
    bytes of non-ASCII spaces to ASCII spaces first), cut as they are written: (line offsets, line bytes,
    document of each line, characters of each line). Newlines are left out, so each document has one line
    more than it has newlines; `max_lines` is at least the number of lines. A run of blanks keeps one
    space only between two bytes of its line (`started`: a byte of the line was kept; `after`: a blank
    came since). Characters are UTF-8 code points (bytes that are not continuation bytes)."""
    num_docs = len(offsets) - 1
    lines = np.empty(len(data) + 1, np.uint8)
    line_offsets = np.zeros(max_lines + 1, np.int64)
    line_doc = np.empty(max_lines, np.int64)
    line_chars = np.empty(max_lines, np.int64)
    kl = 0
    li = 0
    for d in range(num_docs):
        after = 0  # flags as int64: uint8 arithmetic costs numba conversions on every byte (2x slower)
        started = 0
        chars = 0
        for i in range(offsets[d], offsets[d + 1]):
            byte = data[i]
            if byte == _NEWLINE:
                line_offsets[li + 1] = kl
                line_doc[li] = d
                line_chars[li] = chars
                li += 1
                chars = 0
                after = 0
                started = 0
                continue
            space = np.int64(blank_line[byte])
            word = 1 - space
            gap = word & after & started
            lines[kl] = _SPACE
            kl += gap
            lines[kl] = byte
            kl += word
            chars += gap + (word & ((byte & 0xC0) != 0x80))
            after = space
            started |= word
        line_offsets[li + 1] = kl
        line_doc[li] = d
        line_chars[li] = chars
        li += 1
    return line_offsets[: li + 1], lines[:kl], line_doc[:li], line_chars[:li]


@njit(cache=True, nogil=True)
def distinct_per_doc_kernel(doc, values):
    """(document, value) of the distinct values of each document (`doc` ascending), values ascending as
    signed 64-bit integers within a document."""
    out_doc = np.empty(len(doc), np.int64)
    out = np.empty(len(doc), np.int64)
    k = 0
    lo = 0
    while lo < len(doc):
        hi = lo + 1
        while hi < len(doc) and doc[hi] == doc[lo]:
            hi += 1
        run = np.sort(values[lo:hi])
        for j in range(len(run)):
            if j == 0 or run[j] != run[j - 1]:
                out_doc[k] = doc[lo]
                out[k] = run[j]
                k += 1
        lo = hi
    return out_doc[:k], out[:k]


@njit(cache=True, nogil=True)
def join_lines_kernel(line_offsets, lines, line_doc, num_docs):
    """(offsets, bytes) of each document's non-empty lines joined by single spaces (`line_doc` ascending,
    every document holding a line)."""
    out = np.empty(len(lines) + len(line_doc), np.uint8)
    out_offsets = np.zeros(num_docs + 1, np.int64)
    k = 0
    previous = -1
    wrote = 0
    for li in range(len(line_doc)):
        d = line_doc[li]
        if d != previous:
            wrote = 0
            previous = d
        lo = line_offsets[li]
        hi = line_offsets[li + 1]
        if hi > lo:
            out[k] = _SPACE
            k += wrote
            out[k: k + hi - lo] = lines[lo:hi]
            k += hi - lo
            wrote = 1
        out_offsets[d + 1] = k
    return out_offsets, out[:k]


@njit(cache=True, nogil=True)
def drop_lines_kernel(data, offsets, drop):
    """(offsets, bytes) of the texts with the lines (split on newlines; line k of the batch is the k-th line
    of the documents in order) that `drop` marks removed, the kept lines of a text joined by newlines.
    Every byte is stored and only a kept line's advance (no branch per byte but the newline's)."""
    num_docs = len(offsets) - 1
    out = np.empty(len(data) + 1, np.uint8)
    out_offsets = np.zeros(num_docs + 1, np.int64)
    k = 0
    li = 0
    for d in range(num_docs):
        keep = 1 - np.int64(drop[li])
        wrote = keep  # a kept line was started in this document
        for i in range(offsets[d], offsets[d + 1]):
            byte = data[i]
            if byte == _NEWLINE:
                li += 1
                next_keep = 1 - np.int64(drop[li])
                out[k] = _NEWLINE  # the separator before the next kept line, once one was written
                k += next_keep & wrote
                wrote |= next_keep
                keep = next_keep
                continue
            out[k] = byte
            k += keep
        li += 1
        out_offsets[d + 1] = k
    return out_offsets, out[:k]


@njit(cache=True, nogil=True)
def insert_spaces_kernel(data, positions):
    """`np.insert(data, positions, space)` for ascending `positions` (a space before each such byte; at
    `len(data)`, after the last)."""
    out = np.empty(len(data) + len(positions), np.uint8)
    k = 0
    lo = 0
    for p in positions:
        out[lo + k: p + k] = data[lo:p]
        out[p + k] = _SPACE
        k += 1
        lo = p
    out[lo + k:] = data[lo:]
    return out


@njit(cache=True, nogil=True)
def band_keys_kernel(sigs, bands, rows):
    """`minhash.band_keys` (as uint64): per document and band, `fmix64` folded over the band's values from
    a salt of the band number, one document's row at a time instead of one strided column at a time."""
    keys = np.empty((sigs.shape[0], bands), np.uint64)
    for d in range(sigs.shape[0]):
        for band in range(bands):
            h = np.uint64(band + 1) * _LENGTH_SALT
            for col in range(band * rows, (band + 1) * rows):
                h = fmix64(h ^ np.uint64(sigs[d, col]))
            keys[d, band] = h
    return keys
