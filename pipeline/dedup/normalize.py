"""Text normalisation for dedup, over whole Arrow batches: byte tables in numpy, RE2 only for non-ASCII text.

Near-duplicate search compares tokens, not characters: copies of a document differ in case, spacing,
numbers and punctuation far more often than in wording, and a doubled space must not change any shingle.
Each tokeniser returns a `Tokens` (the byte span of every token in one buffer) without building a new
string per document; `prose_words` and `code_tokens` render the same tokens as space-joined strings for
tests and for reading.

- prose: lowercase; runs of letters, marks and digits are words (digits mapped to `0` unless they are
  content); everything else separates words. `It's 2024!` -> `it`, `s`, `0000`.
- code: case kept; identifiers (letters, digits, `_`) and numbers are tokens, and every other visible
  mark is a token of its own. `f(x_1)+2` -> `f`, `(`, `x_1`, `)`, `+`, `2`.

Pure-ASCII documents (most of them) are classified byte by byte with a 256-entry table; the others first
go through Arrow's `utf8_lower` and RE2's Unicode classes (~30 ns a byte), whose output the same table
then reads (non-ASCII bytes left there are letters).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.dedup.kernels import collapse_kernel, insert_spaces_kernel, join_lines_kernel, line_form_kernel

_SPACE = ord(" ")
_CODE_MARK = r"([^\p{L}\p{M}\p{N}_\s\p{Z}\x0b])"
_SPACE_RUN = r"[\s\p{Z}\x0b]+"


@dataclass(frozen=True)
class Tokens:
    """Tokens of a batch: token k is `data[start[k]:end[k]]` of document `doc[k]` (ascending)."""

    doc: np.ndarray
    start: np.ndarray
    end: np.ndarray
    data: np.ndarray
    num_docs: int

    def counts(self) -> np.ndarray:
        return np.bincount(self.doc, minlength=self.num_docs)


def plain(texts) -> pa.Array:
    """One chunk of `string` (not `large_string`), nulls as empty strings."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    if pa.types.is_large_string(texts.type):
        texts = texts.cast(pa.string())
    return texts.fill_null("") if texts.null_count else texts


def string_buffers(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets relative to the first byte, bytes) of a string array, without copying the text."""
    texts = plain(texts)
    width = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    buffers = texts.buffers()
    offsets = np.frombuffer(buffers[1], dtype=width)[texts.offset: texts.offset + len(texts) + 1].astype(np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    data = data[offsets[0]: offsets[-1]] if len(offsets) else data[:0]
    return offsets - (offsets[0] if len(offsets) else 0), data


@lru_cache(maxsize=4)
def _prose_table(map_digits: bool, join_underscores: bool = False) -> np.ndarray:
    """Byte -> byte: ASCII letters lowercased, digits kept (or '0'), other ASCII a space, non-ASCII kept."""
    table = np.full(256, _SPACE, dtype=np.uint8)
    table[0x80:] = np.arange(0x80, 256)
    table[ord("a"): ord("z") + 1] = np.arange(ord("a"), ord("z") + 1)
    table[ord("A"): ord("Z") + 1] = np.arange(ord("a"), ord("z") + 1)
    table[ord("0"): ord("9") + 1] = ord("0") if map_digits else np.arange(ord("0"), ord("9") + 1)
    if join_underscores:
        table[ord("_")] = ord("_")
    return table


@lru_cache(maxsize=1)
def _code_classes() -> tuple[np.ndarray, np.ndarray]:
    """(byte is part of a token, byte glues to a neighbouring glue byte) for code: identifiers glue, marks
    stand alone, whitespace and control bytes separate."""
    token = np.ones(256, dtype=bool)
    token[:33] = False
    token[127] = False
    glue = np.zeros(256, dtype=bool)
    glue[0x80:] = True
    for lo, hi in (("a", "z"), ("A", "Z"), ("0", "9")):
        glue[ord(lo): ord(hi) + 1] = True
    glue[ord("_")] = True
    return token, glue


WORD, SPACE, MARK = 0, 1, 2


@lru_cache(maxsize=65536)
def _code_point_class(code_point: int) -> int:
    """WORD for letters, marks and numbers; SPACE for whitespace; MARK for everything else."""
    char = chr(code_point)
    category = unicodedata.category(char)
    if category[0] in "LMN":
        return WORD
    return SPACE if category[0] == "Z" or char.isspace() else MARK


def non_ascii_bytes_of(data: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """Positions of every byte of the non-ASCII characters of `data` (valid UTF-8) whose class is one of
    `classes`. Characters are decoded with numpy; only the distinct code points of the batch are looked up."""
    lead, size, code_point = non_ascii_chars(data)
    if not len(lead):
        return np.zeros(0, dtype=np.int64)
    distinct, inverse = np.unique(code_point, return_inverse=True)
    wanted = np.isin(np.array([_code_point_class(int(c)) for c in distinct]), classes)[inverse]
    return _bytes_of(lead[wanted], size[wanted])


def non_ascii_chars(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position of the first byte, bytes, code point) of every non-ASCII character of `data` (valid UTF-8)."""
    lead = np.flatnonzero(data >= 0xC0)
    if not len(lead):
        none = np.zeros(0, dtype=np.int64)
        return none, none, none
    first = data[lead].astype(np.int64)
    size = 2 + (first >= 0xE0) + (first >= 0xF0)
    follow = [data[np.minimum(lead + k, len(data) - 1)].astype(np.int64) & 0x3F for k in (1, 2, 3)]
    code_point = np.where(size == 2, ((first & 0x1F) << 6) | follow[0],
                          np.where(size == 3, ((first & 0x0F) << 12) | (follow[0] << 6) | follow[1],
                                   ((first & 0x07) << 18) | (follow[0] << 12) | (follow[1] << 6) | follow[2]))
    return lead, size, code_point


