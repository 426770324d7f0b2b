"""`[grade]`: quality filters, domain tagging and difficulty."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class GradeConfig:
    enabled: bool = True
    """Run the grade job at all."""
