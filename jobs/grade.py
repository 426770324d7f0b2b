"""Grade job: quality filters, domain, difficulty and tier for every document that dedup kept.

    python -m jobs.grade --config configs/demo.toml
    spark-submit jobs/grade.py --config configs/demo.toml

Reads the committed `dedup` documents; writes `OUTPUT/grade/documents/` (pipeline.grading.grade.GRADED_SCHEMA),
`report.json` (pipeline/grading/report.py) and `_LEDGER.json` (dropped documents under their first failed
rule). Ranks are exact and corpus-wide: a window over (domain, raw score, id) of the small (id, domain, score)
table, joined back by id, so outputs are byte-identical whatever the partitioning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import uuid
from collections import Counter

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from jobs.common import (
    JobResult,
    input_hash,
    job_main,
    read_upstream_documents,
    run_job,
    upstream_jobs,
    write_parquet_table,
)
from pipeline.config import BuildConfig, resolve_uri
from pipeline.errors import UserError
from pipeline.grading.base import GradeContext
from pipeline.grading.classifier import LinearClassifier, files_fingerprint, load_labelled, train_classifier
from pipeline.grading.config import GradeConfig
from pipeline.grading.difficulty_model import BUILTIN_PREFIX, DifficultyModel, load_model
from pipeline.grading.grade import (
    ANALYSED_SCHEMA,
    GRADED_COLUMNS,
    SCORED_SCHEMA,
    WORD_COUNT_SCHEMA,
    analyse_batch,
    grade_batch,
    word_count_batch,
)
from pipeline.grading.reference import reference_fingerprint
from pipeline.grading.report import DIFFICULTY_BINS, QUANTILES, build_report
from pipeline.ledger import Ledger

JOB = "grade"
REPORT = "report.json"


def run(spark: SparkSession, cfg: BuildConfig, force: bool = False) -> JobResult:
    cfg = _with_model_resolved(cfg)
    digest = input_hash(cfg, JOB, ("grade",), upstream=upstream_jobs(cfg, JOB))
    labels = cfg.grade.domain.classifier_paths
    if labels:  # the labelled files' bytes, not just their names, decide whether the output is current
        digest = hashlib.sha256(f"{digest}\n{files_fingerprint(labels)}".encode()).hexdigest()
    model = _difficulty_model(cfg.grade)
    if model is not None:  # so does the difficulty model's fingerprint (its weights, calibration, cut-offs)
        digest = hashlib.sha256(f"{digest}\nmodel {model.fingerprint}".encode()).hexdigest()
    if cfg.grade.reference_model.enabled:  # so do the reference checkpoint's and tokenizer's
        digest = hashlib.sha256(f"{digest}\n{reference_fingerprint(cfg.grade.reference_model)}".encode()).hexdigest()
    return run_job(cfg, JOB, digest, lambda tmp: grade(spark, cfg, read_upstream_documents(spark, cfg, JOB), tmp),
                   force=force)


def grade(spark: SparkSession, cfg: BuildConfig, documents: DataFrame, tmp: str) -> Ledger:
    """The job's body over any documents DataFrame: writes `tmp/documents` and `tmp/report.json`."""
    grade_cfg = cfg.grade
    classifier = _train_classifier(grade_cfg)
    # Step 2 (the kept prose's word counts) rides along step 1: each task writes its counts here.
    vocabulary = posixpath.join(tmp, "_vocabulary") if grade_cfg.enabled and grade_cfg.difficulty.enabled else None
    analysed = documents.mapInArrow(_analyse(grade_cfg, classifier, vocabulary),
                                    from_arrow_schema(ANALYSED_SCHEMA)).persist()
    try:
        ledger = _count(analysed)  # runs step 1 over every partition, so every task has written its counts
        kept = analysed.where(F.col("keep"))
        common = _common_words(spark, vocabulary, grade_cfg) if vocabulary else None
        context = GradeContext(common_words=common, markers=grade_cfg.difficulty.trace_markers)
        model = _difficulty_model(grade_cfg)
        scored = kept.mapInArrow(_grade(grade_cfg, context, model.uri if model else None),
                                 from_arrow_schema(SCORED_SCHEMA)).persist()
        try:
            graded = _rank(scored, grade_cfg)
            write_parquet_table(graded.select(*GRADED_COLUMNS), f"{tmp}/documents", cfg.build.output_files)
        finally:
            scored.unpersist()
    finally:
        analysed.unpersist()
        if vocabulary:
            fs, path = fsspec.core.url_to_fs(vocabulary)
            if fs.exists(path):
                fs.rm(path, recursive=True)
    written = spark.read.parquet(f"{tmp}/documents")
    report = _report(written, grade_cfg, ledger, len(common or ()), classifier, _difficulty_model(grade_cfg))
    with fsspec.open(posixpath.join(tmp, REPORT), "w") as f:
        f.write(json.dumps(report, indent=2, sort_keys=False) + "\n")
    ledger.extra = {"common_words": len(common or ())}
    return ledger


