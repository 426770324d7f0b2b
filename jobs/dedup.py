"""Dedup job: exact, MinHash-LSH near-duplicate, boilerplate-line and decontamination rounds.

    python -m jobs.dedup --config configs/demo.toml
    spark-submit jobs/dedup.py --config configs/demo.toml

Reads the upstream documents (ingest, plus traces when enabled) and writes `OUTPUT/dedup/documents/`
(the survivors, input schema), `clusters/` (id, cluster_id, round, kept), `report.json` and
`_LEDGER.json`. One `mapInArrow` pass computes every document's features (exact key, MinHash signature,
band keys, candidate line hashes); the rounds then shuffle those, never the text, until the last pass
rewrites the survivors. docs/dedup.md describes the rounds and the report.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import fsspec
import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

from jobs.common import (
    JobResult,
    input_hash,
    job_main,
    read_upstream_documents,
    run_job,
    upstream_jobs,
    write_parquet_table,
)
from pipeline.config import BuildConfig
from pipeline.dedup.boilerplate import lines_with_hashes
from pipeline.dedup.config import DedupConfig, NearConfig, SurvivorConfig
from pipeline.dedup.decontaminate import EvalNgrams, empty_eval_ngrams, load_eval_ngrams
from pipeline.dedup.features import FEATURE_COLUMNS, document_features, is_code
from pipeline.dedup.minhash import optimal_bands, signature_jaccard
from pipeline.dedup.rewrite import REWRITE_COLUMNS, rewrite_batch
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
from pipeline.ledger import Ledger

JOB = "dedup"
REPORT = "report.json"
PASSTHROUGH = ("id", "source", "length", "quality")
MAX_CC_ITERATIONS = 40


def run(spark: SparkSession, cfg: BuildConfig, force: bool = False) -> JobResult:
    digest = input_hash(cfg, JOB, ("dedup",), upstream=upstream_jobs(cfg, JOB))
    return run_job(cfg, JOB, digest, lambda tmp: _dedup(spark, cfg, tmp), force=force)


def bands_and_rows(near: NearConfig) -> tuple[int, int]:
    """The LSH layout: as configured, else derived from the threshold and the error weights."""
    if near.bands is not None and near.rows is not None:
        return near.bands, near.rows
    return optimal_bands(near.threshold, near.num_perm, near.false_positive_weight, near.false_negative_weight)


# ---------------------------------------------------------------------------------------------- driver


def _dedup(spark: SparkSession, cfg: BuildConfig, tmp: str) -> Ledger:
    docs = read_upstream_documents(spark, cfg, JOB)
    files = cfg.build.output_files
    if not cfg.dedup.enabled:
        write_parquet_table(docs, f"{tmp}/documents", files)
        write_parquet_table(_empty_clusters(spark), f"{tmp}/clusters", 1)
        ledger = _ledger(docs.select("source", F.lit(None).cast("string").alias("reason")))
        _write_report(tmp, {"enabled": False, "input": ledger.read, "output": ledger.written})
        return ledger
    result = dedup_documents(spark, docs, cfg.dedup)
    try:
        write_parquet_table(result.survivors, f"{tmp}/documents", files)
        write_parquet_table(result.clusters, f"{tmp}/clusters", files)
        ledger = _ledger(result.outcomes)
        ledger.extra = {"rounds": {name: {k: v for k, v in r.items() if k in ("in", "out", "dropped")}
                                   for name, r in result.report["rounds"].items()}}
        _write_report(tmp, result.report)
    finally:
        result.release()
    return ledger


class DedupResult:
    """What `dedup_documents` computed: lazy DataFrames (persisted where reused) plus the report."""

    def __init__(self, survivors, clusters, outcomes, report, persisted):
        self.survivors: DataFrame = survivors
        self.clusters: DataFrame = clusters
        self.outcomes: DataFrame = outcomes
        """(id, source, reason): every input document, reason null when kept."""
        self.report: dict = report
        self._persisted = persisted

    def release(self) -> None:
        for frame in self._persisted:
            frame.unpersist()


def dedup_documents(spark: SparkSession, docs: DataFrame, cfg: DedupConfig) -> DedupResult:
    """All four rounds over `docs` (any DataFrame holding the document columns)."""
    bands, rows = bands_and_rows(cfg.near)
    feats = _features(docs, cfg, bands, rows).persist(StorageLevel.MEMORY_AND_DISK)
    # Persisted because each is read by several plans below: recomputing the exact window (a shuffle) in
    # every one of them costs a Spark stage each time, which dominates on small inputs.
    exact = _exact_round(feats, cfg).persist(StorageLevel.MEMORY_AND_DISK)  # id, exact_rep
    survivors_feats = feats.select("id", "length", "quality", "signature", "bands").join(
        exact.where(F.col("id") == F.col("exact_rep")).select("id"), "id").persist(StorageLevel.MEMORY_AND_DISK)
    near, near_report, persisted = _near_round(survivors_feats, cfg, bands, rows)  # id, root, near_rep
    status = _cluster_status(feats, exact, near).persist(StorageLevel.MEMORY_AND_DISK)
    counts = {r["reason"]: r["count"] for r in status.groupBy("reason").count().collect()}
    total = sum(counts.values())
    after_exact = total - counts.get(EXACT_DUPLICATE, 0)
    after_near = after_exact - counts.get(NEAR_DUPLICATE, 0)
    report: dict = {"input": total, "rounds": {
        EXACT: {"enabled": cfg.exact.enabled, "in": total, "out": after_exact, "dropped": total - after_exact},
        NEAR: {**near_report, "in": after_exact, "out": after_near, "dropped": after_exact - after_near},
    }}
    _add_cluster_reports(report, status, cfg.sample_clusters)

    alive = status.where(F.col("reason").isNull()).select("id")
    boilerplate, top_hashes = _boilerplate_lines(feats.join(alive, "id"), cfg)
    eval_ngrams, eval_sets = (load_eval_ngrams(cfg.decontaminate) if cfg.decontaminate.enabled
                              else (empty_eval_ngrams(), []))
    alive_docs = docs.join(alive, "id")
    rewritten = alive_docs.mapInArrow(
        _rewrite(cfg, boilerplate, eval_ngrams),
        from_arrow_schema(_rewrite_schema(alive_docs)),
    ).persist(StorageLevel.MEMORY_AND_DISK)
    _add_rewrite_reports(report, rewritten, cfg, boilerplate, top_hashes, alive_docs, eval_sets, after_near)

    survivors = rewritten.where(F.col("dedup_reason").isNull()).select(*docs.columns)
    outcomes = status.where(F.col("reason").isNotNull()).select("id", "source", "reason").unionByName(
        rewritten.select("id", "source", F.col("dedup_reason").alias("reason")))
    clusters = status.where(F.col("cluster_id").isNotNull()).select(
        "id", "cluster_id", "round", F.col("reason").isNull().alias("kept"))
    report["output"] = report["rounds"][DECONTAMINATE]["out"]
    return DedupResult(survivors, clusters, outcomes, report,
                       [feats, exact, survivors_feats, status, rewritten, *persisted])


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


def _order(rule: str) -> list[Column]:
    cols = []
    for key in survivor_order(rule):
        col = F.col(key.column)
        cols.append(col.desc_nulls_last() if key.descending else col.asc_nulls_last())
    return cols


def _exact_round(feats: DataFrame, cfg: DedupConfig) -> DataFrame:
    """(id, exact_rep): each document's exact-duplicate survivor (itself when kept)."""
    if not cfg.exact.enabled:
        return feats.select("id", F.col("id").alias("exact_rep"))
    ranked = Window.partitionBy("exact_key").orderBy(*_order(cfg.survivor.rule))
    whole = ranked.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    return feats.select("id", F.first("id").over(whole).alias("exact_rep"))


