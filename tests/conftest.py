"""Shared fixtures. One SparkSession for the whole test session: starting one costs ~8 s."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


@pytest.fixture(scope="session")
def spark():
    """A local[2] session bound to 127.0.0.1 with the UI off, stopped at the end of the run."""
    from jobs.spark import get_spark

    session = get_spark("local[2]", app_name="rnj-tests", ui=False)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory):
    """A small sample corpus built once per test session (code, prose, math, eval sets, units)."""
    from pipeline.sample import build_sample

    out = tmp_path_factory.mktemp("sample")
    build_sample(out, max_docs=400, max_bytes=3_000_000, seed=0)
    return out
