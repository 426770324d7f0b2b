import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from jobs import tokenize
from jobs.common import hash_bucketed_parts, write_parquet_table
from pipeline.commit import JobOutput
from pipeline.config import load_build
from pipeline.traces.format import SOURCE
from rnj.tokenizer_cmd import tokenizer_group
from tests.tokenizer.corpus import commit_fake_grade, sample_documents
from tokenizer import load_committed_tokenizer, load_tokenizer
from tokenizer.sample import sample_key

pytestmark = pytest.mark.spark

BUILD = """
[build]
name = "t"
output = "out"
output_files = 2
seed = 5

[[sources]]
name = "unused"
uri = "nothing.jsonl"
format = "jsonl"

[tokenizer]
vocab_size = 700
sample_bytes = 250_000
heldout_fraction = 0.2
num_special_tokens = 32
domain_weights = {{ code = 0.4, math = 0.2, science = 0.1, general = 0.2, trace = 0.1 }}
{extra}
"""


def write_build(folder: Path, extra: str = "") -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "build.toml"
    path.write_text(BUILD.format(extra=extra))
    return path


@pytest.fixture(scope="module")
def built(spark, sample_corpus, tmp_path_factory):
    """A committed fake `grade` output and one tokenize run over it."""
    folder = tmp_path_factory.mktemp("tokenize_build")
    cfg = load_build(str(write_build(folder)))
    docs = sample_documents(sample_corpus, max_code_files=60)
    commit_fake_grade(cfg.build.output, docs)
    result = tokenize.run(spark, cfg)
    return cfg, docs, result


def test_job_tokenizes_every_document_with_an_exact_round_trip(built):
    cfg, docs, result = built
    assert not result.skipped
    ledger = result.ledger
    assert ledger.read == ledger.written == len(docs) and not ledger.dropped
    assert ledger.by_source["traces"]["written"] == sum(d["source"] == "traces" for d in docs)
    out = JobOutput(cfg.build.output, "tokenize")
    table = pq.read_table(out.child("documents"))
    assert table.schema.field("tokens").type.value_type.bit_width == 32
    assert table.schema.field("num_tokens").type.bit_width == 64
    tok = load_committed_tokenizer(cfg)
    rows = table.select(["id", "text", "domain", "tokens", "num_tokens"]).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(d["id"] for d in docs)
    for row in rows:
        assert row["num_tokens"] == len(row["tokens"])
        assert tok.decode(row["tokens"]) == row["text"], row["id"]
    assert {r["domain"] for r in rows} == {"code", "math", "science", "general", "trace", None}
    trace = next(r for r in rows if r["domain"] == "trace")
    assert trace["tokens"][0] == tok.special_ids[SOURCE] == 710
    assert ledger.extra["tokens"] == sum(r["num_tokens"] for r in rows)


def test_tokenizer_is_committed_with_its_hash_and_ids(built):
    cfg, _, result = built
    out = Path(JobOutput(cfg.build.output, "tokenize").child("tokenizer").removeprefix("file://"))
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    sha = hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest()
    report = json.loads((out.parent / "report.json").read_text())
    assert report["tokenizer"]["sha256"] == sha == result.ledger.extra["tokenizer_sha256"]
    assert report["tokenizer"] | {"sha256": None} == {
        "sha256": None, "source": "trained", "loaded_from": None, "vocab_size": 732,
        "bos_id": 700, "eos_id": 709, "pad_id": 701, "special_ids": report["tokenizer"]["special_ids"]}
    assert report["tokenizer"]["special_ids"]["<|start_header_id|>"] == 706


def test_report_gives_bytes_per_token_by_domain_on_heldout_documents(built):
    cfg, docs, _ = built
    report = json.loads(Path(JobOutput(cfg.build.output, "tokenize").child("report.json").removeprefix("file://")).read_text())
    heldout = [d for d in docs if sample_key(d["id"], 5) < 0.2]
    assert report["heldout"]["all"]["documents"] == len(heldout)
    assert set(report["heldout"]["domains"]) == {d["domain"] or "none" for d in heldout}
    for domain, figures in report["heldout"]["domains"].items():
        assert figures["bytes"] == sum(len(d["text"].encode()) for d in heldout if (d["domain"] or "none") == domain)
        assert figures["bytes_per_token"] == round(figures["bytes"] / figures["tokens"], 4) and figures["bytes_per_token"] > 1
    sample = report["sample"]
    assert set(sample["domains"]) == {"code", "math", "science", "general", "trace"}
    assert 150_000 < sample["bytes"] < 350_000
    assert all(s["probability"] <= 1 for s in sample["domains"].values())
    code = sample["domains"]["code"]
    assert code["target_bytes"] == 100_000 and 60_000 < code["bytes"] < 160_000


