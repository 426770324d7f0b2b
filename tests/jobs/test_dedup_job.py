"""The dedup job on Spark: the quality bar on a planted set, partition independence, the graph steps,
and the whole job's outputs on the sample corpus."""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict

import pyarrow.parquet as pq
import pytest

from pipeline.dedup.config import DedupConfig
from pipeline.documents import DOCUMENT_SCHEMA, documents_table

pytestmark = pytest.mark.spark

THRESHOLD = 0.8


def _prose_chunks(sample_corpus, words: int = 200) -> list[str]:
    """Real prose of the sample, cut into windows of `words` words (READMEs give several each)."""
    with gzip.open(sample_corpus / "prose" / "docstrings.jsonl.gz", "rt") as f:
        texts = [json.loads(line)["text"] for line in f]
    texts += [json.loads(line)["text"] for line in (sample_corpus / "prose" / "docs.jsonl").read_text().splitlines()]
    chunks = []
    for text in texts:
        tokens = text.split()
        chunks += [" ".join(tokens[i: i + words]) for i in range(0, len(tokens) - 120 + 1, words)]
    return chunks


@pytest.fixture(scope="module")
def planted(sample_corpus):
    from pipeline.dedup.planted import build_planted

    return build_planted(_prose_chunks(sample_corpus), groups=30, copies=3, distinct=80, seed=0)


def _frame(spark, rows, partitions):
    table = documents_table([{"source": "planted", "domain": "general", "lang": "en", **r} for r in rows])
    return spark.createDataFrame(table).repartition(partitions)


def _run(spark, rows, partitions, cfg=None):
    from jobs.dedup import dedup_documents

    result = dedup_documents(spark, _frame(spark, rows, partitions), cfg or DedupConfig())
    try:
        outcomes = sorted((r["id"], r["reason"]) for r in result.outcomes.collect())
        clusters = sorted(tuple(r) for r in result.clusters.collect())
        survivors = sorted((r["id"], r["text"]) for r in result.survivors.collect())
        return outcomes, clusters, survivors, result.report
    finally:
        result.release()


def test_planted_quality_bar_and_partition_independence(spark, planted):
    from dataclasses import replace

    distributed = replace(DedupConfig(), near=replace(DedupConfig().near, driver_max_edges=0))
    judged_distributed = replace(DedupConfig(), near=replace(DedupConfig().near, driver_max_members=0))
    runs = {p: _run(spark, planted.docs, p) for p in (1, 8)}
    runs["distributed"] = _run(spark, planted.docs, 3, distributed)
    runs["judged distributed"] = _run(spark, planted.docs, 3, judged_distributed)
    outcomes, clusters, survivors, report = runs[1]
    for p in (8, "distributed", "judged distributed"):
        assert runs[p][:3] == (outcomes, clusters, survivors), f"{p} partitions changed the output"
        assert runs[p][3] == report or p == "distributed"
    assert runs["distributed"][3]["rounds"]["near"]["components"] == "distributed"

    import pyarrow as pa

    from pipeline.dedup.local import dedup_batch

    local = dedup_batch(pa.RecordBatch.from_pylist([{**d, "domain": "general"} for d in planted.docs]),
                        DedupConfig()).to_pylist()
    assert sorted((r["id"], r["reason"]) for r in local) == outcomes, "the engine-free path disagrees"

    cluster_of = {doc_id: cluster for doc_id, cluster, _, _ in clusters}
    kept = {doc_id for doc_id, reason in outcomes if reason is None}

    def merged(a, b):
        return a in cluster_of and cluster_of.get(a) == cluster_of.get(b)

    positives = [(a, b) for a, b, j in planted.pairs if j >= THRESHOLD + 0.05]
    negatives = [(a, b) for a, b, j in planted.pairs if j <= THRESHOLD - 0.1]
    assert len(positives) >= 80 and len(negatives) >= 30
    recall = sum(merged(a, b) for a, b in positives) / len(positives)
    assert recall >= 0.95, recall
    assert not [pair for pair in negatives if merged(*pair)]

    one_survivor = sum(sum(m in kept for m in group) == 1 for group in planted.groups) / len(planted.groups)
    assert one_survivor >= 0.95, one_survivor
    lonely = planted.distinct + planted.far
    precision = sum(d not in cluster_of and d in kept for d in lonely) / len(lonely)
    assert precision >= 0.98, precision


