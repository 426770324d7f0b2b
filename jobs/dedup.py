"""Dedup job: exact, MinHash-LSH near-duplicate, boilerplate-line and decontamination rounds.

    python -m jobs.dedup --config configs/demo.toml
    spark-submit jobs/dedup.py --config configs/demo.toml

Reads the upstream documents (ingest, plus traces when enabled) and writes `OUTPUT/dedup/documents/`
(the survivors, input schema), `clusters/` (id, cluster_id, round, kept), `report.json` and
`_LEDGER.json`. One `mapInArrow` pass computes every document's features (exact key, MinHash signature,
band keys, candidate line hashes, id hash); the last pass reads the text once more and rewrites the
survivors. In between, two plans with the same outputs, byte for byte (docs/dedup.md, "Plans"): the
driver plan (upstream laid out by id, at most `dedup.driver_max_documents` documents) runs the exact and
near rounds on the driver over the features (`pipeline.dedup.corpus_rounds`), two Spark jobs in all; the
distributed plan shuffles the features, never the text, and no task ever holds a whole giant band bucket
or cluster: buckets are split, clusters judged on a bounded sample. docs/dedup.md describes the rounds.
"""

from __future__ import annotations

import json
import math
import posixpath
import tempfile
from dataclasses import asdict

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark import AccumulatorParam, StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

from jobs.common import (
    JobResult,
    hash_bucketed_parts,
    input_hash,
    job_main,
    map_parts,
    part_name,
    read_upstream_documents,
    run_job,
    upstream_jobs,
    write_parquet_table,
    write_part,
)
from pipeline.commit import JobOutput
from pipeline.config import BuildConfig
from pipeline.dedup.boilerplate import boilerplate_threshold
from pipeline.dedup.clusters import agreement, components, judge_cluster_batch
from pipeline.dedup.config import DedupConfig, NearConfig, SurvivorConfig
from pipeline.dedup.corpus_rounds import (
    NONE,
    SAMPLE_MEMBERS,
    CorpusOutcome,
    cluster_sizes,
    corpus_rounds,
    frequent_lines,
    reason_counts,
    sorted_by_id,
)
from pipeline.dedup.decontaminate import empty_eval_ngrams, load_eval_ngrams
from pipeline.dedup.features import FEATURE_COLUMNS, binary_matrix, document_features
from pipeline.dedup.local import bands_and_rows as _layout
from pipeline.dedup.rewrite import REWRITE_COLUMNS, RewriteStats, rewrite_batch
from pipeline.dedup.rounds import (
    BOILERPLATE,
    DECONTAMINATE,
    EXACT,
    EXACT_DUPLICATE,
    NEAR,
    NEAR_DUPLICATE,
    REASONS,
    size_histogram,
    survivor_order,
)
from pipeline.dedup.signals import quality_signal
from pipeline.ledger import Ledger

JOB = "dedup"
REPORT = "report.json"
PASSTHROUGH = ("id", "source", "length", "quality")
REWRITE_BATCH_ROWS = 10_000
"""Documents per Arrow batch of the part-to-part rewrite (Spark's own batches are 10,000 rows too)."""


def run(spark: SparkSession, cfg: BuildConfig, force: bool = False) -> JobResult:
    digest = input_hash(cfg, JOB, ("dedup",), upstream=upstream_jobs(cfg, JOB))
    return run_job(cfg, JOB, digest, lambda tmp: _dedup(spark, cfg, tmp), force=force)


def bands_and_rows(near: NearConfig) -> tuple[int, int]:
    """The LSH layout: as configured, else derived from the threshold and the recall target."""
    return _layout(DedupConfig(near=near))


# ---------------------------------------------------------------------------------------------- driver


def _dedup(spark: SparkSession, cfg: BuildConfig, tmp: str) -> Ledger:
    docs = read_upstream_documents(spark, cfg, JOB)
    files = cfg.build.output_files
    if not cfg.dedup.enabled:
        write_parquet_table(docs, f"{tmp}/documents", files)
        write_parquet_table(_empty_clusters(spark), f"{tmp}/clusters", 1)
        ledger = _ledger_from_counts([(r["source"], None, r["count"]) for r in docs.groupBy("source").count().collect()],
                                     {})
        _write_report(tmp, {"enabled": False, "input": ledger.read, "output": ledger.written})
        return ledger
    parts = _upstream_parts(cfg)
    why_not_driver = driver_plan_refusal(cfg, parts)
    if why_not_driver is None:
        done = _driver_plan(spark, cfg, docs, parts, tmp)
        if isinstance(done, Ledger):
            return done
        why_not_driver = done
    return _distributed_plan(spark, cfg, docs, parts, tmp, why_not_driver)


def _distributed_plan(spark: SparkSession, cfg: BuildConfig, docs: DataFrame, parts: list[list[str]] | None,
                      tmp: str, why_not_driver: str) -> Ledger:
    """Every round in Spark: features shuffled by key, never the text (docs/dedup.md, "Plans")."""
    files = cfg.build.output_files
    checkpoints = f"{tmp}/_checkpoints"
    result = dedup_documents(spark, docs, cfg.dedup, checkpoint_dir=checkpoints)
    try:
        write_parquet_table(result.clusters, f"{tmp}/clusters", files)
        if parts is None:  # an upstream laid out otherwise (written by hand, or by an older rnj): join, shuffle
            write_parquet_table(result.survivors, f"{tmp}/documents", files)
        else:  # part to part: the text is read once more and never shuffled
            rewrite_part_to_part(spark, result.rewrite, result.schema, parts, f"{tmp}/clusters",
                                 f"{tmp}/documents", files)
        result.finish()
        ledger = _ledger_from_counts(result.source_counts, result.rewrite_drops)
        ledger.extra = _ledger_extra(result.report)
        _write_report(tmp, {"plan": "distributed", "plan_reason": why_not_driver, **result.report})
    finally:
        result.release()
        fs, path = fsspec.core.url_to_fs(checkpoints)
        if fs.exists(path):
            fs.rm(path, recursive=True)
    return ledger


