"""Boilerplate lines: the same line in many distinct documents is a template, not content.

A line is a candidate when, stripped, it is at least `min_line_chars` long and (in code, by default) a
comment. The job counts, for each candidate line hash, the distinct surviving documents holding it; lines
in more than `max_documents` are removed wherever they occur, and documents left too short are dropped.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.dedup.config import BoilerplateConfig
from pipeline.dedup.shingles import span_hashes, string_buffers

_COMMENT = r"^(#|//|/\*|\*|<!--|--|;)"


def split_lines(texts: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(document of each line, the lines): `texts` split on newlines, which `join_lines` undoes."""
    lists = pc.split_pattern(texts.fill_null(""), "\n")
    doc = np.asarray(pc.list_parent_indices(lists).to_numpy(), dtype=np.int64)
    return doc, pc.list_flatten(lists)


def line_hashes(lines: pa.Array) -> np.ndarray:
    """64-bit hash of each whole line (as given)."""
    offsets, data = string_buffers(lines)
    return span_hashes(data, offsets[:-1], offsets[1:])


def candidate_lines(texts: pa.Array, code: np.ndarray,
                    cfg: BoilerplateConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document, hash of the stripped line, may-be-boilerplate) for every line of every text."""
    doc, lines = split_lines(texts)
    stripped = pc.utf8_trim_whitespace(lines)
    ok = np.asarray(pc.greater_equal(pc.utf8_length(stripped), cfg.min_line_chars).to_numpy(zero_copy_only=False))
    if cfg.code_comment_lines_only and code.any():
        comment = np.asarray(pc.match_substring_regex(stripped, _COMMENT).to_numpy(zero_copy_only=False))
        ok &= ~code[doc] | comment
    return doc, line_hashes(stripped), ok


def remove_lines(texts: pa.Array, code: np.ndarray, boilerplate: np.ndarray,
                 cfg: BoilerplateConfig) -> tuple[pa.Array, np.ndarray]:
    """(texts without their boilerplate lines, lines removed per text). `boilerplate`: sorted uint64 hashes."""
    doc, lines = split_lines(texts)
    _, hashes, ok = candidate_lines(texts, code, cfg)
    remove = ok & np.isin(hashes, boilerplate) if len(boilerplate) else np.zeros(len(hashes), dtype=bool)
    removed = np.bincount(doc[remove], minlength=len(texts))
    if not remove.any():
        return texts, removed
    keep = ~remove
    offsets = np.concatenate([[0], np.cumsum(np.bincount(doc[keep], minlength=len(texts)))]).astype(np.int32)
    kept = pa.ListArray.from_arrays(pa.array(offsets), lines.filter(pa.array(keep)))
    return pc.binary_join(kept, "\n"), removed


def lines_with_hashes(texts: pa.Array, code: np.ndarray, wanted: np.ndarray,
                      cfg: BoilerplateConfig) -> list[tuple[int, str]]:
    """(signed hash, stripped line) of the candidate lines whose hash is in `wanted` (for the report)."""
    _, lines = split_lines(texts)
    _, hashes, ok = candidate_lines(texts, code, cfg)
    hit = np.flatnonzero(ok & np.isin(hashes, wanted))
    stripped = pc.utf8_trim_whitespace(lines.take(pa.array(hit, pa.int64()))).to_pylist()
    return list(zip(hashes[hit].view(np.int64).tolist(), stripped))