def test_exact_copies_keep_the_longest_then_smallest_id(spark):
    text = "Some document text that is long enough to be shingled into several five word grams here."
    rows = [{"id": "b", "text": text}, {"id": "a", "text": text.upper()}, {"id": "c", "text": text.replace(" ", "\n", 1)},
            {"id": "z", "text": "A different document altogether, sharing nothing at all with the others."}]
    outcomes, clusters, _, report = _run(spark, rows, 2)
    assert dict(outcomes) == {"a": None, "b": "exact_duplicate", "c": "exact_duplicate", "z": None}
    assert clusters == [("a", "a", "exact", True), ("b", "a", "exact", False), ("c", "a", "exact", False)]
    assert report["rounds"]["exact"]["cluster_sizes"] == {"3-4": 1}


def test_connected_components_of_chains_and_stars(spark):
    from jobs.dedup import connected_components

    edges = [("b", "a"), ("c", "b"), ("d", "c"), ("e", "d"), ("y", "x"), ("q", "p"), ("r", "p"), ("s", "r")]
    frame = spark.createDataFrame(edges, "a string, b string")
    components, iterations = connected_components(frame)
    assert iterations >= 1
    roots = {r["id"]: r["root"] for r in components.collect()}
    assert roots == {"a": "a", "b": "a", "c": "a", "d": "a", "e": "a", "x": "x", "y": "x",
                     "p": "p", "q": "p", "r": "p", "s": "p"}


def test_a_huge_bucket_is_split_and_gives_linear_candidate_pairs(spark):
    import numpy as np
    import pyarrow as pa

    from jobs.dedup import candidate_pairs
    from pipeline.dedup import corpus_rounds
    from pipeline.dedup.features import id_hashes

    n = 3000
    ids = [f"doc{i:05d}" for i in range(n)]
    hashes = id_hashes(pa.array(ids)).tolist()
    rows = [(doc, h, [7, i]) for i, (doc, h) in enumerate(zip(ids, hashes))]  # band 0 shared by all, band 1 unique
    feats = spark.createDataFrame(rows, "id string, id_hash long, bands array<long>")
    whole, none = candidate_pairs(feats, 10_000)
    assert whole.count() == n - 1 and none.count() == 0
    assert {r["b"] for r in whole.select("b").distinct().collect()} == {"doc00000"}
    pairs, split = candidate_pairs(feats, 500)
    assert pairs.count() == n - 1
    assert [(r["size"], r["root"]) for r in split.collect()] == [(n, "doc00000")]
    per_root = pairs.groupBy("b").count().collect()
    assert max(r["count"] for r in per_root) < 800  # no root receives the whole bucket
    edges = [(r["a"], r["b"]) for r in pairs.collect()]
    parent = dict(edges)
    assert all(_root(parent, a) == "doc00000" for a, _ in edges)  # still one component
    # the driver plan's pairs (positions in id order) split the bucket alike
    bands = pa.chunked_array([pa.array([r[2] for r in rows], pa.list_(pa.int64()))])
    a, b, giant = corpus_rounds.candidate_pairs(bands, np.arange(n), np.asarray(hashes), 500)
    assert sorted(zip(np.array(ids)[a].tolist(), np.array(ids)[b].tolist())) == sorted(edges)
    assert [(band, size, ids[root]) for band, size, root, _ in giant] == [(0, n, "doc00000")]


def test_sorted_streams_merge_into_one_sorted_stream():
    import random

    import pyarrow as pa

    from jobs.dedup import merged_by_id

    rng = random.Random(3)
    schema = pa.schema([("id", pa.string()), ("stream", pa.int64())])
    streams, everything = [], []
    for stream in range(3):
        ids = sorted(f"doc{rng.randrange(500):03d}" for _ in range(rng.choice([0, 40, 300])))
        cuts = sorted(rng.sample(range(len(ids) + 1), min(4, len(ids) + 1)))
        streams.append([pa.RecordBatch.from_pydict({"id": ids[a:b], "stream": [stream] * (b - a)}, schema=schema)
                        for a, b in zip([0, *cuts], [*cuts, len(ids)])])
        everything += [(i, stream) for i in ids]
    merged = [(r["id"], r["stream"]) for b in merged_by_id(streams, schema) for r in b.to_pylist()]
    assert merged == sorted(everything)  # by id, and on equal ids the earlier stream first


