"""What every job shares: its command line, the commit protocol around its body, deterministic writes."""

from __future__ import annotations

import argparse
import hashlib
import posixpath
import re
import time
from dataclasses import dataclass
from typing import Callable

import fsspec
from pyspark.sql import DataFrame, SparkSession

from jobs.spark import get_spark
from pipeline.commit import JobOutput
from pipeline.config import BuildConfig, load_build
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
            raise RuntimeError(f"job {job!r} needs the output of {name!r}, which is not committed: run it first")
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


def write_parquet_table(df: DataFrame, uri: str, files: int, key: str = "id") -> None:
    """Write `df` as exactly `files` Parquet files named part-00000.parquet ..., each sorted by `key`.

    Rows go to files by a hash of `key` and are sorted inside each file, so the bytes depend on the rows
    alone, not on how Spark partitioned them on the way.
    """
    (
        df.repartition(files, key)
        .sortWithinPartitions(key)
        .write.mode("overwrite")
        .option("compression", "zstd")
        .parquet(uri)
    )
    tidy_spark_output(uri)


_PART = re.compile(r"^part-(\d+)-.*\.parquet$")


def tidy_spark_output(uri: str) -> None:
    """Give Spark's part files stable names and drop its markers and checksums."""
    fs, path = fsspec.core.url_to_fs(uri)
    for entry in fs.ls(path, detail=False):
        name = posixpath.basename(entry)
        match = _PART.match(name)
        if match:
            fs.mv(entry, posixpath.join(path, f"part-{int(match.group(1)):05d}.parquet"))
        elif name.startswith(("_", ".")):
            fs.rm(entry)


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
    args = job_parser(name, description).parse_args(argv)
    cfg = load_build(args.config)
    spark = get_spark(args.master, app_name=f"rnj-{name}")
    result = run(spark, cfg, force=args.force)
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
