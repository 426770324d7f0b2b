"""Boilerplate lines: the same line in many distinct documents is a template, not content.

A line is compared in normal form: whitespace runs (Unicode spaces included) collapsed to one space, ends
trimmed, prose lowercased (code keeps its case). It is a candidate when that form is at least
`min_line_chars` long and (in code, by default) a comment. The job counts, for each candidate line hash,
the distinct surviving documents holding it; a line in more than `boilerplate_threshold(cfg, documents)`
of them is removed wherever it occurs, and documents left too short are dropped.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.dedup.config import BoilerplateConfig
from pipeline.dedup.kernels import drop_lines_kernel
from pipeline.dedup.normalize import NormalForms, normal_forms, plain, string_array, string_buffers

_COMMENT = r"^(#|//|/\*|\*|<!--|--|;)"
LINE_SEED = 0x5EED_11E5
"""Seed of the line hash (polars' string hash: stable within one polars version, which is one run)."""


def boilerplate_threshold(cfg: BoilerplateConfig, documents: int) -> int:
    """Documents a line may appear in before it is boilerplate: a rate per million surviving documents,
    never below `min_documents` (on a small corpus a rate would make every shared line a template)."""
    return max(cfg.min_documents, math.floor(cfg.max_documents_per_million * documents / 1e6))


def comparable(texts, code: np.ndarray, lowercase_prose: bool) -> pa.Array:
    """The texts as lines and exact keys see them: prose lowercased (when asked), code as is."""
    texts = plain(texts)
    if not lowercase_prose or code.all():
        return texts
    lowered = pc.utf8_lower(texts)
    return lowered if not code.any() else pc.if_else(pa.array(code), texts, lowered)


def split_lines(texts) -> tuple[np.ndarray, pa.Array]:
    """(document of each line, the lines): `texts` split on newlines, which `join_lines` undoes."""
    lists = pc.split_pattern(plain(texts), "\n")
    doc = np.asarray(pc.list_parent_indices(lists).to_numpy(), dtype=np.int64)
    return doc, pc.list_flatten(lists)


def normal_lines(texts, code: np.ndarray, lowercase_prose: bool) -> tuple[np.ndarray, pa.Array]:
    """(document of each line, the line in normal form), lines in the order `split_lines` gives them."""
    forms = normal_forms(comparable(texts, code, lowercase_prose), with_exact=False)
    return forms.line_doc, forms.lines


def line_hash(lines: pa.Array) -> np.ndarray:
    """64-bit hash of each line (as given; pass normal forms)."""
    return pl.Series(plain(lines)).hash(LINE_SEED).to_numpy().astype(np.uint64, copy=False)


def candidate_lines(texts, code: np.ndarray, cfg: BoilerplateConfig,
                    lowercase_prose: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document, hash of the normal form, may-be-boilerplate) for every line of every text."""
    return lines_as_candidates(normal_forms(comparable(texts, code, lowercase_prose), with_exact=False), code, cfg)


def lines_as_candidates(forms: NormalForms, code: np.ndarray,
                        cfg: BoilerplateConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`candidate_lines` of lines already in normal form (`normalize.normal_forms`)."""
    doc = forms.line_doc
    ok = forms.line_chars >= cfg.min_line_chars
    if cfg.code_comment_lines_only and code.any():
        rows = np.flatnonzero(code[doc] & ok)
        ok[rows] = comment_lines(forms.lines, rows)
    return doc, line_hash(forms.lines), ok


COMMENT_OPENERS = (b"#", b"//", b"/*", b"*", b"<!--", b"--", b";")
"""What a code line in normal form starts with to be a comment (`_COMMENT`, the regex the tests hold it to)."""


def comment_lines(lines: pa.Array, rows: np.ndarray) -> np.ndarray:
    """Per line of `rows`: does it start as a comment (`_COMMENT`)? Its first four bytes, in numpy."""
    offsets, data = string_buffers(lines)
    starts, sizes = offsets[rows], offsets[rows + 1] - offsets[rows]
    last = max(len(data) - 1, 0)
    head = [np.where(sizes > k, data[np.minimum(starts + k, last)] if len(data) else 0, 0) for k in range(4)]
    out = np.zeros(len(rows), dtype=bool)
    for opener in COMMENT_OPENERS:
        match = np.ones(len(rows), dtype=bool)
        for k, byte in enumerate(opener):
            match &= head[k] == byte
        out |= match
    return out


def remove_lines(texts, code: np.ndarray, boilerplate: np.ndarray, cfg: BoilerplateConfig,
                 lowercase_prose: bool = True) -> tuple[pa.Array, np.ndarray]:
    """(texts without their boilerplate lines, lines removed per text). `boilerplate`: sorted uint64 hashes."""
    texts, removed, _ = strip_lines(texts, code, boilerplate, np.zeros(0, np.uint64), cfg, lowercase_prose)
    return texts, removed


def strip_lines(texts, code: np.ndarray, boilerplate: np.ndarray, wanted: np.ndarray, cfg: BoilerplateConfig,
                lowercase_prose: bool = True) -> tuple[pa.Array, np.ndarray, dict[int, str]]:
    """(`remove_lines`, `removed_line_texts` of the `wanted` hashes): the lines are normalised and hashed
    once for both."""
    texts = plain(texts)
    forms = normal_forms(comparable(texts, code, lowercase_prose), with_exact=False)
    doc, hashes, ok = lines_as_candidates(forms, code, cfg)
    remove = ok.copy()
    remove[ok] = sorted_contains(hashes[ok], np.sort(boilerplate))
    removed = np.bincount(doc[remove], minlength=len(texts))
    if not remove.any():
        return texts, removed, {}
    offsets, data = string_buffers(texts)
    out_offsets, out = drop_lines_kernel(data, offsets, remove)
    hit = ok & (removed[doc] > 0)  # the report's lines come from the documents that lost lines
    hit[hit] = sorted_contains(hashes[hit], np.sort(wanted))
    found = _line_texts(forms.lines, hashes, hit)
    return string_array(out_offsets, out), removed, found


def sorted_contains(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """`np.isin(values, sorted_set)` for an ascending `sorted_set`: one binary search per value, no sort."""
    if not len(sorted_set) or not len(values):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


def removed_line_texts(texts, code: np.ndarray, wanted: np.ndarray, cfg: BoilerplateConfig,
                       lowercase_prose: bool = True) -> dict[int, str]:
    """{signed hash: normal form} of the candidate lines whose hash is in `wanted` (for the report)."""
    forms = normal_forms(comparable(texts, code, lowercase_prose), with_exact=False)
    _, hashes, ok = lines_as_candidates(forms, code, cfg)
    return _line_texts(forms.lines, hashes, ok & np.isin(hashes, wanted))


def _line_texts(lines: pa.Array, hashes: np.ndarray, hit: np.ndarray) -> dict[int, str]:
    hit = np.flatnonzero(hit)
    if not len(hit):
        return {}
    found = lines.take(pa.array(hit, pa.int64())).to_pylist()
    out: dict[int, str] = {}
    for h, line in zip(hashes[hit].view(np.int64).tolist(), found):
        out[h] = min(line, out.get(h, line))
    return out