def _root(parent: dict, node: str) -> str:
    while node in parent:
        node = parent[node]
    return node


def _commit_ingest(root, rows):
    """A committed ingest output holding `rows`, without running the ingest job."""
    from pipeline.commit import JobOutput
    from pipeline.ledger import Ledger

    output = JobOutput(str(root), "ingest")
    tmp = output.begin()
    path = tmp.replace("file://", "") + "/documents"
    import os

    os.makedirs(path)
    pq.write_table(documents_table(rows), f"{path}/part-00000.parquet")
    ledger = Ledger(job="ingest")
    for source, count in Counter(r["source"] for r in rows).items():
        ledger.add(source, "written", None, count)
    output.commit(tmp, "test", ledger)


def _near_copies(sample_corpus, copies: int) -> list[dict]:
    """`copies` variants of one long prose text, each with one word changed (all near-duplicates of each
    other: one band bucket and one cluster larger than the test's limits), an exact copy of the first,
    and quality signals in meta (numbers, NaN, none), so that the survivors depend on them."""
    words = max(_prose_chunks(sample_corpus, words=400), key=len).split()
    qualities = ["0.5", " 0.9 ", "NaN", None, "2e-1", "0.9", "x", None]
    rows = []
    for i in range(copies):
        varied = list(words)
        varied[40 + 37 * i] = f"variant{i}"
        meta = {"quality": qualities[i % len(qualities)]} if qualities[i % len(qualities)] is not None else None
        rows.append({"id": f"prose/near{i}", "text": " ".join(varied), "source": "prose", "domain": "general",
                     "meta": meta})
    rows.append({**rows[0], "id": "prose/near0-copy", "text": rows[0]["text"].replace(" ", "  ", 3), "meta": None})
    rows.append({**rows[2], "id": "prose/near2-copy", "meta": None})  # quality NaN vs none: none sorts first
    return rows


def _without_plan(files: dict) -> dict:
    """The job's outputs with the report's plan lines (which plan ran, and why) taken out."""
    lines = files["report.json"].split(b"\n")
    assert lines[1] in (b'  "plan": "driver",', b'  "plan": "distributed",')
    kept = [line for line in lines if not line.startswith((b'  "plan": ', b'  "plan_reason": '))]
    return {**files, "report.json": b"\n".join(kept)}


