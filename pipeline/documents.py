"""The document: one Arrow schema shared by every stage of the build.

| column   | type                | meaning                                                                  |
|----------|---------------------|--------------------------------------------------------------------------|
| `id`     | string              | stable id: the input's own, else `SOURCE/` + 16 hex digits of sha256(text) |
| `text`   | string              | normalised text (NFC, `\\n` newlines, no NUL or invalid code points)       |
| `source` | string              | name of the `[[sources]]` entry it came from                             |
| `domain` | string, nullable    | code, math, science, general or trace; null until graded (hint at ingest) |
| `uri`    | string              | file it was read from (with `#line` or `#row` for records inside a file)  |
| `repo`   | string, nullable    | repository or package a source file belongs to                           |
| `lang`   | string, nullable    | programming language (python, c, ...) or natural language (en)           |
| `meta`   | map<string, string> | anything else the input carried, as strings                              |

Later stages append columns (quality, difficulty, tokens ...) and keep these as they are.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

DOMAINS = ("code", "math", "science", "general", "trace")

DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("domain", pa.string()),
        pa.field("uri", pa.string()),
        pa.field("repo", pa.string()),
        pa.field("lang", pa.string()),
        pa.field("meta", pa.map_(pa.string(), pa.string())),
    ]
)

DOCUMENT_COLUMNS = tuple(DOCUMENT_SCHEMA.names)


def content_hash(text: str) -> str:
    """Hex sha256 of the UTF-8 text: the content part of derived ids."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def derived_id(source: str, text: str) -> str:
    """The id of a document whose input carried none: source plus a content hash."""
    return f"{source}/{content_hash(text)[:16]}"


def documents_table(rows: list[dict]) -> pa.Table:
    """A table in DOCUMENT_SCHEMA from plain dicts (missing optional columns become null)."""
    columns = {name: [row.get(name) for row in rows] for name in DOCUMENT_COLUMNS}
    columns["meta"] = [list((row.get("meta") or {}).items()) for row in rows]
    return pa.table(columns, schema=DOCUMENT_SCHEMA)