class DedupResult:
    """What `dedup_documents` computed: lazy DataFrames (persisted where reused), the report so far, and
    what the rewrite pass adds to it once `survivors` has been computed (`finish`)."""

    def __init__(self, survivors, rewritten, clusters, status, report, persisted, finish, rewrite, schema):
        self.survivors: DataFrame = survivors
        self.rewritten: DataFrame = rewritten
        self.clusters: DataFrame = clusters
        self.status: DataFrame = status
        """(id, source, reason, cluster_id, round): the exact and near rounds' outcome for every input."""
        self.report: dict = report
        self.source_counts: list = []
        self.rewrite_drops: dict = {}
        self._persisted = persisted
        self._finish = finish
        self.rewrite = rewrite
        """The rewrite pass's function over an iterator of Arrow batches of surviving documents (`schema`),
        to run inside a Spark task: it reports its statistics through the result's accumulator."""
        self.schema: pa.Schema = schema
        """The Arrow schema of the input documents, and of `survivors`."""

    def finish(self) -> None:
        """Fold the rewrite pass's statistics into the report (call after `survivors` was computed)."""
        self._finish(self)

    @property
    def outcomes(self) -> DataFrame:
        """(id, source, reason) of every input document, reason null when kept. Recomputes the rewrite
        pass: for tests and small inputs (the job takes the rewrite's drops from its statistics)."""
        return self.status.where(F.col("reason").isNotNull()).select("id", "source", "reason").unionByName(
            self.rewritten.select("id", "source", F.col("dedup_reason").alias("reason")))

    def release(self) -> None:
        for frame in self._persisted:
            frame.unpersist()


def dedup_documents(spark: SparkSession, docs: DataFrame, cfg: DedupConfig,
                    checkpoint_dir: str | None = None) -> DedupResult:
    """All four rounds over `docs` (any DataFrame holding the document columns). `checkpoint_dir` holds the
    reliable checkpoints of distributed connected components (a temporary folder when None)."""
    bands, rows = bands_and_rows(cfg.near)
    # Both sides of the exact round (its group-by and its join) read the features: persisted, the text is
    # read and shingled once, not twice.
    features = _features(docs, cfg, bands, rows).persist(StorageLevel.MEMORY_AND_DISK)
    feats = _exact_round(features, cfg).persist(StorageLevel.MEMORY_AND_DISK)
    alive = feats.where(F.col("id") == F.col("exact_rep"))
    near, near_report, persisted = _near_round(alive, cfg, bands, rows, checkpoint_dir)
    if cfg.near.enabled:  # its first job cached every partition of `feats`: the features' memory back
        features.unpersist()
    status = _cluster_status(feats, near).persist(StorageLevel.MEMORY_AND_DISK)

    rows, cluster_sizes, line_counts = _tallies(status, cfg)
    counts = [(r["source"], r["reason"], r["count"]) for r in rows]
    report, after_near = _round_reports(cfg, counts, cluster_sizes, near_report)
    stage = RewriteStage(spark, cfg, line_counts, after_near)
    kept_ids = status.where(F.col("reason").isNull()).select("id")
    alive_docs = docs.join(kept_ids, "id")
    rewritten = alive_docs.mapInArrow(stage.rewrite, from_arrow_schema(_rewrite_schema(alive_docs)))
    survivors = rewritten.where(F.col("dedup_reason").isNull()).select(*docs.columns)
    clusters = status.where(F.col("cluster_id").isNotNull()).select(
        "id", "cluster_id", "round", F.col("reason").isNull().alias("kept"))

    def finish(result: DedupResult) -> None:
        result.source_counts = counts
        result.rewrite_drops = stage.finish(report)

    return DedupResult(survivors, rewritten, clusters, status, report, [features, feats, status, *persisted], finish,
                       stage.rewrite, to_arrow_schema(survivors.schema))


def _round_reports(cfg: DedupConfig, counts: list[tuple], cluster_sizes: list, near_report: dict) -> tuple[dict, int]:
    """(the report of the exact and near rounds, documents left after them) from the (source, reason,
    count) tallies, the cluster size rows and the near round's own report."""
    by_reason: dict = {}
    for _, reason, count in counts:
        by_reason[reason] = by_reason.get(reason, 0) + count
    total = sum(by_reason.values())
    after_exact = total - by_reason.get(EXACT_DUPLICATE, 0)
    after_near = after_exact - by_reason.get(NEAR_DUPLICATE, 0)
    report: dict = {"input": total, "rounds": {
        EXACT: {"enabled": cfg.exact.enabled, "in": total, "out": after_exact, "dropped": total - after_exact},
        NEAR: {**near_report, "in": after_exact, "out": after_near, "dropped": after_exact - after_near},
    }}
    _add_cluster_reports(report, cluster_sizes, cfg.sample_clusters)
    return report, after_near


class RewriteStage:
    """The boilerplate and decontamination rounds: what every rewrite task shares (one broadcast), the
    function the tasks run over batches of surviving documents, and the statistics they report back."""

    def __init__(self, spark: SparkSession, cfg: DedupConfig, line_counts: list, alive: int):
        self.cfg, self.alive = cfg, alive
        self.boilerplate, self.top_hashes, self.threshold = _boilerplate_lines(line_counts, cfg, alive)
        eval_ngrams, self.eval_sets = (load_eval_ngrams(cfg.decontaminate) if cfg.decontaminate.enabled
                                       else (empty_eval_ngrams(), []))
        sc = spark.sparkContext
        self.shared = sc.broadcast((self.boilerplate, top_hashes_array(self.top_hashes), eval_ngrams))
        self.stats = sc.accumulator({}, _ByPartition())
        self.rewrite = _rewrite(cfg, self.shared, self.stats)
        """The rewrite pass's function over an iterator of Arrow batches of surviving documents, to run
        inside a Spark task: it reports its statistics through the accumulator."""

    def finish(self, report: dict) -> dict:
        """Fold the rewrite pass's statistics into `report` (once the pass ran); returns its drops
        {(source, reason): documents}."""
        merged = RewriteStats.merge(self.stats.value.values())
        _add_rewrite_reports(report, merged, self.cfg, len(self.boilerplate), self.threshold, self.top_hashes,
                             self.eval_sets, self.alive)
        report["output"] = report["rounds"][DECONTAMINATE]["out"]
        self.shared.unpersist()
        return merged.dropped


def _ledger_extra(report: dict) -> dict:
    return {"rounds": {name: {k: v for k, v in r.items() if k in ("in", "out", "dropped")}
                       for name, r in report["rounds"].items()}}


def top_hashes_array(top: list[tuple[int, int]]) -> np.ndarray:
    return np.array([h for h, _ in top], dtype=np.int64).view(np.uint64)


class _ByPartition(AccumulatorParam):
    """{partition: statistics}: a retried or speculative task reports the same partition with the same
    value, so merging by key counts every partition exactly once."""

    def zero(self, value):
        return {}

    def addInPlace(self, value1, value2):
        value1.update(value2)
        return value1


# ---------------------------------------------------------------------------------------------- driver plan

CLUSTERS_SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("cluster_id", pa.string()),
                             pa.field("round", pa.string()), pa.field("kept", pa.bool_(), nullable=False)])
"""The clusters table as the distributed plan's DataFrame gives it to the writer (`kept` is never null)."""
FEATURES_SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("source", pa.string()),
                             pa.field("length", pa.int64()), pa.field("quality", pa.float64())]
                            + FEATURE_COLUMNS + [pa.field("part", pa.int32())])