def _bytes_of(lead: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Every byte position of the characters starting at `lead`, `size` bytes each."""
    return np.repeat(lead, size) + (np.arange(size.sum()) - np.repeat(np.cumsum(size) - size, size))


def _unicode_first(texts: pa.Array, rewrite) -> pa.Array:
    """`texts` with its non-ASCII documents replaced by `rewrite(those documents)` (RE2 work on them only)."""
    ascii_docs = pc.string_is_ascii(texts)
    if pc.all(ascii_docs).as_py() is not False:
        return texts
    others = rewrite(pc.if_else(ascii_docs, "", texts))
    return pc.if_else(ascii_docs, texts, others)


def prose_bytes(texts, map_digits: bool = True,
                join_underscores: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, bytes, table) of the texts ready for the prose tokeniser: the words are the runs of bytes
    whose `table` value is not a space, read through `table`. Non-ASCII texts are lowercased first and the
    bytes of their non-ASCII spaces and marks set to spaces (the table keeps the other non-ASCII bytes)."""
    texts = plain(texts)
    offsets, data = string_buffers(texts)
    if bool((data >= 0x80).any()):
        offsets, data = string_buffers(pc.utf8_lower(texts))
        separators = non_ascii_bytes_of(data, (SPACE, MARK))
        if len(separators):
            data = data.copy()
            data[separators] = _SPACE
    return offsets, data, _prose_table(map_digits, join_underscores)


def prose_tokens(texts, map_digits: bool = True, join_underscores: bool = False) -> Tokens:
    """The words of each text (see the module docstring). Only ASCII digits are mapped to `0`: a non-ASCII
    digit stays a letter of its word."""
    offsets, data, table = prose_bytes(texts, map_digits, join_underscores)
    mapped = table[data]
    word = mapped != _SPACE
    return _bounds(offsets, mapped, word, word)


def code_bytes(texts) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, bytes) of the texts ready for the code tokeniser: each non-ASCII mark stands between spaces
    and each non-ASCII space is a space. Which characters those are is what RE2 says (`code_bytes_by_regex`,
    the rewrite this replaces and the tests compare against): each distinct non-ASCII code point of the
    batch is matched once, then the bytes are edited in numpy. (The regex rewrite also collapses
    whitespace, and spaces out ASCII marks and controls; the tokeniser reads none of that differently.)"""
    offsets, data = string_buffers(plain(texts))
    lead, size, code_point = non_ascii_chars(data)
    if not len(lead):
        return offsets, data
    distinct, inverse = np.unique(code_point, return_inverse=True)
    chars = pa.array([chr(c) for c in distinct.tolist()], pa.string())
    space = pc.match_substring_regex(chars, f"^{_SPACE_RUN}$").to_numpy(zero_copy_only=False)[inverse]
    mark = pc.match_substring_regex(chars, f"^{_CODE_MARK}$").to_numpy(zero_copy_only=False)[inverse]
    data = data.copy()
    data[_bytes_of(lead[space], size[space])] = _SPACE
    spaced = np.sort(np.concatenate([lead[mark], lead[mark] + size[mark]]))  # a space before and after each mark
    if not len(spaced):
        return offsets, data
    return offsets + np.searchsorted(spaced, offsets, side="left"), insert_spaces_kernel(data, spaced)


def code_bytes_by_regex(texts) -> tuple[np.ndarray, np.ndarray]:
    """`code_bytes` by RE2 rewriting the non-ASCII texts: marks between spaces, whitespace runs one space."""

    def unicode(t: pa.Array) -> pa.Array:
        t = pc.replace_substring_regex(t, _CODE_MARK, r" \1 ")
        return pc.replace_substring_regex(t, _SPACE_RUN, " ")

    return string_buffers(_unicode_first(plain(texts), unicode))


def code_classes() -> tuple[np.ndarray, np.ndarray]:
    """(byte is part of a code token, byte glues to a neighbouring glue byte), each indexed by byte."""
    return _code_classes()


def code_tokens_of(texts) -> Tokens:
    """The code tokens of each text (see the module docstring)."""
    offsets, data = code_bytes(texts)
    token, glue = _code_classes()
    return _bounds(offsets, data, token[data], glue[data])


def _bounds(offsets: np.ndarray, data: np.ndarray, token: np.ndarray, glue: np.ndarray) -> Tokens:
    """Token spans: a token byte starts a token unless it and the byte before it (same document) both glue."""
    num_docs = len(offsets) - 1
    joined = np.zeros(len(data), dtype=bool)
    if len(data) > 1:
        np.logical_and(glue[1:], glue[:-1], out=joined[1:])
        inner = offsets[1:-1]
        joined[inner[inner < len(data)]] = False  # never across two documents
    starts = np.flatnonzero(token & ~joined)
    follows = np.zeros(len(data), dtype=bool)
    follows[:-1] = joined[1:]
    ends = np.flatnonzero(token & ~follows) + 1
    docs = np.searchsorted(offsets, starts, side="right") - 1
    return Tokens(docs, starts, ends, data, num_docs)


def render(tokens: Tokens) -> list[str]:
    """The tokens of each document joined by single spaces (for tests, planting and reading)."""
    raw = tokens.data.tobytes()
    out: list[list[str]] = [[] for _ in range(tokens.num_docs)]
    for d, s, e in zip(tokens.doc.tolist(), tokens.start.tolist(), tokens.end.tolist()):
        out[d].append(raw[s:e].decode("utf-8", errors="replace"))
    return [" ".join(words) for words in out]


def prose_words(texts, map_digits: bool = True) -> pa.Array:
    """`prose_tokens` rendered as strings: `It's  2024!` -> `it s 0000` (nulls stay null)."""
    words = pa.array(render(prose_tokens(texts, map_digits)), pa.string())
    texts = plain_keep_nulls(texts)
    return pc.if_else(pc.is_null(texts), pa.scalar(None, pa.string()), words) if texts.null_count else words


def code_tokens(texts) -> pa.Array:
    """`code_tokens_of` rendered as strings: `f(x)+1` -> `f ( x ) + 1`."""
    return pa.array(render(code_tokens_of(texts)), pa.string())


def plain_keep_nulls(texts) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    return texts


# ---------------------------------------------------------------------------------------------- exact form


def blank_to_space(texts: pa.Array, keep_newlines: bool) -> pa.Array:
    """Every whitespace character (Unicode spaces included) as an ASCII space; newlines kept if asked."""
    texts = plain(texts)
    offsets, data = string_buffers(texts)
    table = np.arange(256, dtype=np.uint8)
    table[[9, 11, 12, 13]] = _SPACE
    if not keep_newlines:
        table[10] = _SPACE
    mapped = table[data]
    mapped[non_ascii_bytes_of(data, (SPACE,))] = _SPACE
    return pa.StringArray.from_buffers(len(texts), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(mapped))


def collapse_spaces(texts: pa.Array) -> pa.Array:
    """Runs of spaces to one, none at either end of a text or of a line: numpy over the whole buffer.

    Of each run of spaces only its first byte can stay, and only if the run has a word on both sides:
    the byte before its first space and the byte after its last are neither a newline nor outside the text.
    """
    texts = plain(texts)
    offsets, data = string_buffers(texts)
    if len(data) == 0:
        return texts
    space = data == _SPACE
    newline = data == ord("\n")
    before = np.empty(len(data), dtype=bool)  # the previous byte is a space (or there is none)
    before[0] = True
    before[1:] = space[:-1]
    after = np.empty(len(data), dtype=bool)  # the next byte is a space (or there is none)
    after[-1] = True
    after[:-1] = space[1:]
    nonempty = offsets[1:] > offsets[:-1]
    before[offsets[:-1][nonempty]] = False  # runs end at each text's ends
    after[offsets[1:][nonempty] - 1] = False
    firsts = np.flatnonzero(space & ~before)
    lasts = np.flatnonzero(space & ~after)
    left_ok = firsts > 0
    left_ok[left_ok] = ~newline[firsts[left_ok] - 1]
    right_ok = lasts < len(data) - 1
    right_ok[right_ok] = ~newline[lasts[right_ok] + 1]
    # a run touching a text's first or last byte goes
    doc_first = np.zeros(len(data), dtype=bool)
    doc_first[offsets[:-1][nonempty]] = True
    doc_last = np.zeros(len(data), dtype=bool)
    doc_last[offsets[1:][nonempty] - 1] = True
    keep_run = left_ok & right_ok & ~doc_first[firsts] & ~doc_last[lasts]
    drop = space.copy()
    drop[firsts[keep_run]] = False
    offsets, data = _compact(offsets, data, drop)
    return pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data))


def collapsed_blanks(texts, keep_newlines: bool) -> pa.Array:
    """`collapse_spaces(blank_to_space(texts, keep_newlines))` in one compiled pass over the bytes."""
    return _collapsed(texts, (keep_newlines,))[0]


def line_and_exact_forms(texts) -> tuple[pa.Array, pa.Array]:
    """(`collapsed_blanks(texts, True)`, `collapsed_blanks(texts, False)`) in one pass over the bytes."""
    lines, exact = _collapsed(texts, (True, False))
    return lines, exact


@dataclass(frozen=True)
class NormalForms:
    """A batch's exact form (`collapsed_blanks(texts, False)`) and the lines of its line form
    (`collapsed_blanks(texts, True)` split on newlines): line k is `lines[k]`, of document `line_doc[k]`
    (ascending, one line more per document than it has newlines), `line_chars[k]` characters long."""

    exact: pa.Array | None
    lines: pa.Array
    line_doc: np.ndarray
    line_chars: np.ndarray


def normal_forms(texts, with_exact: bool = True) -> NormalForms:
    """Both normal forms (the exact one if asked) from one compiled pass over the bytes, the lines cut as
    they are written."""
    texts = plain(texts)
    offsets, data = string_buffers(texts)
    max_lines = int(np.count_nonzero(data == ord("\n"))) + len(texts)
    unicode_spaces = non_ascii_bytes_of(data, (SPACE,))
    if len(unicode_spaces):  # rare: a copy with those bytes as spaces keeps the kernel's loop simple
        data = data.copy()
        data[unicode_spaces] = _SPACE
    line_offsets, lines, line_doc, line_chars = line_form_kernel(data, offsets, _blank_table(True), max_lines)
    exact = None
    if with_exact:  # each document's non-empty lines joined by single spaces: a run of blanks holding a
        exact = string_array(*join_lines_kernel(line_offsets, lines, line_doc, len(texts)))  # newline is one space
    return NormalForms(exact, string_array(line_offsets, lines), line_doc, line_chars)


def string_array(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    """A string array over a buffer (int64 `offsets` from 0), `large_string` only when it must be."""
    if len(data) < 2**31:
        return pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets.astype(np.int32)),
                                           pa.py_buffer(data))
    return pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))


def _collapsed(texts, keep_newlines: tuple[bool, ...]) -> list[pa.Array]:
    texts = plain(texts)
    offsets, data = string_buffers(texts)
    blanks = np.stack([_blank_table(keep) for keep in keep_newlines])
    out_offsets, out, sizes = collapse_kernel(data, offsets, blanks,
                                              non_ascii_bytes_of(data, (SPACE,)).astype(np.int64, copy=False))
    return [pa.StringArray.from_buffers(len(texts), pa.py_buffer(out_offsets[form].astype(np.int32)),
                                        pa.py_buffer(out[form, : sizes[form]]))
            for form in range(len(keep_newlines))]


@lru_cache(maxsize=2)
def _blank_table(keep_newlines: bool) -> np.ndarray:
    """Which ASCII bytes `blank_to_space` turns into spaces."""
    blank = np.zeros(256, dtype=np.bool_)
    blank[[9, 11, 12, 13, _SPACE]] = True
    blank[10] = not keep_newlines
    return blank


def _compact(offsets: np.ndarray, data: np.ndarray, drop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, bytes) with the `drop` bytes removed from every text."""
    dropped = np.flatnonzero(drop)
    per_text = np.bincount(np.searchsorted(offsets, dropped, side="right") - 1, minlength=len(offsets) - 1)
    return offsets - np.concatenate([[0], np.cumsum(per_text)]), data[~drop]


def exact_form(texts, lowercase: bool) -> pa.Array:
    """What the exact round compares: whitespace runs collapsed, ends trimmed, optionally lowercased."""
    texts = plain(texts)
    if lowercase:
        texts = pc.utf8_lower(texts)
    return collapse_spaces(blank_to_space(texts, keep_newlines=False))
