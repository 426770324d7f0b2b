"""The traces job on the sample corpus: ledger accounts for every unit, tables, report, skip when committed."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import parse_build
from pipeline.documents import DOCUMENT_SCHEMA
from pipeline.traces.format import MARKERS
from tests.pipeline.traces.sandboxes import bubblewrap_usable

SAMPLE_UNITS = 12
HOSTILE = [
    {"id": "hostile/loop", "code": "def f():\n    while True:\n        pass\n", "entry_point": "f"},
    {"id": "hostile/socket", "code": "import socket\ndef f():\n    socket.socket()\n", "entry_point": "f"},
    {"id": "hostile/memory", "code": "def f():\n    return bytearray(10**12)\n", "entry_point": "f"},
    {"id": "hostile/crash", "code": "import faulthandler\nfaulthandler._sigsegv()\n"},
    {"id": "hostile/syntax", "code": "def f(:\n", "entry_point": "f"},
    {"id": "unit/0", "code": "def g():\n    return 0\n", "entry_point": "g"},
]


@pytest.fixture(scope="module")
def build(spark, sample_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("traces_build")
    extra = root / "extra.jsonl"
    extra.write_text("".join(json.dumps(r) + "\n" for r in HOSTILE) + "not json\n")
    sample = (sample_corpus / "units" / "tasks.jsonl").read_text().splitlines(keepends=True)
    (root / "units.jsonl").write_text("".join(sample[:SAMPLE_UNITS]))
    (root / "scripts").mkdir()
    (root / "scripts" / "hello.py").write_text("name = 'rnj'\nprint('hello', name)\n")
    toml = f"""
[build]
name = "traces-test"
output = "out"
output_files = 2

[[sources]]
name = "code"
uri = "{sample_corpus}/code/stdlib"
format = "files"
domain = "code"
lang = "python"
include = ["difflib.py", "fractions.py", "heapq.py", "ftplib.py", "enum.py", "abc.py"]

[traces]
enabled = true
units_uris = ["units.jsonl", "extra.jsonl"]
script_uris = ["scripts"]
max_doctests_per_document = 1
workers = 2
cpu_seconds = 1
wall_seconds = 4.0
memory_mb = 256
{"" if bubblewrap_usable() else 'sandbox = "none"'}
"""
    cfg = parse_build(toml, str(root / "build.toml"))
    from jobs import ingest, traces

    ingest.run(spark, cfg)
    return cfg, traces.run(spark, cfg), root


@pytest.mark.spark
def test_ledger_accounts_for_every_unit(build):
    _cfg, result, _ = build
    ledger = result.ledger
    assert ledger.by_source["units"]["read"] == SAMPLE_UNITS + len(HOSTILE) + 1
    assert ledger.by_source["scripts"] == {"read": 1, "written": 1}
    assert ledger.by_source["doctests"]["read"] >= 3
    assert ledger.dropped["timeout"] == 1 and ledger.dropped["memory"] == 1 and ledger.dropped["crashed"] == 1
    assert ledger.dropped["invalid_unit"] == 1 and ledger.dropped["duplicate_id"] == 1
    assert ledger.dropped["forbidden"] >= 1 and ledger.dropped["error"] >= 1
    assert ledger.by_source["units"]["written"] == SAMPLE_UNITS  # every sample unit traces
    ledger.check()
    assert ledger.extra["statuses"]["ok"] == ledger.written


@pytest.mark.spark
def test_documents_sft_and_report(build):
    _cfg, result, _ = build
    documents = pq.read_table(f"{result.uri.removeprefix('file://')}/documents")
    assert documents.schema.names == DOCUMENT_SCHEMA.names
    assert documents.num_rows == result.ledger.written
    rows = documents.to_pylist()
    assert {r["domain"] for r in rows} == {"trace"} and {r["source"] for r in rows} == {"traces"}
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(r["text"].startswith(MARKERS[0]) and "<|result|>" in r["text"] for r in rows)
    kinds = {dict(r["meta"])["unit_kind"] for r in rows}
    assert kinds == {"function", "doctest", "script"}
    sft = pq.read_table(f"{result.uri.removeprefix('file://')}/sft").to_pylist()
    assert {r["kind"] for r in sft} == {"question", "spot_error"}
    assert {r["trace_id"] for r in sft} <= {r["id"] for r in rows}
    report = json.loads(Path(result.uri.removeprefix("file://"), "report.json").read_text())
    assert sum(report["statuses"].values()) == result.ledger.read
    (layers,) = report["sandbox_layers"]
    assert "rlimits+audit-hook+empty-env+timeout-kill" in layers
    (mode,) = report["sandbox_modes"]
    assert {dict(r["meta"])["sandbox_mode"] for r in rows} == {mode}
    status = pq.read_table(f"{result.uri.removeprefix('file://')}/status").to_pylist()
    assert len(status) == result.ledger.read and len({r["id"] for r in status}) == len(status)
    assert {r["status"] for r in status} == set(report["statuses"])
    by_id = {r["id"]: r for r in status}
    assert by_id["trace/hostile/loop"]["status"] == "timeout" and by_id["trace/hostile/loop"]["seconds"] >= 1
    assert by_id["trace/hostile/socket"]["reason"].startswith("the sandbox refused: socket")
    assert all((r["sandbox_mode"] is None) == (r["status"] in ("invalid_unit", "duplicate_id", "too_large"))
               for r in status)


@pytest.mark.spark
def test_committed_output_is_skipped(spark, build):
    cfg, _, _ = build
    from jobs import traces

    assert traces.run(spark, cfg).skipped


@pytest.mark.spark
def test_a_broken_bubblewrap_fails_the_job_loudly(spark, build, tmp_path):
    import dataclasses

    from jobs import traces
    from pipeline.errors import UserError

    cfg, _, _ = build
    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    broken.chmod(0o755)
    auto = dataclasses.replace(cfg, traces=dataclasses.replace(cfg.traces, bubblewrap_binary=str(broken)))
    with pytest.raises(UserError, match="(?s)setting up uid map: Permission denied.*apt-get install bubblewrap"):
        traces.run(spark, auto, force=True)