def driver_plan_refusal(cfg: BuildConfig, parts: list[list[str]] | None) -> str | None:
    """Why the driver plan cannot run on this input (the distributed plan runs), or None when it can: the
    upstream tables laid out by id, and at most `dedup.driver_max_documents` documents in them."""
    limit = cfg.dedup.driver_max_documents
    if limit == 0:
        return "dedup.driver_max_documents is 0"
    if parts is None:
        return "the upstream documents are not laid out by id as the jobs write them"
    documents = sum(_rows_of(uri) for table in parts for uri in table)
    if documents > limit:
        return f"{documents} documents exceed dedup.driver_max_documents ({limit})"
    return None


def _rows_of(uri: str) -> int:
    with fsspec.open(uri, "rb") as f:
        return pq.read_metadata(f).num_rows


def _driver_plan(spark: SparkSession, cfg: BuildConfig, docs: DataFrame, parts: list[list[str]],
                 tmp: str) -> Ledger | str:
    """The job as two Spark passes around the driver (docs/dedup.md, "Plans"): the features of every
    upstream part written to a temporary table, the exact and near rounds, tallies and clusters table
    computed on the driver from it, then the part-to-part rewrite. Returns the ledger, or why the outcome
    could differ from the distributed plan's (which then runs instead; nothing final was written)."""
    dedup, files = cfg.dedup, cfg.build.output_files
    bands, rows = bands_and_rows(dedup.near)
    schema = to_arrow_schema(docs.schema)
    features_uri = f"{tmp}/_features"
    try:
        unread = _write_features(spark, dedup, parts, schema, features_uri, bands, rows)
        if unread:
            return f"{unread} quality values are hexadecimal floats, which only Spark reads as Spark does"
        feats, refusal = sorted_by_id(_read_features(features_uri))
        if refusal:
            return refusal
        verify, near_settings = _near_settings(dedup.near, bands, rows)
        outcome = corpus_rounds(feats, dedup, verify, near_settings)
        if outcome.declined:
            return outcome.declined
        counts = reason_counts(feats.column("source"), outcome.reason)
        sizes = cluster_sizes(outcome.cluster, outcome.round, feats.column("id"), dedup.sample_clusters)
        lines = frequent_lines(feats.column("line_hashes"), outcome.reason == None, dedup)
        report, after_near = _round_reports(dedup, counts, sizes, outcome.near_report)
        batch_rows = int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch", "10000"))
        _write_cluster_parts(feats, outcome, f"{tmp}/clusters", files, batch_rows)
        del feats, outcome
    finally:
        fs, path = fsspec.core.url_to_fs(features_uri)
        if fs.exists(path):
            fs.rm(path, recursive=True)
    stage = RewriteStage(spark, dedup, lines, after_near)
    rewrite_part_to_part(spark, stage.rewrite, _survivor_schema(docs, stage), parts, f"{tmp}/clusters",
                         f"{tmp}/documents", files)
    ledger = _ledger_from_counts(counts, stage.finish(report))
    ledger.extra = _ledger_extra(report)
    _write_report(tmp, {"plan": "driver", **report})
    return ledger


def _survivor_schema(docs: DataFrame, stage: RewriteStage) -> pa.Schema:
    """The survivors' Arrow schema as the distributed plan derives it (no Spark job runs)."""
    rewritten = docs.mapInArrow(stage.rewrite, from_arrow_schema(_rewrite_schema(docs)))
    return to_arrow_schema(rewritten.where(F.col("dedup_reason").isNull()).select(*docs.columns).schema)


def _write_features(spark: SparkSession, cfg: DedupConfig, parts: list[list[str]], schema: pa.Schema, uri: str,
                    bands: int, rows: int) -> int:
    """One Spark job, a task per upstream part: its documents' features written to `uri` (no text).
    Returns how many quality values the tasks could not read as Spark does."""
    task = _part_featurer(cfg, parts, schema, uri, bands, rows)
    out = pa.schema([("part", pa.int32()), ("rows", pa.int64()), ("unread", pa.int64())])
    return sum(r["unread"] for r in map_parts(spark, parts[0], task, out).collect())


def _part_featurer(cfg: DedupConfig, parts: list[list[str]], schema: pa.Schema, uri: str, bands: int, rows: int):
    """The mapInArrow function of `_write_features`: (part, uri) rows in, (part, rows, unread) out. Each
    part's documents are read as the rewrite reads them (the upstream tables' parts merged by id) and
    prepared as `_features` prepares them in Spark: length in characters, the quality signal as a double."""

    def features(tasks):
        for task in tasks:
            for part in task.column("part").to_pylist():
                written = unread = 0
                fs, path = fsspec.core.url_to_fs(uri)
                fs.makedirs(path, exist_ok=True)
                no_drops = pa.array([], pa.string())
                with fs.open(posixpath.join(path, part_name(part)), "wb") as f, \
                        pq.ParquetWriter(f, FEATURES_SCHEMA) as out:
                    for batch in _alive_batches([table[part] for table in parts], schema, no_drops):
                        quality, bad = quality_signal(batch, cfg.survivor.quality_field)
                        prepared = pa.RecordBatch.from_arrays(
                            [batch.column("id"), batch.column("source"),
                             pc.utf8_length(batch.column("text")).cast(pa.int64()), quality,
                             batch.column("text"), batch.column("domain")],
                            names=["id", "source", "length", "quality", "text", "domain"])
                        feats = document_features(prepared, cfg, bands, rows, PASSTHROUGH)
                        feats = feats.append_column("part", pa.array([part] * feats.num_rows, pa.int32()))
                        out.write_batch(feats.cast(FEATURES_SCHEMA))
                        written += feats.num_rows
                        unread += bad
                yield pa.RecordBatch.from_pydict({"part": [part], "rows": [written], "unread": [unread]},
                                                 schema=pa.schema([("part", pa.int32()), ("rows", pa.int64()),
                                                                   ("unread", pa.int64())]))

    return features


def _read_features(uri: str) -> pa.Table:
    fs, path = fsspec.core.url_to_fs(uri)
    names = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".parquet"))
    columns = [n for n in FEATURES_SCHEMA.names if n != "shingles"]
    # memory-mapped where local: the file's bytes are not copied into the driver's heap on the way
    return pa.concat_tables([pq.read_table(name, columns=columns, filesystem=fs, memory_map=True) for name in names])


