"""The build file: one TOML file describes a whole build, parsed here into typed, frozen dataclasses.

Sections: `[build]`, `[[sources]]`, `[ingest]`, `[dedup]`, `[grade]`, `[traces]`, `[tokenizer]`,
`[[stages]]` (with `[[stages.phases]]`) and `[train]`. Each section's dataclass lives beside the code that
uses it; this module composes them and resolves relative URIs against the build file's folder. Jobs and the
trainer read the same file through `load_build`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import tomllib
from dataclasses import dataclass, field
from typing import Literal

import fsspec

from pipeline.configuration import ConfigError, parse_dataclass, require
from pipeline.documents import DOMAINS
from pipeline.dedup.config import DedupConfig
from pipeline.grading.config import GradeConfig
from pipeline.traces.config import TracesConfig

__all__ = [
    "BuildConfig",
    "BuildSection",
    "ConfigError",
    "IngestConfig",
    "SourceConfig",
    "TokenizerConfig",
    "TrainConfig",
    "load_build",
    "parse_build",
    "resolve_uri",
]


@dataclass(frozen=True, kw_only=True)
class BuildSection:
    name: str
    """Name of the build; shown in reports and written into every manifest."""
    output: str
    """Root URI of everything the build writes (each job writes a folder under it)."""
    seed: int = 0
    """Seed of every random choice in the build (sampling, shuffles, planted test data)."""
    output_files: int = 4
    """Files per output table. Fixed, not taken from Spark's partitioning, so that the same inputs give
    byte-identical outputs on one core or a hundred executors."""

    def __post_init__(self) -> None:
        require(self.output_files >= 1, "output_files must be at least 1")


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    name: str
    """Short unique name: becomes the `source` column and the prefix of derived ids."""
    uri: str
    """A file, folder or glob on any fsspec filesystem (local, gs://, s3://, memory://)."""
    format: Literal["jsonl", "parquet", "files"]
    """`jsonl` (plain, .gz or .zst), `parquet`, or `files`: a folder of source files, one document each."""
    domain: str | None = None
    """Domain hint (code, math, science, general, trace) that grading may confirm or override."""
    license: str = "unknown"
    """Licence of the source, copied into every document's meta."""
    lang: str | None = None
    """Language of every document when the input does not say (python, en ...)."""
    text_field: str = "text"
    """Field (JSONL) or column (Parquet) holding the text."""
    id_field: str = "id"
    """Field or column holding the input's own id; documents without one get a content-derived id."""
    include: tuple[str, ...] = ()
    """For `files`: file name patterns to read (e.g. "*.py"); empty means every file."""
    meta: dict[str, str] = field(default_factory=dict)
    """Extra key/values copied into every document's meta."""

    def __post_init__(self) -> None:
        require(bool(self.name) and "/" not in self.name, f"source name {self.name!r} must be non-empty, no '/'")
        require(self.domain is None or self.domain in DOMAINS, f"domain {self.domain!r} is not one of {DOMAINS}")


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    max_doc_bytes: int = 4_000_000
    """Records larger than this (UTF-8 bytes) are quarantined as `oversized`; a 4 MB text is a data dump."""
    max_control_fraction: float = 0.01
    """Text with a larger share of non-text control characters is `binary` (real text has almost none)."""
    quarantine_raw_bytes: int = 4096
    """How many raw bytes of a bad record the quarantine table keeps for inspection."""

    def __post_init__(self) -> None:
        require(self.max_doc_bytes > 0, "max_doc_bytes must be positive")
        require(0 <= self.max_control_fraction <= 1, "max_control_fraction must lie in [0, 1]")


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    path: str | None = None
    """An existing tokenizer.json to load instead of training one."""
    vocab_size: int = 128_000
    """Ordinary (BPE) vocabulary size; special tokens are placed after it."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    preset: str = "tiny"
    """Model preset from model/config.py's registry."""


@dataclass(frozen=True, kw_only=True)
class BuildConfig:
    build: BuildSection
    sources: tuple[SourceConfig, ...]
    ingest: IngestConfig = IngestConfig()
    dedup: DedupConfig = DedupConfig()
    grade: GradeConfig = GradeConfig()
    traces: TracesConfig = TracesConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    train: TrainConfig = TrainConfig()
    path: str = ""
    """The file this build was read from (set by the loader, not by the file)."""

    def __post_init__(self) -> None:
        names = [s.name for s in self.sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        require(not duplicates, f"source names must be unique; repeated: {duplicates}")

    def output_uri(self, *parts: str) -> str:
        """URI of a path under the build's output root."""
        return posixpath.join(self.build.output.rstrip("/"), *parts)

    def section_hash(self, *names: str) -> str:
        """Stable hash of some sections: part of a job's input hash, so editing them reruns the job."""
        payload = {name: _jsonable(getattr(self, name)) for name in names}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def resolve_uri(base: str, uri: str) -> str:
    """`uri` as given when it has a scheme or is absolute, else relative to the folder `base`."""
    if "://" in uri or uri.startswith("/"):
        return uri
    if "://" in base:
        return posixpath.join(base, uri)
    return posixpath.normpath(posixpath.join(base, uri))


def load_build(path: str) -> BuildConfig:
    """Read and check a build file from any fsspec URI; relative URIs resolve against its folder."""
    try:
        with fsspec.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError as err:
        raise ConfigError(f"build file {path} does not exist") from err
    if "://" not in path:
        path = os.path.abspath(path)
    return parse_build(raw.decode("utf-8"), path)


def parse_build(text: str, path: str) -> BuildConfig:
    """Parse the text of a build file that lives at `path` (used for messages and relative URIs)."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    if "path" in table:
        raise ConfigError(f"{path}: unknown key 'path'")
    config = parse_dataclass(BuildConfig, table, "", path)
    base = posixpath.dirname(path) if "://" in path else _local_dirname(path)
    build = dataclasses.replace(config.build, output=resolve_uri(base, config.build.output))
    sources = tuple(dataclasses.replace(s, uri=resolve_uri(base, s.uri)) for s in config.sources)
    return _resolve_sections(dataclasses.replace(config, build=build, sources=sources, path=path), base)


def _resolve_sections(config: BuildConfig, base: str) -> BuildConfig:
    """Resolve the URIs inside sections (any field named `*uri`, `*path` or `*uris`)."""
    updates = {}
    for name in ("dedup", "grade", "traces", "tokenizer", "train"):
        section = getattr(config, name)
        updates[name] = _resolve_fields(section, base)
    return dataclasses.replace(config, **updates)


def _resolve_fields(section, base: str):
    changes = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            changes[f.name] = _resolve_fields(value, base)
        elif f.name.endswith(("uri", "path")) and isinstance(value, str):
            changes[f.name] = resolve_uri(base, value)
        elif f.name.endswith(("uris", "paths")) and isinstance(value, tuple):
            changes[f.name] = tuple(resolve_uri(base, v) for v in value)
    return dataclasses.replace(section, **changes) if changes else section


def _local_dirname(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))
