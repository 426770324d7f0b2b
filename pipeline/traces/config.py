"""`[traces]`: which units to run, the sandbox's limits, the caps of the rendered traces and the SFT forms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.configuration import require


@dataclass(frozen=True, kw_only=True)
class TracesConfig:
    enabled: bool = False
    """Generate execution traces; off unless the build asks for them."""
    units_uris: tuple[str, ...] = ()
    """JSONL files (plain, .gz or .zst; globs allowed) of units `{id, code, entry_point, inputs, tests?}`.
    `inputs` is a list of argument lists, one traced call each; a record without `entry_point` is a
    standalone script. Relative paths resolve against the build file's folder."""
    script_uris: tuple[str, ...] = ()
    """Standalone Python scripts (files, folders or globs of `*.py`) run without arguments, one unit each."""
    doctests: bool = True
    """Also turn the doctests of the ingest output's Python documents into units (standard-library imports
    only: nothing else exists inside the sandbox)."""
    max_doctests_per_document: int = 4
    """At most this many docstrings with examples become units per document (the first ones in the file)."""
    max_examples_per_doctest: int = 12
    """Examples after this many in one docstring are left out."""
    sandbox: Literal["auto", "bubblewrap", "none"] = "auto"
    """`auto` and `bubblewrap` run every unit under bubblewrap (new namespaces, read-only system) and fail the
    job, saying why and how to fix it, when bubblewrap cannot start here; `none` opts into the weaker
    in-process layers alone (uid drop, rlimits, audit hook, timeout), with a warning per task and the mode
    recorded per document and in the report. Nothing picks `none` unless the build file names it."""
    bubblewrap_binary: str = "bwrap"
    """The bubblewrap binary: an absolute path, or a name looked up on PATH (not resolved against the build
    file's folder)."""
    workers: int = 2
    """Sandboxes run at once by each Spark task (each is one process running one unit)."""
    cpu_seconds: int = 2
    """CPU seconds per unit (RLIMIT_CPU); every traced call of the unit shares them."""
    wall_seconds: float = 10.0
    """Wall-clock seconds per unit before its whole process group is killed (status `timeout`)."""
    memory_mb: int = 512
    """Address space per unit (RLIMIT_AS), MiB; running out gives status `memory`."""
    file_mb: int = 8
    """Largest file a unit may write (RLIMIT_FSIZE), MiB."""
    disk_mb: int = 16
    """Size of the unit's temporary working folder (a tmpfs under bubblewrap), MiB."""
    open_files: int = 32
    """Open file descriptors per unit (RLIMIT_NOFILE)."""
    max_result_bytes: int = 2_000_000
    """Bytes the worker reads back from one sandbox; more ends the unit with status `error`."""
    max_output_bytes: int = 4096
    """Printed output kept per traced call (the rest is counted, not kept)."""
    max_steps: int = 300
    """Executed lines recorded per traced call; the call runs on untraced after that (marked truncated)."""
    max_trace_bytes: int = 12_000
    """Bytes of trace events per document, over all its calls; the rest is replaced by a truncation mark."""
    max_source_bytes: int = 12_000
    """Units whose shown source is larger are dropped as `too_large` before running."""
    repr_width: int = 60
    """Characters of a value's repr kept in the trace's intermediate records (`<|call|>`, `<|state|>`,
    `<|return|>`; longer ones end in `…`)."""
    max_result_repr_bytes: int = 100_000
    """UTF-8 bytes of a call's final result (its value, or the exception it raised) kept whole in the
    `<|result|>` record and the SFT answers; only a longer one is cut, ending in `…`."""
    sft_question: bool = True
    """Write the question form: "what does `f(3)` return?" answered with the trace as the reasoning."""
    sft_spot_error: bool = True
    """Write the error-spotting form: a trace with one planted wrong value, the first wrong step and the
    correct continuation."""
    seed: int = 0
    """Seed of the SFT forms' random choices (which call to ask about, which value to falsify and how)."""

    def __post_init__(self) -> None:
        require(self.workers >= 1, "workers must be at least 1")
        require(self.cpu_seconds >= 1, "cpu_seconds must be at least 1")
        require(self.wall_seconds > 0, "wall_seconds must be positive")
        require(self.memory_mb >= 64, "memory_mb must be at least 64 (Python itself needs ~30 MiB)")
        require(self.file_mb >= 1 and self.disk_mb >= 1, "file_mb and disk_mb must be at least 1")
        require(self.open_files >= 8, "open_files must be at least 8")
        require(self.max_steps >= 1 and self.max_trace_bytes >= 256, "max_steps >= 1, max_trace_bytes >= 256")
        require(self.repr_width >= 8, "repr_width must be at least 8")
        require(self.repr_width <= self.max_result_repr_bytes <= self.max_result_bytes // 4,
                "max_result_repr_bytes must be between repr_width and max_result_bytes / 4")
        require(self.max_doctests_per_document >= 0 and self.max_examples_per_doctest >= 1,
                "max_doctests_per_document >= 0 and max_examples_per_doctest >= 1")
        require(self.max_result_bytes >= 10_000, "max_result_bytes must be at least 10000")
