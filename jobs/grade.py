"""Grade job: quality filters, domain, difficulty and tier for every document that dedup kept.

    python -m jobs.grade --config configs/demo.toml
    spark-submit jobs/grade.py --config configs/demo.toml

Reads the committed `dedup` documents; writes `OUTPUT/grade/documents/` (pipeline.grading.grade.GRADED_SCHEMA),
`report.json` (pipeline/grading/report.py) and `_LEDGER.json` (dropped documents under their first failed
rule). Ranks are exact and corpus-wide: a window over (domain, raw score, id) of the small (id, domain, score)
table, joined back by id, so outputs are byte-identical whatever the partitioning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import posixpath
import uuid
from collections import Counter

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
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
from jobs.dedup import rebatched
from pipeline.commit import JobOutput
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
    return run_job(cfg, JOB, digest, lambda tmp: _grade_upstream(spark, cfg, tmp), force=force)


def _grade_upstream(spark: SparkSession, cfg: BuildConfig, tmp: str) -> Ledger:
    """Part to part when the upstream table is laid out as write_parquet_table lays out ours (hash of id
    into `output_files` files, each sorted by id), else through Spark with a shuffle: the same bytes."""
    (upstream,) = upstream_jobs(cfg, JOB)
    parts = hash_bucketed_parts(JobOutput(cfg.build.output, upstream).child("documents"), cfg.build.output_files)
    if parts is None:  # laid out otherwise (written by hand, or by an older rnj)
        return grade(spark, cfg, read_upstream_documents(spark, cfg, JOB), tmp)
    return grade_parts(spark, cfg, parts, tmp)


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
    return _finish(spark, grade_cfg, tmp, ledger, common, classifier)


def _finish(spark: SparkSession, cfg: GradeConfig, tmp: str, ledger: Ledger, common: frozenset[str] | None,
            classifier: LinearClassifier | None, groups: list[dict] | None = None) -> Ledger:
    """The report of the written `tmp/documents` (its first aggregation given as `groups` when the writer
    tallied it), and the ledger's extra figures."""
    written = spark.read.parquet(f"{tmp}/documents")
    report = _report(written, cfg, ledger, len(common or ()), classifier, _difficulty_model(cfg), groups)
    with fsspec.open(posixpath.join(tmp, REPORT), "w") as f:
        f.write(json.dumps(report, indent=2, sort_keys=False) + "\n")
    ledger.extra = {"common_words": len(common or ())}
    return ledger


# ------------------------------------------------------------------------------------ part to part

TALLY_SCHEMA = pa.schema([("source", pa.string()), ("keep", pa.bool_()), ("reason", pa.string()),
                          ("count", pa.int64())])
RANKED_SCHEMA = pa.schema([("part", pa.int32()), ("id", pa.string()), ("domain", pa.string()),
                           ("score", pa.float64())])
"""What pass 2 returns to the driver: the hand-graded documents' (part, id, domain, score)."""
RANK_SCHEMA = pa.schema([("id", pa.string()), ("rank_difficulty", pa.float64()), ("rank_tier", pa.int32())])


