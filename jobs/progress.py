"""Progress of a running job as plain lines that survive without a terminal (log files, Kubernetes pods).

A daemon thread on the driver polls Spark's status tracker every `every` seconds and reports, per active
stage, the tasks done out of the total and, when the Spark UI is on, the records and bytes read and written
so far (from the UI's REST API, `/api/v1/applications/APP/stages?status=active`). Lines go to `emit`; on a
terminal `rnj run` passes a function that updates its spinner instead.

    [ingest 0:01:30] stage 3 (mapInArrow at ingest.py:47): 12/40 tasks done, 2 running; read 340,512 records, 1.2 GiB

The interval defaults to 30 s (`RNJ_PROGRESS_SECONDS` or `rnj run --progress-every`); a poll never blocks
the job: the REST call has a short timeout and any failure drops the record counts from that line.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from pipeline.inspect.tables import human_bytes

DEFAULT_EVERY = 30.0
REST_TIMEOUT = 2.0


def progress_interval(value: float | None = None) -> float:
    """Seconds between progress lines: `value`, else $RNJ_PROGRESS_SECONDS, else 30."""
    if value is not None:
        return value
    try:
        return float(os.environ.get("RNJ_PROGRESS_SECONDS", DEFAULT_EVERY))
    except ValueError:
        return DEFAULT_EVERY


@dataclass(frozen=True)
class StageProgress:
    stage_id: int
    name: str
    tasks: int
    done: int
    running: int
    failed: int
    records_read: int | None = None
    bytes_read: int | None = None
    records_written: int | None = None
    bytes_written: int | None = None


def elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def short_call_site(name: str) -> str:
    """Spark names a stage after its call site: `collect at /long/path/jobs/ingest.py:83` -> `collect at
    ingest.py:83`."""
    return re.sub(r" at \S*/([^/\s]+)$", r" at \1", name)


def describe_stage(s: StageProgress) -> str:
    line = f"stage {s.stage_id} ({short_call_site(s.name)}): {s.done}/{s.tasks} tasks done, {s.running} running"
    if s.failed:
        line += f", {s.failed} failed"
    moved = []
    if s.records_read or s.bytes_read:
        moved.append(f"read {s.records_read or 0:,} records, {human_bytes(s.bytes_read or 0)}")
    if s.records_written or s.bytes_written:
        moved.append(f"wrote {s.records_written or 0:,} records, {human_bytes(s.bytes_written or 0)}")
    return line + ("; " + "; ".join(moved) if moved else "")


def rest_stage_metrics(ui_url: str, app_id: str,
                       fetch: Callable[[str], bytes] | None = None) -> dict[int, dict]:
    """Active stages' input/output/shuffle figures from the Spark UI's REST API ({} when unreachable).
    Reads from files and shuffles both count as read; writes to files and shuffles as written."""
    fetch = fetch or (lambda url: urllib.request.urlopen(url, timeout=REST_TIMEOUT).read())
    try:
        stages = json.loads(fetch(f"{ui_url.rstrip('/')}/api/v1/applications/{app_id}/stages?status=active"))
    except (OSError, ValueError):
        return {}
    figures = {}
    for s in stages:
        figures[s["stageId"]] = {
            "records_read": s.get("inputRecords", 0) + s.get("shuffleReadRecords", 0),
            "bytes_read": s.get("inputBytes", 0) + s.get("shuffleReadBytes", 0),
            "records_written": s.get("outputRecords", 0) + s.get("shuffleWriteRecords", 0),
            "bytes_written": s.get("outputBytes", 0) + s.get("shuffleWriteBytes", 0),
        }
    return figures


def active_stages(spark_context, rest: Callable[[], dict[int, dict]] | None = None) -> list[StageProgress]:
    tracker = spark_context.statusTracker()
    figures = rest() if rest else {}
    found = []
    for stage_id in sorted(tracker.getActiveStageIds()):
        info = tracker.getStageInfo(stage_id)
        if info is None:  # finished between the two calls
            continue
        found.append(StageProgress(stage_id, info.name, info.numTasks, info.numCompletedTasks, info.numActiveTasks,
                                   info.numFailedTasks, **figures.get(stage_id, {})))
    return found


class SparkProgress:
    """Context manager: while the body runs, emit progress lines of the active Spark stages every `every` s.

    `emit` receives a list of lines (one per active stage, or one saying the driver is busy between
    stages); `label` prefixes every line with the job's name and the time since start.
    """

    def __init__(self, spark, label: str, every: float | None = None,
                 emit: Callable[[list[str]], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.context = spark.sparkContext
        self.label = label
        self.every = progress_interval(every)
        self.emit = emit or print_lines
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0.0
        ui = self.context.uiWebUrl
        app = self.context.applicationId
        self._rest = (lambda: rest_stage_metrics(ui, app)) if ui else None

    def lines(self) -> list[str]:
        prefix = f"[{self.label} {elapsed(self.clock() - self._start)}]"
        stages = active_stages(self.context, self._rest)
        if not stages:
            return [f"{prefix} working on the driver (no Spark stage running)"]
        return [f"{prefix} {describe_stage(s)}" for s in stages]

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.emit(self.lines())
            except Exception as err:  # noqa: BLE001 - a progress line must never break the job it reports on
                print(f"[{self.label}] progress lines stop: cannot read Spark's status ({err})", file=sys.stderr)
                return

    def __enter__(self) -> Self:
        self._start = self.clock()
        if self.every > 0:
            self._thread = threading.Thread(target=self._run, name=f"rnj-progress-{self.label}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.every + REST_TIMEOUT + 1)


def print_lines(lines: list[str]) -> None:
    for line in lines:
        print(line, file=sys.stdout, flush=True)


def ui_address(spark) -> str:
    """Where to watch the job: the Spark UI's address, or why there is none."""
    url = spark.sparkContext.uiWebUrl
    return f"Spark UI: {url}" if url else "Spark UI: off (spark.ui.enabled=false)"