def test_dedup_job_on_the_sample(spark, sample_corpus, tmp_path):
    import zstandard

    from jobs.dedup import run
    from pipeline.config import load_build

    raw = zstandard.ZstdDecompressor().decompressobj().decompress(
        (sample_corpus / "math" / "problems.jsonl.zst").read_bytes())
    math = [json.loads(line) for line in raw.decode().splitlines()]
    rows = [{"id": m["id"], "text": m["text"], "source": "math", "domain": "math", "lang": "en",
             "meta": {"level": str(m["level"])}} for m in math]
    banner = "# Copyright (c) Example Corp. All rights reserved. Licensed under the MIT licence."
    code = sorted((sample_corpus / "code").rglob("*.py"))[:40]
    rows += [{"id": f"code/{i}", "text": f"{banner}\n{p.read_text()}", "source": "code", "domain": "code"}
             for i, p in enumerate(code)]
    rows.append({"id": "code/copy", "text": rows[-1]["text"] + "\n\n", "source": "code", "domain": "code"})
    rows.append({"id": "code/banner-only", "text": f"{banner}\nx = 1\n", "source": "code", "domain": "code"})
    rows += _near_copies(sample_corpus, copies=9)
    _commit_ingest(tmp_path / "build", rows)
    config = tmp_path / "build.toml"
    config.write_text(f"""
[build]
name = "t"
output = "build"
output_files = 2
[[sources]]
name = "math"
uri = "{sample_corpus}/math/problems.jsonl.zst"
format = "jsonl"
[dedup.near]
max_bucket_size = 4
[dedup.survivor]
max_exact_members = 5
[dedup.decontaminate]
eval_paths = ["{sample_corpus}/eval/math_heldout.jsonl", "{sample_corpus}/eval/code_tasks.jsonl"]
""")
    cfg = load_build(str(config))
    result = run(spark, cfg)
    ledger = result.ledger
    assert ledger.read == len(rows) and ledger.written + sum(ledger.dropped.values()) == len(rows)
    assert ledger.dropped["exact_duplicate"] >= 1
    assert ledger.dropped["boilerplate_too_short"] == 1
    assert ledger.dropped["contaminated"] >= 1

    out = tmp_path / "build" / "dedup"
    survivors = pq.read_table(out / "documents")
    assert survivors.schema.names == DOCUMENT_SCHEMA.names
    by_id = dict(zip(survivors["id"].to_pylist(), survivors["text"].to_pylist()))
    assert not [i for i in by_id if i.startswith("math/leak/")], "leaked held-out problems survived"
    assert "code/banner-only" not in by_id
    assert not any(banner in t for t in by_id.values()), "the repeated banner was not removed"
    clusters = pq.read_table(out / "clusters")
    assert clusters.schema.names == ["id", "cluster_id", "round", "kept"]
    groups = defaultdict(list)
    for r in clusters.to_pylist():
        groups[r["cluster_id"]].append(r["kept"])
    assert all(sum(kept) == 1 for kept in groups.values())
    report = json.loads((out / "report.json").read_text())
    assert report["plan"] == "distributed" and "not laid out by id" in report["plan_reason"]
    assert list(report["rounds"]) == ["exact", "near", "boilerplate", "decontaminate"]
    near = report["rounds"]["near"]
    assert near["split_buckets"]["largest"] and near["split_buckets"]["largest"][0]["size"] > 4
    assert max(int(size) for size in near["cluster_size_counts"]) > 5, "no cluster large enough to be sampled"
    assert sum(i.startswith("prose/near") for i in by_id) < 4
    assert report["rounds"]["boilerplate"]["top_lines"][0]["line"] == banner
    assert report["rounds"]["decontaminate"]["dropped"] == ledger.dropped["contaminated"]
    assert run(spark, cfg).skipped

    # The ingest table as the ingest job lays it out: the driver plan runs (features in one pass, the rounds
    # on the driver, the survivors rewritten part to part with no shuffle of the text) and writes the same
    # bytes as the distributed plan's shuffled path wrote for the hand-written table.
    from jobs.common import hash_bucketed_parts, write_parquet_table
    from pipeline.commit import JobOutput

    shuffled = _files(out)
    ingest_docs = JobOutput(cfg.build.output, "ingest").child("documents")
    assert hash_bucketed_parts(ingest_docs, cfg.build.output_files) is None
    write_parquet_table(spark.read.parquet(ingest_docs).localCheckpoint(), ingest_docs, cfg.build.output_files)
    assert hash_bucketed_parts(ingest_docs, cfg.build.output_files) is not None
    again = run(spark, cfg, force=True)
    assert json.loads((out / "report.json").read_text())["plan"] == "driver"
    driver = _without_plan(_files(out))
    assert driver.keys() == shuffled.keys()
    distributed = _without_plan(shuffled)
    import difflib

    assert driver["report.json"] == distributed["report.json"], "\n".join(difflib.unified_diff(
        distributed["report.json"].decode().splitlines(), driver["report.json"].decode().splitlines(), lineterm=""))
    assert [name for name in shuffled if driver[name] != distributed[name]] == []
    assert again.ledger.by_source == ledger.by_source

    # The distributed plan on the same layout (driver plan off) rewrites part to part: the same bytes again.
    config.write_text(config.read_text().replace("[dedup.near]", "[dedup]\ndriver_max_documents = 0\n[dedup.near]"))
    run(spark, load_build(str(config)), force=True)
    assert "driver_max_documents is 0" in json.loads((out / "report.json").read_text())["plan_reason"]
    assert _without_plan(_files(out)) == distributed


def _files(folder) -> dict:
    """{relative path: bytes} of a job's outputs (the commit marker aside)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("_SUCCESS",) and not p.name.startswith(".")}