def grade_parts(spark: SparkSession, cfg: BuildConfig, parts: list[str], tmp: str) -> Ledger:
    """The job's body when upstream part i holds exactly the ids of our part i (same hash, same number of
    files, sorted by id): three passes of one task per part and no shuffle of text. Pass 1 analyses part i,
    keeps its kept rows in a scratch file and counts its prose words; pass 2 grades them with the corpus's
    common words into another scratch file and returns the hand-graded (id, domain, score); the driver ranks
    those as `_rank` does; pass 3 adds difficulty and tier and writes part i as write_parquet_table would:
    the same rows, in the same order, in the same batches, so the same bytes."""
    grade_cfg, files = cfg.grade, cfg.build.output_files
    batch_rows = int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch", "10000"))
    classifier = _train_classifier(grade_cfg)
    vocabulary = posixpath.join(tmp, "_vocabulary") if grade_cfg.enabled and grade_cfg.difficulty.enabled else None
    scratch = {name: posixpath.join(tmp, f"_{name}") for name in ("kept", "scored", "ranks")}
    try:
        analyse = _analyse_parts(grade_cfg, classifier, vocabulary, scratch["kept"], batch_rows)
        ledger = _ledger_of(map_parts(spark, parts, analyse, TALLY_SCHEMA).toArrow().to_pylist())
        common = _common_words_on_driver(spark, vocabulary, grade_cfg) if vocabulary else None
        context = GradeContext(common_words=common, markers=grade_cfg.difficulty.trace_markers)
        model = _difficulty_model(grade_cfg)
        kept = [posixpath.join(scratch["kept"], part_name(i)) for i in range(files)]
        score = _grade_parts(grade_cfg, context, model.uri if model else None, scratch["scored"], batch_rows)
        hand = map_parts(spark, kept, score, RANKED_SCHEMA).toArrow()
        _write_ranks(hand, grade_cfg.difficulty.tiers, scratch["ranks"], files)
        schema = _graded_arrow_schema(spark, grade_cfg)
        scored = [posixpath.join(scratch["scored"], part_name(i)) for i in range(files)]
        write = _write_parts(grade_cfg, scratch["ranks"], f"{tmp}/documents", schema, files, batch_rows)
        groups = _merged_groups(map_parts(spark, scored, write, REPORT_GROUPS_SCHEMA).toArrow().to_pylist())
    finally:
        for uri in [vocabulary, *scratch.values()]:
            if uri:
                fs, path = fsspec.core.url_to_fs(uri)
                if fs.exists(path):
                    fs.rm(path, recursive=True)
    return _finish(spark, grade_cfg, tmp, ledger, common, classifier, groups)


def _ledger_of(tallies: list[dict]) -> Ledger:
    """The ledger from per-part (source, keep, reason, count) tallies, in `_count`'s order."""
    totals: Counter = Counter()
    for t in tallies:
        totals[(t["source"], t["keep"], t["reason"])] += t["count"]
    ledger = Ledger(job=JOB)
    for (source, keep, reason), n in sorted(totals.items(), key=lambda kv: (kv[0][0], not kv[0][1], kv[0][2] or "")):
        ledger.add(source, "written" if keep else "dropped", reason, n)
    return ledger


@contextlib.contextmanager
def _scratch_writer(fs, path: str, schema: pa.Schema):
    """An Arrow IPC stream file for rows that only this job reads back (no Parquet encoding to pay)."""
    with fs.open(path, "wb") as f, pa.ipc.new_stream(f, schema) as out:
        yield out


def _scratch_batches(uri: str):
    with fsspec.open(uri, "rb") as f:
        yield from pa.ipc.open_stream(f)


def _task_parts(tasks):
    for task in tasks:
        yield from zip(task.column("part").to_pylist(), task.column("uri").to_pylist())


def _analyse_parts(cfg: GradeConfig, classifier: LinearClassifier | None, vocabulary_uri: str | None,
                   kept_uri: str, batch_rows: int):
    """Pass 1 (a map_parts function): upstream part in; its kept rows to `kept_uri`, its prose word counts to
    `vocabulary_uri` (`_write_vocabulary`), its (source, keep, reason, count) tallies out."""

    def analyse(tasks):
        for part, uri in _task_parts(tasks):
            vocabulary = Counter() if vocabulary_uri else None
            tallies: Counter = Counter()
            fs, path = fsspec.core.url_to_fs(kept_uri)
            fs.makedirs(path, exist_ok=True)
            with fsspec.open(uri, "rb") as f, \
                    _scratch_writer(fs, posixpath.join(path, part_name(part)), ANALYSED_SCHEMA) as out:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows):
                    analysed = analyse_batch(batch, cfg, classifier, vocabulary)
                    for row in analysed.select(["source", "keep", "reason"]).to_pylist():
                        tallies[(row["source"], row["keep"], row["reason"])] += 1
                    out.write_batch(analysed.filter(analysed.column("keep")))
            if vocabulary_uri:
                _write_vocabulary(vocabulary_uri, vocabulary)
            keys = sorted(tallies, key=lambda k: (k[0], not k[1], k[2] or ""))
            yield pa.RecordBatch.from_pydict({"source": [k[0] for k in keys], "keep": [k[1] for k in keys],
                                              "reason": [k[2] for k in keys], "count": [tallies[k] for k in keys]},
                                             schema=TALLY_SCHEMA)

    return analyse


