"""Ingest: raw records to documents, or to the quarantine with a reason.

`ingest_file` is what a Spark task runs for one input file. Its rows carry a `status` (`ok` or
`quarantined`) and a `reason`; the job splits them into the documents and quarantine tables and counts
them into the ledger. Duplicate ids are resolved later, across all files, by `resolve_duplicate_ids`' rule.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from pipeline.config import IngestConfig, SourceConfig
from pipeline.documents import DOCUMENT_SCHEMA, content_hash, derived_id
from pipeline.io.readers import RawRecord, read_records
from pipeline.text import control_fraction, normalize_text

OK = "ok"
QUARANTINED = "quarantined"

INGEST_SCHEMA = pa.schema(
    list(DOCUMENT_SCHEMA)
    + [
        pa.field("status", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("raw", pa.binary()),
        pa.field("content_hash", pa.string()),
    ]
)

QUARANTINE_REASONS = (
    "malformed_json", "invalid_utf8", "missing_text", "text_not_string", "oversized", "binary", "empty",
    "unreadable_file",
)


def validate(record: RawRecord, cfg: IngestConfig) -> tuple[str | None, str | None]:
    """(normalised text, None) for a good record, else (None, quarantine reason)."""
    if len(record.raw) > cfg.max_doc_bytes:
        return None, "oversized"
    if record.error:
        return None, record.error
    text = record.text or ""
    if text.isascii():  # most documents: a C-speed path with exactly the general path's result
        data = text.encode("ascii")
        controls = (len(data) - len(data.translate(None, _ASCII_BINARY_CONTROLS))) / len(data) if data else 0.0
        if controls + data.count(0) / max(len(data), 1) > cfg.max_control_fraction:
            return None, "binary"
        text = _normalize_ascii(text)
    else:
        if control_fraction(text) + text.count("\x00") / max(len(text), 1) > cfg.max_control_fraction:
            return None, "binary"
        text = normalize_text(text)
    if not text.strip():
        return None, "empty"
    return text, None


_ASCII_BINARY_CONTROLS = bytes([*range(0x01, 0x09), *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F])
"""pipeline.text's binary controls, as bytes (tests/pipeline/test_readers_and_ingest.py checks they agree)."""


def _normalize_ascii(text: str) -> str:
    """normalize_text for ASCII text: of its invalid characters only NUL can occur, and ASCII is NFC."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def ingest_records(source: SourceConfig, records, cfg: IngestConfig) -> Iterator[dict]:
    """Rows of INGEST_SCHEMA for the records of one source."""
    for record in records:
        text, reason = validate(record, cfg)
        meta = {"license": source.license, **source.meta, **record.meta}
        row = {
            "source": source.name,
            "domain": source.domain,
            "uri": record.uri,
            "repo": record.repo,
            "lang": record.lang or source.lang,
            "meta": meta,
        }
        if reason is None:
            digest = content_hash(text)
            row.update(
                id=record.doc_id or derived_id(source.name, text), text=text, status=OK, reason=None,
                raw=None, content_hash=digest,
            )
        else:
            raw = record.raw[: cfg.quarantine_raw_bytes]
            row.update(
                id=record.doc_id or f"{source.name}/quarantine/{content_hash(record.uri)[:16]}", text="",
                status=QUARANTINED, reason=reason, raw=raw, content_hash=None,
            )
        yield row


def ingest_file(source: SourceConfig, uri: str, cfg: IngestConfig, batch_rows: int = 256):
    """RecordBatches of INGEST_SCHEMA for one file; an unreadable file becomes one quarantined row."""
    rows: list[dict] = []
    try:
        for row in ingest_records(source, read_records(source, uri), cfg):
            rows.append(row)
            if len(rows) >= batch_rows:
                yield rows_to_batch(rows)
                rows = []
    except Exception as err:  # noqa: BLE001 -- a corrupt gzip/zstd stream or truncated parquet is data, not a bug
        broken = RawRecord(uri=uri, raw=repr(err).encode(), error="unreadable_file")
        rows.extend(ingest_records(source, [broken], cfg))
    if rows:
        yield rows_to_batch(rows)


def rows_to_batch(rows: list[dict]) -> pa.RecordBatch:
    columns = {name: [row.get(name) for row in rows] for name in INGEST_SCHEMA.names}
    columns["meta"] = [sorted(m.items()) for m in columns["meta"]]
    return pa.RecordBatch.from_pydict(columns, schema=INGEST_SCHEMA)


def resolve_duplicate_ids(rows: list[dict]) -> list[dict]:
    """The rule the Spark job applies with a window, in plain Python (for tests and small inputs).

    Among good documents sharing an id, the one with the smallest (content_hash, uri) keeps it; the n-th
    other becomes `id~n`. The order does not depend on how the input was split into files or partitions.
    """
    by_id: dict[str, list[dict]] = {}
    for row in rows:
        if row["status"] == OK:
            by_id.setdefault(row["id"], []).append(row)
    for group in by_id.values():
        group.sort(key=lambda r: (r["content_hash"], r["uri"]))
        for n, row in enumerate(group[1:], start=1):
            row["id"] = f"{row['id']}~{n}"
    return rows