# ---------------------------------------------------------------------------------------------- near


def _near_round(feats: DataFrame, cfg: DedupConfig, bands: int,
                rows: int) -> tuple[DataFrame, dict, list[DataFrame]]:
    """(id, root, near_rep) for every document in a near-duplicate cluster of two or more, a report, and
    the frames persisted on the way (released with the result)."""
    near = cfg.near
    report = {"enabled": near.enabled, "bands": bands, "rows": rows, "num_perm": near.num_perm,
              "threshold": near.threshold, "verify": near.verify,
              "verify_threshold": near.effective_verify_threshold if near.verify == "signature" else None}
    if not near.enabled:
        return feats.sparkSession.createDataFrame([], "id string, root string, near_rep string"), report, []
    scored = score_pairs(candidate_pairs(feats), feats).persist(StorageLevel.MEMORY_AND_DISK)
    verified = F.col("jaccard") >= near.effective_verify_threshold if near.verify == "signature" else F.lit(True)
    tally = scored.agg(F.count("*").alias("candidates"), F.sum(verified.cast("long")).alias("verified")).first()
    report["candidate_pairs"] = tally["candidates"]
    report["verified_pairs"] = tally["verified"] or 0
    components, iterations, cc_frames = connected_components(scored.where(verified).select("a", "b"))
    report["cc_iterations"] = iterations
    members = components.join(feats.select("id", "length", "quality"), "id")
    ranked = Window.partitionBy("root").orderBy(*_order(cfg.survivor.rule))
    whole = ranked.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    result = members.select("id", "root", F.first("id").over(whole).alias("near_rep"))
    return result, report, [scored, *cc_frames]