def _grade_parts(cfg: GradeConfig, context: GradeContext, model_uri: str | None, scored_uri: str, batch_rows: int):
    """Pass 2 (a map_parts function): a part's kept rows in; graded to `scored_uri`; the hand-graded rows'
    (part, id, domain, score) out, for the ranks."""
    grade_batches = _grade(cfg, context, model_uri)

    def grade_part(tasks):
        for part, uri in _task_parts(tasks):
            fs, path = fsspec.core.url_to_fs(scored_uri)
            fs.makedirs(path, exist_ok=True)
            with _scratch_writer(fs, posixpath.join(path, part_name(part)), SCORED_SCHEMA) as out:
                for scored in grade_batches(rebatched(_scratch_batches(uri), ANALYSED_SCHEMA, batch_rows)):
                    out.write_batch(scored)
                    hand = scored.filter(scored.column("model_tier").is_null())
                    yield pa.RecordBatch.from_arrays(
                        [pa.array([part] * hand.num_rows, pa.int32()), hand.column("id"), hand.column("domain"),
                         hand.column("score")], schema=RANKED_SCHEMA)

    return grade_part


def _write_ranks(hand: pa.Table, tiers: int, ranks_uri: str, files: int) -> None:
    """`_rank`'s window on the driver: within each domain, in (score, id) order, row number r of n gives
    difficulty (r - 0.5) / n and tier floor((r - 1) * tiers / n) (both in doubles, as Spark computes them).
    Written per part, sorted by id, for pass 3."""
    order = hand.sort_by([("domain", "ascending"), ("score", "ascending"), ("id", "ascending")])  # none is null
    domains = order.column("domain").to_pylist()
    counts = Counter(domains)
    rank_of: dict[str, int] = {}
    difficulty, tier = [], []
    for domain in domains:
        r = rank_of[domain] = rank_of.get(domain, 0) + 1
        n = counts[domain]
        difficulty.append((r - 0.5) / n)
        tier.append(math.floor((r - 1) * tiers / n))
    ranked = pa.table({"part": order.column("part"), "id": order.column("id"),
                       "rank_difficulty": pa.array(difficulty, pa.float64()),
                       "rank_tier": pa.array(tier, pa.int32())})
    fs, path = fsspec.core.url_to_fs(ranks_uri)
    fs.makedirs(path, exist_ok=True)
    for part in range(files):
        rows = ranked.filter(pc.equal(ranked.column("part"), part)).select(RANK_SCHEMA.names).sort_by("id")
        with fs.open(posixpath.join(path, part_name(part)), "wb") as f:
            pq.write_table(rows.cast(RANK_SCHEMA), f)


def _graded_arrow_schema(spark: SparkSession, cfg: GradeConfig) -> pa.Schema:
    """The Arrow schema write_parquet_table gives the shuffled path's table (Spark's types and nullability),
    from the same plan over no rows."""
    empty = spark.createDataFrame([], from_arrow_schema(SCORED_SCHEMA))
    return to_arrow_schema(_rank(empty, cfg).select(*GRADED_COLUMNS).schema)


