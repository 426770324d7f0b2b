"""Tokenize job: train (or load) the tokenizer, add `tokens` and `num_tokens` to the graded documents.

    python -m jobs.tokenize --config configs/demo.toml
    spark-submit jobs/tokenize.py --config configs/demo.toml

Reads the committed `grade` documents. Unless `[tokenizer] path` names an existing tokenizer.json, draws a
training sample stratified by domain (tokenizer/sample.py), trains a byte-level BPE on the driver and
saves it. Writes `OUTPUT/tokenize/tokenizer/` (tokenizer.json, tokenizer_config.json),
`OUTPUT/tokenize/documents/` (the input columns plus `tokens` list<int32> and `num_tokens` long),
`report.json` (tokenizer sha256, special ids, sample make-up, bytes per token by domain on held-out
documents) and `_LEDGER.json`. Tasks load the tokenizer once each from the output folder, by path.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    # Run as a script (`spark-submit jobs/tokenize.py`, `python bench/tokenize.py`): this file's folder
    # heads sys.path and this file would shadow the standard library's `tokenize` module.
    sys.path.pop(0)

import hashlib
import json
import posixpath

import fsspec
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

from jobs.common import (
    JobResult,
    hash_bucketed_parts,
    input_hash,
    job_main,
    map_parts,
    read_upstream_documents,
    run_job,
    upstream_jobs,
    write_parquet_table,
    write_part,
)
from pipeline.commit import JobOutput
from pipeline.config import BuildConfig, TokenizerConfig
from pipeline.ledger import Ledger
from tokenizer.encode import tokenize_batch, tokenized_schema
from tokenizer.files import (
    FOLDER,
    TOKENIZER_FILE,
    copy_tokenizer,
    load_tokenizer,
    save_tokenizer,
    sha256_bytes,
)
from tokenizer.report import NO_DOMAIN, TALLY_SCHEMA, DomainCount, bytes_per_token, merge_tallies, tally
from tokenizer.sample import KEY_HEX_DIGITS, domain_targets, sampling_probabilities
from tokenizer.specials import special_token_layout
from tokenizer.train import train_tokenizer

JOB = "tokenize"


def run(spark: SparkSession, cfg: BuildConfig, force: bool = False) -> JobResult:
    parts = [input_hash(cfg, JOB, ("tokenizer",), upstream=upstream_jobs(cfg, JOB))]
    # The table is an input beyond the section: `extra_tokens = None` follows the trace format's markers.
    parts.append(json.dumps([t.content for t in special_token_layout(cfg.tokenizer)]))
    if cfg.tokenizer.path:  # a loaded tokenizer is an input too: a changed file reruns the job
        with fsspec.open(cfg.tokenizer.path, "rb") as f:
            parts.append(sha256_bytes(f.read()))
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    return run_job(cfg, JOB, digest, lambda tmp: _tokenize(spark, cfg, tmp), force=force)


def _tokenize(spark: SparkSession, cfg: BuildConfig, tmp: str) -> Ledger:
    docs = read_upstream_documents(spark, cfg, JOB)
    folder = posixpath.join(tmp, FOLDER)
    sample: dict = {}
    if cfg.tokenizer.path:
        sha = copy_tokenizer(cfg.tokenizer.path, folder)
    else:
        trained, sample = _train_on_sample(docs, cfg.tokenizer, cfg.build.seed)
        sha = save_tokenizer(trained, folder, cfg.tokenizer)
    tokenizer_uri = posixpath.join(folder, TOKENIZER_FILE)
    tokenized = encode_documents(docs, tokenizer_uri, sha, cfg.tokenizer)
    (upstream,) = upstream_jobs(cfg, JOB)
    parts = hash_bucketed_parts(JobOutput(cfg.build.output, upstream).child("documents"), cfg.build.output_files)
    if parts is None:  # laid out otherwise (written by hand, or by an older rnj): encode, shuffle, write
        write_parquet_table(tokenized, f"{tmp}/documents", cfg.build.output_files)
        tallies = _tally_written(spark.read.parquet(f"{tmp}/documents"), cfg.build.seed, cfg.tokenizer.heldout_fraction)
    else:  # part to part, one task each: the same files, without moving a token through the JVM
        schema = to_arrow_schema(tokenized.schema)
        encoder = _part_encoder(tokenizer_uri, sha, cfg, schema, f"{tmp}/documents")
        tallies = [r.asDict() for r in map_parts(spark, parts, encoder, TALLY_SCHEMA).collect()]
    tallies = merge_tallies(tallies)
    with fsspec.open(posixpath.join(tmp, "report.json"), "w") as f:
        f.write(json.dumps(_report(tallies, cfg, folder, sha, sample), indent=2, ensure_ascii=False) + "\n")
    return _ledger(tallies, sha)


def _part_encoder(tokenizer_uri: str, sha256: str, cfg: BuildConfig, schema, out_uri: str):
    """The mapInArrow function of the part-to-part path: (part, uri) in; that part tokenized and written
    to `out_uri` under the same name; its tallies out."""
    tokenizer_cfg, files = cfg.tokenizer, cfg.build.output_files
    seed, heldout_fraction = cfg.build.seed, cfg.tokenizer.heldout_fraction

    def encode(tasks):
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one task per core already (see _encoder)
        tok = load_tokenizer(tokenizer_uri, tokenizer_cfg, expect_sha256=sha256)
        for task in tasks:
            for part, uri in zip(task.column("part").to_pylist(), task.column("uri").to_pylist()):
                tallies: list = []
                with fsspec.open(uri, "rb") as f:
                    batches = pq.ParquetFile(f).iter_batches(batch_size=tokenizer_cfg.batch_documents)
                    encoded = _encoded(tok, batches, tokenizer_cfg.batch_documents, tallies, seed, heldout_fraction)
                    write_part(out_uri, part, schema, encoded, "id", files)
                for sums in tallies:
                    yield from sums.to_batches()

    return encode


def sample_key(seed: int) -> Column:
    """tokenizer.sample.sample_key as a Spark expression: the first 52 bits of sha256("SEED:ID") in [0, 1)."""
    digest = F.sha2(F.concat(F.lit(f"{seed}:"), F.col("id")), 256)
    bits = F.conv(F.substring(digest, 1, KEY_HEX_DIGITS), 16, 10).cast("double")
    return bits / float(16**KEY_HEX_DIGITS)


def _domain() -> Column:
    return F.coalesce(F.col("domain"), F.lit(NO_DOMAIN))


def _train_on_sample(docs: DataFrame, cfg: TokenizerConfig, seed: int):
    """Train on the stratified sample, streamed to the driver in id order; returns the tokenizer and the
    sample's make-up for the report."""
    keyed = docs.select("id", "text", _domain().alias("domain"), sample_key(seed).alias("key"))
    pool = keyed.where(F.col("key") >= cfg.heldout_fraction)
    sizes = {r["domain"]: r["bytes"] for r in pool.groupBy("domain").agg(F.sum(F.octet_length("text")).alias("bytes")).collect()}
    probability = sampling_probabilities(sizes, cfg.domain_weights, cfg.sample_bytes)
    if not probability:
        raise ValueError(f"no documents of the domains in [tokenizer] domain_weights ({sorted(cfg.domain_weights)}) "
                         f"to train on; the upstream has {sorted(sizes)}")
    chances = F.create_map(*[F.lit(x) for d, p in sorted(probability.items()) for x in (d, p)])
    position = (F.col("key") - cfg.heldout_fraction) / (1 - cfg.heldout_fraction)
    chosen = pool.where(position < F.coalesce(chances[F.col("domain")], F.lit(0.0))).persist()
    try:
        made = {r["domain"]: (r["documents"], r["bytes"]) for r in chosen.groupBy("domain").agg(
            F.count("*").alias("documents"), F.sum(F.octet_length("text")).alias("bytes")).collect()}
        texts = (row["text"] for row in chosen.orderBy("id").select("text").toLocalIterator())
        trained = train_tokenizer(texts, cfg)
    finally:
        chosen.unpersist()
    targets = domain_targets(sizes, cfg.domain_weights, cfg.sample_bytes)
    summary = {
        "target_bytes": cfg.sample_bytes,
        "documents": sum(n for n, _ in made.values()),
        "bytes": sum(b for _, b in made.values()),
        "domains": {d: {"weight": cfg.domain_weights[d], "target_bytes": round(targets[d]),
                        "available_bytes": sizes[d], "probability": round(probability[d], 6),
                        "documents": made.get(d, (0, 0))[0], "bytes": made.get(d, (0, 0))[1]}
                    for d in sorted(probability)},
    }
    return trained, summary