def candidate_pairs(feats: DataFrame) -> DataFrame:
    """(a, b) with b < a: every document linked to the smallest id of each band bucket it shares.

    A bucket of n documents gives n - 1 pairs, never n^2: a 10,000-document bucket of one boilerplate
    page costs 9,999 rows. Members of one bucket all end up in one component through its minimum.
    """
    keyed = feats.select("id", F.posexplode("bands").alias("band", "key"))
    # A window, not a group-by joined back: one shuffle instead of three. Only buckets of two or more
    # documents have a member other than their minimum, so single buckets give no pair.
    bucket = Window.partitionBy("band", "key")
    pairs = keyed.select("id", F.min("id").over(bucket).alias("root")).where(F.col("id") != F.col("root"))
    return pairs.select(F.col("id").alias("a"), F.col("root").alias("b")).distinct()


def score_pairs(pairs: DataFrame, feats: DataFrame) -> DataFrame:
    """(a, b, jaccard): each pair with the share of signature slots its two documents agree on."""
    sig = feats.select("id", "signature")
    joined = (pairs.join(sig.withColumnRenamed("id", "a").withColumnRenamed("signature", "sig_a"), "a")
              .join(sig.withColumnRenamed("id", "b").withColumnRenamed("signature", "sig_b"), "b"))
    schema = from_arrow_schema(pa.schema([("a", pa.string()), ("b", pa.string()), ("jaccard", pa.float64())]))
    return joined.select("a", "b", "sig_a", "sig_b").mapInArrow(_jaccard_fn(), schema)


def _jaccard_fn():
    def score(batches):
        for batch in batches:
            left = _signature_matrix(batch.column("sig_a"))
            right = _signature_matrix(batch.column("sig_b"))
            jaccard = signature_jaccard(left, right) if len(left) else np.zeros(0)
            yield pa.RecordBatch.from_arrays([batch.column("a"), batch.column("b"), pa.array(jaccard, pa.float64())],
                                             names=["a", "b", "jaccard"])

    return score


def _signature_matrix(column: pa.Array) -> np.ndarray:
    values = column.to_pylist()
    if not values:
        return np.zeros((0, 1), dtype=np.uint32)
    return np.frombuffer(b"".join(values), dtype=np.uint32).reshape(len(values), -1)


def connected_components(edges: DataFrame,
                         max_iterations: int = MAX_CC_ITERATIONS) -> tuple[DataFrame, int, list[DataFrame]]:
    """(id, root) for every node of the undirected graph `edges` (a, b); root is its component's smallest id.

    Large-star / small-star (Kiveris et al., "Connected Components in MapReduce and Beyond", 2014), in
    DataFrame operations: each round reshuffles edges only, never collects them; O(log n) rounds. Stops
    when the edges form stars: every child has one parent and no parent is a child. Also returns the
    iterations and the persisted frame (to release after use).
    """
    # A lazy local checkpoint per round keeps the plan one round deep; the convergence test computes it.
    e = edges.select(F.greatest("a", "b").alias("src"), F.least("a", "b").alias("dst")).where(
        F.col("src") != F.col("dst")).distinct().localCheckpoint(eager=False)
    iteration = 0
    while not _is_star_forest(e):
        iteration += 1
        if iteration > max_iterations:
            raise RuntimeError(f"connected components did not converge in {max_iterations} rounds")
        e = _small_star(_large_star(e)).localCheckpoint(eager=False)
    roots = e.select(F.col("dst").alias("id"), F.col("dst").alias("root")).distinct()
    return e.select(F.col("src").alias("id"), F.col("dst").alias("root")).unionByName(roots), iteration, []


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


