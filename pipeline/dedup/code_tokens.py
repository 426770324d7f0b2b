"""Code read for decontamination with its names abstracted: what survives renaming and reformatting.

A renamed and reformatted copy of a function (every bound name changed, indentation, quotes and spacing
redone, the docstring rewrapped) shares no run of words with the original, but it keeps the original's
shape token for token. `code_tokens` reads any text as a stream of such shape tokens, in one compiled
pass over a batch's UTF-8 bytes:

- a **name** (an identifier not after a `.`) is one placeholder, whatever it is: a copy renames exactly
  these (`sentence` -> `text`, `count` -> `str`); a Python keyword stays itself (`for`, `return`, `None`);
- an **attribute** (an identifier after a `.`, spaces allowed between) stays itself: `.lower`, `.append`,
  `os.path.join`'s `path` and `join` are what a copy cannot rename without changing what it does;
- a **string** without whitespace of at most `SHORT_STRING` bytes stays itself (`'aeiou'`, `"utf-8"`), quotes
  and prefix dropped; any other string (a docstring, a message that may mention a renamed name) is one
  placeholder;
- a **number** stays itself; every other printable ASCII byte is a token of its own (`==` is two), so
  spacing never matters; whitespace, line breaks, comments (`#` to the end of the line) and backslashes
  outside strings are no tokens.

Prose read this way is a stream of placeholders and punctuation, which a long n-gram of an item's shape
(see `decontaminate`) never matches.
"""

from __future__ import annotations

import functools
import keyword

import numpy as np
from numba import njit

from pipeline.dedup.kernels import fmix64
from pipeline.dedup.normalize import string_buffers

SHORT_STRING = 32
"""A string literal longer than this (in bytes), or holding whitespace, reads as the string placeholder."""

_FNV = np.uint64(0xCBF29CE484222325)
_PRIME = np.uint64(0x100000001B3)
_NAME_SALT = np.uint64(0x2545F4914F6CDD1D)
_ATTRIBUTE_SALT = np.uint64(0x9E3779B97F4A7C15)
_STRING_SALT = np.uint64(0xD6E8FEB86659FD93)
_NUMBER_SALT = np.uint64(0xA0761D6478BD642F)
_PUNCT_SALT = np.uint64(0xE7037ED1A0B428DB)
_HORNER = np.uint64(0x9FB21C651E98DF25)
_COUNT_SALT = np.uint64(0x5851F42D4C957F2D)

NAME = np.uint64(0x6A09E667F3BCC908)
"""The hash of every name."""
STRING = np.uint64(0xBB67AE8584CAA73B)
"""The hash of every long or spaced one-line string."""
TRIPLE = np.uint64(0x3C6EF372FE94F82B)
"""The hash of `\"\"\"` and `\'\'\'`."""
QUOTE = np.uint64(0xA54FF53A5F1D36F1)
"""The hash of a quote that closes nothing on its line."""

# byte classes
_OTHER, _SPACE, _IDENT_START, _DIGIT, _QUOTE, _HASH, _BACKSLASH, _PUNCT = range(8)
_PREFIX_LETTERS = b"rbfuRBFU"


@functools.cache
def _byte_classes() -> np.ndarray:
    classes = np.full(256, _OTHER, np.uint8)
    for b in range(256):
        c = bytes([b])
        if b >= 0x80 or c.isalpha() or c == b"_":
            classes[b] = _IDENT_START
        elif c.isdigit():
            classes[b] = _DIGIT
        elif c in b" \t\r\n\x0b\x0c":
            classes[b] = _SPACE
        elif c in b"'\"":
            classes[b] = _QUOTE
        elif c == b"#":
            classes[b] = _HASH
        elif c == b"\\":
            classes[b] = _BACKSLASH
        elif 0x21 <= b <= 0x7E:
            classes[b] = _PUNCT
        else:
            classes[b] = _SPACE  # control bytes
    return classes


@functools.cache
def _prefix_table() -> np.ndarray:
    table = np.zeros(256, np.bool_)
    table[list(_PREFIX_LETTERS)] = True
    return table


@njit(cache=True, nogil=True, inline="always")
def _bytes_hash(data, lo, hi, salt):
    h = _FNV ^ salt
    for i in range(lo, hi):
        h = (h ^ np.uint64(data[i])) * _PRIME
    return fmix64(h ^ np.uint64(hi - lo))


@njit(cache=True, nogil=True, inline="always")
def _is_ident(c):
    return c == 2 or c == 3  # _IDENT_START or _DIGIT


