import gzip
import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.config import IngestConfig, SourceConfig
from pipeline.ingest import ingest_file, resolve_duplicate_ids
from pipeline.io.readers import list_source_files, read_records

GOOD = [{"id": "a", "text": "alpha text", "topic": "x"}, {"text": "beta text", "score": 0.5}]
BAD_LINES = [
    b'{"id": "m", "text": "unterminated',  # malformed json
    b'{"id": "u", "text": "caf\xe9"}',  # invalid utf-8 (latin-1 byte)
    b'{"id": "n"}',  # missing text
    b'{"id": "s", "text": 42}',  # text is not a string
    b'[1, 2]',  # not an object
    b'{"id": "e", "text": "   \\n "}',  # empty after normalisation
    b'{"id": "b", "text": "\\u0001\\u0002\\u0003\\u0004 binary"}',  # binary control characters
    b'{"id": "o", "text": "' + b"x" * 300 + b'"}',  # oversized for the test config
]
CFG = IngestConfig(max_doc_bytes=200)


def _jsonl(records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def _rows(source, uri):
    return [row for batch in ingest_file(source, uri, CFG) for row in batch.to_pylist()]


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
def test_jsonl_plain_and_compressed(tmp_path, suffix):
    payload = _jsonl(GOOD)
    payload = {"": payload, ".gz": gzip.compress(payload), ".zst": zstandard.ZstdCompressor().compress(payload)}[suffix]
    path = tmp_path / f"d.jsonl{suffix}"
    path.write_bytes(payload)
    source = SourceConfig(name="s", uri=str(path), format="jsonl", lang="en")
    records = list(read_records(source, str(path)))
    assert [r.text for r in records] == ["alpha text", "beta text"]
    assert records[0].doc_id == "a" and records[1].doc_id is None
    assert records[1].meta == {"score": "0.5"}


def test_every_corruption_is_quarantined_with_its_reason(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(_jsonl(GOOD) + b"\n".join(BAD_LINES) + b"\n\n")
    source = SourceConfig(name="s", uri=str(path), format="jsonl")
    rows = _rows(source, str(path))
    reasons = [r["reason"] for r in rows if r["status"] == "quarantined"]
    assert reasons == ["malformed_json", "invalid_utf8", "missing_text", "text_not_string", "malformed_json",
                       "empty", "binary", "oversized"]
    assert [r["id"] for r in rows if r["status"] == "ok"] == ["a", "s/" + _hash16("beta text")]
    quarantined = [r for r in rows if r["status"] == "quarantined"]
    assert quarantined[1]["raw"] == BAD_LINES[1]
    assert all(r["uri"].startswith(str(path) + "#L") for r in rows)


def _hash16(text):
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_truncated_compressed_file_becomes_one_quarantined_row(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(_jsonl(GOOD * 50))[:60])
    source = SourceConfig(name="s", uri=str(path), format="jsonl")
    rows = _rows(source, str(path))
    assert rows[-1]["status"] == "quarantined" and rows[-1]["reason"] == "unreadable_file"


def test_parquet_reader_on_memory_filesystem():
    table = pa.table({"id": ["p1", "p2", "p3"], "text": ["one", None, "three"], "n": [1, 2, 3]})
    with fsspec.open("memory://corpus/t.parquet", "wb") as f:
        pq.write_table(table, f)
    source = SourceConfig(name="pq", uri="memory://corpus", format="parquet")
    files = list_source_files(source)
    assert files == ["memory:///corpus/t.parquet"]
    rows = _rows(source, files[0])
    assert [(r["id"], r["status"], r["reason"]) for r in rows] == [
        ("p1", "ok", None), ("pq/quarantine/" + _hash16(files[0] + "#row=1"), "quarantined", "missing_text"),
        ("p3", "ok", None)]
    assert dict(rows[0]["meta"])["n"] == "1"


def test_source_files_reader_sets_repo_lang_and_detects_binary():
    fs = fsspec.filesystem("memory")
    fs.pipe({
        "/src/pkg/__init__.py": b"from .core import run\n",
        "/src/pkg/core.py": b"def run():\n    return 1\n",
        "/src/other/README.md": b"# Other\n",
        "/src/blob.py": b"\x00\x01\x02" * 20,
        "/src/.hidden.py": b"x = 1\n",
    })
    source = SourceConfig(name="code", uri="memory://src", format="files", include=("*.py",))
    files = list_source_files(source)
    assert files == ["memory:///src/blob.py", "memory:///src/pkg/__init__.py", "memory:///src/pkg/core.py"]
    rows = [row for uri in files for row in _rows(source, uri)]
    by_uri = {r["uri"]: r for r in rows}
    assert by_uri["memory:///src/pkg/core.py"]["repo"] == "pkg"
    assert by_uri["memory:///src/pkg/core.py"]["lang"] == "python"
    assert dict(by_uri["memory:///src/pkg/core.py"]["meta"])["path"] == "pkg/core.py"
    assert by_uri["memory:///src/blob.py"]["reason"] == "binary"


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="source 'x'"):
        list_source_files(SourceConfig(name="x", uri=str(tmp_path / "none.jsonl"), format="jsonl"))


def test_duplicate_ids_resolve_the_same_whatever_the_order():
    rows = [
        {"id": "d", "status": "ok", "content_hash": "bb", "uri": "f#L1"},
        {"id": "d", "status": "ok", "content_hash": "aa", "uri": "f#L2"},
        {"id": "d", "status": "ok", "content_hash": "aa", "uri": "f#L3"},
    ]
    forward = resolve_duplicate_ids([dict(r) for r in rows])
    backward = resolve_duplicate_ids([dict(r) for r in reversed(rows)])
    as_map = lambda rs: {r["uri"]: r["id"] for r in rs}
    assert as_map(forward) == as_map(backward) == {"f#L2": "d", "f#L3": "d~1", "f#L1": "d~2"}


def test_ascii_path_of_validate_agrees_with_the_general_one():
    """validate's fast path for ASCII text gives exactly normalize_text's text and control_fraction's verdict."""
    import random

    from pipeline.ingest import _normalize_ascii, validate
    from pipeline.io.readers import RawRecord
    from pipeline.text import control_fraction, normalize_text

    rng = random.Random(7)
    alphabet = "ab \n\t\r\x00\x01\x08\x09\x0b\x0c\x0e\x1a\x1b\x1c\x1f\x7f~"
    texts = ["", "\r\n\r\r\n", "\x00", "plain text\n"] + [
        "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40))) for _ in range(3000)]
    for cfg in (IngestConfig(max_control_fraction=0.0), IngestConfig(max_control_fraction=0.05),
                IngestConfig(max_control_fraction=0.3)):
        for text in texts:
            assert text.isascii()
            assert _normalize_ascii(text) == normalize_text(text)
            binary = control_fraction(text) + text.count("\x00") / max(len(text), 1) > cfg.max_control_fraction
            got = validate(RawRecord(uri="u", raw=text.encode(), text=text), cfg)
            assert (got[1] == "binary") == binary, repr(text)
            if not binary:
                expected = normalize_text(text)
                assert got == ((expected, None) if expected.strip() else (None, "empty"))
