"""bench/scale.py and its helpers: the corpus generator, the event-log reader, the process-tree sampler,
and the whole benchmark on a few hundred documents."""

import json
import random
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from bench import scale
from bench.eventlog import _covered, summarize
from bench.proctree import MemorySampler, tree_cpu_seconds
from bench.scale_corpus import (
    CORRUPT_KINDS,
    CorpusSpec,
    corrupt_line,
    near_copy,
    parse_count,
    true_jaccards,
    windows,
)
from pipeline.config import IngestConfig, SourceConfig
from pipeline.ingest import validate
from pipeline.io.readers import read_jsonl


def test_parse_count_reads_suffixes():
    assert [parse_count(t) for t in ("300", "10K", "100k", "1M", "1_000_000", "2.5K")] == [
        300, 10_000, 100_000, 1_000_000, 1_000_000, 2_500]


def test_windows_cover_the_text_and_end_at_line_ends():
    lines = [f"line {i} " + "x" * random.Random(i).randrange(5, 80) + "\n" for i in range(3000)]
    text = "".join(lines)
    pieces = list(windows(text, random.Random(1), median=2000, sigma=0.8))
    assert "".join(pieces) == text
    assert all(p.endswith("\n") for p in pieces)
    assert len(pieces) > 20


def test_counts_add_up_to_the_records_asked_for():
    for n in (300, 10_000, 1_000_000):
        counts = CorpusSpec(n).counts()
        assert sum(counts.values()) == n
        assert counts["corrupt"] >= len(CORRUPT_KINDS)


@pytest.mark.parametrize("kind", CORRUPT_KINDS)
def test_each_corrupt_record_is_quarantined_for_its_reason(tmp_path, kind):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(corrupt_line(kind, "x/1") + b"\n")
    source = SourceConfig(name="s", uri=str(path), format="jsonl")
    (record,) = read_jsonl(source, str(path))
    assert validate(record, IngestConfig()) == (None, kind)


def test_near_copies_land_in_the_near_band():
    rng = random.Random(3)
    words = ["".join(rng.choice("abcdefghij") for _ in range(6)) for _ in range(4000)]  # no digits: prose maps them to 0
    texts = [" ".join(words[i:i + 400]) for i in range(0, 4000, 400)]
    similarities = true_jaccards([(t, near_copy(t, rng), None) for t in texts])
    assert all(0.75 <= s < 1.0 for s in similarities), similarities
    assert true_jaccards([(texts[0], texts[0], "code")]) == [1.0]


def test_covered_time_merges_overlapping_intervals():
    assert _covered([(0, 2), (1, 3), (5, 6)]) == 4
    assert _covered([]) == 0


def test_tree_cpu_and_memory_count_child_processes():
    # The child holds 300 MB, says so, then burns 0.4 CPU-seconds (not wall seconds: the machine is shared).
    busy = ("import sys, time\nx = bytearray(300 << 20)\nx[::4096] = b'1' * len(x[::4096])\nprint('ready', flush=True)\n"
            "sys.stdin.readline()\nwhile time.process_time() < 0.4: pass")
    with MemorySampler(interval=60) as sampler:
        before = tree_cpu_seconds()
        child = subprocess.Popen([sys.executable, "-c", busy], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        peaks = sampler.take()
        child.communicate("go\n")
    assert peaks.others_mb > 250
    assert peaks.driver_python_mb > 0
    assert tree_cpu_seconds() - before > 0.3


@pytest.mark.spark
@pytest.mark.slow
def test_scale_benchmark_runs_every_job_on_a_tiny_corpus(spark, tmp_path):
    report = scale.run(["300", "--out", str(tmp_path), "--train-steps", "1"])
    rows = {row["job"]: row for row in report["jobs"]}
    assert list(rows) == list(scale.JOBS)
    assert rows["ingest"]["docs_in"] == 300
    assert rows["ingest"]["ledger"]["quarantined"] == report["corpus"]["corrupt"]
    assert sum(report["corpus"]["corrupt"].values()) == 6
    recall = rows["dedup"]["planted_recall"]
    assert recall["exact"]["planted"] > 0 and recall["exact"]["recall"] == 1.0
    assert recall["near"]["planted"] > 0 and recall["near"]["recall"] >= 0.9
    tokenize = rows["tokenize"]
    assert tokenize["raw"]["tokens"] == tokenize["tokens"] > 0
    assert rows["build"]["docs_out"] > 0
    for row in rows.values():
        assert row["wall_s"] > 0 and row["cpu_s"] > 0 and row["memory_mb"]["jvm_mb"] > 0
    assert report["train"]["steps"] == 1
    saved = json.loads((tmp_path / "scale.json").read_text())
    assert saved["documents"] == 300
    table = scale.markdown(report)
    assert all(f"| {job} |" in table for job in scale.JOBS)
    planted = pq.read_table(tmp_path / "corpus" / "planted.parquet")
    assert planted.num_rows == recall["exact"]["planted"] + recall["near"]["planted"] + recall[
        "near_below_threshold"]["planted"]


def test_event_log_summary_counts_jobs_stages_and_tasks(tmp_path):
    events = [
        {"Event": "SparkListenerJobStart", "Job ID": 0, "Stage IDs": [0, 1], "Properties": {"spark.jobGroup.id": "a"}},
        {"Event": "SparkListenerStageSubmitted", "Stage Info": {"Stage ID": 0, "Stage Attempt ID": 0,
                                                                "Stage Name": "collect at /x/y/jobs/a.py:3"},
         "Properties": {"spark.jobGroup.id": "a"}},
        {"Event": "SparkListenerTaskEnd", "Stage ID": 0, "Stage Attempt ID": 0,
         "Task Metrics": {"Executor Run Time": 1500, "Executor CPU Time": 10**9,
                          "Shuffle Write Metrics": {"Shuffle Bytes Written": 2**20}}},
        {"Event": "SparkListenerStageCompleted", "Stage Info": {"Stage ID": 0, "Stage Attempt ID": 0,
                                                                "Submission Time": 1000, "Completion Time": 3000,
                                                                "Accumulables": []}},
        {"Event": "SparkListenerJobStart", "Job ID": 1, "Stage IDs": [2], "Properties": {}},
    ]
    path = tmp_path / "events"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    groups = summarize(path)
    a = groups["a"]
    assert (a.jobs, a.stages, a.tasks, a.stage_wall_s) == (1, 1, 1, 2.0)
    (stage,) = a.top()
    assert stage.name == "collect at jobs/a.py:3"
    assert (stage.run_s, stage.jvm_cpu_s, stage.shuffle_write_mb) == (1.5, 1.0, 1.0)
    assert groups[""].jobs == 1