@njit(cache=True, nogil=True)
def code_token_kernel(data, offsets, classes, prefix, keywords, short_string):
    """(doc, start, end, hash) of every shape token of every document (see the module docstring); start and
    end are byte offsets into `data`. `keywords` holds the sorted `_bytes_hash(..., _NAME_SALT)` of the
    identifiers that stay themselves."""
    cap = max(len(data) // 6, 16)  # grown by doubling: code runs ~5 bytes a token
    doc = np.empty(cap, np.int64)
    start = np.empty(cap, np.int64)
    end = np.empty(cap, np.int64)
    out = np.empty(cap, np.uint64)
    k = 0
    dot = np.uint64(_bytes_hash(np.array([46], np.uint8), 0, 1, _PUNCT_SALT))
    for d in range(len(offsets) - 1):
        i = offsets[d]
        stop = offsets[d + 1]
        after_dot = False
        while i < stop:
            c = classes[data[i]]
            lo = i
            h = NAME
            if c == 1:  # space
                i += 1
                continue
            if c == 5:  # comment
                while i < stop and data[i] != 10:
                    i += 1
                continue
            if c == 6:  # backslash outside a string
                i += 1
                continue
            if c == 2:  # identifier, or a string's prefix
                i += 1
                while i < stop and _is_ident(classes[data[i]]):
                    i += 1
                if i < stop and classes[data[i]] == 4 and i - lo <= 2 and prefix[data[lo]] and prefix[data[i - 1]]:
                    c = 4  # r"...", b'...', f"...": read the string below
                else:
                    h = _bytes_hash(data, lo, i, _NAME_SALT)
                    if after_dot:
                        h = fmix64(h ^ _ATTRIBUTE_SALT)
                    else:
                        at = np.searchsorted(keywords, h)
                        if not (at < len(keywords) and keywords[at] == h):
                            h = NAME
                    after_dot = False
            elif c == 3:  # number
                i += 1
                while i < stop and (_is_ident(classes[data[i]]) or data[i] == 46):
                    i += 1
                h = _bytes_hash(data, lo, i, _NUMBER_SALT)
                after_dot = False
            elif c == 7 or c == 0:  # punctuation, or a byte of no class
                i += 1
                h = _bytes_hash(data, lo, i, _PUNCT_SALT)
                after_dot = h == dot
            if c == 4:  # a quote
                q = data[i]
                qs = i
                if qs == lo and i > offsets[d] and _is_ident(classes[data[i - 1]]) and i + 1 < stop \
                        and _is_ident(classes[data[i + 1]]):
                    i += 1  # an apostrophe inside a word (`it's`): no token
                    continue
                if i + 2 < stop and data[i + 1] == q and data[i + 2] == q:
                    i += 3  # a triple quote is a token and its text is read as code: the same tokens wherever
                    h = TRIPLE  # a copy lies (inside a host's string or not) and however a docstring is wrapped
                else:
                    i = _string_end(data, qs + 1, stop, q)
                    if i < 0:  # unclosed on its line: a quote, not a string
                        i = qs + 1
                        h = QUOTE
                    else:
                        spaced = False
                        for j in range(qs + 1, i - 1):
                            spaced |= classes[data[j]] == 1
                        long = i - 2 - qs > short_string
                        h = STRING if spaced or long else _bytes_hash(data, qs + 1, i - 1, _STRING_SALT)
                after_dot = False
            if k == len(out):
                doc, start, end, out = _grown(doc), _grown(start), _grown(end), _grown(out)
            doc[k] = d
            start[k] = lo
            end[k] = i
            out[k] = h
            k += 1
    return doc[:k].copy(), start[:k].copy(), end[:k].copy(), out[:k].copy()


@njit(cache=True, nogil=True, inline="always")
def _string_end(data, i, stop, q):
    """The byte after the quote `q` that closes a one-line string whose text starts at `i`; -1 if the line
    ends first."""
    while i < stop:
        b = data[i]
        if b == 92:  # backslash: the next byte is escaped
            i += 2
            continue
        if b == q:
            return i + 1
        if b == 10:
            return -1
        i += 1
    return -1


@njit(cache=True, nogil=True, inline="always")
def _grown(values):
    bigger = np.empty(2 * len(values), values.dtype)
    bigger[: len(values)] = values
    return bigger


@njit(cache=True, nogil=True)
def ngram_kernel(doc, hashes, n):
    """(index of the first token, hash) of every n consecutive tokens of one document."""
    total = len(hashes)
    first = np.empty(max(total - n + 1, 0), np.int64)
    out = np.empty(len(first), np.uint64)
    salt = np.uint64(n) * _COUNT_SALT
    k = 0
    for s in range(total - n + 1):
        if doc[s] != doc[s + n - 1]:
            continue
        h = np.uint64(0)
        for j in range(s, s + n):
            h = h * _HORNER + hashes[j]
        first[k] = s
        out[k] = fmix64(h ^ salt)
        k += 1
    return first[:k].copy(), out[:k].copy()


@functools.cache
def _keyword_hashes() -> np.ndarray:
    words = sorted({*keyword.kwlist, *keyword.softkwlist} - {"_"})
    encoded = [np.frombuffer(w.encode(), np.uint8) for w in words]
    return np.unique(np.array([_bytes_hash(e, 0, len(e), _NAME_SALT) for e in encoded], np.uint64))


class CodeTokens:
    """The shape tokens of a batch: token k is bytes `start[k]:end[k]` of the batch's buffer, in document
    `doc[k]` (ascending); `offsets` are the documents' byte offsets into that buffer."""

    def __init__(self, doc, start, end, hashes, offsets):
        self.doc, self.start, self.end, self.hashes, self.offsets = doc, start, end, hashes, offsets


def code_tokens(texts) -> CodeTokens:
    """The shape tokens of each text of a string array."""
    offsets, data = string_buffers(texts)
    doc, start, end, hashes = code_token_kernel(data, offsets, _byte_classes(), _prefix_table(), _keyword_hashes(),
                                                SHORT_STRING)
    return CodeTokens(doc, start, end, hashes, offsets)


def is_name(hashes: np.ndarray) -> np.ndarray:
    return hashes == NAME


def is_placeholder(hashes: np.ndarray) -> np.ndarray:
    return (hashes == NAME) | (hashes == STRING)