def _with_model_resolved(cfg: BuildConfig) -> BuildConfig:
    """`[grade.difficulty] model` relative to the build file's folder, like every other URI of the build."""
    uri = cfg.grade.difficulty.model
    if not uri or uri.startswith(BUILTIN_PREFIX) or not cfg.path:
        return cfg
    base = posixpath.dirname(cfg.path) if "://" in cfg.path else os.path.dirname(os.path.abspath(cfg.path))
    difficulty = dataclasses.replace(cfg.grade.difficulty, model=resolve_uri(base, uri))
    return dataclasses.replace(cfg, grade=dataclasses.replace(cfg.grade, difficulty=difficulty))


def _difficulty_model(cfg: GradeConfig) -> DifficultyModel | None:
    """The configured difficulty model (loaded once per process), or None for the hand graders."""
    uri = cfg.difficulty.model
    if not uri or not (cfg.enabled and cfg.difficulty.enabled):
        return None
    model = load_model(uri)
    if model.tier_count != cfg.difficulty.tiers:
        raise UserError(f"[grade.difficulty] tiers = {cfg.difficulty.tiers} but the model {uri!r} has "
                        f"{model.tier_count} tiers (fixed cut-offs): set tiers = {model.tier_count} or refit the "
                        f"model with --tiers {cfg.difficulty.tiers}")
    return model


def _train_classifier(cfg: GradeConfig) -> LinearClassifier | None:
    paths = cfg.domain.classifier_paths
    if not paths or not cfg.enabled:
        return None
    return train_classifier(load_labelled(paths), cfg.domain)


def _analyse(cfg: GradeConfig, classifier: LinearClassifier | None, vocabulary_uri: str | None):
    """The mapInArrow function of step 1; config and classifier come in as arguments. With `vocabulary_uri`,
    each task also counts the words of its kept prose (step 2) and writes them there (`_write_vocabulary`)."""

    def analyse(batches):
        vocabulary = Counter() if vocabulary_uri else None
        for batch in batches:
            yield analyse_batch(batch, cfg, classifier, vocabulary)
        if vocabulary_uri:
            _write_vocabulary(vocabulary_uri, vocabulary)

    return analyse


def _write_vocabulary(uri: str, counts: Counter[str]) -> None:
    """The word counts of one task's partition, as `part-{partition}.parquet` under `uri`. Named by partition,
    so a retried or recomputed task rewrites the same file with the same counts; written under a hidden name
    (which Spark's reader skips) and then moved into place, so a killed task leaves no partial file."""
    from pyspark import TaskContext

    part = TaskContext.get().partitionId()
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(path, exist_ok=True)
    staging = posixpath.join(path, f".part-{part:05d}-{uuid.uuid4().hex}.parquet")
    with fs.open(staging, "wb") as f:
        pq.write_table(pa.Table.from_batches([word_count_batch(counts)]), f)
    fs.mv(staging, posixpath.join(path, f"part-{part:05d}.parquet"))


def _grade(cfg: GradeConfig, context: GradeContext, model_uri: str | None):
    """The mapInArrow function of step 3. The model travels as its URI and is loaded once per Python worker."""

    def grade_batches(batches):
        model = load_model(model_uri) if model_uri else None
        losses = None
        if cfg.enabled and cfg.difficulty.enabled and cfg.reference_model.enabled:
            from model.reference import reference_scorer  # loaded once per Python worker, on first use

            losses = reference_scorer(cfg.reference_model).losses
        for batch in batches:
            yield grade_batch(batch, cfg, context, losses, model)

    return grade_batches


def _count(analysed: DataFrame) -> Ledger:
    ledger = Ledger(job=JOB)
    counts = analysed.groupBy("source", "keep", "reason").count().collect()
    for row in sorted(counts, key=lambda r: (r["source"], not r["keep"], r["reason"] or "")):
        ledger.add(row["source"], "written" if row["keep"] else "dropped", row["reason"], row["count"])
    return ledger


def _common_words(spark: SparkSession, vocabulary_uri: str, cfg: GradeConfig) -> frozenset[str]:
    """Words of the kept prose (science and general) used at least `rare_word_per_million` times per million
    words and at least `rare_word_min_count` times, from the per-task counts step 1 wrote to `vocabulary_uri`.
    On a large corpus at most 1e6 / that rate words qualify, so the set stays small enough to ship to the
    tasks."""
    fs, path = fsspec.core.url_to_fs(vocabulary_uri)
    if not fs.exists(path):  # no task ran: the input has no partitions, so no words
        return frozenset()
    counts = (spark.read.schema(from_arrow_schema(WORD_COUNT_SCHEMA)).parquet(vocabulary_uri)
              .groupBy("word").agg(F.sum("count").alias("count")).persist())
    try:
        total = counts.agg(F.sum("count")).first()[0] or 0
        floor = max(cfg.difficulty.rare_word_min_count, cfg.difficulty.rare_word_per_million * total / 1e6)
        return frozenset(r["word"] for r in counts.where(F.col("count") >= floor).select("word").collect())
    finally:
        counts.unpersist()


