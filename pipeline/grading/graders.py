"""The registry of difficulty graders: one grader per domain, looked up by `grader_for(domain)`.

Science and general prose share the prose grader. A new grader subclasses `pipeline.grading.base.Grader`
(a `name`, its `normalisers`, a `features` method) and is registered with `register_grader(domain, grader)`;
its weights come from `[grade.difficulty] {name}_weights`.
"""

from __future__ import annotations

from pipeline.grading.base import Grader
from pipeline.grading.code_grader import CodeGrader
from pipeline.grading.config import DifficultyConfig
from pipeline.grading.math_grader import MathGrader
from pipeline.grading.prose_grader import ProseGrader
from pipeline.grading.trace_grader import TraceGrader

_PROSE = ProseGrader()
_GRADERS: dict[str, Grader] = {
    "code": CodeGrader(), "math": MathGrader(), "science": _PROSE, "general": _PROSE, "trace": TraceGrader(),
}
WEIGHTED_GRADERS = ("code", "math", "prose", "trace")
"""Grader names that have a weights table in `[grade.difficulty]`."""


def grader_for(domain: str) -> Grader:
    try:
        return _GRADERS[domain]
    except KeyError:
        raise ValueError(f"no difficulty grader for domain {domain!r}; known: {sorted(_GRADERS)}") from None


def register_grader(domain: str, grader: Grader) -> None:
    """Use `grader` for `domain` from now on (its name must have a weights table)."""
    if grader.name not in WEIGHTED_GRADERS:
        raise ValueError(f"grader name {grader.name!r} has no weights table; use one of {WEIGHTED_GRADERS}")
    _GRADERS[domain] = grader


def check_weights(cfg: DifficultyConfig) -> str | None:
    """None when every weight names a feature of its grader, else a message saying which does not."""
    by_name = {g.name: g for g in _GRADERS.values()}
    for name in WEIGHTED_GRADERS:
        known = by_name[name].normalisers
        unknown = sorted(set(cfg.weights_for(name)) - set(known))
        if unknown:
            return f"{name}_weights names unknown features {unknown}; the {name} grader has {sorted(known)}"
    return None
