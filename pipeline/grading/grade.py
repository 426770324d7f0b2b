"""The grade stage over Arrow batches: what the job's tasks run.

1. `analyse_batch`: domain (and what decided it), quality signals and failed rules, keep or drop;
2. `vocabulary_counts`: word counts of the kept science and general documents (for rare words);
3. `grade_batch`: per-domain grader features and the raw score.
The job then ranks scores within each domain (pipeline/grading/ranking.py) into `difficulty` and `tier`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

import pyarrow as pa

from pipeline.documents import DOCUMENT_SCHEMA
from pipeline.filters import keep_reason, quality_check
from pipeline.grading.base import GradeContext
from pipeline.grading.config import GradeConfig
from pipeline.grading.domain import decide_domain
from pipeline.grading.graders import grader_for
from pipeline.grading.prose_grader import prose_vocabulary
from pipeline.grading.reference import REFERENCE_FEATURE, LossFunction

FEATURES_TYPE = pa.map_(pa.string(), pa.float64())
QUALITY_TYPE = pa.struct([
    pa.field("signals", FEATURES_TYPE),
    pa.field("passed", pa.bool_()),
    pa.field("failed", pa.list_(pa.string())),
])
PROSE_DOMAINS = ("science", "general")
SCORE_FEATURE = "score"
"""The raw score is kept in `grade_features` under this name, beside the features it came from."""

_BASE_FIELDS = [f for f in DOCUMENT_SCHEMA if f.name != "domain"]
_DOMAIN_FIELDS = [pa.field("domain", pa.string(), nullable=False), pa.field("domain_by", pa.string())]

ANALYSED_SCHEMA = pa.schema(_BASE_FIELDS + _DOMAIN_FIELDS + [
    pa.field("quality", QUALITY_TYPE),
    pa.field("keep", pa.bool_()),
    pa.field("reason", pa.string()),
])
"""Documents after step 1: `keep` and the ledger `reason` of a dropped one."""

SCORED_SCHEMA = pa.schema(_BASE_FIELDS + _DOMAIN_FIELDS + [
    pa.field("quality", QUALITY_TYPE),
    pa.field("grade_features", FEATURES_TYPE),
    pa.field("score", pa.float64()),
])
"""Kept documents after step 3."""

GRADED_SCHEMA = pa.schema(list(DOCUMENT_SCHEMA) + [
    pa.field("domain_by", pa.string()),
    pa.field("quality", QUALITY_TYPE),
    pa.field("difficulty", pa.float64()),
    pa.field("tier", pa.int32()),
    pa.field("grade_features", FEATURES_TYPE),
])
"""The grade job's `documents/` table: the document columns (domain filled in) and the grade columns."""

GRADED_COLUMNS = tuple(GRADED_SCHEMA.names)
WORD_COUNT_SCHEMA = pa.schema([pa.field("word", pa.string()), pa.field("count", pa.int64())])


def analyse_batch(batch: pa.RecordBatch, cfg: GradeConfig, classifier=None) -> pa.RecordBatch:
    """Step 1 for one batch of documents (DOCUMENT_SCHEMA columns at least)."""
    texts = batch.column("text").to_pylist()
    hints, langs, uris = (batch.column(n).to_pylist() for n in ("domain", "lang", "uri"))
    domains, deciders, qualities, keeps, reasons = [], [], [], [], []
    for text, hint, lang, uri in zip(texts, hints, langs, uris):
        decision = decide_domain(text, hint, lang, uri, cfg.domain, classifier)
        domains.append(decision.domain)
        deciders.append(decision.decided_by)
        if cfg.enabled:
            result = quality_check(text, decision.domain, cfg.filters)
            keep, reason = keep_reason(result, cfg.filters)
            qualities.append({"signals": _sorted_map(result.signals), "passed": result.passed,
                              "failed": list(result.failed)})
        else:
            keep, reason = True, None
            qualities.append({"signals": [], "passed": True, "failed": []})
        keeps.append(keep)
        reasons.append(reason)
    columns = _base_columns(batch)
    columns += [pa.array(domains, pa.string()), pa.array(deciders, pa.string()),
                pa.array(qualities, QUALITY_TYPE), pa.array(keeps, pa.bool_()), pa.array(reasons, pa.string())]
    return pa.RecordBatch.from_arrays(columns, schema=ANALYSED_SCHEMA)


def vocabulary_counts(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Step 2: (word, count) over the texts of the science and general documents among `batches`."""
    counts: Counter[str] = Counter()
    for batch in batches:
        for text, domain in zip(batch.column("text").to_pylist(), batch.column("domain").to_pylist()):
            if domain in PROSE_DOMAINS:
                counts.update(prose_vocabulary(text))
    if counts:
        words = sorted(counts)
        yield pa.RecordBatch.from_arrays(
            [pa.array(words, pa.string()), pa.array([counts[w] for w in words], pa.int64())],
            schema=WORD_COUNT_SCHEMA,
        )


def grade_batch(batch: pa.RecordBatch, cfg: GradeConfig, context: GradeContext,
                reference_losses: LossFunction | None = None) -> pa.RecordBatch:
    """Step 3 for one batch of kept documents (ANALYSED_SCHEMA columns at least).

    `reference_losses` maps texts to their mean token loss under the reference model (the model-based
    grader); the job builds it from `model/` when `[grade.reference_model]` is enabled."""
    features, scores = [], []
    texts = batch.column("text").to_pylist()
    grading = cfg.enabled and cfg.difficulty.enabled
    reference = cfg.reference_model
    if grading and reference.enabled and reference_losses is None:
        raise ValueError("[grade.reference_model] is enabled but no reference loss function was given")
    losses = reference_losses(texts) if grading and reference.enabled else None
    for i, (text, domain, lang) in enumerate(zip(texts, *(batch.column(n).to_pylist() for n in ("domain", "lang")))):
        if grading:
            grader = grader_for(domain)
            values = grader.features(text, lang, context)
            weights = cfg.difficulty.weights_for(grader.name)
            if losses is not None:
                values[REFERENCE_FEATURE] = losses[i]
                weights = {**weights, REFERENCE_FEATURE: reference.weight}
            score = grader.score(values, weights)
            values = {**values, SCORE_FEATURE: score}
        else:
            values, score = {}, 0.0
        features.append(_sorted_map(values))
        scores.append(score)
    columns = _base_columns(batch)
    columns += [batch.column("domain").cast(pa.string()), batch.column("domain_by").cast(pa.string()),
                batch.column("quality").cast(QUALITY_TYPE), pa.array(features, FEATURES_TYPE),
                pa.array(scores, pa.float64())]
    return pa.RecordBatch.from_arrays(columns, schema=SCORED_SCHEMA)


def _base_columns(batch: pa.RecordBatch) -> list[pa.Array]:
    """The document columns other than `domain`, in schema order and type (Spark may hand over others)."""
    return [batch.column(f.name).cast(f.type) for f in _BASE_FIELDS]


def _sorted_map(values: dict[str, float]) -> list[tuple[str, float]]:
    """Map entries in key order, so that equal maps are equal bytes."""
    return [(k, float(values[k])) for k in sorted(values)]
