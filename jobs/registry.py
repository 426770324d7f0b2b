"""The build's jobs in the order they run. Each module has `run(spark, cfg, force) -> JobResult`."""

from __future__ import annotations

import importlib

JOB_ORDER: tuple[str, ...] = ("ingest", "traces", "dedup", "grade", "tokenize", "build")


def job_module(name: str):
    if name not in JOB_ORDER:
        raise ValueError(f"unknown job {name!r}; the jobs are, in order: {', '.join(JOB_ORDER)}")
    return importlib.import_module(f"jobs.{name}")


def select_jobs(only: str | None = None, until: str | None = None, cfg=None) -> list[str]:
    """The jobs `rnj run` runs: one (`--only`), the prefix up to one (`--until`), or all. With the build's
    config, jobs it switches off (`[traces] enabled = false`) are left out of a prefix or a full run."""
    for name in (only, until):
        if name is not None:
            job_module(name)
    if only:
        return [only]
    names = list(JOB_ORDER[: JOB_ORDER.index(until) + 1]) if until else list(JOB_ORDER)
    if cfg is not None and not cfg.traces.enabled:
        names.remove("traces")
    return names
