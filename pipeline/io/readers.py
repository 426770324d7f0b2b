"""Readers: turn the files of a `[[sources]]` entry into raw records, never raising on bad content.

A reader yields `RawRecord`s. A record the reader could not make sense of (a malformed JSON line, invalid
UTF-8, a missing or non-string text) still comes out, with `error` set to the reason, so that ingest can
quarantine it: nothing is dropped silently. Every reader works on any fsspec URI.
"""

from __future__ import annotations

import fnmatch
import io
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import SourceConfig

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
COMPRESSION_SUFFIXES = ("", ".gz", ".zst")
LANG_BY_EXTENSION = {
    ".py": "python", ".pyi": "python", ".pyx": "cython", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp",
    ".hpp": "cpp", ".rs": "rust", ".go": "go", ".java": "java", ".js": "javascript", ".ts": "typescript",
    ".sh": "shell", ".rst": "en", ".md": "en", ".txt": "en", ".tex": "latex", ".toml": "toml",
    ".yaml": "yaml", ".yml": "yaml", ".f90": "fortran", ".jl": "julia", ".r": "r", ".sql": "sql",
}


@dataclass
class RawRecord:
    """One input record before validation. `raw` keeps the original bytes for the quarantine table."""

    uri: str
    raw: bytes
    text: str | None = None
    doc_id: str | None = None
    repo: str | None = None
    lang: str | None = None
    meta: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def list_source_files(source: SourceConfig) -> list[str]:
    """Every file of a source, sorted, as full URIs: the unit of work handed to Spark tasks."""
    fs, path = fsspec.core.url_to_fs(source.uri)
    if any(ch in path for ch in "*?["):
        paths = fs.glob(path)
    elif fs.isdir(path):
        paths = fs.find(path)
    elif fs.exists(path):
        paths = [path]
    else:
        raise FileNotFoundError(f"source {source.name!r}: nothing found at {source.uri}")
    return sorted(fs.unstrip_protocol(p) for p in paths if is_source_file(source, p))


def is_source_file(source: SourceConfig, path: str) -> bool:
    """Whether ingest reads the file at `path` for `source` (by its name: format suffixes, include)."""
    name = posixpath.basename(path)
    if name.startswith("."):
        return False
    if source.format != "files" and name.startswith("_"):  # Spark/Hadoop markers such as _SUCCESS
        return False
    if source.format == "jsonl":
        return name.endswith(tuple(s + c for s in JSONL_SUFFIXES for c in COMPRESSION_SUFFIXES))
    if source.format == "parquet":
        return name.endswith(".parquet")
    return not source.include or any(fnmatch.fnmatch(name, pattern) for pattern in source.include)


def read_records(source: SourceConfig, uri: str) -> Iterator[RawRecord]:
    """The records of one file of `source`."""
    readers = {"jsonl": read_jsonl, "parquet": read_parquet, "files": read_source_file}
    return readers[source.format](source, uri)


def read_jsonl(source: SourceConfig, uri: str) -> Iterator[RawRecord]:
    """JSON Lines, plain or compressed (.gz, .zst: inferred from the name). Blank lines are not records."""
    with fsspec.open(uri, "rb", compression="infer") as f:
        # zstandard's stream reader cannot iterate lines itself; a buffered reader over it can.
        lines = f if hasattr(f, "readline") and not uri.endswith(".zst") else io.BufferedReader(f)
        for number, line in enumerate(lines, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            yield _jsonl_record(source, f"{uri}#L{number}", line)


def _jsonl_record(source: SourceConfig, uri: str, line: bytes) -> RawRecord:
    record = RawRecord(uri=uri, raw=line)
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError:
        record.error = "invalid_utf8"
        return record
    try:
        obj = json.loads(decoded)
    except (json.JSONDecodeError, RecursionError):
        record.error = "malformed_json"
        return record
    if not isinstance(obj, dict):
        record.error = "malformed_json"
        return record
    return _fill_from_fields(source, record, obj)


def _fill_from_fields(source: SourceConfig, record: RawRecord, obj: dict) -> RawRecord:
    text = obj.get(source.text_field)
    if text is None:
        record.error = "missing_text"
        return record
    if not isinstance(text, str):
        record.error = "text_not_string"
        return record
    record.text = text
    given_id = obj.get(source.id_field)
    record.doc_id = None if given_id is None or given_id == "" else str(given_id)
    record.repo = _as_optional_str(obj.get("repo"))
    record.lang = _as_optional_str(obj.get("lang"))
    skip = {source.text_field, source.id_field, "repo", "lang"}
    record.meta = {str(k): _as_meta_value(v) for k, v in obj.items() if k not in skip and v is not None}
    return record


def _as_optional_str(value) -> str | None:
    return None if value is None else str(value)


def _as_meta_value(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def read_parquet(source: SourceConfig, uri: str) -> Iterator[RawRecord]:
    """Parquet files, batch by batch; rows keep their position as `#row=N` in the uri."""
    with fsspec.open(uri, "rb") as f:
        parquet = pq.ParquetFile(f)
        row = 0
        for batch in parquet.iter_batches(batch_size=1024):
            for obj in batch.to_pylist():
                raw = json.dumps(obj, default=str, ensure_ascii=False).encode("utf-8", "replace")
                yield _fill_from_fields(source, RawRecord(uri=f"{uri}#row={row}", raw=raw), obj)
                row += 1


def read_source_file(source: SourceConfig, uri: str) -> Iterator[RawRecord]:
    """One document per file; `repo` is the top folder under the source's root (or the root's name)."""
    with fsspec.open(uri, "rb") as f:
        data = f.read()
    record = RawRecord(uri=uri, raw=data, repo=_repo_of(source.uri, uri), lang=_lang_of(uri))
    record.meta = {"path": _relative_path(source.uri, uri)}
    try:
        record.text = data.decode("utf-8")
    except UnicodeDecodeError:
        record.error = "binary" if b"\x00" in data[:8192] else "invalid_utf8"
    yield record


def _relative_path(root_uri: str, uri: str) -> str:
    root = fsspec.core.url_to_fs(root_uri)[1].rstrip("/")
    path = fsspec.core.url_to_fs(uri)[1]
    return posixpath.relpath(path, root) if path != root else posixpath.basename(path)


def _repo_of(root_uri: str, uri: str) -> str:
    relative = _relative_path(root_uri, uri)
    parts = relative.split("/")
    if len(parts) > 1:
        return parts[0]
    return posixpath.basename(fsspec.core.url_to_fs(root_uri)[1].rstrip("/"))


def _lang_of(uri: str) -> str | None:
    return LANG_BY_EXTENSION.get(posixpath.splitext(uri)[1].lower())


def write_parquet(table: pa.Table, uri: str) -> None:
    """Write one Parquet file to any fsspec URI (for datasets made outside Spark: samples, tests)."""
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f:
        pq.write_table(table, f, compression="zstd")
