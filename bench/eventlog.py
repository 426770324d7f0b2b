"""Read a Spark event log (spark.eventLog.enabled): per job group, the Spark jobs, stages and tasks it ran,
and where its time went stage by stage (wall, task time, JVM CPU, GC, shuffle, spill).

bench/scale.py runs each rnj job under its own job group (`SparkContext.setJobGroup(JOB, ...)`), so the
groups here are the rnj jobs. A stage counts once per attempt that ran; stages Spark skipped (their shuffle
output already there) are not counted, since they launch nothing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

GROUP = "spark.jobGroup.id"


@dataclass
class StageSummary:
    stage_id: int
    attempt: int
    name: str
    tasks: int = 0
    wall_s: float = 0.0
    run_s: float = 0.0
    """Summed executor run time of its tasks (includes waiting on Python workers)."""
    jvm_cpu_s: float = 0.0
    """Summed executor CPU time of its tasks: JVM threads only, Python workers not counted."""
    gc_s: float = 0.0
    input_mb: float = 0.0
    shuffle_read_mb: float = 0.0
    shuffle_write_mb: float = 0.0
    spill_mb: float = 0.0
    python: dict = field(default_factory=dict)
    """SQL metrics of Python operators (data sent to / received from workers, their time) when present."""


@dataclass
class GroupSummary:
    jobs: int = 0
    stages: int = 0
    tasks: int = 0
    stage_wall_s: float = 0.0
    """Wall time during which at least one of the group's stages ran."""
    stages_detail: list[StageSummary] = field(default_factory=list)

    def top(self, count: int = 3) -> list[StageSummary]:
        return sorted(self.stages_detail, key=lambda s: -s.run_s)[:count]


def find_event_log(folder: Path) -> Path | None:
    """The newest application log in `folder`: a file, or a rolling log's `eventlog_v2_*` folder."""
    logs = [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []
    return max(logs, key=lambda p: p.stat().st_mtime) if logs else None


def event_lines(path: Path) -> Iterator[str]:
    """The JSON lines of a log file or of a rolling log's folder (its `events_N_*` files in order), plain or
    zstd-compressed (Spark 4's defaults: rolling, zstd)."""
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.name.startswith("events_")),
                       key=lambda p: int(p.name.split("_")[1]))
    else:
        files = [path]
    for file in files:
        suffix = file.name.rsplit(".", 1)[-1] if "." in file.name else ""
        if suffix in ("zstd", "zst"):
            with open(file, "rb") as raw:
                reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
                yield from io.TextIOWrapper(reader, encoding="utf-8")
        elif suffix in ("", "inprogress") or suffix.startswith(("local-", "app-")):
            with open(file, encoding="utf-8") as f:
                yield from f
        else:
            raise ValueError(f"{file}: event logs compressed with {suffix!r} are not read here; use zstd or none")


def summarize(path: Path) -> dict[str, GroupSummary]:
    """Job group -> what it ran. Jobs without a group are under ''."""
    reader = _Reader()
    for line in event_lines(path):
        if line.strip():
            reader.add(json.loads(line))
    return reader.finish()


class _Reader:
    def __init__(self):
        self.groups: dict[str, GroupSummary] = {}
        self.stage_group: dict[int, str] = {}
        self.stages: dict[tuple[int, int], StageSummary] = {}
        self.intervals: dict[str, list[tuple[float, float]]] = {}

    def group(self, stage_id: int) -> GroupSummary:
        return self.groups.setdefault(self.stage_group.get(stage_id, ""), GroupSummary())

    def add(self, event: dict) -> None:
        kind = event.get("Event")
        if kind == "SparkListenerJobStart":
            name = (event.get("Properties") or {}).get(GROUP) or ""
            self.groups.setdefault(name, GroupSummary()).jobs += 1
            for stage_id in event.get("Stage IDs", []):
                self.stage_group[stage_id] = name
        elif kind == "SparkListenerStageSubmitted":
            info = event["Stage Info"]
            name = (event.get("Properties") or {}).get(GROUP) or self.stage_group.get(info["Stage ID"], "")
            self.stage_group[info["Stage ID"]] = name
            key = (info["Stage ID"], info.get("Stage Attempt ID", 0))
            self.stages[key] = StageSummary(info["Stage ID"], key[1], _short_name(info.get("Stage Name", "")))
            self.group(key[0]).stages += 1
        elif kind == "SparkListenerTaskEnd":
            stage = self.stages.get((event["Stage ID"], event.get("Stage Attempt ID", 0)))
            if stage is not None:
                _add_task(stage, event.get("Task Metrics") or {})
                self.group(stage.stage_id).tasks += 1
        elif kind == "SparkListenerStageCompleted":
            info = event["Stage Info"]
            stage = self.stages.get((info["Stage ID"], info.get("Stage Attempt ID", 0)))
            if stage is None:
                return
            start, end = info.get("Submission Time"), info.get("Completion Time")
            if start and end:
                stage.wall_s = (end - start) / 1e3
                self.intervals.setdefault(self.stage_group.get(stage.stage_id, ""), []).append((start / 1e3, end / 1e3))
            stage.python = _python_metrics(info.get("Accumulables", []))
            self.group(stage.stage_id).stages_detail.append(stage)

    def finish(self) -> dict[str, GroupSummary]:
        for name, spans in self.intervals.items():
            self.groups[name].stage_wall_s = _covered(spans)
        return self.groups


def _add_task(stage: StageSummary, metrics: dict) -> None:
    stage.tasks += 1
    stage.run_s += metrics.get("Executor Run Time", 0) / 1e3
    stage.jvm_cpu_s += metrics.get("Executor CPU Time", 0) / 1e9
    stage.gc_s += metrics.get("JVM GC Time", 0) / 1e3
    stage.input_mb += (metrics.get("Input Metrics") or {}).get("Bytes Read", 0) / 2**20
    read = metrics.get("Shuffle Read Metrics") or {}
    stage.shuffle_read_mb += (read.get("Remote Bytes Read", 0) + read.get("Local Bytes Read", 0)) / 2**20
    stage.shuffle_write_mb += (metrics.get("Shuffle Write Metrics") or {}).get("Shuffle Bytes Written", 0) / 2**20
    stage.spill_mb += metrics.get("Disk Bytes Spilled", 0) / 2**20


def _short_name(name: str) -> str:
    """`collect at /long/path/jobs/ingest.py:45` -> `collect at jobs/ingest.py:45`."""
    head, _, where = name.partition(" at ")
    if not where:
        return name
    parts = where.split("/")
    return f"{head} at {'/'.join(parts[-2:])}"


def _python_metrics(accumulables: list[dict]) -> dict:
    wanted = ("python", "arrow", "udf")
    out = {}
    for acc in accumulables:
        name = str(acc.get("Name", ""))
        if any(w in name.lower() for w in wanted):
            try:
                out[name] = int(acc.get("Value"))
            except (TypeError, ValueError):
                continue
    return out


def _covered(spans: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end] intervals."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(spans):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total
