"""MinHash signatures/s: rnj's vectorised path against datasketch, same documents, same process, same run.

    .venv/bin/python -m bench.minhash --sample out/demo/sample
    .venv/bin/python -m bench.minhash --sample out/demo/sample --job configs/demo.toml   # + whole job

rnj is timed from raw text (normalisation and shingling included). datasketch runs `update_batch` per
document (a) on rnj's shingles already made, with its default SHA-1 hash (its shingling not counted, which
flatters it), (b) the same with rnj's shingle hash, where the signatures must be identical to ours, and
(c) from text, with the plain `re` shingling a datasketch user writes, then SHA-1.
`--job` also runs the dedup job (forced) on a build and prints its documents/s per core.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasketch import MinHash

from pipeline.dedup.minhash import compiled_signatures
from pipeline.dedup.normalize import prose_tokens
from pipeline.dedup.shingles import prose_shingles, shingle_bytes, shingle_hash32


def sample_texts(sample: Path, limit: int) -> list[str]:
    """Prose of a sample corpus (docstrings and package docs), then code files, up to `limit` documents."""
    with gzip.open(sample / "prose" / "docstrings.jsonl.gz", "rt") as f:
        texts = [json.loads(line)["text"] for line in f]
    texts += [json.loads(line)["text"] for line in (sample / "prose" / "docs.jsonl").read_text().splitlines()]
    texts += [p.read_text(errors="replace") for p in sorted((sample / "code").rglob("*.py"))]
    return texts[:limit]


def ours(texts: pa.Array, num_perm: int, seed: int, n: int) -> np.ndarray:
    """What the features pass computes: the compiled shingle and MinHash kernels over the batch's buffer."""
    sh = prose_shingles(texts, n)
    return compiled_signatures(sh.doc, sh.hash32, sh.num_docs, num_perm, seed)


def theirs(shingles: list[list[bytes]], num_perm: int, seed: int, hashfunc=None) -> np.ndarray:
    out = np.empty((len(shingles), num_perm), dtype=np.uint32)
    for i, items in enumerate(shingles):
        m = MinHash(num_perm=num_perm, seed=seed, **({"hashfunc": hashfunc} if hashfunc else {}))
        m.update_batch(items)
        out[i] = m.hashvalues
    return out


_WORD = re.compile(r"[^\W_]+")


def python_shingles(texts: list[str], n: int) -> list[list[bytes]]:
    """What a datasketch user writes: lowercase words with `re`, n-grams joined by spaces, encoded."""
    out = []
    for text in texts:
        words = _WORD.findall(text.lower())
        grams = [" ".join(words[i: i + n]) for i in range(max(len(words) - n + 1, 1))] if words else []
        out.append([g.encode() for g in grams])
    return out


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_signatures(texts: list[str], num_perm: int, seed: int, n: int, repeats: int) -> dict:
    array = pa.array(texts, pa.string())
    shingles = shingle_bytes(prose_tokens(array), n)
    total = sum(len(s) for s in shingles)
    t_ours, sig_ours = best_of(lambda: ours(array, num_perm, seed, n), repeats)
    t_sha1, _ = best_of(lambda: theirs(shingles, num_perm, seed), repeats)
    t_same, sig_same = best_of(lambda: theirs(shingles, num_perm, seed, shingle_hash32), 1)
    t_text, _ = best_of(lambda: theirs(python_shingles(texts, n), num_perm, seed), repeats)
    identical = bool(np.array_equal(sig_ours, sig_same))
    docs = len(texts)
    return {
        "documents": docs, "megabytes": round(sum(len(t.encode()) for t in texts) / 1e6, 2), "shingles": total,
        "num_perm": num_perm, "ngram": n,
        "ours_docs_per_s": round(docs / t_ours), "datasketch_sha1_docs_per_s": round(docs / t_sha1),
        "datasketch_same_hash_docs_per_s": round(docs / t_same),
        "datasketch_from_text_docs_per_s": round(docs / t_text),
        "ratio_vs_sha1": round(t_sha1 / t_ours, 1), "ratio_vs_same_hash": round(t_same / t_ours, 1),
        "ratio_vs_from_text": round(t_text / t_ours, 1),
        "identical_signatures": identical,
    }


def bench_job(config: str) -> dict:
    from jobs.dedup import run
    from jobs.spark import get_spark
    from pipeline.config import load_build

    cores = int(os.environ.get("BENCH_CORES", "2"))
    spark = get_spark(f"local[{cores}]", app_name="bench-dedup", ui=False)
    spark.sparkContext.setLogLevel("ERROR")
    cfg = load_build(config)
    result = run(spark, cfg, force=True)
    docs = result.ledger.read
    return {"config": config, "cores": cores, "documents": docs, "seconds": round(result.seconds, 1),
            "docs_per_s_per_core": round(docs / result.seconds / cores, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", default="out/demo/sample", help="sample corpus folder (rnj sample --out)")
    parser.add_argument("--docs", type=int, default=1000, help="documents to sign")
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ngram", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs each")
    parser.add_argument("--job", default=None, help="also time the whole dedup job on this build file")
    args = parser.parse_args()
    texts = sample_texts(Path(args.sample), args.docs)
    figures = bench_signatures(texts, args.num_perm, args.seed, args.ngram, args.repeats)
    print(json.dumps(figures, indent=2))
    print(f"signatures/s: rnj {figures['ours_docs_per_s']}, datasketch (sha1) "
          f"{figures['datasketch_sha1_docs_per_s']} -> {figures['ratio_vs_sha1']}x; "
          f"same hash {figures['datasketch_same_hash_docs_per_s']} -> {figures['ratio_vs_same_hash']}x; "
          f"from text (re shingling + sha1) {figures['datasketch_from_text_docs_per_s']} -> "
          f"{figures['ratio_vs_from_text']}x; "
          f"identical signatures: {figures['identical_signatures']}")
    if not figures["identical_signatures"]:
        raise SystemExit("signatures differ from datasketch's")
    if args.job:
        print(json.dumps(bench_job(args.job), indent=2))


if __name__ == "__main__":
    main()
