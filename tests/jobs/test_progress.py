"""Progress lines of a running job: emitted at a bounded rate while Spark stages run, without a terminal."""

import itertools
import json
import re
import time

import pytest

from jobs.progress import (
    SparkProgress,
    StageProgress,
    describe_stage,
    progress_interval,
    rest_stage_metrics,
    short_call_site,
)


def _slow(batches):
    import time

    for batch in batches:
        time.sleep(0.4)
        yield batch


@pytest.mark.spark
def test_lines_appear_while_stages_run_at_a_bounded_rate(spark):
    emitted: list[tuple[float, list[str]]] = []
    df = spark.range(0, 4000, numPartitions=8)
    start = time.monotonic()
    with SparkProgress(spark, "probe", every=0.3, emit=lambda lines: emitted.append((time.monotonic(), lines))):
        assert df.mapInArrow(_slow, df.schema).count() == 4000
    seconds = time.monotonic() - start
    lines = [line for _, batch in emitted for line in batch]
    staged = [line for line in lines if "tasks done" in line]
    assert staged, lines
    assert re.match(r"\[probe 0:00:\d\d\] stage \d+ \(.*\): \d+/8 tasks done, \d+ running", staged[0])
    assert len(emitted) <= seconds / 0.3 + 1  # one batch of lines per interval at most
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(emitted)]
    assert all(gap > 0.2 for gap in gaps)
    after = len(emitted)
    time.sleep(0.7)
    assert len(emitted) == after  # stopped with the job


@pytest.mark.spark
def test_no_lines_with_a_zero_interval(spark):
    emitted = []
    with SparkProgress(spark, "quiet", every=0, emit=emitted.append):
        time.sleep(0.2)
    assert emitted == []


def test_records_and_bytes_come_from_the_ui_rest_api():
    stages = [{"stageId": 3, "inputRecords": 1000, "inputBytes": 2_000_000, "shuffleReadRecords": 5,
               "shuffleReadBytes": 0, "outputRecords": 0, "outputBytes": 0, "shuffleWriteRecords": 40,
               "shuffleWriteBytes": 4096}]
    asked = []
    figures = rest_stage_metrics("http://127.0.0.1:4040/", "app-1",
                                 fetch=lambda url: asked.append(url) or json.dumps(stages).encode())
    assert asked == ["http://127.0.0.1:4040/api/v1/applications/app-1/stages?status=active"]
    line = describe_stage(StageProgress(3, "mapInArrow at ingest.py:47", 40, 12, 2, 0, **figures[3]))
    assert line == ("stage 3 (mapInArrow at ingest.py:47): 12/40 tasks done, 2 running; read 1,005 records, "
                    "1.9 MiB; wrote 40 records, 4.0 KiB")

    def unreachable(url):
        raise OSError("connection refused")

    assert rest_stage_metrics("http://127.0.0.1:1", "app-1", fetch=unreachable) == {}


def test_the_interval_comes_from_the_option_or_the_environment(monkeypatch):
    monkeypatch.setenv("RNJ_PROGRESS_SECONDS", "5")
    assert progress_interval() == 5.0 and progress_interval(2.0) == 2.0
    monkeypatch.setenv("RNJ_PROGRESS_SECONDS", "soon")
    assert progress_interval() == 30.0


def test_stage_names_keep_the_file_not_its_path():
    assert short_call_site("collect at /work/x/jobs/ingest.py:83") == "collect at ingest.py:83"
    assert short_call_site("$anonfun$run$1 at CompletableFuture.java:1768") == "$anonfun$run$1 at CompletableFuture.java:1768"
