"""The last pass over the surviving documents: remove boilerplate lines, then decontaminate.

Returns the batch with `text` rewritten and three columns appended: `dedup_reason` (null when the
document is kept), `lines_removed` and `spans_removed`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.dedup.boilerplate import remove_lines
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.decontaminate import EvalNgrams, contaminating_items, remove_spans
from pipeline.dedup.features import is_code
from pipeline.dedup.rounds import BOILERPLATE_TOO_SHORT, CONTAMINATED

REWRITE_COLUMNS = [
    pa.field("dedup_reason", pa.string()),
    pa.field("lines_removed", pa.int64()),
    pa.field("spans_removed", pa.int64()),
]


def rewrite_batch(batch: pa.RecordBatch, cfg: DedupConfig, boilerplate: np.ndarray,
                  eval_ngrams: EvalNgrams) -> pa.RecordBatch:
    """Apply the boilerplate and decontamination rounds to one batch of surviving documents."""
    texts = batch.column("text")
    reasons: list[str | None] = [None] * len(texts)
    lines_removed = np.zeros(len(texts), dtype=np.int64)
    spans_removed = np.zeros(len(texts), dtype=np.int64)
    if cfg.boilerplate.enabled and len(boilerplate):
        code = is_code(batch.column("domain"), cfg.near.code_domains)
        texts, lines_removed = remove_lines(texts, code, boilerplate, cfg.boilerplate)
        for i in np.flatnonzero(lines_removed):
            if len(texts[int(i)].as_py().strip()) < cfg.boilerplate.min_chars_after:
                reasons[i] = BOILERPLATE_TOO_SHORT
    if cfg.decontaminate.enabled and len(eval_ngrams):
        texts, spans_removed = _decontaminate(texts, reasons, eval_ngrams, cfg)
    index = batch.schema.get_field_index("text")
    columns = list(batch.columns)
    columns[index] = texts.cast(batch.schema.field("text").type)
    columns += [pa.array(reasons, pa.string()), pa.array(lines_removed), pa.array(spans_removed)]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names + [f.name for f in REWRITE_COLUMNS])


def _decontaminate(texts: pa.Array, reasons: list, eval_ngrams: EvalNgrams,
                   cfg: DedupConfig) -> tuple[pa.Array, np.ndarray]:
    dc = cfg.decontaminate
    spans = np.zeros(len(texts), dtype=np.int64)
    found = contaminating_items(texts, eval_ngrams, dc.ngram, dc.min_item_fraction)
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
        cleaned, cut = remove_spans(values[i], eval_ngrams.of_items(found[i]), dc.ngram)
        spans[i] = max(cut, 1)
        if cleaned is None or len(cleaned.strip()) < dc.min_chars_after:
            reasons[i] = CONTAMINATED
        else:
            values[i] = cleaned
    return pa.array(values, pa.string()), spans