def _write_cluster_parts(feats: pa.Table, outcome: CorpusOutcome, uri: str, files: int, batch_rows: int) -> None:
    """The clusters table, part i holding the clustered documents of upstream part i in id order: the rows,
    batches and so bytes `write_parquet_table` gives the distributed plan's clusters."""
    clustered = np.flatnonzero(outcome.cluster != NONE)
    ids = feats.column("id")
    table = pa.table({
        "id": ids.take(pa.array(clustered)),
        "cluster_id": ids.take(pa.array(outcome.cluster[clustered])),
        "round": pa.array(outcome.round[clustered].tolist(), pa.string()),
        "kept": pa.array(outcome.reason[clustered] == None, pa.bool_()),
    }, schema=CLUSTERS_SCHEMA)
    part_of_row = feats.column("part").take(pa.array(clustered))
    for part in range(files):
        rows = table.filter(pc.equal(part_of_row, part))
        write_part(uri, part, CLUSTERS_SCHEMA, rebatched(rows.to_batches(), CLUSTERS_SCHEMA, batch_rows), "id", files)


# ---------------------------------------------------------------------------------------------- features


def _features(docs: DataFrame, cfg: DedupConfig, bands: int, rows: int) -> DataFrame:
    prepared = docs.select(
        "id", "source", F.length("text").cast("long").alias("length"),
        _quality(docs, cfg.survivor).alias("quality"), "text", "domain",
    )
    schema = pa.schema([pa.field("id", pa.string()), pa.field("source", pa.string()),
                        pa.field("length", pa.int64()), pa.field("quality", pa.float64())] + FEATURE_COLUMNS)
    return prepared.mapInArrow(_features_fn(cfg, bands, rows), from_arrow_schema(schema))


def _quality(docs: DataFrame, cfg: SurvivorConfig) -> Column:
    """The quality signal as a double: a column of that name, else a meta key, else null."""
    if cfg.quality_field in docs.columns:
        return F.expr(f"try_cast(`{cfg.quality_field}` AS DOUBLE)")
    return F.expr(f"try_cast(element_at(meta, '{cfg.quality_field}') AS DOUBLE)")


def _features_fn(cfg: DedupConfig, bands: int, rows: int):
    """The mapInArrow function of the features pass (config as arguments, no globals)."""

    def features(batches):
        for batch in batches:
            yield document_features(batch, cfg, bands, rows, PASSTHROUGH)

    return features


# ---------------------------------------------------------------------------------------------- exact


def _rank_struct(rule: str, with_centrality: bool) -> Column:
    """A struct whose minimum is the survivor under `survivor_order(rule)` (nulls of a signal last)."""
    parts = []
    for key in survivor_order(rule):
        if key.column == "centrality" and not with_centrality:
            continue
        col = F.col(key.column)
        if key.column == "id":
            parts.append(col.alias("k_id"))
        else:
            value = -col.cast("double") if key.descending else col.cast("double")
            parts.append(F.coalesce(value, F.lit(float("inf"))).alias(f"k_{key.column}"))
    return F.struct(*parts)


def _exact_round(feats: DataFrame, cfg: DedupConfig) -> DataFrame:
    """`feats` plus exact_rep (the exact-duplicate survivor; itself when kept) and exact_size. A group-by
    with partial aggregation, not a window: a million identical pages never meet in one task."""
    if not cfg.exact.enabled:
        return feats.withColumn("exact_rep", F.col("id")).withColumn("exact_size", F.lit(1).cast("long"))
    reps = feats.groupBy("exact_key").agg(F.min(_rank_struct(cfg.survivor.rule, False)).alias("best"),
                                          F.count("*").alias("exact_size"))
    return feats.join(reps.select("exact_key", F.col("best.k_id").alias("exact_rep"), "exact_size"), "exact_key")


# ---------------------------------------------------------------------------------------------- near


def _near_round(alive: DataFrame, cfg: DedupConfig, bands: int, rows: int,
                checkpoint_dir: str | None) -> tuple[DataFrame, dict, list[DataFrame]]:
    """(id, near_rep, near_others) for every exact survivor judged inside a near-duplicate cluster, a
    report, and the frames persisted on the way. near_rep is the cluster's survivor, null for a member
    not similar enough to it (kept, outside the cluster); near_others is set on the survivor's row."""
    near = cfg.near
    verify, report = _near_settings(near, bands, rows)
    empty = alive.sparkSession.createDataFrame([], "id string, near_rep string, near_others long")
    if not near.enabled:
        return empty, report, []
    pairs, giant = candidate_pairs(alive, near.max_bucket_size)
    scored = score_pairs(pairs, alive, near.num_perm).persist(StorageLevel.MEMORY_AND_DISK)
    verified = F.col("jaccard") >= verify
    # One job for the pair tally and the largest split buckets, so Spark can reuse the buckets' shuffle.
    tally = scored.agg(F.count("*").alias("candidates"), F.sum(verified.cast("long")).alias("verified"))
    largest = giant.orderBy(F.col("size").desc(), "band", "key").limit(10)
    rows = tally.unionByName(largest.select("band", "size", "root", "key"), allowMissingColumns=True).collect()
    tally_row = next(r for r in rows if r["candidates"] is not None)
    giant_rows = sorted((r for r in rows if r["candidates"] is None), key=lambda r: (-r["size"], r["band"], r["key"]))
    report["candidate_pairs"] = tally_row["candidates"]
    report["verified_pairs"] = tally_row["verified"] or 0
    report["split_buckets"] = {"max_bucket_size": near.max_bucket_size,
                               "largest": [{"band": r["band"], "size": r["size"], "root": r["root"]}
                                           for r in giant_rows]}
    edges = scored.where(verified).select("a", "b")
    if report["verified_pairs"] <= near.driver_max_edges:
        table = component_table(edges)
        report["components"], report["cc_iterations"] = "driver", 0
        if fits_on_driver(table, cfg):
            return judge_on_driver(table, alive, cfg, verify), report, [scored]
        comps = alive.sparkSession.createDataFrame(table)
    else:
        comps, iterations = connected_components(edges, checkpoint_dir, report["verified_pairs"])
        report["components"], report["cc_iterations"] = "distributed", iterations
    judged = judge_clusters(comps, alive, cfg, verify)
    return judged, report, [scored]


def _near_settings(near: NearConfig, bands: int, rows: int) -> tuple[float, dict]:
    """(the Jaccard estimate a pair needs, the near round's report of its settings)."""
    verify = near.effective_verify_threshold if near.verify == "signature" else 0.0
    return verify, {"enabled": near.enabled, "bands": bands, "rows": rows, "num_perm": near.num_perm,
                    "threshold": near.threshold, "recall_jaccard": near.effective_recall_jaccard,
                    "target_recall": near.target_recall, "verify": near.verify,
                    "verify_threshold": verify if near.verify == "signature" else None}


