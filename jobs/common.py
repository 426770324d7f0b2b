"""What every job shares: its command line, the commit protocol around its body, deterministic writes."""

from __future__ import annotations

import argparse
import hashlib
import posixpath
import sys
import time
from dataclasses import dataclass
from typing import Callable

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import to_arrow_schema

from jobs.spark import get_spark
from pipeline.commit import JobOutput
from pipeline.config import BuildConfig, load_build
from pipeline.errors import UserError
from pipeline.ledger import Ledger

CODE_VERSION = "1"
"""Bumped when a change to a job's logic must invalidate committed outputs."""


@dataclass
class JobResult:
    job: str
    uri: str
    skipped: bool
    ledger: Ledger
    seconds: float


def job_parser(name: str, description: str) -> argparse.ArgumentParser:
    """Arguments shared by `python -m jobs.NAME` and `spark-submit jobs/NAME.py`."""
    parser = argparse.ArgumentParser(prog=f"jobs.{name}", description=description)
    parser.add_argument("--config", required=True, help="build file (TOML), on any fsspec URI")
    parser.add_argument(
        "--master", default=None,
        help="Spark master when not under spark-submit (default: $SPARK_MASTER, else local[*])",
    )
    parser.add_argument("--force", action="store_true", help="rerun even when the output is committed")
    return parser


def input_hash(cfg: BuildConfig, job: str, sections: tuple[str, ...], upstream: tuple[str, ...]) -> str:
    """Hash of what a job's output depends on: its config sections and its inputs' committed hashes."""
    parts = [job, CODE_VERSION, cfg.section_hash("build", *sections)]
    for name in upstream:
        committed = JobOutput(cfg.build.output, name).committed_hash()
        if committed is None:
            raise UserError(f"the {job} job needs the output of the {name} job, which is not committed under "
                            f"{cfg.build.output}: run `rnj run {cfg.path or 'CONFIG'} --until {name}` first")
        parts.append(committed)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def run_job(
    cfg: BuildConfig,
    job: str,
    digest: str,
    body: Callable[[str], Ledger],
    force: bool = False,
) -> JobResult:
    """Skip a committed job (unless forced); else run `body(tmp_uri)` and commit what it wrote."""
    output = JobOutput(cfg.build.output, job)
    if not force and output.is_committed(digest):
        return JobResult(job, output.uri, True, output.ledger(), 0.0)
    start = time.perf_counter()
    tmp = output.begin()
    ledger = body(tmp)
    output.commit(tmp, digest, ledger)
    return JobResult(job, output.uri, False, ledger, time.perf_counter() - start)


def write_parquet_table(df: DataFrame, uri: str, files: int, key: str = "id", row_group_rows: int = 8192) -> None:
    """Write `df` as exactly `files` Parquet files named part-00000.parquet ..., each sorted by `key`.

    Rows go to files by a hash of `key` and are sorted inside each file; each task then writes its file with
    pyarrow in fixed-size row groups. The bytes depend on the rows alone, not on how Spark partitioned them
    on the way (Spark's own Parquet writer varies the order of footer fields between runs). A retried task
    rewrites the same bytes to the same name, so retries and speculation are harmless.
    """
    schema = to_arrow_schema(df.schema)
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(path, exist_ok=True)
    ordered = df.repartition(files, key).sortWithinPartitions(key)
    writer = _partition_writer(uri, schema, row_group_rows)
    written = {row["part"] for row in ordered.mapInArrow(writer, "part int, rows long").collect()}
    for part in sorted(set(range(files)) - written):  # a hash bucket that received no rows
        _write_part(uri, part, schema, [], row_group_rows)


def _partition_writer(uri: str, schema: pa.Schema, row_group_rows: int):
    def write(batches):
        from pyspark import TaskContext

        part = TaskContext.get().partitionId()
        rows = _write_part(uri, part, schema, batches, row_group_rows)
        yield pa.RecordBatch.from_pydict({"part": [part], "rows": [rows]},
                                         schema=pa.schema([("part", pa.int32()), ("rows", pa.int64())]))

    return write


def _write_part(uri: str, part: int, schema: pa.Schema, batches, row_group_rows: int) -> int:
    fs, path = fsspec.core.url_to_fs(uri)
    rows = 0
    with fs.open(posixpath.join(path, f"part-{part:05d}.parquet"), "wb") as f:
        with pq.ParquetWriter(f, schema, compression="zstd") as out:
            pending: list[pa.RecordBatch] = []
            pending_rows = 0
            for batch in batches:
                pending.append(batch.cast(schema) if batch.schema != schema else batch)
                pending_rows += batch.num_rows
                while pending_rows >= row_group_rows:  # fixed row groups: independent of Arrow batch sizes
                    table = pa.Table.from_batches(pending, schema)
                    out.write_table(table.slice(0, row_group_rows), row_group_size=row_group_rows)
                    rest = table.slice(row_group_rows)
                    pending, pending_rows = rest.to_batches(), rest.num_rows
                    rows += row_group_rows
            if pending_rows or rows == 0:
                out.write_table(pa.Table.from_batches(pending, schema), row_group_size=row_group_rows)
                rows += pending_rows
    return rows


DOCUMENT_INPUTS: dict[str, tuple[str, ...]] = {
    "traces": ("ingest",),
    "dedup": ("ingest", "traces"),
    "grade": ("dedup",),
    "tokenize": ("grade",),
    "build": ("tokenize",),
}
"""Which committed jobs' `documents/` tables each job reads (traces only when `[traces]` is enabled)."""


def upstream_jobs(cfg: BuildConfig, job: str) -> tuple[str, ...]:
    names = DOCUMENT_INPUTS[job]
    return tuple(n for n in names if n != "traces" or cfg.traces.enabled)


def read_upstream_documents(spark: SparkSession, cfg: BuildConfig, job: str) -> DataFrame:
    """The union of the `documents/` tables of the jobs `job` reads from."""
    frames = [spark.read.parquet(JobOutput(cfg.build.output, name).child("documents"))
              for name in upstream_jobs(cfg, job)]
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame, allowMissingColumns=True)
    return union


def job_main(name: str, description: str, run: Callable[..., JobResult], argv: list[str] | None = None) -> None:
    """Entry point of `python -m jobs.NAME` and `spark-submit jobs/NAME.py`."""
    from jobs.progress import SparkProgress, ui_address
    from jobs.registry import preflight

    args = job_parser(name, description).parse_args(argv)
    try:
        cfg = load_build(args.config)
        for line in preflight(cfg, [name]):
            print(line, flush=True)
        spark = get_spark(args.master, app_name=f"rnj-{name}")
        print(ui_address(spark), flush=True)
        with SparkProgress(spark, name):
            result = run(spark, cfg, force=args.force)
    except UserError as err:  # a problem the user can fix: its message, no traceback (as the rnj CLI does)
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(describe(result))


def describe(result: JobResult) -> str:
    ledger = result.ledger
    state = "already committed, skipped" if result.skipped else f"committed in {result.seconds:.1f}s"
    dropped = sum(ledger.dropped.values())
    quarantined = sum(ledger.quarantined.values())
    return (
        f"{result.job}: {state} -> {result.uri}\n"
        f"  read {ledger.read}, written {ledger.written}, dropped {dropped}, quarantined {quarantined}"
    )
