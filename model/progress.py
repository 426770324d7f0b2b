"""Training progress on the console: a tqdm bar on a terminal, plain lines at a bounded rate elsewhere.

A bar redrawn in place is unreadable in a log file or a Kubernetes pod's log (every redraw is kept, or
nothing shows until the line ends), so without a terminal the trainer writes one self-contained line at the
first step, then at most one every `interval_s` seconds, and one at the last step:

    pretrain step 120/5000 (2.4%) loss 3.2140 lr 2.00e-03 12,345 tok/s mfu 41.2% elapsed 0:10:02 eta 6:48:11
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Progress of one stage, steps `initial`..`total` (counted from the stage's first step)."""

    def __init__(self, total: int, initial: int, stage: str, *, enabled: bool = True, interval_s: float = 30.0,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.total, self.done, self.stage = total, initial, stage
        self.enabled, self.interval_s, self.clock = enabled, interval_s, clock
        self.stream = stream if stream is not None else sys.stderr
        self.started, self.first, self.last_line = clock(), initial, None
        self.bar = None
        if enabled and _is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", desc=stage, dynamic_ncols=True,
                            file=self.stream)

    def update(self, record: dict) -> None:
        """One more step done; `record` is the step's metrics line (loss, lr, tokens_per_s, mfu)."""
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
            return
        now = self.clock()
        due = self.last_line is None or now - self.last_line >= self.interval_s or self.done >= self.total
        if due:
            self.last_line = now
            print(self.line(record, now), file=self.stream, flush=True)

    def line(self, record: dict, now: float) -> str:
        elapsed = now - self.started
        steps = self.done - self.first
        eta = elapsed / steps * (self.total - self.done) if steps else None
        mfu = "" if record.get("mfu") is None else f" mfu {100 * record['mfu']:.1f}%"
        return (f"{self.stage} step {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.1f}%) "
                f"loss {record['loss']:.4f} lr {record['lr']:.2e} {record['tokens_per_s']:,.0f} tok/s{mfu} "
                f"elapsed {_clock(elapsed)} eta {'?' if eta is None else _clock(eta)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))
