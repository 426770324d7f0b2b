"""`[dedup]`: which rounds run and how."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class DedupConfig:
    enabled: bool = True
    """Run the dedup job at all; when false the job passes every document through."""