def candidate_pairs(alive: DataFrame, max_bucket_size: int) -> tuple[DataFrame, DataFrame]:
    """((a, b) with b < a: every document linked to the smallest id of each band bucket it shares, and the
    buckets that were split). A bucket of n documents gives n - 1 pairs, never n^2. Buckets are counted
    with a group-by (partial aggregation, so no task receives a whole bucket); one of more than
    `max_bucket_size` members is split into sub-buckets by a hash of the id, each member linked to its
    sub-bucket's smallest id and that one to the bucket's smallest: still n - 1 pairs, still connected.
    The sub-bucket is pmod(id_hash, ceil(size / max_bucket_size)): a feature, so the driver plan splits alike."""
    keyed = alive.select("id", "id_hash", F.posexplode("bands").alias("band", "key"))
    buckets = keyed.groupBy("band", "key").agg(F.count("*").alias("size"), F.min("id").alias("root")).where(
        F.col("size") >= 2)
    linked = keyed.join(buckets, ["band", "key"])
    plain = linked.where((F.col("size") <= max_bucket_size) & (F.col("id") != F.col("root"))).select(
        F.col("id").alias("a"), F.col("root").alias("b"))
    big = linked.where(F.col("size") > max_bucket_size).withColumn(
        "shard", F.pmod(F.col("id_hash"), F.ceil(F.col("size") / max_bucket_size)))
    subs = big.groupBy("band", "key", "shard").agg(F.min("id").alias("sub_root"))
    split = big.join(subs, ["band", "key", "shard"])
    to_sub = split.where(F.col("id") != F.col("sub_root")).select(F.col("id").alias("a"), F.col("sub_root").alias("b"))
    to_root = split.where(F.col("sub_root") != F.col("root")).select(
        F.col("sub_root").alias("a"), F.col("root").alias("b"))
    pairs = plain.unionByName(to_sub).unionByName(to_root).distinct()
    return pairs, buckets.where(F.col("size") > max_bucket_size)


def score_pairs(pairs: DataFrame, feats: DataFrame, num_perm: int) -> DataFrame:
    """(a, b, jaccard): each pair with the share of signature slots its two documents agree on."""
    sig = feats.select("id", "signature")
    joined = (pairs.join(sig.withColumnRenamed("id", "a").withColumnRenamed("signature", "sig_a"), "a")
              .join(sig.withColumnRenamed("id", "b").withColumnRenamed("signature", "sig_b"), "b"))
    schema = from_arrow_schema(pa.schema([("a", pa.string()), ("b", pa.string()), ("jaccard", pa.float64())]))
    return joined.select("a", "b", "sig_a", "sig_b").mapInArrow(_jaccard_fn(num_perm), schema)


def _jaccard_fn(num_perm: int):
    def score(batches):
        for batch in batches:
            left = binary_matrix(batch.column("sig_a"), np.uint32, num_perm)
            right = binary_matrix(batch.column("sig_b"), np.uint32, num_perm)
            yield pa.RecordBatch.from_arrays([batch.column("a"), batch.column("b"),
                                              pa.array(agreement(left, right), pa.float64())],
                                             names=["a", "b", "jaccard"])

    return score


def components_on_driver(edges: DataFrame) -> DataFrame:
    """(id, root) of every node of the graph, clustered on the driver with scipy (one Spark job)."""
    return edges.sparkSession.createDataFrame(component_table(edges))


def component_table(edges: DataFrame) -> pa.Table:
    """`components_on_driver` as an Arrow table on the driver."""
    table = edges.toArrow()
    nodes = pa.chunked_array([table.column("a"), table.column("b")]).combine_chunks() if table.num_rows else \
        pa.array([], pa.string())
    names, index = np.unique(np.asarray(nodes.to_pylist(), dtype=object), return_inverse=True)
    half = table.num_rows
    labels = components(index[:half], index[half:], len(names))
    return pa.table({"id": pa.array(names.tolist(), pa.string()), "root": pa.array(names[labels].tolist(), pa.string())})


def fits_on_driver(comps: pa.Table, cfg: DedupConfig) -> bool:
    """Can the clusters of `comps` (id, root) be judged on the driver exactly as `judge_clusters` judges
    them: few enough members for their signatures, and no cluster so large that it would be sampled."""
    if comps.num_rows > cfg.near.driver_max_members:
        return False
    sizes = pc.value_counts(comps.column("root")).field("counts")
    return len(sizes) == 0 or pc.max(sizes).as_py() <= cfg.survivor.max_exact_members


def judge_on_driver(comps: pa.Table, alive: DataFrame, cfg: DedupConfig, verify: float) -> DataFrame:
    """`judge_clusters` on the driver for components already there: one Spark job fetches the members'
    signatures (the components broadcast, no shuffle), the same functions judge every cluster, and the
    outcome goes back as a small table (joined by broadcast too)."""
    spark = alive.sparkSession
    schema = "id string, near_rep string, near_others long"
    if comps.num_rows == 0:
        return F.broadcast(spark.createDataFrame([], schema))
    wanted = F.broadcast(spark.createDataFrame(comps))
    members = alive.select("id", "signature", "quality", "length").join(wanted, "id").toArrow()
    members = members.sort_by("id").select(["root", "id", "signature", "quality", "length"])
    picks = judge_cluster_batch(members.combine_chunks().to_batches()[0], cfg.survivor.rule, cfg.near.num_perm)
    ids, survivors = picks.column("id"), picks.column("survivor")
    own = binary_matrix(members.column("signature"), np.uint32, cfg.near.num_perm)
    theirs = binary_matrix(picks.column("survivor_signature"), np.uint32, cfg.near.num_perm)
    is_survivor = np.asarray(pc.equal(ids, survivors).to_numpy(zero_copy_only=False), dtype=bool)
    attached = is_survivor | (agreement(own, theirs) >= verify)
    names = np.asarray(ids.to_pylist(), dtype=object)
    survivor_names = np.asarray(survivors.to_pylist(), dtype=object)
    counted, counts = np.unique(survivor_names[attached & ~is_survivor], return_counts=True)
    others = dict(zip(counted.tolist(), counts.tolist()))
    near_rep = np.where(attached, survivor_names, None)
    near_others = [others.get(name, 0) if survivor else None for name, survivor in zip(names.tolist(), is_survivor)]
    table = pa.table({"id": ids, "near_rep": pa.array(near_rep.tolist(), pa.string()),
                      "near_others": pa.array(near_others, pa.int64())})
    return F.broadcast(spark.createDataFrame(table, schema))  # a frame made from Arrow has no size estimate