def _rank(scored: DataFrame, cfg: GradeConfig) -> DataFrame:
    """Hand-graded documents: pipeline.grading.ranking's rule as a window over the small (id, domain, score)
    table. Model-graded documents keep the model's difficulty and tier (fixed cut-offs)."""
    tiers = cfg.difficulty.tiers
    hand = scored.where(F.col("model_tier").isNull())
    order = Window.partitionBy("domain").orderBy("score", "id")
    rank = F.row_number().over(order)
    count = F.count(F.lit(1)).over(Window.partitionBy("domain"))
    ranks = hand.select("id", "domain", "score").select(
        "id",
        # the arithmetic of pipeline.grading.ranking.difficulty_of and tier_of
        ((rank - F.lit(0.5)) / count).alias("rank_difficulty"),
        F.floor((rank - 1) * tiers / count).cast("int").alias("rank_tier"),
    )
    joined = scored.join(ranks, "id", "left")
    if not (cfg.enabled and cfg.difficulty.enabled):
        return joined.select("*", F.lit(0.0).alias("difficulty"), F.lit(0).cast("int").alias("tier"))
    return joined.select("*", F.coalesce("model_difficulty", "rank_difficulty").alias("difficulty"),
                         F.coalesce("model_tier", "rank_tier").alias("tier"))


def _report(written: DataFrame, cfg: GradeConfig, ledger: Ledger, common_words: int,
            classifier: LinearClassifier | None, model: DifficultyModel | None) -> dict:
    score = F.col("grade_features")["score"]
    bins = len(DIFFICULTY_BINS) - 1
    difficulty_bin = F.least(F.floor(F.col("difficulty") * bins), F.lit(bins - 1)).cast("int")
    groups = (written.groupBy("domain", "tier", "domain_by", difficulty_bin.alias("bin"))
              .agg(F.count(F.lit(1)).alias("documents"), F.sum(F.octet_length("text")).alias("bytes"),
                   F.min(score).alias("score_min"), F.max(score).alias("score_max")).collect())
    groups = [r.asDict() for r in groups]
    tier_rows, decider_rows = _tiers_and_deciders(groups)
    features = written.select("domain", F.explode("grade_features").alias("feature", "value"))
    feature_rows = (features.groupBy("domain", "feature")
                    .agg(F.percentile("value", [q for _, q in QUANTILES]).alias("quantiles")).collect())
    pick = Window.partitionBy("domain", "tier").orderBy(F.xxhash64("id"), "id")
    example_rows = (written.select("domain", "tier", "id", F.row_number().over(pick).alias("n"))
                    .where(F.col("n") <= cfg.report_examples).orderBy("domain", "tier", "n").collect())
    flagged_rows = []
    if cfg.filters.action == "flag":  # when dropping, every written document passed
        flagged_rows = (written.where(~F.col("quality.passed"))
                        .select("domain", F.explode("quality.failed").alias("rule"))
                        .groupBy("domain", "rule").agg(F.count(F.lit(1)).alias("documents")).collect())
    info = None
    if classifier is not None:
        info = {"labels": list(classifier.labels), "training_accuracy": round(classifier.training_accuracy, 6),
                "paths": list(cfg.domain.classifier_paths)}
    return build_report(
        cfg, ledger,
        tier_rows=tier_rows,
        decider_rows=decider_rows,
        feature_rows=[{"domain": r["domain"], "feature": r["feature"], "quantiles": list(r["quantiles"])}
                      for r in feature_rows],
        example_rows=[r.asDict() for r in example_rows],
        flagged_rows=[r.asDict() for r in flagged_rows],
        common_words=common_words,
        classifier=info,
        histogram_rows=[{"domain": g["domain"], "bin": g["bin"], "tier": g["tier"], "documents": g["documents"]}
                        for g in groups],
        model=model,
    )


def _tiers_and_deciders(groups: list[dict]) -> tuple[list[dict], list[dict]]:
    """Per (domain, tier) and per (domain, domain_by) figures from one aggregation by all three."""
    tiers: dict[tuple, dict] = {}
    deciders: dict[tuple, int] = {}
    for g in groups:
        t = tiers.setdefault((g["domain"], g["tier"]), {"domain": g["domain"], "tier": g["tier"], "documents": 0,
                                                       "bytes": 0, "score_min": g["score_min"],
                                                       "score_max": g["score_max"]})
        t["documents"] += g["documents"]
        t["bytes"] += g["bytes"]
        t["score_min"] = min(t["score_min"], g["score_min"])
        t["score_max"] = max(t["score_max"], g["score_max"])
        deciders[(g["domain"], g["domain_by"])] = deciders.get((g["domain"], g["domain_by"]), 0) + g["documents"]
    decider_rows = [{"domain": d, "domain_by": by, "documents": n} for (d, by), n in sorted(deciders.items())]
    return sorted(tiers.values(), key=lambda t: (t["domain"], t["tier"])), decider_rows


def main(argv: list[str] | None = None) -> None:
    job_main(JOB, __doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    # As a script (spark-submit jobs/grade.py) this file is `__main__`; run the importable module instead,
    # so that functions shipped to executors are pickled by reference to `jobs.grade`, which they can import.
    from jobs.grade import main as module_main

    module_main()
