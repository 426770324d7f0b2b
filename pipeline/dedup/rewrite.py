"""The last pass over the surviving documents: remove boilerplate lines, then decontaminate.

Returns the batch with `text` rewritten and three columns appended: `dedup_reason` (null when the
document is kept), `lines_removed` and `spans_removed`; and adds what it did to a `RewriteStats`, which the
job gathers per partition (so that the text is read once and no second pass is needed for the report).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.dedup.boilerplate import strip_lines
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.decontaminate import EvalNgrams, contaminating_items, remove_spans
from pipeline.dedup.features import is_code
from pipeline.dedup.rounds import BOILERPLATE_TOO_SHORT, CONTAMINATED

REWRITE_COLUMNS = [
    pa.field("dedup_reason", pa.string()),
    pa.field("lines_removed", pa.int64()),
    pa.field("spans_removed", pa.int64()),
]
SAMPLE_IDS = 10


@dataclass
class RewriteStats:
    """What the rewrite did to some documents: drops per (source, reason), documents edited, lines and
    spans removed, documents matching an evaluation set, the text of the top boilerplate lines, and the
    smallest ids of contaminated documents."""

    dropped: dict = field(default_factory=dict)
    edited: int = 0
    lines: int = 0
    hit: int = 0
    spans: int = 0
    top_lines: dict = field(default_factory=dict)
    contaminated_sample: list = field(default_factory=list)

    @staticmethod
    def merge(parts) -> RewriteStats:
        out = RewriteStats()
        for part in parts:
            for key, n in part.dropped.items():
                out.dropped[key] = out.dropped.get(key, 0) + n
            out.edited += part.edited
            out.lines += part.lines
            out.hit += part.hit
            out.spans += part.spans
            for h, line in part.top_lines.items():
                out.top_lines[h] = min(line, out.top_lines.get(h, line))
            out.contaminated_sample = sorted(out.contaminated_sample + part.contaminated_sample)[:SAMPLE_IDS]
        return out


def rewrite_batch(batch: pa.RecordBatch, cfg: DedupConfig, boilerplate: np.ndarray, eval_ngrams: EvalNgrams,
                  top_hashes: np.ndarray | None = None, stats: RewriteStats | None = None) -> pa.RecordBatch:
    """Apply the boilerplate and decontamination rounds to one batch of surviving documents."""
    texts = batch.column("text")
    reasons: list[str | None] = [None] * len(texts)
    lines_removed = np.zeros(len(texts), dtype=np.int64)
    spans_removed = np.zeros(len(texts), dtype=np.int64)
    if cfg.boilerplate.enabled and len(boilerplate):
        code = is_code(batch.column("domain"), cfg.near.code_domains)
        wanted = top_hashes if stats is not None and top_hashes is not None else np.zeros(0, np.uint64)
        texts, lines_removed, found = strip_lines(texts, code, boilerplate, wanted, cfg.boilerplate,
                                                  cfg.exact.lowercase_prose)
        edited = np.flatnonzero(lines_removed)
        for h, line in found.items():
            stats.top_lines[h] = min(line, stats.top_lines.get(h, line))
        if len(edited):
            lengths = pc.utf8_length(pc.utf8_trim_whitespace(texts.take(pa.array(edited)))).to_numpy()
            for i in edited[lengths < cfg.boilerplate.min_chars_after]:
                reasons[i] = BOILERPLATE_TOO_SHORT
    if cfg.decontaminate.enabled and len(eval_ngrams):
        texts, spans_removed = _decontaminate(texts, reasons, eval_ngrams, cfg)
    if stats is not None:
        _count(stats, batch, reasons, lines_removed, spans_removed)
    index = batch.schema.get_field_index("text")
    columns = list(batch.columns)
    columns[index] = texts.cast(batch.schema.field("text").type)
    columns += [pa.array(reasons, pa.string()), pa.array(lines_removed), pa.array(spans_removed)]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names + [f.name for f in REWRITE_COLUMNS])


def _count(stats: RewriteStats, batch: pa.RecordBatch, reasons: list, lines: np.ndarray, spans: np.ndarray) -> None:
    stats.edited += int((lines > 0).sum())
    stats.lines += int(lines.sum())
    stats.hit += int((spans > 0).sum())
    stats.spans += int(spans.sum())
    dropped = [i for i, r in enumerate(reasons) if r is not None]
    if not dropped:
        return
    sources = batch.column("source").take(pa.array(dropped)).to_pylist()
    ids = batch.column("id").take(pa.array(dropped)).to_pylist()
    for i, source, doc_id in zip(dropped, sources, ids):
        key = (source, reasons[i])
        stats.dropped[key] = stats.dropped.get(key, 0) + 1
        if reasons[i] == CONTAMINATED:
            stats.contaminated_sample.append(doc_id)
    stats.contaminated_sample = sorted(stats.contaminated_sample)[:SAMPLE_IDS]


def _decontaminate(texts: pa.Array, reasons: list, eval_ngrams: EvalNgrams,
                   cfg: DedupConfig) -> tuple[pa.Array, np.ndarray]:
    dc = cfg.decontaminate
    spans = np.zeros(len(texts), dtype=np.int64)
    found = contaminating_items(texts, eval_ngrams, dc)
    hits = sorted(i for i in found if reasons[i] is None)
    if not hits:
        return texts, spans
    if dc.action == "drop":
        for i in hits:
            reasons[i] = CONTAMINATED
            spans[i] = 1
        return texts, spans
    values = texts.to_pylist()
    for i in hits:
        cleaned, cut = remove_spans(values[i], eval_ngrams, found[i], dc)
        spans[i] = max(cut, 1)
        if cleaned is None or len(cleaned.strip()) < dc.min_chars_after:
            reasons[i] = CONTAMINATED
        else:
            values[i] = cleaned
    return pa.array(values, pa.string()), spans
