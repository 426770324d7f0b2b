"""What every job shares: its command line, the commit protocol around its body, deterministic writes."""

from __future__ import annotations

import argparse
import hashlib
import json
import posixpath
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

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


ROW_GROUP_ROWS = 8192
LAYOUT = b"rnj.layout"
"""Key of each part file's metadata saying how write_parquet_table laid the table out (see `_layout`)."""


def write_parquet_table(df: DataFrame, uri: str, files: int, key: str = "id", row_group_rows: int = ROW_GROUP_ROWS) -> None:
    """Write `df` as exactly `files` Parquet files named part-00000.parquet ..., each sorted by `key`.

    Rows go to files by a hash of `key` and are sorted inside each file; each task then writes its file with
    pyarrow in fixed-size row groups. The bytes depend on the rows alone, not on how Spark partitioned them
    on the way (Spark's own Parquet writer varies the order of footer fields between runs). A retried task
    rewrites the same bytes to the same name, so retries and speculation are harmless. Each file's metadata
    records the layout (`rnj.layout`), so a later job can map part to part without a shuffle
    (`hash_bucketed_parts`).
    """
    schema = to_arrow_schema(df.schema)
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(path, exist_ok=True)
    ordered = df.repartition(files, key).sortWithinPartitions(key)
    writer = _partition_writer(uri, schema, row_group_rows, key, files)
    written = {row["part"] for row in ordered.mapInArrow(writer, "part int, rows long").collect()}
    for part in sorted(set(range(files)) - written):  # a hash bucket that received no rows
        write_part(uri, part, schema, [], key, files, row_group_rows)


def _partition_writer(uri: str, schema: pa.Schema, row_group_rows: int, key: str, files: int):
    def write(batches):
        from pyspark import TaskContext

        part = TaskContext.get().partitionId()
        rows = write_part(uri, part, schema, batches, key, files, row_group_rows)
        yield pa.RecordBatch.from_pydict({"part": [part], "rows": [rows]},
                                         schema=pa.schema([("part", pa.int32()), ("rows", pa.int64())]))

    return write


def _layout(key: str, files: int, part: int) -> bytes:
    """File `part` of `files` holds the rows whose Spark hash of `key` is `part` modulo `files`, sorted by `key`."""
    return json.dumps({"key": key, "files": files, "part": part, "rows": "spark-hash-pmod, sorted"},
                      sort_keys=True).encode()


def part_name(part: int) -> str:
    return f"part-{part:05d}.parquet"


def write_part(uri: str, part: int, schema: pa.Schema, batches, key: str, files: int,
               row_group_rows: int = ROW_GROUP_ROWS) -> int:
    """Write file `part` of a table laid out as write_parquet_table does (rows of that hash bucket, already
    sorted by `key`); returns the rows written. The row groups are fixed, whatever the batches' sizes."""
    fs, path = fsspec.core.url_to_fs(uri)
    schema = schema.with_metadata({LAYOUT: _layout(key, files, part)})
    fs.makedirs(path, exist_ok=True)
    rows = 0
    with fs.open(posixpath.join(path, part_name(part)), "wb") as f, \
            pq.ParquetWriter(f, schema, compression="zstd") as out:
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


def hash_bucketed_parts(uri: str, files: int, key: str = "id") -> list[str] | None:
    """The URIs of part 0 .. files-1 of the table at `uri` when write_parquet_table wrote it with `files`
    files by `key` (every file's metadata says so), else None (written otherwise: the caller must shuffle).

    Such a table can be mapped file to file into another one with the same layout, with no shuffle: each
    output file gets the same rows in the same order as write_parquet_table would give it.
    """
    fs, path = fsspec.core.url_to_fs(uri)
    names = sorted(posixpath.basename(p) for p in fs.ls(path, detail=False)
                   if p.endswith(".parquet") and not posixpath.basename(p).startswith(("_", ".")))
    if names != [part_name(i) for i in range(files)]:
        return None
    for part, name in enumerate(names):
        with fs.open(posixpath.join(path, name), "rb") as f:
            metadata = pq.read_metadata(f).metadata or {}
        if metadata.get(LAYOUT) != _layout(key, files, part):
            return None
    return [fs.unstrip_protocol(posixpath.join(path, name)) for name in names]


def map_parts(spark: SparkSession, uris: list[str], function, schema: pa.Schema) -> DataFrame:
    """One Spark task per URI (no shuffle): `function` gets batches of (part int, uri string) rows, one row
    per task, and yields batches of `schema`."""
    from pyspark.sql.pandas.types import from_arrow_schema

    rows = spark.sparkContext.parallelize(list(enumerate(uris)), max(1, len(uris)))
    return spark.createDataFrame(rows, "part int, uri string").mapInArrow(function, from_arrow_schema(schema))


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