def encode_documents(docs: DataFrame, tokenizer_uri: str, sha256: str, cfg: TokenizerConfig) -> DataFrame:
    """`docs` with `tokens` and `num_tokens`: each task loads the tokenizer from `tokenizer_uri` once."""
    schema = tokenized_schema(to_arrow_schema(docs.schema, timezone="UTC"))
    return docs.mapInArrow(_encoder(tokenizer_uri, sha256, cfg), from_arrow_schema(schema))


def _encoder(tokenizer_uri: str, sha256: str, cfg: TokenizerConfig):
    """The mapInArrow function; it closes over a path and a hash, never over a tokenizer object."""

    def encode(batches):
        # Spark already runs one task per core; the library's own thread pool on top only adds contention
        # (measured in bench/tokenize.py), so each task encodes on its one thread.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        tok = load_tokenizer(tokenizer_uri, cfg, expect_sha256=sha256)
        for batch in batches:
            yield tokenize_batch(tok, batch, cfg.batch_documents)

    return encode


def _encoded(tok, batches, batch_documents: int, tallies: list, seed: int, heldout_fraction: float):
    """`batches` tokenized; the tallies of each appended to `tallies` on the way."""
    for batch in batches:
        out = tokenize_batch(tok, batch, batch_documents)
        tallies.append(tally(out, seed, heldout_fraction))
        yield out


