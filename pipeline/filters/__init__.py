"""Quality filters: each rule is named, and a document's verdict is (keep, reason).

`quality_check(text, domain, cfg)` measures the signals of the rule set that fits the domain (prose for science
and general, prose with math bounds for math, code for code; traces are ours and pass) and lists the rules
failed. `keep_reason` turns that into the (keep, reason) pair every filter returns; the reason of a dropped
document is the first failed rule, in the fixed order of pipeline/filters/prose.py and code.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.filters.code import code_failures, code_signals
from pipeline.filters.prose import prose_failures, prose_signals
from pipeline.grading.config import FiltersConfig

__all__ = ["QualityResult", "filter_document", "keep_reason", "quality_check"]


@dataclass(frozen=True)
class QualityResult:
    signals: dict[str, float]
    """Every measured signal, by name."""
    failed: tuple[str, ...]
    """Rules failed and not disabled, in rule order."""

    @property
    def passed(self) -> bool:
        return not self.failed


def quality_check(text: str, domain: str, cfg: FiltersConfig) -> QualityResult:
    """The signals and failed rules of `text` under the rules for `domain`."""
    if domain == "code":
        signals = code_signals(text, cfg.code)
        failed = code_failures(signals, cfg.code)
    elif domain in ("math", "science", "general"):
        rules = cfg.math if domain == "math" else cfg.prose
        signals = prose_signals(text, rules, cfg.math_aware, numbers=domain == "math")
        failed = prose_failures(signals, rules)
    else:
        signals, failed = {}, []
    if not cfg.enabled:
        failed = []
    return QualityResult(signals, tuple(f for f in failed if f not in cfg.disabled_rules))


def keep_reason(result: QualityResult, cfg: FiltersConfig) -> tuple[bool, str | None]:
    """(keep, reason): drop on the first failed rule when the action is `drop`; flagged documents stay."""
    if result.passed or cfg.action == "flag":
        return True, None
    return False, result.failed[0]


def filter_document(text: str, domain: str, cfg: FiltersConfig) -> tuple[bool, str | None]:
    """The filter verdict of one document: (True, None) or (False, first failed rule)."""
    return keep_reason(quality_check(text, domain, cfg), cfg)
