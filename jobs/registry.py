"""The build's jobs in the order they run. Each module has `run(spark, cfg, force) -> JobResult`."""

from __future__ import annotations

import importlib

JOB_ORDER: tuple[str, ...] = ("ingest", "traces", "dedup", "grade", "tokenize", "build")


def job_module(name: str):
    if name not in JOB_ORDER:
        raise ValueError(f"unknown job {name!r}; the jobs are, in order: {', '.join(JOB_ORDER)}")
    return importlib.import_module(f"jobs.{name}")


def select_jobs(only: str | None = None, until: str | None = None) -> list[str]:
    """The jobs `rnj run` runs: one (`--only`), the prefix up to one (`--until`), or all."""
    for name in (only, until):
        if name is not None:
            job_module(name)
    if only:
        return [only]
    if until:
        return list(JOB_ORDER[: JOB_ORDER.index(until) + 1])
    return list(JOB_ORDER)


def preflight(cfg, names: list[str]) -> list[str]:
    """What can be checked before Spark starts (seconds instead of a JVM start): every source of the
    ingest job is listed and must yield files, and the jobs the first one reads must be committed. Raises
    pipeline.errors.UserError naming the problem; returns lines describing the sources."""
    from jobs.common import upstream_jobs
    from pipeline.commit import JobOutput
    from pipeline.errors import UserError
    from pipeline.inspect.tables import human_bytes
    from pipeline.io.listing import check_sources

    lines = []
    if "ingest" in names:
        listing = check_sources(cfg)
        lines.append(f"sources ({len(listing)}, listed before Spark starts):")
        for source in cfg.sources:
            files = listing[source.name]
            lines.append(f"  {source.name}: {len(files):,} files, {human_bytes(sum(f.size for f in files))} "
                         f"({source.uri})")
    first = names[0]
    if first != "ingest":
        for upstream in upstream_jobs(cfg, first):
            if upstream not in names and JobOutput(cfg.build.output, upstream).committed_hash() is None:
                raise UserError(f"the {first} job reads the output of the {upstream} job, which is not committed "
                                f"under {cfg.build.output}: run `rnj run {cfg.path or 'CONFIG'} --until {upstream}` "
                                "first")
    return lines