def connected_components(edges: DataFrame, checkpoint_dir: str | None = None,
                         edge_count: int | None = None) -> tuple[DataFrame, int]:
    """(id, root) for every node of the undirected graph `edges` (a, b); root is its component's smallest id.

    Large-star / small-star (Kiveris et al., "Connected Components in MapReduce and Beyond", 2014), in
    DataFrame operations: each round reshuffles edges only, never collects them. Each round is written as
    a reliable checkpoint under `checkpoint_dir` (so a lost executor costs a round, not the lineage of all
    of them) and the rounds are capped at ceil(log2(edges))^2 + 4, the algorithm's proven bound, with room:
    in practice it converges in O(log n) rounds.
    """
    spark = edges.sparkSession
    spark.sparkContext.setCheckpointDir(checkpoint_dir or tempfile.mkdtemp(prefix="rnj-dedup-cc-"))
    count = edge_count if edge_count is not None else edges.count()
    cap = math.ceil(math.log2(count + 2)) ** 2 + 4
    e = edges.select(F.greatest("a", "b").alias("src"), F.least("a", "b").alias("dst")).where(
        F.col("src") != F.col("dst")).distinct().checkpoint(eager=True)
    iteration = 0
    while not _is_star_forest(e):
        iteration += 1
        if iteration > cap:
            raise RuntimeError(f"connected components did not converge in {cap} rounds for {count} edges")
        e = _small_star(_large_star(e)).checkpoint(eager=True)
    roots = e.select(F.col("dst").alias("id"), F.col("dst").alias("root")).distinct()
    return e.select(F.col("src").alias("id"), F.col("dst").alias("root")).unionByName(roots), iteration


def _large_star(e: DataFrame) -> DataFrame:
    """Link every neighbour larger than a node to the smallest of the node's neighbourhood (itself included)."""
    sym = e.select(F.col("src").alias("u"), F.col("dst").alias("v")).unionByName(
        e.select(F.col("dst").alias("u"), F.col("src").alias("v")))
    mins = sym.groupBy("u").agg(F.least(F.min("v"), F.col("u")).alias("m"))
    out = sym.where(F.col("v") > F.col("u")).join(mins, "u")
    return out.select(F.col("v").alias("src"), F.col("m").alias("dst")).distinct()


def _small_star(e: DataFrame) -> DataFrame:
    """Link every node and its smaller neighbours to the smallest of them."""
    mins = e.groupBy("src").agg(F.min("dst").alias("m"))
    linked = e.join(mins, "src").select(F.col("dst").alias("src"), F.col("m").alias("dst"))
    out = linked.where(F.col("src") != F.col("dst")).unionByName(mins.select("src", F.col("m").alias("dst")))
    return out.distinct()


def _is_star_forest(e: DataFrame) -> bool:
    """One job: is some node the child of two parents, or both a child and a parent?"""
    as_child = e.select(F.col("src").alias("n"), F.lit(1).alias("child"), F.lit(0).alias("parent"))
    as_parent = e.select(F.col("dst").alias("n"), F.lit(0).alias("child"), F.lit(1).alias("parent"))
    roles = as_child.unionByName(as_parent).groupBy("n").agg(F.sum("child").alias("c"), F.max("parent").alias("p"))
    return roles.where((F.col("c") > 1) | ((F.col("c") >= 1) & (F.col("p") == 1))).limit(1).count() == 0


def judge_clusters(comps: DataFrame, alive: DataFrame, cfg: DedupConfig, verify: float) -> DataFrame:
    """(id, near_rep, near_others) per component member.

    Each component's survivor is chosen by `survivor.rule` among its members (a deterministic sample of
    about `survivor.max_exact_members` in a larger one: pmod(id_hash, size) below it), all of a component's judged
    members in one task (hash-partitioned by root, one Python call per partition, not per cluster). Every
    member is then compared with its survivor; one below the verification threshold leaves the cluster."""
    cap = cfg.survivor.max_exact_members
    sizes = comps.groupBy("root").agg(F.count("*").alias("size"))
    members = comps.join(sizes, "root").join(alive.select("id", "signature", "quality", "length", "id_hash"), "id")
    sampled = (F.col("size") <= cap) | (F.pmod(F.col("id_hash"), F.col("size")) < cap)
    schema = pa.schema([("root", pa.string()), ("id", pa.string()), ("centrality", pa.int64()),
                        ("survivor", pa.string()), ("survivor_signature", pa.binary())])
    picks = members.where(sampled).select("root", "id", "signature", "quality", "length").repartition(
        "root").mapInArrow(_judge_fn(cfg.survivor.rule, cfg.near.num_perm), from_arrow_schema(schema))
    survivors = picks.select("root", "survivor", "survivor_signature").distinct()
    compared = members.select("id", "root", "signature").join(survivors, "root").mapInArrow(
        _attach_fn(cfg.near.num_perm, verify), "id string, root string, survivor string, attached boolean")
    others = compared.where(F.col("attached") & (F.col("id") != F.col("survivor"))).groupBy("survivor").agg(
        F.count("*").alias("near_others"))
    judged = compared.join(others.withColumnRenamed("survivor", "id"), "id", "left").select(
        "id", F.when(F.col("attached"), F.col("survivor")).alias("near_rep"),
        F.when(F.col("id") == F.col("survivor"), F.coalesce("near_others", F.lit(0))).alias("near_others"))
    return judged


def _judge_fn(rule: str, num_perm: int):
    def judge(batches):
        table = pa.Table.from_batches(list(batches))
        if table.num_rows:
            yield judge_cluster_batch(table.combine_chunks().to_batches()[0], rule, num_perm)

    return judge


def _attach_fn(num_perm: int, verify: float):
    def attach(batches):
        for batch in batches:
            own = binary_matrix(batch.column("signature"), np.uint32, num_perm)
            theirs = binary_matrix(batch.column("survivor_signature"), np.uint32, num_perm)
            ids, survivors = batch.column("id"), batch.column("survivor")
            same = np.asarray(pa.compute.equal(ids, survivors).to_numpy(zero_copy_only=False), dtype=bool)
            attached = same | (agreement(own, theirs) >= verify)
            yield pa.RecordBatch.from_arrays([ids, batch.column("root"), survivors, pa.array(attached)],
                                             names=["id", "root", "survivor", "attached"])

    return attach


# ---------------------------------------------------------------------------------------------- clusters


def _cluster_status(feats: DataFrame, near: DataFrame) -> DataFrame:
    """Per input document: id, source, reason (exact/near drop or null), cluster_id (the id of the cluster's
    kept document), round, and the line hashes of the candidate boilerplate lines.

    A document's cluster is its exact survivor's near-duplicate cluster, or its exact group alone."""
    rows = feats.select("id", "source", "exact_rep", "exact_size", "line_hashes").join(
        near.withColumnRenamed("id", "exact_rep"), "exact_rep", "left")
    final = F.coalesce(F.col("near_rep"), F.col("exact_rep"))
    exact_copy = F.col("id") != F.col("exact_rep")
    near_member = F.col("near_rep").isNotNull() & ((final != F.col("id")) | (F.coalesce("near_others", F.lit(0)) > 0))
    reason = F.when(exact_copy, F.lit(EXACT_DUPLICATE)).when(final != F.col("id"), F.lit(NEAR_DUPLICATE))
    clustered = exact_copy | (final != F.col("id")) | (F.col("exact_size") > 1) | near_member
    round_ = F.when(exact_copy, F.lit(EXACT)).when(near_member, F.lit(NEAR)).otherwise(F.lit(EXACT))
    return rows.select("id", "source", reason.alias("reason"), F.when(clustered, final).alias("cluster_id"),
                       F.when(clustered, round_).alias("round"), "line_hashes")


