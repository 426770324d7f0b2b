"""CPU time and memory of a process tree, read from /proc: the driver, its JVM and Spark's Python workers.

On a machine shared with other work, CPU-seconds of the benchmark's own processes hold where wall-clock
time does not. `tree_cpu_seconds` sums user + system time of a process and every descendant (and of their
children already reaped); `MemorySampler` samples the tree in a background thread and keeps, per window,
the peak RSS of the JVM, of this Python process, and of Spark's Python workers (summed as PSS, since the
workers are forked from one daemon and share pages; the largest single worker as RSS).
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from typing import Self

PAGE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, command name, CPU ticks of it and its reaped children) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                data = f.read()
        except OSError:
            continue
        name = data[data.index("(") + 1:data.rindex(")")]
        fields = data.rsplit(")", 1)[1].split()
        table[int(entry)] = (int(fields[1]), name, sum(int(x) for x in fields[11:15]))  # utime stime cutime cstime
    return table


def descendants(root: int, table: dict[int, tuple[int, str, int]] | None = None) -> list[int]:
    """`root` and every live process below it."""
    table = table if table is not None else _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def tree_cpu_seconds(root: int | None = None) -> float:
    """User + system CPU seconds of process `root` (default: this one) and every descendant."""
    root = os.getpid() if root is None else root
    table = _processes()
    return sum(table[pid][2] for pid in descendants(root, table) if pid in table) / CLOCK_TICKS


@dataclass
class MemoryPeaks:
    jvm_mb: float = 0.0
    """Peak RSS of the Java processes (the driver JVM, which runs the executors in local mode)."""
    driver_python_mb: float = 0.0
    """Peak RSS of this Python process (the PySpark driver)."""
    workers_mb: float = 0.0
    """Peak of the summed PSS of Spark's Python workers."""
    worker_max_mb: float = 0.0
    """Peak RSS of the largest single Python worker."""
    others_mb: float = 0.0
    """Peak summed RSS of the other descendants (trace sandboxes, subprocesses)."""

    def merge(self, other: MemoryPeaks) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, max(getattr(self, name), value))


class MemorySampler:
    """Samples the memory of this process tree every `interval` seconds in a daemon thread."""

    def __init__(self, interval: float = 0.5, root: int | None = None):
        self.interval = interval
        self.root = os.getpid() if root is None else root
        self._peaks = MemoryPeaks()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def take(self) -> MemoryPeaks:
        """The peaks since the last `take` (one more sample first), and start a new window."""
        self.sample()
        with self._lock:
            peaks, self._peaks = self._peaks, MemoryPeaks()
        return peaks

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        table = _processes()
        now = MemoryPeaks()
        for pid in descendants(self.root, table):
            if pid not in table:
                continue
            name = table[pid][1]
            if pid == self.root:
                now.driver_python_mb = _rss_mb(pid)
            elif name == "java":
                now.jvm_mb += _rss_mb(pid)
            elif _is_spark_worker(pid):
                now.workers_mb += _pss_mb(pid)
                now.worker_max_mb = max(now.worker_max_mb, _rss_mb(pid))
            else:
                now.others_mb += _rss_mb(pid)
        with self._lock:
            self._peaks.merge(now)


def _is_spark_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read()
        return b"pyspark.daemon" in command or b"pyspark.worker" in command
    except OSError:
        return False


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE / 2**20
    except (OSError, IndexError):
        return 0.0


def _pss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _rss_mb(pid)
