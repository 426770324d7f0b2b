"""`[traces]`: which units to run and the sandbox limits."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class TracesConfig:
    enabled: bool = False
    """Generate execution traces; off unless the build asks for them."""
