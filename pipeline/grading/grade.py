"""The grade stage over Arrow batches: what the job's tasks run.

1. `analyse_batch`: domain (and what decided it), quality signals and failed rules, keep or drop;
2. `vocabulary_counts`: word counts of the kept science and general documents (for rare words); the job
   has `analyse_batch` count them during step 1 instead (the same counts, without masking every text again);
3. `grade_batch`: the learned model's difficulty and tier for the domains it covers (whole batch at once per
   domain); per-domain hand-grader features and the raw score for the others.
The job then ranks the hand-graded scores within each domain (pipeline/grading/ranking.py) into `difficulty`
and `tier`; model-graded documents keep the model's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

import pyarrow as pa

from pipeline.documents import DOCUMENT_SCHEMA
from pipeline.filters import keep_reason, quality_check
from pipeline.grading.base import GradeContext
from pipeline.grading.config import GradeConfig
from pipeline.grading.difficulty_model import DifficultyModel
from pipeline.grading.domain import decide_domain
from pipeline.grading.features import DENSE_FEATURES
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
    pa.field("model_difficulty", pa.float64()),
    pa.field("model_tier", pa.int32()),
])
"""Kept documents after step 3; `model_difficulty` and `model_tier` are null for hand-graded documents."""

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


def analyse_batch(batch: pa.RecordBatch, cfg: GradeConfig, classifier=None,
                  vocabulary: Counter[str] | None = None) -> pa.RecordBatch:
    """Step 1 for one batch of documents (DOCUMENT_SCHEMA columns at least). With a `vocabulary`, step 2 is
    folded in: the words of the kept science and general documents are counted into it, as
    `vocabulary_counts` counts them, right after each document's filters (its masked words still cached)."""
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
        if vocabulary is not None and keep and decision.domain in PROSE_DOMAINS:
            vocabulary.update(prose_vocabulary(text))
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
        yield word_count_batch(counts)


def word_count_batch(counts: Counter[str]) -> pa.RecordBatch:
    """`counts` as a WORD_COUNT_SCHEMA batch, in word order."""
    words = sorted(counts)
    return pa.RecordBatch.from_arrays(
        [pa.array(words, pa.string()), pa.array([counts[w] for w in words], pa.int64())], schema=WORD_COUNT_SCHEMA)


def grade_batch(batch: pa.RecordBatch, cfg: GradeConfig, context: GradeContext,
                reference_losses: LossFunction | None = None, model: DifficultyModel | None = None) -> pa.RecordBatch:
    """Step 3 for one batch of kept documents (ANALYSED_SCHEMA columns at least).

    `model` is the learned difficulty model (`[grade.difficulty] model`, loaded by the caller once per
    worker): documents of the domains it covers get its features, calibrated difficulty and tier.
    `reference_losses` maps texts to their mean token loss under the reference model (the model-based
    grader); the job builds it from `model/` when `[grade.reference_model]` is enabled."""
    texts = batch.column("text").to_pylist()
    domains = batch.column("domain").to_pylist()
    n = len(texts)
    features: list[dict] = [{} for _ in range(n)]
    scores = [0.0] * n
    model_difficulty: list[float | None] = [None] * n
    model_tier: list[int | None] = [None] * n
    grading = cfg.enabled and cfg.difficulty.enabled
    by_model: dict[str, list[int]] = {}
    if grading and model is not None:
        for i, domain in enumerate(domains):
            if model.covers(domain):
                by_model.setdefault(domain, []).append(i)
    for domain, rows in sorted(by_model.items()):
        difficulty, tiers, raw, dense = model.predict([texts[i] for i in rows], domain)
        for j, i in enumerate(rows):
            features[i] = {**dict(zip(DENSE_FEATURES, dense[j].tolist())), SCORE_FEATURE: float(raw[j])}
            scores[i] = float(raw[j])
            model_difficulty[i] = float(difficulty[j])
            model_tier[i] = int(tiers[j])
    hand = [i for i in range(n) if model_tier[i] is None] if grading else []
    if hand:
        _hand_grade(batch, hand, texts, domains, cfg, context, reference_losses, features, scores)
    columns = _base_columns(batch)
    columns += [batch.column("domain").cast(pa.string()), batch.column("domain_by").cast(pa.string()),
                batch.column("quality").cast(QUALITY_TYPE), pa.array([_sorted_map(f) for f in features], FEATURES_TYPE),
                pa.array(scores, pa.float64()), pa.array(model_difficulty, pa.float64()),
                pa.array(model_tier, pa.int32())]
    return pa.RecordBatch.from_arrays(columns, schema=SCORED_SCHEMA)


def _hand_grade(batch, rows: list[int], texts, domains, cfg: GradeConfig, context: GradeContext,
                reference_losses: LossFunction | None, features: list[dict], scores: list[float]) -> None:
    """The hand graders' features and raw scores for `rows` (filled into `features` and `scores`)."""
    reference = cfg.reference_model
    if reference.enabled and reference_losses is None:
        raise ValueError("[grade.reference_model] is enabled but no reference loss function was given")
    langs = batch.column("lang").to_pylist()
    losses = reference_losses([texts[i] for i in rows]) if reference.enabled else None
    for j, i in enumerate(rows):
        grader = grader_for(domains[i])
        values = grader.features(texts[i], langs[i], context)
        weights = cfg.difficulty.weights_for(grader.name)
        if losses is not None:
            values[REFERENCE_FEATURE] = losses[j]
            weights = {**weights, REFERENCE_FEATURE: reference.weight}
        scores[i] = grader.score(values, weights)
        features[i] = {**values, SCORE_FEATURE: scores[i]}


def _base_columns(batch: pa.RecordBatch) -> list[pa.Array]:
    """The document columns other than `domain`, in schema order and type (Spark may hand over others)."""
    return [batch.column(f.name).cast(f.type) for f in _BASE_FIELDS]


def _sorted_map(values: dict[str, float]) -> list[tuple[str, float]]:
    """Map entries in key order, so that equal maps are equal bytes."""
    return [(k, float(values[k])) for k in sorted(values)]