def _tallies(status: DataFrame, cfg: DedupConfig) -> tuple[list, list, list]:
    """One Spark job for the ledger, the cluster reports and the boilerplate lines: ((source, reason, count)
    rows; per round and cluster size (near, size, count, first) rows where `first` holds the
    `sample_clusters` clusters of that size with the smallest ids, each with its smallest member ids; and
    (h, count) of the lines in more surviving documents than the boilerplate threshold)."""
    sample = cfg.sample_clusters
    counts = status.groupBy("source", "reason").count()
    clusters = status.where(F.col("cluster_id").isNotNull()).groupBy("cluster_id").agg(
        F.count("*").alias("size"), F.max((F.col("round") == NEAR).cast("int")).alias("near"),
        F.min_by("id", "id", SAMPLE_MEMBERS).alias("members"))
    sizes = clusters.groupBy("near", "size").agg(
        F.count("*").alias("count"),
        F.min_by(F.struct("cluster_id", "members"), F.col("cluster_id"), max(sample, 1)).alias("first"))
    tallies = counts.withColumn("tally", F.lit("reasons")).unionByName(
        sizes.withColumn("tally", F.lit("clusters")), allowMissingColumns=True)
    if cfg.boilerplate.enabled:
        tallies = tallies.unionByName(_frequent_lines(status, cfg).withColumn("tally", F.lit("lines")),
                                      allowMissingColumns=True)
    rows = tallies.collect()
    return tuple([r for r in rows if r["tally"] == kind] for kind in ("reasons", "clusters", "lines"))


def _frequent_lines(status: DataFrame, cfg: DedupConfig) -> DataFrame:
    """(h, count) of the candidate lines in more surviving documents than `boilerplate_threshold` of the
    survivors' count, computed in the same query (so that the tallies need no second job)."""
    kept = status.where(F.col("reason").isNull())
    survivors = kept.agg(F.count("*").alias("survivors"))
    rate = F.lit(float(cfg.boilerplate.max_documents_per_million)) * F.col("survivors").cast("double") / F.lit(1e6)
    threshold = F.greatest(F.lit(cfg.boilerplate.min_documents).cast("long"), F.floor(rate).cast("long"))
    lines = kept.select(F.explode("line_hashes").alias("h")).groupBy("h").count()
    return lines.crossJoin(survivors).where(F.col("count") > threshold).select(
        "h", F.col("count").alias("documents"))


def _add_cluster_reports(report: dict, cluster_sizes: list, sample: int) -> None:
    """Per round: clusters, their size histogram and the largest few (ties: smallest cluster id first) with
    their smallest member ids."""
    for name, flag in ((EXACT, 0), (NEAR, 1)):
        rows = sorted((r for r in cluster_sizes if r["near"] == flag), key=lambda r: -r["size"])
        sizes = {r["size"]: r["count"] for r in rows}
        chosen = [(r["size"], c) for r in rows for c in sorted(r["first"], key=lambda c: c["cluster_id"])][:sample]
        round_report = report["rounds"][name]
        round_report["clusters"] = sum(sizes.values())
        round_report["cluster_sizes"] = size_histogram(sizes)
        round_report["cluster_size_counts"] = {str(k): sizes[k] for k in sorted(sizes)}
        round_report["sample_clusters"] = [
            {"cluster_id": c["cluster_id"], "size": size, "kept": c["cluster_id"], "members": sorted(c["members"])}
            for size, c in chosen]


# ---------------------------------------------------------------------------------------------- rewrite


def _boilerplate_lines(line_counts: list, cfg: DedupConfig,
                       alive: int) -> tuple[np.ndarray, list[tuple[int, int]], int]:
    """(sorted uint64 hashes of boilerplate lines, top (hash, documents), the document threshold), from
    the (h, documents) rows `_tallies` collected."""
    threshold = boilerplate_threshold(cfg.boilerplate, alive)
    if not cfg.boilerplate.enabled:
        return np.zeros(0, np.uint64), [], threshold
    counted = ((r["h"], r["documents"]) for r in line_counts)
    rows = sorted(((h, n) for h, n in counted if n > threshold), key=lambda x: (-x[1], x[0]))
    hashes = np.unique(np.array([h for h, _ in rows], dtype=np.int64).view(np.uint64))
    return hashes, rows[: cfg.boilerplate.report_top], threshold


def _rewrite_schema(alive_docs: DataFrame) -> pa.Schema:
    base = to_arrow_schema(alive_docs.schema)
    return pa.schema(list(base) + REWRITE_COLUMNS)


def _rewrite(cfg: DedupConfig, shared, stats):
    def rewrite(batches):
        from pyspark import TaskContext

        boilerplate, top, eval_ngrams = shared.value
        partition = RewriteStats()
        for batch in batches:
            out = rewrite_batch(batch, cfg, boilerplate, eval_ngrams, top, partition)
            yield out
        stats.add({TaskContext.get().partitionId(): partition})

    return rewrite


def _add_rewrite_reports(report, stats: RewriteStats, cfg, boilerplate_lines, threshold, top_hashes, eval_sets,
                         alive):
    dropped_short = sum(v for (s, r), v in stats.dropped.items() if r == REASONS[BOILERPLATE])
    dropped_contaminated = sum(v for (s, r), v in stats.dropped.items() if r == REASONS[DECONTAMINATE])
    report["rounds"][BOILERPLATE] = {
        "enabled": cfg.boilerplate.enabled, "in": alive, "out": alive - dropped_short, "dropped": dropped_short,
        "max_documents": threshold, "max_documents_per_million": cfg.boilerplate.max_documents_per_million,
        "min_documents": cfg.boilerplate.min_documents, "boilerplate_lines": boilerplate_lines,
        "documents_edited": stats.edited, "lines_removed": stats.lines,
        "share_of_documents_edited": round(stats.edited / alive, 6) if alive else 0.0,
        "top_lines": [{"line": stats.top_lines.get(h, ""), "documents": count} for h, count in top_hashes],
    }
    after = alive - dropped_short
    report["rounds"][DECONTAMINATE] = {
        "enabled": cfg.decontaminate.enabled, "in": after, "out": after - dropped_contaminated,
        "dropped": dropped_contaminated,
        # every matcher setting, so a report tells which rule dropped what (eval sets are listed below)
        **{k: v for k, v in asdict(cfg.decontaminate).items() if k not in ("enabled", "eval_paths")},
        "eval_sets": [asdict(s) for s in eval_sets],
        "matched_documents": stats.hit, "spans_removed": stats.spans if cfg.decontaminate.action == "remove_span" else 0,
        "sample_dropped": stats.contaminated_sample,
    }


