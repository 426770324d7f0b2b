"""The files of each `[[sources]]` entry with their size and version stamp, listed before any engine starts.

`rnj run` and the jobs' entry points call `check_sources` before starting Spark, so a missing path or an
empty source fails in a second with the source's name and URI instead of after the JVM start. The ingest
job hashes the same listing into its input hash: new bytes under an old name (another size, modification
time, generation or etag) make the committed output stale.

A source that yields nothing (no match, an empty folder, only empty files) is an error unless the source
says `optional = true`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import fsspec

from pipeline.config import BuildConfig, SourceConfig
from pipeline.errors import UserError
from pipeline.io.readers import is_source_file

VERSION_KEYS = ("generation", "etag", "ETag", "VersionId", "md5Hash", "mtime", "LastModified", "updated", "created")
"""fsspec `info()` keys that change when a file's bytes change, in order of preference: object stores'
generation or etag (gcsfs, s3fs), else a modification time (local, memory, most others)."""


@dataclass(frozen=True)
class SourceFile:
    uri: str
    size: int
    version: str
    """The first of VERSION_KEYS the filesystem reports, as text ('' when it reports none)."""


def file_version(info: dict) -> str:
    for key in VERSION_KEYS:
        if info.get(key) not in (None, ""):
            return f"{key}={info[key]}"
    return ""


def list_source(source: SourceConfig, where: str = "") -> list[SourceFile]:
    """Every file of `source` that ingest reads, sorted by URI. Raises UserError when the source yields
    nothing (the path is missing, the glob matches nothing, or every file is empty), unless it is optional."""
    fs, path = fsspec.core.url_to_fs(source.uri)
    if any(ch in path for ch in "*?["):
        found = {p: fs.info(p) for p in fs.glob(path)}
        found = {p: i for p, i in found.items() if i.get("type") != "directory"}
    elif fs.isdir(path):
        found = fs.find(path, detail=True)
    elif fs.exists(path):
        found = {path: fs.info(path)}
    else:
        found = {}
    files = sorted((SourceFile(fs.unstrip_protocol(p), int(info.get("size") or 0), file_version(info))
                    for p, info in found.items() if is_source_file(source, p)), key=lambda f: f.uri)
    if not source.optional:
        _check_not_empty(source, files, found, where)
    return files


def _check_not_empty(source: SourceConfig, files: list[SourceFile], found: dict, where: str) -> None:
    at = f" ({where})" if where else ""
    fix = "fix its uri, or mark the source `optional = true` if it may be empty"
    if not found:
        raise UserError(f"source {source.name!r}{at}: nothing found at {source.uri}: {fix}")
    if not files:
        kind = {"jsonl": "JSON Lines (.jsonl, .json, .ndjson, maybe .gz/.zst)", "parquet": ".parquet"}.get(
            source.format, f"files matching include = {list(source.include)}")
        raise UserError(f"source {source.name!r}{at}: {len(found)} file(s) at {source.uri} but none is "
                        f"{kind}: {fix}")
    if not any(f.size for f in files):
        raise UserError(f"source {source.name!r}{at}: every file at {source.uri} is empty ({len(files)} "
                        f"file(s), 0 bytes): {fix}")


def check_sources(cfg: BuildConfig) -> dict[str, list[SourceFile]]:
    """Each source's files (source name -> files), failing on the first that yields nothing."""
    return {source.name: list_source(source, cfg.path) for source in cfg.sources}


def listing_digest(listing: dict[str, list[SourceFile]]) -> str:
    """Hash of every file's name, size and version: part of the ingest job's input hash."""
    digest = hashlib.sha256()
    for name in sorted(listing):
        for f in listing[name]:
            digest.update(f"{name}\t{f.uri}\t{f.size}\t{f.version}\n".encode())
    return digest.hexdigest()

