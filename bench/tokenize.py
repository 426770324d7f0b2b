"""Benchmark: the tokenize job's encoding throughput against raw `Tokenizer.encode_batch`, same documents.

    .venv/bin/python bench/tokenize.py [--documents DIR] [--cores N] [--vocab-size 4096] [--tokenizer FILE]

Documents default to the demo's ingest output (out/demo/build/ingest/documents: run
`rnj run configs/demo.toml --until ingest` first). A tokenizer is trained on them unless --tokenizer names
one. Measured in one run, interleaved, best of --repeat after a warm-up:
  raw_encode_batch                `Tokenizer.encode_batch(texts, add_special_tokens=False)` on the driver,
                                  texts already in memory, the library's thread pool over all cores;
  raw_encode_batch_1_thread       the same on one thread (TOKENIZERS_PARALLELISM=false);
  raw_encode_batch_fast_1_thread  `encode_batch_fast` (no offsets), one thread: the reference encoder;
  pieces_1_thread                 RnjTokenizer.encode_batch_flat, `batch_documents` texts a call, one thread:
                                  what the job's tasks call (tokenizer/pieces.py: the same ids, faster);
  job                             jobs/tokenize.encode_documents on local[N] over the cached documents:
                                  Arrow batches to the Python workers, the tokenizer loaded once per task,
                                  encode, build the list column, hand it back (to Spark's `noop` sink, so
                                  storage speed does not count).
"Per core" is tokens per CPU-second of this process and all its children (the JVM and Python workers
included), read from /proc: it holds on a machine shared with other work, where wall-clock time does not.
Wall-clock seconds are printed too. Overhead = job CPU per token / baseline CPU per token - 1 (target: 25%).
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    # Run as a script (`spark-submit jobs/tokenize.py`, `python bench/tokenize.py`): this file's folder
    # heads sys.path and this file would shadow the standard library's `tokenize` module.
    sys.path.pop(0)

import argparse
import json
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow.parquet as pq

from bench.proctree import tree_cpu_seconds
from pipeline.config import TokenizerConfig


def measure(run) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process tree, tokens) of one call."""
    cpu, wall = tree_cpu_seconds(), time.perf_counter()
    tokens = run()
    return time.perf_counter() - wall, tree_cpu_seconds() - cpu, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", default="out/demo/build/ingest/documents")
    parser.add_argument("--tokenizer", default=None, help="tokenizer.json to use instead of training one")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from jobs.spark import get_spark
    from jobs.tokenize import encode_documents
    from tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

    table = pq.read_table(args.documents, columns=["text"])
    texts = table.column("text").to_pylist()
    size = sum(len(t.encode("utf-8")) for t in texts)
    cfg = TokenizerConfig(vocab_size=args.vocab_size, sample_bytes=size)
    folder = tempfile.mkdtemp(prefix="bench-tokenizer-")
    if args.tokenizer:
        tok = load_tokenizer(args.tokenizer, cfg)
        uri = args.tokenizer
    else:
        start = time.perf_counter()
        save_tokenizer(train_tokenizer(texts, cfg), folder, cfg)
        print(f"trained a {args.vocab_size} vocabulary on {size / 1e6:.1f} MB in {time.perf_counter() - start:.1f}s")
        uri = folder
        tok = load_tokenizer(uri, cfg)
    raw_tokenizer = tok.tokenizer

    def raw() -> int:
        return sum(len(e.ids) for e in raw_tokenizer.encode_batch(texts, add_special_tokens=False))

    def raw_fast() -> int:
        return sum(len(e.ids) for e in raw_tokenizer.encode_batch_fast(texts, add_special_tokens=False))

    def pieces() -> int:
        step = cfg.batch_documents
        return sum(int(tok.encode_batch_flat(texts[s:s + step])[0][-1]) for s in range(0, len(texts), step))

    def one_thread(run):
        def wrapped() -> int:
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
            try:
                return run()
            finally:
                del os.environ["TOKENIZERS_PARALLELISM"]
        return wrapped

    spark = get_spark(f"local[{args.cores}]", app_name="bench-tokenize", ui=False)
    spark.sparkContext.setLogLevel("ERROR")
    docs = spark.read.parquet(args.documents)
    docs = docs.repartition(max(args.cores * 2, docs.rdd.getNumPartitions())).cache()
    docs.count()

    def job() -> int:
        encode_documents(docs, uri, tok.sha256, cfg).write.format("noop").mode("overwrite").save()
        return expected

    expected = raw()
    check = encode_documents(docs, uri, tok.sha256, cfg).selectExpr("sum(num_tokens)").first()[0]
    assert check == expected, f"the job counted {check} tokens, encode_batch {expected}"
    variants = {"raw_encode_batch": raw, "raw_encode_batch_1_thread": one_thread(raw),
                "raw_encode_batch_fast_1_thread": one_thread(raw_fast), "pieces_1_thread": one_thread(pieces),
                "job": job}
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeat):
        for name, run in variants.items():
            wall, cpu, tokens = measure(run)
            assert tokens == expected
            previous = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(previous[0], wall), min(previous[1], cpu))
    per_core = {name: expected / cpu for name, (_, cpu) in best.items()}
    result = {
        "documents": len(texts), "bytes": size, "tokens": expected, "cores": args.cores,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "wall_seconds": {name: round(wall, 3) for name, (wall, _) in best.items()},
        "cpu_seconds": {name: round(cpu, 3) for name, (_, cpu) in best.items()},
        "tokens_per_cpu_second": {name: round(v) for name, v in per_core.items()},
        "job_overhead_vs": {name: round(v / per_core["job"] - 1, 3) for name, v in per_core.items() if name != "job"},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
