"""The one SparkSession factory every job uses.

Under `spark-submit` (or any already running session) it changes nothing: what spark-submit or the cluster
set wins. Locally it picks the master from `--master`, else `SPARK_MASTER`, else `local[*]`, binds to
127.0.0.1, turns Arrow on and sizes shuffles by the core count.
"""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

LOOPBACK = "127.0.0.1"


def under_spark_submit() -> bool:
    """spark-submit starts the Python driver with a gateway already running and names its port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(master: str | None = None, app_name: str = "rnj", ui: bool = True) -> SparkSession:
    """The shared session: reuse a running one, respect spark-submit, else start a local one."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if under_spark_submit():
        return SparkSession.builder.appName(app_name).getOrCreate()
    master = master or os.environ.get("SPARK_MASTER") or "local[*]"
    return _local_builder(master, app_name, ui).getOrCreate()


def _local_builder(master: str, app_name: str, ui: bool) -> SparkSession.Builder:
    # Spark's Python workers start `python3` from PATH unless told otherwise; that one lacks pyarrow.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
    cores = os.cpu_count() or 2
    builder = SparkSession.builder.master(master).appName(app_name)
    settings = {
        "spark.driver.memory": os.environ.get("RNJ_DRIVER_MEMORY", "4g"),
        "spark.driver.host": LOOPBACK,
        "spark.driver.bindAddress": LOOPBACK,
        "spark.ui.enabled": str(ui).lower(),
        "spark.ui.host": LOOPBACK,
        "spark.sql.shuffle.partitions": os.environ.get("RNJ_SHUFFLE_PARTITIONS", str(max(4, 2 * cores))),
        "spark.default.parallelism": str(max(4, 2 * cores)),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.compression.codec": "zstd",
        "spark.sql.adaptive.enabled": "true",
        "spark.python.worker.reuse": "true",
        "spark.ui.showConsoleProgress": "false",
    }
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder
