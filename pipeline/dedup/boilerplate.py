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
from pipeline.dedup.normalize import collapsed_blanks, plain

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
    # Collapsing the whole text equals collapsing each line: a run of spaces next to a newline goes either way.
    return split_lines(collapsed_blanks(comparable(texts, code, lowercase_prose), keep_newlines=True))


def line_hash(lines: pa.Array) -> np.ndarray:
    """64-bit hash of each line (as given; pass normal forms)."""
    return pl.Series(plain(lines)).hash(LINE_SEED).to_numpy().astype(np.uint64, copy=False)


def candidate_lines(texts, code: np.ndarray, cfg: BoilerplateConfig,
                    lowercase_prose: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document, hash of the normal form, may-be-boilerplate) for every line of every text."""
    return lines_as_candidates(*normal_lines(texts, code, lowercase_prose), code, cfg)


def lines_as_candidates(doc: np.ndarray, lines: pa.Array, code: np.ndarray,
                        cfg: BoilerplateConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`candidate_lines` of lines already in normal form (`normal_lines`)."""
    ok = np.asarray(pc.greater_equal(pc.utf8_length(lines), cfg.min_line_chars).to_numpy(zero_copy_only=False))
    if cfg.code_comment_lines_only and code.any():
        in_code = code[doc] & ok
        rows = np.flatnonzero(in_code)
        comment = np.asarray(pc.match_substring_regex(lines.take(pa.array(rows)), _COMMENT)
                             .to_numpy(zero_copy_only=False))
        ok[rows] = comment
    return doc, line_hash(lines), ok


def remove_lines(texts, code: np.ndarray, boilerplate: np.ndarray, cfg: BoilerplateConfig,
                 lowercase_prose: bool = True) -> tuple[pa.Array, np.ndarray]:
    """(texts without their boilerplate lines, lines removed per text). `boilerplate`: sorted uint64 hashes."""
    texts = plain(texts)
    doc, lines = split_lines(texts)
    _, hashes, ok = candidate_lines(texts, code, cfg, lowercase_prose)
    remove = ok & np.isin(hashes, boilerplate) if len(boilerplate) else np.zeros(len(hashes), dtype=bool)
    removed = np.bincount(doc[remove], minlength=len(texts))
    if not remove.any():
        return texts, removed
    keep = ~remove
    offsets = np.concatenate([[0], np.cumsum(np.bincount(doc[keep], minlength=len(texts)))]).astype(np.int32)
    kept = pa.ListArray.from_arrays(pa.array(offsets), lines.filter(pa.array(keep)))
    return pc.binary_join(kept, "\n"), removed


def removed_line_texts(texts, code: np.ndarray, wanted: np.ndarray, cfg: BoilerplateConfig,
                       lowercase_prose: bool = True) -> dict[int, str]:
    """{signed hash: normal form} of the candidate lines whose hash is in `wanted` (for the report)."""
    _, lines = normal_lines(texts, code, lowercase_prose)
    _, hashes, ok = candidate_lines(texts, code, cfg, lowercase_prose)
    hit = np.flatnonzero(ok & np.isin(hashes, wanted))
    if not len(hit):
        return {}
    found = lines.take(pa.array(hit, pa.int64())).to_pylist()
    out: dict[int, str] = {}
    for h, line in zip(hashes[hit].view(np.int64).tolist(), found):
        out[h] = min(line, out.get(h, line))
    return out
