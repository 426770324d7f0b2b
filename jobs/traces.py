"""Traces job: run code units in a sandbox and write their line-by-line execution traces as documents.

    python -m jobs.traces --config configs/demo.toml
    spark-submit jobs/traces.py --config configs/demo.toml

Units come from `[traces] units_uris` (JSONL), `script_uris` (standalone scripts) and, with `doctests`, the
doctests of the ingest output's Python documents. Writes `OUTPUT/traces/documents/` (DOCUMENT_SCHEMA, domain
`trace`, one document per unit that ran to the end), `OUTPUT/traces/sft/` (id, trace_id, kind, prompt,
response), `OUTPUT/traces/status/` (one row per unit: id, origin, status, reason, sandbox_mode,
seconds; `rnj traces check BUILD` summarises it), `report.json` (statuses, sandbox layers and modes) and
`_LEDGER.json`, which counts units: every one is
written or dropped with its status (`timeout`, `memory`, `forbidden`, `crashed`, `error`) or `invalid_unit`,
`duplicate_id`, `too_large` as the reason. Units are the unit of parallelism; each task runs a small pool of
sandboxes (`[traces] workers`). docs/traces.md describes the format and the sandbox.
"""

from __future__ import annotations

import json
import posixpath

import fsspec
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from jobs.common import JobResult, input_hash, job_main, run_job, write_parquet_table
from pipeline.commit import JobOutput
from pipeline.config import BuildConfig
from pipeline.documents import DOCUMENT_COLUMNS
from pipeline.ledger import Ledger
from pipeline.traces.config import TracesConfig
from pipeline.traces.generate import (
    DUPLICATE_ID,
    SFT_SCHEMA,
    STATUS_SCHEMA,
    TRACE_SCHEMA,
    UNIT_SCHEMA,
    list_files,
    trace_rows,
    trace_table,
    unit_rows_from_documents,
    unit_rows_from_file,
)

JOB = "traces"


def run(spark: SparkSession, cfg: BuildConfig, force: bool = False) -> JobResult:
    if not cfg.traces.enabled:
        raise RuntimeError(f"{cfg.path}: [traces] is not enabled; set enabled = true to generate traces")
    from pipeline.traces.sandbox import Sandbox

    Sandbox(cfg.traces)  # fails here, with the reason and the fix, when the sandbox asked for cannot run
    upstream = ("ingest",) if cfg.traces.doctests else ()
    digest = input_hash(cfg, JOB, ("traces",), upstream=upstream)
    return run_job(cfg, JOB, digest, lambda tmp: _traces(spark, cfg, tmp), force=force)


def _traces(spark: SparkSession, cfg: BuildConfig, tmp: str) -> Ledger:
    units = _units(spark, cfg).persist()
    count = units.count()
    units = units.repartition(max(1, min(count, spark.sparkContext.defaultParallelism * 4)))
    rows = units.mapInArrow(_run_units(cfg.traces), from_arrow_schema(TRACE_SCHEMA)).persist()
    try:
        ledger, report = _count(rows)
        documents = rows.where(F.col("status") == "ok").select(*DOCUMENT_COLUMNS)
        write_parquet_table(documents, f"{tmp}/documents", cfg.build.output_files)
        status = rows.withColumnRenamed("detail", "reason").select(*STATUS_SCHEMA.names)
        write_parquet_table(status, f"{tmp}/status", cfg.build.output_files)
        sft = rows.select(F.col("id").alias("trace_id"), F.explode("sft").alias("e")).select(
            F.concat(F.col("trace_id"), F.lit("#"), F.col("e.kind")).alias("id"), "trace_id",
            F.col("e.kind").alias("kind"), F.col("e.prompt").alias("prompt"), F.col("e.response").alias("response"))
        write_parquet_table(sft.select(*SFT_SCHEMA.names), f"{tmp}/sft", cfg.build.output_files)
        report["sft"] = dict(sorted((r["kind"], r["count"]) for r in sft.groupBy("kind").count().collect()))
    finally:
        rows.unpersist()
        units.unpersist()
    ledger.extra = report
    fs, path = fsspec.core.url_to_fs(tmp)
    with fs.open(posixpath.join(path, "report.json"), "w") as f:
        f.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return ledger


def _units(spark: SparkSession, cfg: BuildConfig) -> DataFrame:
    """Every unit row: JSONL units and scripts read by tasks, doctests extracted from ingest documents."""
    traces = cfg.traces
    files = [("units", uri, name) for uri, name in list_files(traces.units_uris, (".jsonl", ".jsonl.gz", ".jsonl.zst"))]
    files += [("scripts", uri, name) for uri, name in list_files(traces.script_uris, (".py",))]
    schema = from_arrow_schema(UNIT_SCHEMA)
    frames = []
    if files:
        listed = spark.createDataFrame(files, "origin string, uri string, name string")
        listed = listed.repartition(max(1, min(len(files), spark.sparkContext.defaultParallelism)))
        frames.append(listed.mapInArrow(_read_unit_files(), schema))
    if traces.doctests:
        documents = spark.read.parquet(JobOutput(cfg.build.output, "ingest").child("documents"))
        python = documents.where((F.col("lang") == "python") & F.col("text").contains(">>>"))
        frames.append(python.mapInArrow(_extract_doctests(traces), schema))
    if not frames:
        return spark.createDataFrame([], schema)
    units = frames[0]
    for frame in frames[1:]:
        units = units.unionByName(frame)
    return _mark_duplicates(units)


def _mark_duplicates(units: DataFrame) -> DataFrame:
    """The second and later units with one id are dropped as `duplicate_id` (the first by uri is kept)."""
    rank = F.row_number().over(Window.partitionBy("id").orderBy(F.col("uri").asc_nulls_first(), "unit"))
    marked = units.withColumn("invalid", F.when(F.col("invalid").isNull() & (rank > 1), F.lit(DUPLICATE_ID))
                              .otherwise(F.col("invalid")))
    return marked.withColumn("id", F.when(rank > 1, F.concat("id", F.lit("~"), rank.cast("string")))
                             .otherwise(F.col("id")))


def _read_unit_files():
    def read(batches):
        import pyarrow as pa

        for batch in batches:
            for origin, uri, name in zip(*(batch.column(c).to_pylist() for c in ("origin", "uri", "name"))):
                rows = unit_rows_from_file(uri, origin, name)
                if rows:
                    yield pa.RecordBatch.from_pylist(rows, schema=UNIT_SCHEMA)

    return read


def _extract_doctests(cfg: TracesConfig):
    def extract(batches):
        import pyarrow as pa

        for batch in batches:
            rows = unit_rows_from_documents(batch, cfg)
            if rows:
                yield pa.RecordBatch.from_pylist(rows, schema=UNIT_SCHEMA)

    return extract


def _run_units(cfg: TracesConfig):
    """The mapInArrow function: unit rows in, trace rows out; one sandbox pool per task, made lazily."""

    def run_units(batches):
        from pipeline.traces.sandbox import Sandbox

        sandbox = None
        for batch in batches:
            if batch.num_rows == 0:
                continue
            sandbox = sandbox or Sandbox(cfg)
            yield from trace_table(trace_rows(batch.to_pylist(), cfg, sandbox)).to_batches()

    return run_units


def _count(rows: DataFrame) -> tuple[Ledger, dict]:
    ledger = Ledger(job=JOB)
    counts = rows.groupBy("origin", "status").count().collect()
    statuses: dict[str, int] = {}
    for row in sorted(counts, key=lambda r: (r["origin"], r["status"])):
        ok = row["status"] == "ok"
        ledger.add(row["origin"], "written" if ok else "dropped", None if ok else row["status"], row["count"])
        statuses[row["status"]] = statuses.get(row["status"], 0) + row["count"]
    ran = rows.where(F.col("meta")["sandbox"].isNotNull())
    layers = ran.groupBy(F.col("meta")["sandbox"].alias("layers")).count().collect()
    modes = ran.groupBy(F.col("meta")["sandbox_mode"].alias("mode")).count().collect()
    return ledger, {"statuses": dict(sorted(statuses.items())),
                    "sandbox_layers": {r["layers"]: r["count"] for r in layers},
                    "sandbox_modes": {r["mode"]: r["count"] for r in modes}}


def main(argv: list[str] | None = None) -> None:
    job_main(JOB, __doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    # As a script (spark-submit jobs/traces.py) this file is `__main__`; run the importable module instead,
    # so that functions shipped to executors are pickled by reference to `jobs.traces`, which they can import.
    from jobs.traces import main as module_main

    module_main()