def test_rerun_is_skipped(built, spark):
    cfg, _, _ = built
    assert tokenize.run(spark, cfg).skipped


def test_spark_sample_key_matches_python(spark):
    ids = [f"doc/{i}" for i in range(50)] + ["ünï/🙂"]
    got = spark.createDataFrame([(i,) for i in ids], "id string").select("id", tokenize.sample_key(5).alias("k")).collect()
    assert {r["id"]: r["k"] for r in got} == {i: sample_key(i, 5) for i in ids}


def test_job_loads_a_named_tokenizer_instead_of_training(built, spark, tmp_path):
    cfg, docs, _ = built
    trained = JobOutput(cfg.build.output, "tokenize").child("tokenizer", "tokenizer.json").removeprefix("file://")
    other = load_build(str(write_build(tmp_path, extra=f'path = "{trained}"')))
    commit_fake_grade(other.build.output, docs[::4])  # a quarter of them is enough, and quicker
    result = tokenize.run(spark, other)
    report = json.loads(Path(other.build.output, "tokenize", "report.json").read_text())
    assert report["tokenizer"]["source"] == "loaded" and report["sample"] is None
    assert report["tokenizer"]["sha256"] == load_committed_tokenizer(cfg).sha256 == result.ledger.extra["tokenizer_sha256"]
    first = spark.read.parquet(JobOutput(cfg.build.output, "tokenize").child("documents"))
    second = spark.read.parquet(JobOutput(other.build.output, "tokenize").child("documents"))
    assert second.count() == len(docs[::4])
    assert second.select("id", "tokens").exceptAll(first.select("id", "tokens")).count() == 0
    assert load_tokenizer(trained).pad_id == 701


def test_part_to_part_path_writes_the_same_bytes_as_the_shuffle(built, spark, tmp_path):
    """An upstream laid out by write_parquet_table is tokenized file to file, with no shuffle; the files,
    the ledger and the report are byte for byte those of the shuffled path (taken for a hand-written one)."""
    cfg, docs, _ = built
    trained = JobOutput(cfg.build.output, "tokenize").child("tokenizer", "tokenizer.json").removeprefix("file://")
    subset = docs[::3]
    outputs = {}
    for layout in ("by_hand", "bucketed"):
        other = load_build(str(write_build(tmp_path / layout, extra=f'path = "{trained}"')))
        commit_fake_grade(other.build.output, subset)
        grade_docs = JobOutput(other.build.output, "grade").child("documents")
        if layout == "bucketed":  # rewrite the committed grade table as the real grade job lays it out
            table = spark.read.parquet(grade_docs).localCheckpoint()
            write_parquet_table(table, grade_docs, other.build.output_files)
        assert (hash_bucketed_parts(grade_docs, other.build.output_files) is None) == (layout == "by_hand")
        result = tokenize.run(spark, other)
        folder = Path(other.build.output) / "tokenize"
        outputs[layout] = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
                           if p.is_file() and p.name != "_SUCCESS"}
        outputs[layout]["ledger"] = json.dumps(result.ledger.by_source, sort_keys=True).encode()
    assert sorted(outputs["by_hand"]) == sorted(outputs["bucketed"])
    assert [k for k in outputs["by_hand"] if outputs["by_hand"][k] != outputs["bucketed"][k]] == []
    assert sum(name.startswith("documents/part-") for name in outputs["bucketed"]) == 2


def test_cli_prints_the_report_and_encodes(built):
    cfg, _, _ = built
    runner = CliRunner()
    shown = runner.invoke(tokenizer_group, ["report", cfg.path])
    assert shown.exit_code == 0, shown.output
    assert "bytes/token" in shown.output and "trace" in shown.output
    encoded = runner.invoke(tokenizer_group, ["encode", cfg.path, "x = 42\n"])
    assert encoded.exit_code == 0, encoded.output
    assert "round trip: exact" in encoded.output
