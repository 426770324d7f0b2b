"""Difficulty of execution traces, read from their text with simple, robust line counts.

The trace format belongs to `pipeline/traces`; this grader does not parse it. It counts lines by the regular
expressions of `[grade.difficulty.trace_markers]` (executed steps, calls, returns, branches, exceptions),
from the first line that opens a trace on (the source listing before it is not execution), and keeps a
running call depth (calls minus returns, never below 0). A change of format is a change of patterns in the
build file, not of code.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import ClassVar

from pipeline.filters.text import lines
from pipeline.grading.base import GradeContext, Grader, saturating
from pipeline.grading.config import TraceMarkers


class TraceGrader(Grader):
    name = "trace"
    normalisers: ClassVar[dict[str, Callable[[float], float]]] = {
        "steps": saturating(50), "max_call_depth": saturating(3), "calls": saturating(10),
        "branches": saturating(20), "exceptions": saturating(1), "lines": saturating(100),
    }

    def features(self, text: str, lang: str | None, context: GradeContext) -> dict[str, float]:
        start, step, call, ret, branch, exception = _compiled(context.markers)
        content = lines(text)
        first = next((i for i, line in enumerate(content) if start.search(line)), 0)
        content = content[first:]
        depth = deepest = calls = 0
        for line in content:
            if call.search(line):
                calls += 1
                depth += 1
                deepest = max(deepest, depth)
            if ret.search(line):
                depth = max(0, depth - 1)
        steps = sum(1 for line in content if step.search(line))
        return {
            "steps": float(steps or len(content)),
            "max_call_depth": float(deepest),
            "calls": float(calls),
            "branches": float(sum(1 for line in content if branch.search(line))),
            "exceptions": float(sum(1 for line in content if exception.search(line))),
            "lines": float(len(content)),
        }


@functools.lru_cache(maxsize=4)
def _compiled(markers: TraceMarkers) -> tuple[re.Pattern, ...]:
    flags = re.IGNORECASE
    patterns = (markers.start, markers.step, markers.call, markers.ret, markers.branch, markers.exception)
    return tuple(re.compile(p, flags) for p in patterns)
