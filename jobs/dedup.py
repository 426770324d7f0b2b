"""Dedup job: exact, MinHash-LSH near-duplicate, boilerplate-line and decontamination rounds.

    python -m jobs.dedup --config configs/demo.toml
    spark-submit jobs/dedup.py --config configs/demo.toml

Reads the upstream documents (ingest, plus traces when enabled) and writes `OUTPUT/dedup/documents/`
(the survivors, input schema), `clusters/` (id, cluster_id, round, kept), `report.json` and
`_LEDGER.json`. One `mapInArrow` pass computes every document's features (exact key, MinHash signature,
band keys, candidate line hashes); the rounds then shuffle those, never the text, until the last pass
reads the text once more and rewrites the survivors. No task ever holds a whole giant band bucket or
cluster: buckets are split, clusters judged on a bounded sample. docs/dedup.md describes the rounds.
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
from pipeline.ledger import Ledger

JOB = "dedup"
REPORT = "report.json"
PASSTHROUGH = ("id", "source", "length", "quality")
SAMPLE_MEMBERS = 20
"""Members listed per sample cluster in the report (the smallest ids: a bounded aggregate)."""
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
        ledger = _ledger_from_counts(docs.groupBy("source").count().collect(), {})
        _write_report(tmp, {"enabled": False, "input": ledger.read, "output": ledger.written})
        return ledger
    checkpoints = f"{tmp}/_checkpoints"
    result = dedup_documents(spark, docs, cfg.dedup, checkpoint_dir=checkpoints)
    try:
        write_parquet_table(result.clusters, f"{tmp}/clusters", files)
        parts = _upstream_parts(cfg)
        if parts is None:  # an upstream laid out otherwise (written by hand, or by an older rnj): join, shuffle
            write_parquet_table(result.survivors, f"{tmp}/documents", files)
        else:  # part to part: the text is read once more and never shuffled
            rewrite_part_to_part(spark, result, parts, f"{tmp}/clusters", f"{tmp}/documents", files)
        result.finish()
        ledger = _ledger_from_counts(result.source_counts, result.rewrite_drops)
        ledger.extra = {"rounds": {name: {k: v for k, v in r.items() if k in ("in", "out", "dropped")}
                                   for name, r in result.report["rounds"].items()}}
        _write_report(tmp, result.report)
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

    counts, cluster_sizes, line_counts = _tallies(status, cfg)
    by_reason: dict = {}
    for r in counts:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + r["count"]
    total = sum(by_reason.values())
    after_exact = total - by_reason.get(EXACT_DUPLICATE, 0)
    after_near = after_exact - by_reason.get(NEAR_DUPLICATE, 0)
    report: dict = {"input": total, "rounds": {
        EXACT: {"enabled": cfg.exact.enabled, "in": total, "out": after_exact, "dropped": total - after_exact},
        NEAR: {**near_report, "in": after_exact, "out": after_near, "dropped": after_exact - after_near},
    }}
    _add_cluster_reports(report, cluster_sizes, cfg.sample_clusters)

    boilerplate, top_hashes, threshold = _boilerplate_lines(line_counts, cfg, after_near)
    eval_ngrams, eval_sets = (load_eval_ngrams(cfg.decontaminate) if cfg.decontaminate.enabled
                              else (empty_eval_ngrams(), []))
    sc = spark.sparkContext
    shared = sc.broadcast((boilerplate, top_hashes_array(top_hashes), eval_ngrams))
    stats = sc.accumulator({}, _ByPartition())
    kept_ids = status.where(F.col("reason").isNull()).select("id")
    alive_docs = docs.join(kept_ids, "id")
    rewrite = _rewrite(cfg, shared, stats)
    rewritten = alive_docs.mapInArrow(rewrite, from_arrow_schema(_rewrite_schema(alive_docs)))
    survivors = rewritten.where(F.col("dedup_reason").isNull()).select(*docs.columns)
    clusters = status.where(F.col("cluster_id").isNotNull()).select(
        "id", "cluster_id", "round", F.col("reason").isNull().alias("kept"))

    def finish(result: DedupResult) -> None:
        merged = RewriteStats.merge(stats.value.values())
        _add_rewrite_reports(report, merged, cfg, len(boilerplate), threshold, top_hashes, eval_sets, after_near)
        report["output"] = report["rounds"][DECONTAMINATE]["out"]
        result.source_counts = counts
        result.rewrite_drops = merged.dropped
        shared.unpersist()

    return DedupResult(survivors, rewritten, clusters, status, report, [features, feats, status, *persisted], finish,
                       rewrite, to_arrow_schema(survivors.schema))


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
    verify = near.effective_verify_threshold if near.verify == "signature" else 0.0
    report = {"enabled": near.enabled, "bands": bands, "rows": rows, "num_perm": near.num_perm,
              "threshold": near.threshold, "recall_jaccard": near.effective_recall_jaccard,
              "target_recall": near.target_recall, "verify": near.verify,
              "verify_threshold": verify if near.verify == "signature" else None}
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


def candidate_pairs(alive: DataFrame, max_bucket_size: int) -> tuple[DataFrame, DataFrame]:
    """((a, b) with b < a: every document linked to the smallest id of each band bucket it shares, and the
    buckets that were split). A bucket of n documents gives n - 1 pairs, never n^2. Buckets are counted
    with a group-by (partial aggregation, so no task receives a whole bucket); one of more than
    `max_bucket_size` members is split into sub-buckets by a hash of the id, each member linked to its
    sub-bucket's smallest id and that one to the bucket's smallest: still n - 1 pairs, still connected."""
    keyed = alive.select("id", F.posexplode("bands").alias("band", "key"))
    buckets = keyed.groupBy("band", "key").agg(F.count("*").alias("size"), F.min("id").alias("root")).where(
        F.col("size") >= 2)
    linked = keyed.join(buckets, ["band", "key"])
    plain = linked.where((F.col("size") <= max_bucket_size) & (F.col("id") != F.col("root"))).select(
        F.col("id").alias("a"), F.col("root").alias("b"))
    big = linked.where(F.col("size") > max_bucket_size).withColumn(
        "shard", F.pmod(F.xxhash64("id"), F.ceil(F.col("size") / max_bucket_size)))
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
    about `survivor.max_exact_members` in a larger one: by a hash of the id), all of a component's judged
    members in one task (hash-partitioned by root, one Python call per partition, not per cluster). Every
    member is then compared with its survivor; one below the verification threshold leaves the cluster."""
    cap = cfg.survivor.max_exact_members
    sizes = comps.groupBy("root").agg(F.count("*").alias("size"))
    members = comps.join(sizes, "root").join(alive.select("id", "signature", "quality", "length"), "id")
    sampled = (F.col("size") <= cap) | (F.pmod(F.xxhash64("id"), F.col("size")) < cap)
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


def rewrite_part_to_part(spark: SparkSession, result: DedupResult, upstream: list[list[str]], clusters_uri: str,
                         out_uri: str, files: int) -> None:
    """Write the survivors as write_parquet_table would, with no shuffle: upstream part i holds exactly
    the ids of output part i (same hash, same number of files), and the written clusters' part i lists
    which of them were dropped (`kept` false). One task per part reads its upstream parts, leaves the
    dropped out, rewrites the rest and writes part i: the same rows, in the same order, the same bytes."""
    batch_rows = int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch", "10000"))
    task = _part_rewriter(result.rewrite, upstream, clusters_uri, out_uri, result.schema, files, batch_rows)
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
    """The ledger: (source, reason, count) rows of the exact/near outcome, the rewrite's drops moved from
    written to their reason."""
    ledger = Ledger(job=JOB)
    table: dict[tuple[str, str | None], int] = {}
    for row in counts:
        reason = row.asDict().get("reason")
        table[(row["source"], reason)] = table.get((row["source"], reason), 0) + row["count"]
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