# ---------------------------------------------------------------------------------------------- clusters


def _cluster_status(feats: DataFrame, exact: DataFrame, near: DataFrame) -> DataFrame:
    """Per input document: source, reason (exact/near drop or null), cluster_id, round.

    A document's cluster is its exact survivor's near-duplicate component (or its exact group); the id of a
    cluster is the smallest id among all its members, exact copies included.
    """
    base = feats.select("id", "source").join(exact, "id")
    rep_near = near.select(F.col("id").alias("exact_rep"), F.col("root"), F.col("near_rep"))
    rows = base.join(rep_near, "exact_rep", "left")
    group = F.coalesce(F.col("root"), F.col("exact_rep"))
    cluster = Window.partitionBy(group)
    size = F.count("*").over(cluster)
    reason = (F.when(F.col("id") != F.col("exact_rep"), F.lit(EXACT_DUPLICATE))
              .when(F.col("near_rep").isNotNull() & (F.col("id") != F.col("near_rep")), F.lit(NEAR_DUPLICATE)))
    round_ = (F.when(F.col("id") != F.col("exact_rep"), F.lit(EXACT))
              .when(F.col("root").isNotNull(), F.lit(NEAR)).otherwise(F.lit(EXACT)))
    return rows.select(
        "id", "source", reason.alias("reason"),
        F.when(size > 1, F.min("id").over(cluster)).alias("cluster_id"),
        F.when(size > 1, round_).alias("round"),
        size.alias("cluster_size"),
    )


def _add_cluster_reports(report: dict, status: DataFrame, sample: int) -> None:
    """Per round: clusters, their size histogram and the largest few with members (two small jobs).

    A cluster belongs to the near round when any member joined it through near-duplicate search, else to
    the exact round."""
    clusters = status.where(F.col("cluster_id").isNotNull()).groupBy("cluster_id").agg(
        F.count("*").alias("size"),
        F.max((F.col("round") == NEAR).cast("int")).alias("near"),
        F.min(F.when(F.col("reason").isNull(), F.col("id"))).alias("kept"),
        F.slice(F.array_sort(F.collect_list("id")), 1, 20).alias("members"),
    ).persist(StorageLevel.MEMORY_AND_DISK)
    histogram = clusters.groupBy("near", "size").count().collect()
    top = Window.partitionBy("near").orderBy(F.col("size").desc(), "cluster_id")
    samples = clusters.withColumn("rank", F.row_number().over(top)).where(F.col("rank") <= sample).collect()
    for name, flag in ((EXACT, 0), (NEAR, 1)):
        sizes = {r["size"]: r["count"] for r in histogram if r["near"] == flag}
        chosen = sorted((r for r in samples if r["near"] == flag), key=lambda r: r["rank"])
        round_report = report["rounds"][name]
        round_report["clusters"] = sum(sizes.values())
        round_report["cluster_sizes"] = size_histogram(sizes)
        round_report["sample_clusters"] = [
            {"cluster_id": r["cluster_id"], "size": r["size"], "kept": r["kept"], "members": list(r["members"])}
            for r in chosen
        ]
    clusters.unpersist()


# ---------------------------------------------------------------------------------------------- rewrite


