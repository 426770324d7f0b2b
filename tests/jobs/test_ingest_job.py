import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs import ingest
from pipeline.commit import JobOutput
from pipeline.config import load_build

pytestmark = pytest.mark.spark

BAD_LINES = [b'{"text": "cut', b'{"id": "u", "text": "caf\xe9"}', b'{"id": 7}', b'{"text": ["a"]}']


def write_build(tmp_path: Path, sample_corpus: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    good = [{"id": f"w{i}", "text": f"web page number {i}\r\nwith two lines"} for i in range(20)]
    good += [{"id": "w1", "text": "a different text under a repeated id"}]
    lines = [json.dumps(r).encode() for r in good] + BAD_LINES
    (corpus / "web.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    config = tmp_path / "build.toml"
    config.write_text(f"""
[build]
name = "t"
output = "out"
output_files = 2

[[sources]]
name = "web"
uri = "corpus/web.jsonl"
format = "jsonl"
domain = "general"

[[sources]]
name = "code"
uri = "{sample_corpus}/code"
format = "files"
include = ["*.py"]

[[sources]]
name = "math"
uri = "{sample_corpus}/math/problems.jsonl.zst"
format = "jsonl"
domain = "math"
""")
    return config


def test_ingest_accounts_for_every_record(spark, tmp_path, sample_corpus):
    cfg = load_build(str(write_build(tmp_path, sample_corpus)))
    result = ingest.run(spark, cfg)
    ledger = result.ledger
    assert not result.skipped
    assert ledger.read == ledger.written + sum(ledger.quarantined.values()) + sum(ledger.dropped.values())
    assert ledger.quarantined == {"invalid_utf8": 1, "malformed_json": 1, "missing_text": 1, "text_not_string": 1}
    assert ledger.by_source["web"] == {"read": 25, "written": 21}
    code_files = list((sample_corpus / "code").rglob("*.py"))
    assert ledger.by_source["code"]["read"] == len(code_files)

    out = JobOutput(cfg.build.output, "ingest")
    docs = pq.read_table(out.child("documents")).to_pylist()
    assert len(docs) == ledger.written
    ids = [d["id"] for d in docs]
    assert len(set(ids)) == len(ids), "ids must be unique after resolution"
    assert {"w1", "w1~1"} <= set(ids)
    web0 = next(d for d in docs if d["id"] == "w0")
    assert web0["text"] == "web page number 0\nwith two lines" and web0["domain"] == "general"
    quarantine = pq.read_table(out.child("quarantine")).to_pylist()
    assert sorted(q["raw"] for q in quarantine) == sorted(BAD_LINES)
    assert json.loads(Path(out.child("_LEDGER.json").removeprefix("file://")).read_text())["read"] == ledger.read


def test_rerun_is_a_no_op_unless_forced_and_output_is_deterministic(spark, tmp_path, sample_corpus):
    cfg = load_build(str(write_build(tmp_path, sample_corpus)))
    first = ingest.run(spark, cfg)
    digest = _tree_digest(cfg.build.output + "/ingest/documents")
    assert ingest.run(spark, cfg).skipped
    previous = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "3")
    try:
        forced = ingest.run(spark, cfg, force=True)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", previous)
    assert not forced.skipped and forced.ledger.to_json() == first.ledger.to_json()
    assert _tree_digest(cfg.build.output + "/ingest/documents") == digest
    assert sorted(os.listdir(cfg.build.output + "/ingest/documents")) == ["part-00000.parquet", "part-00001.parquet"]


def _tree_digest(folder: str) -> str:
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        h.update(name.encode() + (Path(folder) / name).read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_job_killed_mid_write_leaves_nothing_committed_and_rerun_completes(spark, tmp_path, sample_corpus):
    config = write_build(tmp_path, sample_corpus)
    cfg = load_build(str(config))
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    proc = subprocess.Popen([sys.executable, "-m", "jobs.ingest", "--config", str(config), "--master", "local[1]"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    tmp_root = Path(cfg.build.output) / "_tmp"
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_root.glob("ingest-*/documents")) and proc.poll() is None:
            assert time.monotonic() < deadline, "the job never started writing"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    output = JobOutput(cfg.build.output, "ingest")
    assert output.committed_hash() is None, "a killed job must leave nothing that looks committed"
    result = ingest.run(spark, cfg)
    assert not result.skipped and output.committed_hash() is not None
    assert not list(tmp_root.glob("ingest-*")), "left-overs of the killed run are cleaned"
