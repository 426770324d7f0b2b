"""Decontamination: n-grams of normalised words shared with an evaluation set.

The evaluation sets are small: their n-gram hashes (a sorted uint64 array) travel to every task. A
batch is checked with one vectorised `np.isin`; only the rare matching documents are handled one by
one, when the span (not the document) is to be removed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa

from pipeline.dedup.config import DecontaminateConfig
from pipeline.dedup.normalize import Tokens, prose_tokens
from pipeline.dedup.shingles import shingle_hashes


@dataclass(frozen=True)
class EvalSet:
    path: str
    items: int
    ngrams: int


@dataclass(frozen=True)
class EvalNgrams:
    """Every evaluation item's distinct n-gram hashes, sorted by hash: `hashes[k]` belongs to `items[k]`."""

    hashes: np.ndarray
    items: np.ndarray
    sizes: np.ndarray
    """Distinct n-grams of each item."""

    def __len__(self) -> int:
        return len(self.hashes)

    def of_items(self, items) -> np.ndarray:
        return np.unique(self.hashes[np.isin(self.items, list(items))])


def empty_eval_ngrams() -> EvalNgrams:
    return EvalNgrams(np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64))


def eval_ngrams(texts: list[str], n: int) -> EvalNgrams:
    """The n-gram table of some evaluation texts (item k is texts[k])."""
    shingles = shingle_hashes(eval_tokens(pa.array(texts, pa.string())), n)
    pairs = np.unique(np.stack([shingles.hash64, shingles.doc.astype(np.uint64)], axis=1), axis=0)
    sizes = np.bincount(pairs[:, 1].astype(np.int64), minlength=len(texts))
    return EvalNgrams(pairs[:, 0].copy(), pairs[:, 1].astype(np.int64), sizes)


def load_eval_ngrams(cfg: DecontaminateConfig) -> tuple[EvalNgrams, list[EvalSet]]:
    """(the n-gram table of every evaluation item of every file, what each file contributed)."""
    texts, sets = [], []
    for path in cfg.eval_paths:
        items = _read_texts(path, cfg.text_field)
        texts += items
        sets.append(EvalSet(path, len(items), len(eval_ngrams(items, cfg.ngram))))
    return (eval_ngrams(texts, cfg.ngram) if texts else empty_eval_ngrams()), sets


def _read_texts(path: str, field: str) -> list[str]:
    try:
        with fsspec.open(path, "rt", compression="infer", encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError as err:
        raise ValueError(f"evaluation set {path} does not exist: fix [dedup.decontaminate] eval_paths") from err
    texts = [r.get(field) for r in records if isinstance(r, dict)]
    if not any(isinstance(t, str) for t in texts):
        raise ValueError(f"evaluation set {path} has no string field {field!r}: set [dedup.decontaminate] text_field")
    return [t for t in texts if isinstance(t, str)]


def contaminating_items(texts: pa.Array, table: EvalNgrams, n: int, min_fraction: float) -> dict[int, set[int]]:
    """{document: evaluation items it contains}: an item counts when the document holds at least
    `min_fraction` of the item's n-grams (any single one when `min_fraction` is 0)."""
    if len(table) == 0 or len(texts) == 0:
        return {}
    shingles = shingle_hashes(eval_tokens(texts), n)
    hit = np.isin(shingles.hash64, table.hashes)
    docs, hashes = shingles.doc[hit], shingles.hash64[hit]
    lo = np.searchsorted(table.hashes, hashes, side="left")
    hi = np.searchsorted(table.hashes, hashes, side="right")
    repeat = hi - lo
    doc_of = np.repeat(docs, repeat)
    row = np.repeat(lo - np.cumsum(repeat) + repeat, repeat) + np.arange(repeat.sum())
    triples = np.unique(np.stack([doc_of, table.items[row], hashes.repeat(repeat).view(np.int64)], axis=1), axis=0)
    pairs, counts = np.unique(triples[:, :2], axis=0, return_counts=True)
    needed = np.maximum(np.ceil(min_fraction * table.sizes[pairs[:, 1]]), 1)
    found: dict[int, set[int]] = {}
    for doc, item in pairs[counts >= needed].tolist():
        found.setdefault(doc, set()).add(item)
    return found


def remove_spans(text: str, table: EvalNgrams, items, n: int) -> tuple[str | None, int]:
    """(text with the region of each contaminating item cut out, regions cut); (None, 0) where lowercasing
    changes the text's byte length (an exotic character), so that positions cannot be mapped back: the
    caller drops the document.

    The region of an item runs from its first matching n-gram in the text to the end of its last, gaps
    included, so an edited copy goes whole (its edited words too), as the drop rule would have taken it;
    matches further apart than the item is long are separate regions."""
    raw = text.encode()
    tokens = eval_tokens(pa.array([text]))
    if len(pa.compute.utf8_lower(pa.array([text]))[0].as_py().encode()) != len(raw):
        return None, 0
    shingles = shingle_hashes(tokens, n)
    if not len(shingles.hash64):
        return text, 0
    cut = np.zeros(len(tokens.start) + 1, dtype=np.int64)
    for item in sorted(items):
        wanted = table.hashes[table.items == item]
        starts = np.flatnonzero(np.isin(shingles.hash64, wanted))
        if not len(starts):
            continue
        reach = int(table.sizes[item]) + n
        breaks = np.flatnonzero(np.diff(starts) > reach)
        for first, last in zip(np.concatenate([[0], breaks + 1]), np.concatenate([breaks, [len(starts) - 1]])):
            cut[starts[first]] += 1
            cut[min(starts[last] + n, len(tokens.start))] -= 1
    inside = np.cumsum(cut[:-1]) > 0
    if not inside.any():
        return text, 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], inside.astype(np.int8), [0]])))
    pieces, cursor = [], 0
    for lo, hi in zip(edges[::2], edges[1::2]):
        pieces.append(raw[cursor: tokens.start[lo]])
        cursor = tokens.end[hi - 1]
    pieces.append(raw[cursor:])
    return b"".join(pieces).decode("utf-8", errors="replace"), len(edges) // 2


def eval_tokens(texts) -> Tokens:
    """Words as decontamination compares them: lowercase, digits kept, `_` a separator (so that the
    identifier `count_vowel_words` and the prose `count vowel words` are the same three words)."""
    return prose_tokens(texts, map_digits=False)