def _boilerplate_lines(alive_feats: DataFrame, cfg: DedupConfig) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(sorted uint64 hashes of lines in more than max_documents documents, top (hash, documents))."""
    if not cfg.boilerplate.enabled:
        return np.zeros(0, np.uint64), []
    counts = (alive_feats.select(F.explode("line_hashes").alias("h")).groupBy("h").count()
              .where(F.col("count") > cfg.boilerplate.max_documents))
    rows = sorted(((r["h"], r["count"]) for r in counts.collect()), key=lambda x: (-x[1], x[0]))
    hashes = np.unique(np.array([h for h, _ in rows], dtype=np.int64).view(np.uint64))
    return hashes, rows[: cfg.boilerplate.report_top]


def _rewrite_schema(alive_docs: DataFrame) -> pa.Schema:
    base = to_arrow_schema(alive_docs.schema)
    return pa.schema(list(base) + REWRITE_COLUMNS)


def _rewrite(cfg: DedupConfig, boilerplate: np.ndarray, eval_ngrams: EvalNgrams):
    def rewrite(batches):
        for batch in batches:
            yield rewrite_batch(batch, cfg, boilerplate, eval_ngrams)

    return rewrite


def _add_rewrite_reports(report, rewritten, cfg, boilerplate, top_hashes, alive_docs, eval_sets, alive):
    stats = rewritten.groupBy("dedup_reason").agg(
        F.count("*").alias("docs"), F.sum(F.when(F.col("lines_removed") > 0, 1).otherwise(0)).alias("edited"),
        F.sum("lines_removed").alias("lines"), F.sum(F.when(F.col("spans_removed") > 0, 1).otherwise(0)).alias("hit"),
        F.sum("spans_removed").alias("spans"),
        F.slice(F.array_sort(F.collect_list(F.when(F.col("dedup_reason") == REASONS[DECONTAMINATE], F.col("id")))),
                1, 10).alias("sample"),
    ).collect()
    by_reason = {r["dedup_reason"]: r for r in stats}
    too_short = by_reason.get(REASONS[BOILERPLATE])
    contaminated = by_reason.get(REASONS[DECONTAMINATE])
    dropped_short = too_short["docs"] if too_short else 0
    dropped_contaminated = contaminated["docs"] if contaminated else 0
    report["rounds"][BOILERPLATE] = {
        "enabled": cfg.boilerplate.enabled, "in": alive, "out": alive - dropped_short, "dropped": dropped_short,
        "max_documents": cfg.boilerplate.max_documents, "boilerplate_lines": len(boilerplate),
        "documents_edited": sum(r["edited"] or 0 for r in stats), "lines_removed": sum(r["lines"] or 0 for r in stats),
        "top_lines": _top_lines(alive_docs, cfg, top_hashes),
    }
    after = alive - dropped_short
    report["rounds"][DECONTAMINATE] = {
        "enabled": cfg.decontaminate.enabled, "in": after, "out": after - dropped_contaminated,
        "dropped": dropped_contaminated, "action": cfg.decontaminate.action, "ngram": cfg.decontaminate.ngram,
        "min_item_fraction": cfg.decontaminate.min_item_fraction,
        "eval_sets": [asdict(s) for s in eval_sets],
        "matched_documents": sum(r["hit"] or 0 for r in stats), "spans_removed": sum(r["spans"] or 0 for r in stats)
        if cfg.decontaminate.action == "remove_span" else 0,
        "sample_dropped": list(contaminated["sample"]) if contaminated else [],
    }


def _top_lines(alive_docs: DataFrame, cfg: DedupConfig, top: list[tuple[int, int]]) -> list[dict]:
    """The text of the most frequent boilerplate lines (one more small pass over the survivors)."""
    if not top:
        return []
    wanted = np.array([h for h, _ in top], dtype=np.int64).view(np.uint64)
    code_domains = cfg.near.code_domains
    boiler_cfg = cfg.boilerplate

    def find(batches):
        for batch in batches:
            code = is_code(batch.column("domain"), code_domains)
            found = lines_with_hashes(batch.column("text"), code, wanted, boiler_cfg)
            yield pa.RecordBatch.from_arrays([pa.array([h for h, _ in found], pa.int64()),
                                              pa.array([t for _, t in found], pa.string())], names=["h", "line"])

    lines = alive_docs.select("text", "domain").mapInArrow(find, "h long, line string")
    texts = {r["h"]: r["line"] for r in lines.groupBy("h").agg(F.min("line").alias("line")).collect()}
    return [{"line": texts.get(h, ""), "documents": count} for h, count in top]


# ---------------------------------------------------------------------------------------------- outputs


def _ledger(outcomes: DataFrame) -> Ledger:
    ledger = Ledger(job=JOB)
    counts = outcomes.groupBy("source", "reason").count().collect()
    for row in sorted(counts, key=lambda r: (r["source"], r["reason"] or "")):
        outcome = "written" if row["reason"] is None else "dropped"
        ledger.add(row["source"], outcome, row["reason"], row["count"])
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
