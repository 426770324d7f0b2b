"""Text normalisation for dedup, over whole Arrow arrays (RE2 inside Arrow; no per-document Python).

Near-duplicate search compares words, not characters: copies of a document differ in case, spacing,
numbers and punctuation far more often than in wording, and a doubled space must not change any shingle.
Every function returns strings whose tokens are separated by exactly one space, with none at either end:
the shingler in `pipeline.dedup.shingles` relies on that.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Letters, combining marks and digits make words; everything else separates them. Single spaces are left
# out of the pattern (they are already right): matching every space made the pass ~2x slower.
_NOT_WORD = r"[^\p{L}\p{M}\p{N} ]+"
# Code keeps identifiers (with underscores) and numbers whole and makes every other visible mark a token.
_CODE_MARK = r"([^\p{L}\p{M}\p{N}_\s\p{Z}\x0b])"
_SPACE_RUN = r"[\s\p{Z}\x0b]+"


def prose_words(texts: pa.Array, map_digits: bool = True) -> pa.Array:
    """Lowercase, digits to 0 (unless they are content, as in maths), punctuation and whitespace runs to
    one space: `It's 2024!` -> `it s 0000`.

    Pure-ASCII documents (most of them) are classified byte by byte with a numpy table; only the others
    go through RE2's Unicode classes, which cost ~30 ns a byte. Both give the same result on ASCII text.
    """
    texts = _plain(texts)
    lowered = pc.utf8_lower(texts.fill_null(""))
    ascii_docs = pc.string_is_ascii(lowered)
    unicode_docs = pc.if_else(ascii_docs, "", lowered)
    if map_digits:
        unicode_docs = pc.replace_substring_regex(unicode_docs, r"\p{Nd}", "0")
    unicode_docs = pc.replace_substring_regex(unicode_docs, _NOT_WORD, " ")
    merged = pc.if_else(ascii_docs, _ascii_words(lowered, map_digits), unicode_docs)
    words = collapse_spaces(merged)
    return pc.if_else(pc.is_null(texts), pa.scalar(None, pa.string()), words) if texts.null_count else words


def _ascii_table(map_digits: bool) -> np.ndarray:
    """Byte -> byte for ASCII text: letters and digits kept (digits to '0' if asked), all else a space."""
    table = np.full(256, ord(" "), dtype=np.uint8)
    table[0x80:] = np.arange(0x80, 256)  # never used on ASCII documents; kept as is
    for c in range(ord("a"), ord("z") + 1):
        table[c] = c
    for c in range(ord("A"), ord("Z") + 1):
        table[c] = c
    table[ord("0"): ord("9") + 1] = ord("0") if map_digits else np.arange(ord("0"), ord("9") + 1)
    return table


def _ascii_words(texts: pa.Array, map_digits: bool) -> pa.Array:
    offsets, data = _buffers(texts)
    mapped = _ascii_table(map_digits)[data]
    return pa.StringArray.from_buffers(len(texts), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(mapped))


def collapse_spaces(texts: pa.Array) -> pa.Array:
    """Runs of spaces to one, none at either end: numpy over the whole buffer, then Arrow's trim."""
    texts = _plain(texts)
    offsets, data = _buffers(texts)
    if len(data) == 0:
        return pc.utf8_trim(texts, " ")
    space = data == ord(" ")
    keep = np.ones(len(data), dtype=bool)
    keep[1:] = ~(space[1:] & space[:-1])  # a run across two documents only leaves spaces the trim removes
    kept = np.concatenate([[0], np.cumsum(keep)])[offsets]
    collapsed = pa.StringArray.from_buffers(len(texts), pa.py_buffer(kept.astype(np.int32)), pa.py_buffer(data[keep]))
    return pc.utf8_trim(collapsed, " ")


def _plain(texts) -> pa.Array:
    """One chunk of `string` (not `large_string`)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    return texts.cast(pa.string()) if pa.types.is_large_string(texts.type) else texts


def _buffers(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    from pipeline.dedup.shingles import string_buffers

    return string_buffers(texts)


def code_tokens(texts: pa.Array, lowercase: bool = False) -> pa.Array:
    """Identifiers, numbers and single punctuation marks, one space apart: `f(x)+1` -> `f ( x ) + 1`."""
    if lowercase:
        texts = pc.utf8_lower(texts)
    texts = pc.replace_substring_regex(texts, _CODE_MARK, r" \1 ")
    texts = pc.replace_substring_regex(texts, _SPACE_RUN, " ")
    return pc.utf8_trim(texts, " ")


def exact_form(texts: pa.Array, lowercase: bool) -> pa.Array:
    """What the exact round compares: whitespace runs collapsed, ends trimmed, optionally lowercased."""
    if lowercase:
        texts = pc.utf8_lower(texts)
    texts = pc.replace_substring_regex(texts, _SPACE_RUN, " ")
    return pc.utf8_trim(texts, " ")