def _write_parts(cfg: GradeConfig, ranks_uri: str, out_uri: str, schema: pa.Schema, files: int, batch_rows: int):
    """Pass 3 (a map_parts function): a part's graded rows in; difficulty and tier added as `_rank` adds them;
    written as part i of write_parquet_table's layout, in Spark's batches (Parquet pages follow them)."""
    grading = cfg.enabled and cfg.difficulty.enabled

    def write(tasks):
        for part, uri in _task_parts(tasks):
            with fsspec.open(posixpath.join(ranks_uri, part_name(part)), "rb") as f:
                ranks = pq.read_table(f)
            graded = _with_difficulty(_scratch_batches(uri), ranks, grading, schema)
            groups: dict[tuple, list] = {}
            write_part(out_uri, part, schema, _tallied(rebatched(graded, schema, batch_rows), groups), "id", files)
            yield _groups_batch(groups)

    return write


def _with_difficulty(batches, ranks: pa.Table, grading: bool, schema: pa.Schema):
    """Graded batches with `_rank`'s difficulty and tier (the model's, else the part's `ranks` by id; 0 when
    grading is off), in `schema`'s columns and types."""
    ids, rank_difficulty, rank_tier = (ranks.column(n).combine_chunks() for n in RANK_SCHEMA.names)
    for batch in batches:
        if grading:
            at = pc.index_in(batch.column("id"), value_set=ids)
            difficulty = pc.coalesce(batch.column("model_difficulty"), rank_difficulty.take(at))
            tier = pc.coalesce(batch.column("model_tier"), rank_tier.take(at))
        else:
            difficulty = pa.array([0.0] * batch.num_rows, pa.float64())
            tier = pa.array([0] * batch.num_rows, pa.int32())
        added = {"difficulty": difficulty, "tier": tier}
        yield pa.RecordBatch.from_arrays([added[n] if n in added else batch.column(n) for n in schema.names],
                                         names=list(schema.names)).cast(schema)


REPORT_GROUP_KEYS = ("domain", "tier", "domain_by", "bin")
REPORT_GROUPS_SCHEMA = pa.schema([("domain", pa.string()), ("tier", pa.int32()), ("domain_by", pa.string()),
                                  ("bin", pa.int32()), ("documents", pa.int64()), ("bytes", pa.int64()),
                                  ("score_min", pa.float64()), ("score_max", pa.float64())])
"""`_report`'s first aggregation of the written rows, tallied by pass 3 as it writes them (no re-read of the
texts): per (domain, tier, domain_by, difficulty bin), documents, UTF-8 bytes and the least and greatest score."""


def _tallied(batches, groups: dict[tuple, list]):
    """`batches` passed through, their rows tallied into `groups` (key -> [documents, bytes, min, max]) with
    Spark's arithmetic: bin = least(floor(difficulty * bins), bins - 1); null scores ignored; NaN the greatest."""
    bins = len(DIFFICULTY_BINS) - 1
    for batch in batches:
        keys = zip(*(batch.column(n).to_pylist() for n in ("domain", "tier", "domain_by")),
                   (min(math.floor(d * bins), bins - 1) for d in batch.column("difficulty").to_pylist()))
        sizes = pc.binary_length(batch.column("text")).to_pylist()
        scores = pc.map_lookup(batch.column("grade_features"), "score", "first").to_pylist()
        for key, size, score in zip(keys, sizes, scores):
            group = groups.setdefault(key, [0, 0, None, None])
            group[0] += 1
            group[1] += size or 0
            group[2] = _spark_min(group[2], score)
            group[3] = _spark_max(group[3], score)
        yield batch


def _spark_min(a: float | None, b: float | None) -> float | None:
    if a is None or (b is not None and math.isnan(a)):
        return b
    if b is None or math.isnan(b):
        return a
    return min(a, b)


def _spark_max(a: float | None, b: float | None) -> float | None:
    if a is None or (b is not None and math.isnan(b)):
        return b
    if b is None or math.isnan(a):
        return a
    return max(a, b)


