"""The local session's settings, read from its builder (no JVM is started)."""

from __future__ import annotations

from jobs.spark import _local_builder


def _settings() -> dict:
    return _local_builder("local[2]", "settings-test", ui=False)._options


def test_shuffle_partitions_follow_the_cores_unless_rnj_shuffle_partitions_says(monkeypatch):
    monkeypatch.delenv("RNJ_SHUFFLE_PARTITIONS", raising=False)
    default = int(_settings()["spark.sql.shuffle.partitions"])
    assert default >= 4
    monkeypatch.setenv("RNJ_SHUFFLE_PARTITIONS", "40")
    assert _settings()["spark.sql.shuffle.partitions"] == "40"


def test_driver_memory_comes_from_rnj_driver_memory(monkeypatch):
    monkeypatch.setenv("RNJ_DRIVER_MEMORY", "6g")
    assert _settings()["spark.driver.memory"] == "6g"
