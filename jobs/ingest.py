"""Ingest job: read every `[[sources]]` entry into the documents table; bad records go to the quarantine.

    python -m jobs.ingest --config configs/demo.toml
    spark-submit jobs/ingest.py --config configs/demo.toml

Writes `OUTPUT/ingest/documents/` (DOCUMENT_SCHEMA), `OUTPUT/ingest/quarantine/` (id, source, uri,
reason, raw) and `_LEDGER.json`. Files are the unit of parallelism: the driver lists them, tasks read them.
"""

from __future__ import annotations

import hashlib

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from jobs.common import JobResult, input_hash, job_main, run_job, write_parquet_table
from pipeline.config import BuildConfig, IngestConfig, SourceConfig
from pipeline.documents import DOCUMENT_COLUMNS
from pipeline.errors import UserError
from pipeline.ingest import INGEST_SCHEMA, OK, QUARANTINED, ingest_file
from pipeline.io.listing import SourceFile, check_sources, listing_digest
from pipeline.ledger import Ledger

JOB = "ingest"


def run(spark: SparkSession, cfg: BuildConfig, force: bool = False) -> JobResult:
    listing = check_sources(cfg)
    # The listing's sizes and versions (mtime, generation, etag) are part of the hash: new bytes under an
    # old name are new input.
    digest = hashlib.sha256(
        f"{input_hash(cfg, JOB, ('sources', 'ingest'), upstream=())}\n{listing_digest(listing)}".encode()
    ).hexdigest()
    return run_job(cfg, JOB, digest, lambda tmp: _ingest(spark, cfg, listing, tmp), force=force)


def _ingest(spark: SparkSession, cfg: BuildConfig, listing: dict[str, list[SourceFile]], tmp: str) -> Ledger:
    tasks = [(source.name, f.uri) for source in cfg.sources for f in listing[source.name]]
    if not tasks:
        raise UserError(f"{cfg.path}: every source is optional and none has a file: nothing to ingest")
    files = spark.createDataFrame(tasks, "source string, uri string")
    files = files.repartition(max(1, min(len(tasks), spark.sparkContext.defaultParallelism * 4)))
    sources = {source.name: source for source in cfg.sources}
    rows = files.mapInArrow(_read_files(sources, cfg.ingest), from_arrow_schema(INGEST_SCHEMA)).persist()
    try:
        ledger = _count(rows)  # renaming duplicate ids changes no count
        _check_records(cfg, ledger)
        documents = _resolve_duplicate_ids(rows.where(F.col("status") == OK)).select(*DOCUMENT_COLUMNS)
        write_parquet_table(documents, f"{tmp}/documents", cfg.build.output_files)
        quarantine = rows.where(F.col("status") == QUARANTINED).select("id", "source", "uri", "reason", "raw")
        write_parquet_table(quarantine, f"{tmp}/quarantine", 1, key="uri")
    finally:
        rows.unpersist()
    return ledger


def _read_files(sources: dict[str, SourceConfig], cfg: IngestConfig):
    """The mapInArrow function: (source, uri) rows in, ingest rows out. Takes its config as arguments."""

    def read(batches):
        for batch in batches:
            for source_name, uri in zip(batch.column("source").to_pylist(), batch.column("uri").to_pylist()):
                yield from ingest_file(sources[source_name], uri, cfg)

    return read


def _resolve_duplicate_ids(good: DataFrame) -> DataFrame:
    """pipeline.ingest.resolve_duplicate_ids' rule: the n-th other holder of an id gets `id~n`.

    Only the documents whose id is shared go through the window (and its shuffle); the shared ids are found
    on the id column alone and broadcast, so the text of every other document is never shuffled here.
    """
    shared = good.groupBy("id").count().where(F.col("count") > 1).select("id", F.lit(True).alias("_shared"))
    flagged = good.join(F.broadcast(shared), "id", "left")
    rank = F.row_number().over(Window.partitionBy("id").orderBy("content_hash", "uri")) - 1
    renamed = flagged.where(F.col("_shared")).withColumn(
        "id", F.when(rank == 0, F.col("id")).otherwise(F.concat(F.col("id"), F.lit("~"), rank.cast("string")))
    )
    return renamed.unionByName(flagged.where(F.col("_shared").isNull())).drop("_shared")


def _count(rows: DataFrame) -> Ledger:
    ledger = Ledger(job=JOB)
    counts = rows.groupBy("source", "status", "reason").count().collect()
    for row in sorted(counts, key=lambda r: (r["source"], r["status"], r["reason"] or "")):
        outcome = "written" if row["status"] == OK else "quarantined"
        ledger.add(row["source"], outcome, row["reason"], row["count"])
    return ledger


def _check_records(cfg: BuildConfig, ledger: Ledger) -> None:
    """A source whose files hold no record at all (blank lines only, say) is as wrong as a missing one."""
    for source in cfg.sources:
        if not source.optional and not ledger.by_source.get(source.name, {}).get("read"):
            raise UserError(f"source {source.name!r} ({cfg.path}): its files at {source.uri} hold no record: "
                            "fix its uri, or mark the source `optional = true` if it may be empty")


def main(argv: list[str] | None = None) -> None:
    job_main(JOB, __doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    # As a script (spark-submit jobs/ingest.py) this file is `__main__`; run the importable module instead,
    # so that functions shipped to executors are pickled by reference to `jobs.ingest`, which they can import.
    from jobs.ingest import main as module_main

    module_main()