def _groups_batch(groups: dict[tuple, list]) -> pa.RecordBatch:
    rows = [dict(zip(REPORT_GROUP_KEYS, key), documents=v[0], bytes=v[1], score_min=v[2], score_max=v[3])
            for key, v in groups.items()]
    return pa.RecordBatch.from_pylist(rows, schema=REPORT_GROUPS_SCHEMA)


def _merged_groups(rows: list[dict]) -> list[dict]:
    """The per-part groups of pass 3 summed over parts, as `_report`'s aggregation gives them."""
    merged: dict[tuple, dict] = {}
    for row in rows:
        key = tuple(row[k] for k in REPORT_GROUP_KEYS)
        if key not in merged:
            merged[key] = dict(row)
            continue
        group = merged[key]
        group["documents"] += row["documents"]
        group["bytes"] += row["bytes"]
        group["score_min"] = _spark_min(group["score_min"], row["score_min"])
        group["score_max"] = _spark_max(group["score_max"], row["score_max"])
    return list(merged.values())


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
        floor = _common_floor(counts.agg(F.sum("count")).first()[0] or 0, cfg)
        return frozenset(r["word"] for r in counts.where(F.col("count") >= floor).select("word").collect())
    finally:
        counts.unpersist()


def _common_floor(total: int, cfg: GradeConfig) -> float:
    """The least count of a common word among `total` counted words."""
    return max(cfg.difficulty.rare_word_min_count, cfg.difficulty.rare_word_per_million * total / 1e6)


DRIVER_VOCABULARY_BYTES = 256 << 20
"""Up to this many bytes of per-part word counts, the driver sums them itself (no Spark job); beyond, Spark."""


def _common_words_on_driver(spark: SparkSession, vocabulary_uri: str, cfg: GradeConfig) -> frozenset[str]:
    """`_common_words` summed with pyarrow on the driver when the per-part counts are small (the same set:
    integer sums, and the same comparison of a count with the floor, in doubles)."""
    fs, path = fsspec.core.url_to_fs(vocabulary_uri)
    if not fs.exists(path):
        return frozenset()
    files = [f for f in fs.ls(path, detail=True)
             if f["name"].endswith(".parquet") and not posixpath.basename(f["name"]).startswith((".", "_"))]
    if sum(f["size"] for f in files) > DRIVER_VOCABULARY_BYTES:
        return _common_words(spark, vocabulary_uri, cfg)
    tables = []
    for f in files:
        with fs.open(f["name"], "rb") as handle:
            tables.append(pq.read_table(handle).cast(WORD_COUNT_SCHEMA))
    if not tables:
        return frozenset()
    counts = pa.concat_tables(tables).group_by("word").aggregate([("count", "sum")])
    floor = _common_floor(pc.sum(counts.column("count_sum")).as_py() or 0, cfg)
    return frozenset(counts.filter(pc.greater_equal(counts.column("count_sum"), floor)).column("word").to_pylist())


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
            classifier: LinearClassifier | None, model: DifficultyModel | None,
            groups: list[dict] | None = None) -> dict:
    if groups is None:
        groups = _report_groups(written)
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


def _report_groups(written: DataFrame) -> list[dict]:
    """Per (domain, tier, domain_by, difficulty bin): documents, UTF-8 bytes, least and greatest score."""
    score = F.col("grade_features")["score"]
    bins = len(DIFFICULTY_BINS) - 1
    difficulty_bin = F.least(F.floor(F.col("difficulty") * bins), F.lit(bins - 1)).cast("int")
    groups = (written.groupBy("domain", "tier", "domain_by", difficulty_bin.alias("bin"))
              .agg(F.count(F.lit(1)).alias("documents"), F.sum(F.octet_length("text")).alias("bytes"),
                   F.min(score).alias("score_min"), F.max(score).alias("score_max")).collect())
    return [r.asDict() for r in groups]


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
