"""A real distributed run: a Spark standalone master and two workers on 127.0.0.1, the build's jobs submitted
with `spark-submit --master spark://...`, outputs compared byte for byte with a local run; then a worker is
killed (SIGKILL) in the middle of a job, and the job must still commit with the right ledger.

Master and workers come from the pip installation (it has no start-master.sh): `spark-class` with SPARK_HOME
at the installed pyspark folder. They run in their own process groups and are killed by group, also when a
test fails. About 2-4 minutes on 2 cores, most of it JVM start-up.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jobs.registry import JOB_ORDER, job_module
from pipeline.commit import JobOutput
from pipeline.config import load_build

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

VENV_BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
SAME_AS_LOCAL = {
    # What jobs/spark.py sets on a local session (spark-submit leaves those to the submitter).
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.parquet.compression.codec": "zstd",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def cluster_env() -> dict[str, str]:
    # PYTHONSAFEPATH as in the image (Dockerfile): `spark-submit jobs/NAME.py` would otherwise put jobs/ first
    # on sys.path, where jobs/tokenize.py shadows the standard library's tokenize.
    return {**os.environ, "SPARK_HOME": str(spark_home()), "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": LOOPBACK, "SPARK_NO_DAEMONIZE": "1",
            "PYTHONSAFEPATH": "1"}


@dataclass
class Standalone:
    """A running standalone cluster: its master URL, its daemons (by name) and their log and work folders."""

    url: str
    folder: Path
    daemons: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, *args: str, ready: str, timeout: float = 90) -> None:
        log = (self.folder / f"{name}.log").open("wb")
        command = [str(spark_home() / "bin" / "spark-class"), *args]
        # A new session: the daemon and every executor and Python worker it starts share one process group.
        self.daemons[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=cluster_env(),
                                              start_new_session=True)
        deadline = time.monotonic() + timeout
        while ready not in self.log(name):
            if self.daemons[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{self.log(name)[-3000:]}")
            time.sleep(0.5)

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        """SIGKILL the daemon's whole process group (its executors and their Python workers too)."""
        process = self.daemons[name]
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)

    def stop(self) -> None:
        for name in reversed(list(self.daemons)):
            self.kill(name)


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    if shutil.which("java") is None and "JAVA_HOME" not in os.environ:
        pytest.skip("no Java: a standalone Spark cluster needs a JVM")
    folder = tmp_path_factory.mktemp("standalone")
    properties = folder / "spark.properties"
    # The master's REST submission port (6066) is off: nothing here uses it and it would clash.
    properties.write_text("spark.master.rest.enabled false\nspark.ui.showConsoleProgress false\n")
    port = free_port()
    cluster = Standalone(url=f"spark://{LOOPBACK}:{port}", folder=folder)
    try:
        cluster.start("master", "org.apache.spark.deploy.master.Master", "--host", LOOPBACK, "--port", str(port),
                      "--webui-port", str(free_port()), "--properties-file", str(properties),
                      ready="I have been elected leader")
        for worker in ("worker-1", "worker-2"):
            work = folder / worker
            work.mkdir()
            cluster.start(worker, "org.apache.spark.deploy.worker.Worker", cluster.url, "--host", LOOPBACK,
                          "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()),
                          "--work-dir", str(work), "--properties-file", str(properties),
                          ready="Successfully registered with master")
        yield cluster
    finally:
        cluster.stop()


def spark_submit(cluster: Standalone, job: str, config: Path, log: Path, *extra: str,
                 executor_python: str = sys.executable) -> subprocess.Popen:
    command = [str(VENV_BIN / "spark-submit"), "--master", cluster.url,
               "--conf", f"spark.pyspark.python={executor_python}",
               "--conf", f"spark.pyspark.driver.python={sys.executable}",
               "--conf", f"spark.driver.host={LOOPBACK}", "--conf", f"spark.driver.bindAddress={LOOPBACK}",
               "--conf", "spark.ui.enabled=false", "--conf", "spark.executor.memory=768m",
               "--conf", "spark.executor.cores=1", "--conf", "spark.cores.max=2",
               *[f"--conf={k}={v}" for k, v in SAME_AS_LOCAL.items()], *extra,
               str(Path(job_module(job).__file__)), "--config", str(config)]
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=cluster_env(),
                            start_new_session=True)


def finish(process: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"spark-submit took over {timeout}s:\n{log.read_text(errors='replace')[-4000:]}")
    assert code == 0, f"spark-submit failed ({code}):\n{log.read_text(errors='replace')[-4000:]}"


def tree_differences(left: Path, right: Path) -> list[str]:
    """Files that differ byte for byte, or exist on one side only, between two folders (recursively)."""
    comparison = filecmp.dircmp(left, right)
    differences = [f"only in {left}: {n}" for n in comparison.left_only]
    differences += [f"only in {right}: {n}" for n in comparison.right_only]
    _, mismatch, errors = filecmp.cmpfiles(left, right, comparison.common_files, shallow=False)
    differences += [f"{left / n} vs {right / n}{explain(left / n, right / n)}" for n in mismatch + errors]
    for sub in comparison.common_dirs:
        differences += tree_differences(left / sub, right / sub)
    return differences


