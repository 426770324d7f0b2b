"""Sandboxes for tests: bubblewrap where it can run, else the named weaker mode on an interpreter uid 65534
can reach (as root, mode `none` drops to it); skipped where neither can run."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from pipeline.traces.config import TracesConfig
from pipeline.traces.sandbox import (
    NOBODY,
    Sandbox,
    _probe,
    _python_roots,
    _reachable_by_others,
    bubblewrap_args,
)


def bubblewrap_usable() -> bool:
    """Whether bwrap can start the interpreter here."""
    args = bubblewrap_args(_python_roots(), 4, os.geteuid() == 0)
    return _probe(tuple(args), os.path.realpath(sys.executable)) is None


def none_mode_python() -> str | None:
    """An interpreter that uid 65534 can run (as root, mode `none` drops to it), or None when there is none."""
    if os.geteuid() != 0 or _reachable_by_others(_python_roots()):
        return None
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate):
            version = subprocess.run([candidate, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                                     capture_output=True, text=True, check=False).stdout.strip()
            if version == "True" and _reachable_by_others(_python_roots(os.path.realpath(candidate))):
                return candidate
    pytest.skip(f"as root, mode 'none' needs an interpreter that uid {NOBODY} can reach; {sys.executable} "
                "is not and no reachable Python 3.11+ was found")


def sandbox_in(mode: str, cfg: TracesConfig) -> Sandbox:
    """A sandbox in `mode` (`bubblewrap` skips where bwrap cannot run)."""
    if mode == "bubblewrap" and not bubblewrap_usable():
        pytest.skip("bubblewrap is missing or cannot create namespaces here")
    cfg = dataclasses.replace(cfg, sandbox=mode)
    return Sandbox(cfg, python=none_mode_python() if mode == "none" else None)


def best_sandbox(cfg: TracesConfig) -> Sandbox:
    """Bubblewrap where it runs, else mode `none` (tests of the trace format need not skip without bwrap)."""
    return sandbox_in("bubblewrap" if bubblewrap_usable() else "none", cfg)