def _upstream_parts(cfg: BuildConfig) -> list[list[str]] | None:
    """Per upstream documents table, its part files 0 .. output_files-1, when every one was laid out by
    write_parquet_table with `output_files` files by id (as the jobs write them); else None."""
    tables = []
    for name in upstream_jobs(cfg, JOB):
        parts = hash_bucketed_parts(JobOutput(cfg.build.output, name).child("documents"), cfg.build.output_files)
        if parts is None:
            return None
        tables.append(parts)
    return tables


def rewrite_part_to_part(spark: SparkSession, rewrite, schema: pa.Schema, upstream: list[list[str]],
                         clusters_uri: str, out_uri: str, files: int) -> None:
    """Write the survivors as write_parquet_table would, with no shuffle: upstream part i holds exactly
    the ids of output part i (same hash, same number of files), and the written clusters' part i lists
    which of them were dropped (`kept` false). One task per part reads its upstream parts, leaves the
    dropped out, rewrites the rest and writes part i: the same rows, in the same order, the same bytes."""
    batch_rows = int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch", "10000"))
    task = _part_rewriter(rewrite, upstream, clusters_uri, out_uri, schema, files, batch_rows)
    schema = pa.schema([("part", pa.int32()), ("rows", pa.int64())])
    map_parts(spark, upstream[0], task, schema).collect()


def _part_rewriter(rewrite, upstream: list[list[str]], clusters_uri: str, out_uri: str, schema: pa.Schema,
                   files: int, batch_rows: int):
    """The mapInArrow function of `rewrite_part_to_part`: (part, uri) rows in, (part, rows written) out.
    The survivors reach the writer in batches of `batch_rows`, as Spark hands them to the shuffled path's
    writer (Arrow's `maxRecordsPerBatch`): Parquet pages follow the batches, so the bytes do too."""

    def rewrite_parts(tasks):
        for task in tasks:
            for part in task.column("part").to_pylist():
                dropped = _dropped_ids(posixpath.join(clusters_uri, part_name(part)))
                alive = _alive_batches([table[part] for table in upstream], schema, dropped)
                survivors = (b.filter(pc.is_null(b.column("dedup_reason"))).select(schema.names)
                             for b in rewrite(alive))
                rows = write_part(out_uri, part, schema, rebatched(survivors, schema, batch_rows), "id", files)
                yield pa.RecordBatch.from_pydict({"part": [part], "rows": [rows]},
                                                 schema=pa.schema([("part", pa.int32()), ("rows", pa.int64())]))

    return rewrite_parts


def rebatched(batches, schema: pa.Schema, rows: int):
    """`batches` cut and joined into batches of exactly `rows` rows (the last one shorter); `rows` <= 0:
    one batch."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        while 0 < rows <= held:
            table = pa.Table.from_batches(pending, schema)
            yield table.slice(0, rows).combine_chunks().to_batches()[0]
            rest = table.slice(rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending, schema).combine_chunks().to_batches()[0]


def _dropped_ids(uri: str) -> pa.Array:
    """The ids a written clusters part marks as not kept (the exact and near rounds' drops)."""
    with fsspec.open(uri, "rb") as f:
        table = pq.read_table(f, columns=["id", "kept"])
    return table.filter(pc.invert(table.column("kept"))).column("id").combine_chunks()


def _alive_batches(uris: list[str], schema: pa.Schema, dropped: pa.Array):
    """The rows of the upstream parts `uris` whose id is not in `dropped`, in `schema` (columns an upstream
    lacks are null), in id order: each part is sorted already, so one is streamed and several are merged
    as they stream."""
    def conformed(batch: pa.RecordBatch) -> pa.RecordBatch:
        batch = batch.filter(pc.invert(pc.is_in(batch.column("id"), value_set=dropped)))
        columns = [batch.column(f.name).cast(f.type) if f.name in batch.schema.names
                   else pa.nulls(batch.num_rows, f.type) for f in schema]
        return pa.RecordBatch.from_arrays(columns, schema=schema)

    def read(uri: str):
        with fsspec.open(uri, "rb") as f:
            yield from (conformed(b) for b in pq.ParquetFile(f).iter_batches(batch_size=REWRITE_BATCH_ROWS))

    if len(uris) == 1:
        yield from read(uris[0])
        return
    yield from merged_by_id([read(uri) for uri in uris], schema)


def merged_by_id(streams: list, schema: pa.Schema):
    """One stream of batches sorted by id from `streams` of batches each sorted by id, holding about one
    batch per stream: each round emits every row up to the smallest of the streams' current last ids
    (no row still to come can sort before it), sorted stably (on equal ids the earlier stream first)."""
    streams = [iter(s) for s in streams]
    current: list[pa.RecordBatch | None] = [None] * len(streams)
    while True:
        for i in range(len(streams)):
            while streams[i] is not None and (current[i] is None or current[i].num_rows == 0):
                current[i] = next(streams[i], None)
                if current[i] is None:
                    streams[i] = None
        live = [i for i, batch in enumerate(current) if batch is not None]
        if not live:
            return
        bound = min(current[i].column("id")[-1].as_py() for i in live)
        ready = []
        for i in live:
            upto = pc.sum(pc.less_equal(current[i].column("id"), bound)).as_py() or 0
            ready.append(current[i].slice(0, upto))
            current[i] = current[i].slice(upto)
        yield from pa.Table.from_batches(ready, schema).sort_by("id").to_batches()


# ---------------------------------------------------------------------------------------------- outputs


def _ledger_from_counts(counts, late: dict) -> Ledger:
    """The ledger: (source, reason, count) tallies of the exact/near outcome, the rewrite's drops moved from
    written to their reason."""
    ledger = Ledger(job=JOB)
    table: dict[tuple[str, str | None], int] = {}
    for source, reason, count in counts:
        table[(source, reason)] = table.get((source, reason), 0) + count
    for (source, reason), n in late.items():
        table[(source, None)] = table.get((source, None), 0) - n
        table[(source, reason)] = table.get((source, reason), 0) + n
    for (source, reason), n in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        if n:
            ledger.add(source, "written" if reason is None else "dropped", reason, n)
    return ledger


def _write_report(tmp: str, report: dict) -> None:
    with fsspec.open(f"{tmp}/{REPORT}", "w") as f:
        f.write(json.dumps(report, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to the report")


def _empty_clusters(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([], "id string, cluster_id string, round string, kept boolean")


def main(argv: list[str] | None = None) -> None:
    job_main(JOB, __doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    # As a script (spark-submit jobs/dedup.py) this file is `__main__`; run the importable module instead,
    # so that functions shipped to executors are pickled by reference to `jobs.dedup`, which they can import.
    from jobs.dedup import main as module_main

    module_main()