def explain(left: Path, right: Path) -> str:
    """Where to look first when two files differ: for Parquet, the rows, the footer's key/value metadata or
    the column chunks' footer fields (Spark's own writer orders the encodings differently in every JVM)."""
    if not (left.suffix == ".parquet" and left.exists() and right.exists()):
        return ""
    import pyarrow.parquet as pq

    a, b = pq.read_table(left), pq.read_table(right)
    meta_a, meta_b = pq.read_metadata(left), pq.read_metadata(right)
    chunks = [f"{meta_a.row_group(g).column(c).path_in_schema}"
              for g in range(min(meta_a.num_row_groups, meta_b.num_row_groups))
              for c in range(meta_a.row_group(g).num_columns)
              if meta_a.row_group(g).column(c).to_dict() != meta_b.row_group(g).column(c).to_dict()]
    return (f": rows equal {a.equals(b)}, key/value metadata equal {meta_a.metadata == meta_b.metadata}, "
            f"footer fields differ in {chunks}")


def assert_same_status_but_seconds(left: Path, right: Path) -> None:
    """The traces status table holds each unit's measured wall time; every other column must match."""
    import pyarrow.parquet as pq

    files = sorted(p.name for p in left.glob("*.parquet"))
    assert files and files == sorted(p.name for p in right.glob("*.parquet"))
    for name in files:
        a, b = (pq.read_table(folder / name).drop_columns(["seconds"]) for folder in (left, right))
        assert a.equals(b), f"traces status {name}: rows differ beyond their seconds"


@dataclass
class Build:
    """One build file; each run's output is moved aside (RUN/) so that every run writes the same output path,
    hence the same input hashes and `_SUCCESS` markers."""

    config: Path

    @property
    def output(self) -> Path:
        return Path(load_build(str(self.config)).build.output)

    def keep_as(self, name: str) -> Path:
        kept = self.config.parent / name
        self.output.rename(kept)
        return kept


@pytest.fixture(scope="module")
def build(sample_corpus, tmp_path_factory) -> Build:
    folder = tmp_path_factory.mktemp("cluster-build")
    demo = (Path(__file__).resolve().parents[2] / "configs" / "demo.toml").read_text()
    # configs/demo.toml's build over the test session's sample corpus.
    text = demo.replace("../out/demo/sample", str(sample_corpus)).replace("../out/demo/build", "build")
    (folder / "build.toml").write_text(text)
    return Build(folder / "build.toml")


@pytest.fixture(scope="module")
def local_outputs(spark, build) -> Path:
    """Every job of the build run in the test session's local[2] SparkSession: the reference outputs."""
    cfg = load_build(str(build.config))
    for name in JOB_ORDER:
        job_module(name).run(spark, cfg)
    return build.keep_as("local")


def test_every_job_on_the_cluster_writes_the_local_bytes(standalone, build, local_outputs, tmp_path):
    for name in JOB_ORDER:
        log = tmp_path / f"{name}.log"
        finish(spark_submit(standalone, name, build.config, log), log)
        assert "committed in" in log.read_text(errors="replace"), f"{name} did not run on the cluster"
    cluster_outputs = build.keep_as("cluster")
    for name in JOB_ORDER:
        assert (cluster_outputs / name / "_SUCCESS").exists()
        differences = tree_differences(cluster_outputs / name, local_outputs / name)
        if name == "traces":
            differences = [d for d in differences if "/traces/status/" not in d]
            assert_same_status_but_seconds(cluster_outputs / name / "status", local_outputs / name / "status")
        assert differences == [], f"{name}: the cluster's output differs from the local run's"
    # Both workers ran an executor: the run was really distributed.
    assert all(list((standalone.folder / w).glob("app-*/*")) for w in ("worker-1", "worker-2"))


def test_a_job_survives_losing_a_worker(standalone, build, local_outputs, tmp_path):
    """SIGKILL one worker (with its executor and Python workers) mid-job: tasks rerun on the other."""
    job = JOB_ORDER[0]
    # Each executor starts its Python worker daemon through this wrapper when its first Python task arrives.
    # While the flag exists the wrapper marks the executor's folder and sleeps, so the kill lands on a task in
    # flight; afterwards daemons start at full speed.
    flag = tmp_path / "slow"
    flag.touch()
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(f"#!/bin/sh\nif [ -e {flag} ]; then touch python-started; sleep 5; fi\n"
                       f"exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    log = tmp_path / "submit.log"
    process = spark_submit(standalone, job, build.config, log, executor_python=str(wrapper))
    victim = "worker-2"
    deadline = time.monotonic() + 180
    while not list((standalone.folder / victim).glob("app-*/*/python-started")):
        assert process.poll() is None, f"the job ended before a task ran on {victim}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no task started on {victim}"
        time.sleep(0.2)
    assert process.poll() is None, "the job must still be running when the worker dies"
    standalone.kill(victim)
    flag.unlink()
    finish(process, log)
    text = log.read_text(errors="replace")
    assert "committed in" in text
    assert re.search(r"(?i)lost (an )?executor|executor \S+ (lost|exited)", text), \
        f"the driver never saw the executor go:\n{text[-3000:]}"
    ledger = JobOutput(str(build.output), job).ledger()
    reference = JobOutput(str(local_outputs), job).ledger()
    assert ledger.to_json() == reference.to_json()
    assert ledger.read == ledger.written + sum(ledger.dropped.values()) + sum(ledger.quarantined.values())
    assert tree_differences(build.keep_as("cluster-after-kill") / job, local_outputs / job) == []