def _tally_written(written: DataFrame, seed: int, heldout_fraction: float) -> list[dict]:
    """TALLY_SCHEMA rows of a written table, in one Spark job."""
    heldout = (sample_key(seed) < heldout_fraction).alias("heldout")
    rows = written.groupBy("source", _domain().alias("domain"), heldout).agg(
        F.count("*").alias("documents"), F.sum(F.octet_length("text")).alias("bytes"),
        F.sum("num_tokens").alias("tokens"),
    ).collect()
    return [r.asDict() for r in rows]


def _ledger(tallies: list[dict], sha256: str) -> Ledger:
    ledger = Ledger(job=JOB)
    for source in sorted({t["source"] for t in tallies}):
        ledger.add(source, "written", None, sum(t["documents"] for t in tallies if t["source"] == source))
    ledger.extra = {"tokenizer_sha256": sha256, "tokens": int(sum(t["tokens"] for t in tallies))}
    return ledger


def _report(tallies: list[dict], cfg: BuildConfig, folder: str, sha256: str, sample: dict) -> dict:
    counts = [(t["heldout"], DomainCount(t["domain"], t["documents"], t["bytes"], t["tokens"])) for t in tallies]
    tok = load_tokenizer(folder, cfg.tokenizer, expect_sha256=sha256)
    return {
        "tokenizer": _describe(tok, cfg.tokenizer),
        "sample": sample or None,
        "heldout_fraction": cfg.tokenizer.heldout_fraction,
        "heldout": bytes_per_token(_merge([c for h, c in counts if h])),
        "all_documents": bytes_per_token(_merge([c for _, c in counts])),
    }


def _merge(counts: list[DomainCount]) -> list[DomainCount]:
    merged: dict[str, DomainCount] = {}
    for c in counts:
        m = merged.get(c.domain, DomainCount(c.domain, 0, 0, 0))
        merged[c.domain] = DomainCount(c.domain, m.documents + c.documents, m.bytes + c.bytes, m.tokens + c.tokens)
    return list(merged.values())


def _describe(tok, cfg: TokenizerConfig) -> dict:
    trained = not cfg.path
    named = {t.content: t.id for t in special_token_layout(cfg) if not t.content.startswith("<|reserved_special_token_")}
    return {
        "sha256": tok.sha256,
        "source": "trained" if trained else "loaded",
        "loaded_from": cfg.path,
        "vocab_size": tok.vocab_size,
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
        "pad_id": tok.pad_id,
        "special_ids": named if trained else {k: v for k, v in tok.special_ids.items()
                                               if not k.startswith("<|reserved_special_token_")},
    }


def main(argv: list[str] | None = None) -> None:
    job_main(JOB, __doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    # As a script (spark-submit jobs/tokenize.py) this file is `__main__`; run the importable module instead,
    # so that functions shipped to executors are pickled by reference to `jobs.tokenize`, which they can import.
    from jobs.tokenize import main as module_main

    module_main()
