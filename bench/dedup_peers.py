"""Near-duplicate removal against the peers: rnj (engine-free and Spark job), datasketch and rensa, measured
in the same run on the same documents.

    .venv/bin/python -m bench.dedup_peers                       # the defaults: 4,000 documents of ~10 KB
    .venv/bin/python -m bench.dedup_peers --write BENCHMARKS.md

The planted set follows /work/shared/peers.md: 4,000 documents of ~10 KB of real text, 400 groups of an
original and 4 near copies (word edits to a true word-5-gram Jaccard of 0.86-0.97, a paragraph moved in
half of them, whitespace/case/punctuation noise), one far variant per group (Jaccard 0.45-0.70) and 1,600
unrelated documents. The text is this machine's own: Python source files of the standard library and the
installed packages (code), and the documentation shipped with them and with the system's packages
(/usr/share/doc: READMEs, changelogs, manuals; prose), each folder's files concatenated in order and cut
at line ends into windows of ~10 KB. Nothing is downloaded.

Timed from the texts in memory, documents in shuffled order. The tools without Spark are timed in
CPU-seconds of this process (other sessions' load on the shared machine does not count):
- rnj, no Spark: `pipeline.dedup.local.dedup_batch` (features of one Arrow batch, exact groups, band
  buckets, signature verification, connected components, central survivors, bounded clusters).
- datasketch: `MinHashLSH(threshold=0.8, num_perm=128)`, keep-first, lowercase `re` word 5-grams, SHA-1.
- rensa: `RMinHash` + `RMinHashLSH(threshold=0.8, num_perm=128, num_bands=16)` (its 16 x 8), keep-first,
  the same word 5-grams.
- rnj, Spark (`--spark`): `jobs.dedup.run` (forced) on a build with only the exact and near rounds,
  `local[N]`, reading the ingested Parquet and committing its outputs; wall-clock seconds, best of
  `--runs`. Its survivors must equal the engine-free path's.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import random
import re
import sysconfig
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.planted import PlantedSet, build_planted

WINDOW_CHARS, MIN_WORDS, MAX_WORDS = 10_000, 600, 4_000
SECTION = "## Dedup against peers"
PROSE_PATTERNS = ("*.txt", "*.rst", "*.md", "README*", "NEWS*", "changelog*", "*.html")


# ---------------------------------------------------------------------------------------------- the set


def text_windows(limit_per_kind: int) -> tuple[list[str], dict[str, int]]:
    """~10 KB windows of real code and prose from this machine, alternating kinds, deterministic."""
    code_roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    code = _windows(_folders(code_roots, ("*.py",)), limit_per_kind)
    prose = _windows(_folders([Path("/usr/share/doc"), *code_roots], PROSE_PATTERNS), limit_per_kind)
    mixed = [t for pair in zip(code, prose) for t in pair] + code[len(prose):] + prose[len(code):]
    return mixed, {"code windows": len(code), "prose windows": len(prose)}


def _folders(roots: list[Path], patterns: tuple[str, ...]) -> dict[str, list[Path]]:
    folders: dict[str, set[Path]] = {}
    for root in roots:
        if not root.is_dir():
            continue
        for pattern in patterns:
            for path in root.rglob(pattern):
                if path.is_file() and not {"test", "tests", "__pycache__"} & set(path.parts):
                    folders.setdefault(str(path.parent), set()).add(path)
    return {k: sorted(v) for k, v in sorted(folders.items())}


def _read(path: Path) -> str:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return ""
    return re.sub(r"<[^>]+>", " ", text) if path.suffix == ".html" else text


def _windows(folders: dict[str, list[Path]], limit: int) -> list[str]:
    """Each folder's files concatenated, cut at line ends into windows of about WINDOW_CHARS."""
    out: list[str] = []
    for files in folders.values():
        text = "\n".join(_read(p) for p in files)
        start = 0
        while len(text) - start >= WINDOW_CHARS * 0.8:
            end = text.find("\n", start + WINDOW_CHARS)
            end = len(text) if end < 0 else end
            window = text[start:end]
            if len(window.split()) >= MIN_WORDS:
                out.append(window)
            start = end + 1
        if len(out) >= limit:
            break
    return out[:limit]


def planted_set(groups: int, copies: int, distinct: int, seed: int) -> tuple[PlantedSet, dict]:
    """The planted set and its source counts (see the module docstring)."""
    texts, counts = text_windows(2 * (groups + distinct))
    planted = build_planted(texts, groups=groups, copies=copies, distinct=distinct, seed=seed, reorder=0.5,
                            min_words=MIN_WORDS, max_words=MAX_WORDS)
    random.Random(seed).shuffle(planted.docs)  # keep-first must not meet every original first
    return planted, counts


def cached_planted_set(cache: str | None, groups: int, copies: int, distinct: int,
                       seed: int) -> tuple[PlantedSet, dict]:
    """`planted_set`, read from (or written to) a JSON file under `cache` named by its parameters."""
    if cache is None:
        return planted_set(groups, copies, distinct, seed)
    path = Path(cache) / f"planted-{groups}-{copies}-{distinct}-{seed}.json.gz"
    if path.exists():
        stored = json.loads(gzip.decompress(path.read_bytes()))
        return PlantedSet(**stored["planted"]), stored["sources"]
    planted, sources = planted_set(groups, copies, distinct, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(json.dumps({"planted": dataclasses.asdict(planted), "sources": sources}).encode()))
    return planted, sources


# ---------------------------------------------------------------------------------------------- scoring


def score(planted: PlantedSet, kept: set[str]) -> dict:
    """Copies removed (at most all but one per group), groups with exactly one survivor, distinct kept."""
    copies = sum(len(g) - 1 for g in planted.groups)
    removed = sum(min(sum(m not in kept for m in g), len(g) - 1) for g in planted.groups)
    exactly_one = sum(sum(m in kept for m in g) == 1 for g in planted.groups)
    none_left = sum(not any(m in kept for m in g) for g in planted.groups)
    lonely = planted.distinct + planted.far
    return {
        "copies_removed": 100 * removed / copies,
        "exactly_one": 100 * exactly_one / len(planted.groups),
        "groups_none_left": none_left,
        "groups_two_or_more": sum(sum(m in kept for m in g) >= 2 for g in planted.groups),
        "distinct_kept": 100 * sum(d in kept for d in lonely) / len(lonely),
        "far_kept": 100 * sum(d in kept for d in planted.far) / len(planted.far),
    }


# ---------------------------------------------------------------------------------------------- peers

_WORD = re.compile(r"\w+")


def word_shingles(text: str, n: int = 5) -> set[str]:
    """What a MinHash user writes: lowercase `re` words, space-joined n-grams."""
    words = _WORD.findall(text.lower())
    return {" ".join(words[i: i + n]) for i in range(max(len(words) - n + 1, 1))}


def datasketch_keep_first(docs: list[dict], threshold: float = 0.8, num_perm: int = 128) -> set[str]:
    """datasketch 2: SHA-1 MinHash of the word 5-grams, query then insert (keep the first of each group)."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept = set()
    for doc in docs:
        m = MinHash(num_perm=num_perm)
        m.update_batch([g.encode() for g in word_shingles(doc["text"])])
        if not lsh.query(m):
            lsh.insert(doc["id"], m)
            kept.add(doc["id"])
    return kept


def rensa_keep_first(docs: list[dict], threshold: float = 0.8, num_perm: int = 128, bands: int = 16) -> set[str]:
    """rensa: its Rust MinHash of the same word 5-grams and its LSH, query then insert."""
    from rensa import RMinHash, RMinHashLSH

    lsh = RMinHashLSH(threshold=threshold, num_perm=num_perm, num_bands=bands)
    kept = set()
    for key, doc in enumerate(docs):
        m = RMinHash(num_perm=num_perm, seed=42)
        m.update(list(word_shingles(doc["text"])))
        if not lsh.query(m):
            lsh.insert(key, m)
            kept.add(doc["id"])
    return kept


# ---------------------------------------------------------------------------------------------- rnj


def rnj_local(docs: list[dict], cfg: DedupConfig) -> set[str]:
    """The job's exact and near rounds with its pipeline functions on one process (no Spark)."""
    from pipeline.dedup.local import dedup_batch

    batch = pa.RecordBatch.from_pydict({"id": [d["id"] for d in docs], "text": [d["text"] for d in docs],
                                        "domain": ["general"] * len(docs)})
    outcomes = dedup_batch(batch, cfg)
    return {i for i, r in zip(outcomes.column("id").to_pylist(), outcomes.column("reason").to_pylist()) if r is None}


BUILD = """[build]
name = "dedup-peers"
output = "build"
output_files = 2

[[sources]]
name = "planted"
uri = "planted.jsonl"
format = "jsonl"
domain = "general"
lang = "en"

[dedup.boilerplate]
enabled = false

[dedup.decontaminate]
enabled = false
"""


def rnj_spark(docs: list[dict], folder: Path, cores: int, runs: int) -> tuple[list[float], set[str], dict]:
    """Seconds of each forced dedup run (ingest once, untimed), the survivors' ids and the last report."""
    import pyarrow.parquet as pq

    from jobs import dedup, ingest
    from jobs.spark import get_spark
    from pipeline.config import load_build

    with (folder / "planted.jsonl").open("w") as f:
        for doc in docs:
            f.write(json.dumps({"id": doc["id"], "text": doc["text"]}) + "\n")
    (folder / "build.toml").write_text(BUILD)
    cfg = load_build(str(folder / "build.toml"))
    spark = get_spark(f"local[{cores}]", app_name="bench-dedup-peers", ui=False)
    spark.sparkContext.setLogLevel("ERROR")
    ingested = ingest.run(spark, cfg, force=True)
    assert ingested.ledger.written == len(docs), f"ingest kept {ingested.ledger.written} of {len(docs)}"
    seconds = []
    for _ in range(runs):
        result = dedup.run(spark, cfg, force=True)
        seconds.append(result.seconds)
    kept = set(pq.read_table(Path(result.uri) / "documents", columns=["id"]).column("id").to_pylist())
    report = json.loads((Path(result.uri) / "report.json").read_text())
    return seconds, kept, report


# ---------------------------------------------------------------------------------------------- report


def cpu_timed(fn, *args):
    """(CPU-seconds of this process, all threads, and the result)."""
    start = time.process_time()
    out = fn(*args)
    return time.process_time() - start, out


def table(rows: list[tuple]) -> str:
    header = ("| tool, settings | docs per CPU-second | copies removed | exactly one copy | groups with none "
              "| groups with 2+ | distinct docs kept |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def row(name: str, rate: str, s: dict) -> tuple:
    return (name, rate, f"{s['copies_removed']:.2f}%", f"{s['exactly_one']:.2f}%", str(s["groups_none_left"]),
            str(s["groups_two_or_more"]), f"{s['distinct_kept']:.2f}%")


def write_section(path: Path, body: str) -> None:
    """Replace (or append) the `SECTION` of `path`, up to the next `## ` heading."""
    text = path.read_text()
    start = text.find(SECTION + "\n")
    if start < 0:
        path.write_text(text.rstrip("\n") + "\n\n" + body)
        return
    end = text.find("\n## ", start + len(SECTION))
    path.write_text(text[:start] + body + (text[end + 1:] if end >= 0 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=400)
    parser.add_argument("--copies", type=int, default=4, help="near copies per group (plus the original)")
    parser.add_argument("--distinct", type=int, default=1600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each tool without Spark (best)")
    parser.add_argument("--spark", action="store_true", help="also run the Spark job on the same documents")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2, help="forced dedup job runs (the first starts workers)")
    parser.add_argument("--write", default=None, help="write the section into this markdown file")
    parser.add_argument("--cache", default=None, help="a folder to keep the planted set in between runs")
    args = parser.parse_args()
    planted, sources = cached_planted_set(args.cache, args.groups, args.copies, args.distinct, args.seed)
    docs = planted.docs
    n = len(docs)
    megabytes = sum(len(d["text"].encode()) for d in docs) / 1e6
    load_before = os.getloadavg()
    tools = {"rnj": lambda: rnj_local(docs, DedupConfig()), "rensa": lambda: rensa_keep_first(docs),
             "datasketch": lambda: datasketch_keep_first(docs)}
    seconds: dict[str, float] = {}
    kept: dict[str, set[str]] = {}
    for _ in range(args.repeats):  # interleaved, so that a burst of load hits every tool alike
        for name, fn in tools.items():
            spent, kept[name] = cpu_timed(fn)
            seconds[name] = min(seconds.get(name, float("inf")), spent)
    spark = None
    if args.spark:
        with tempfile.TemporaryDirectory(prefix="dedup-peers-") as tmp:
            spark = rnj_spark(docs, Path(tmp), args.cores, args.runs)
    load_after = os.getloadavg()
    scores = {name: score(planted, ids) for name, ids in kept.items()}
    rows = [
        row("**rnj** engine-free (`pipeline.dedup.local`: 16 × 8 from the recall target, verified, components, "
            "central survivor, bounded clusters)", f"{n / seconds['rnj']:,.0f}", scores["rnj"]),
        row("rensa 0.5 `RMinHashLSH(0.8, 128, 16 bands)`, keep-first, `re` word 5-grams",
            f"{n / seconds['rensa']:,.0f}", scores["rensa"]),
        row("datasketch 2 `MinHashLSH(0.8, 128)` (9 × 13), keep-first, `re` word 5-grams, SHA-1",
            f"{n / seconds['datasketch']:,.0f}", scores["datasketch"]),
    ]
    figures = {"documents": n, "megabytes": round(megabytes, 1), "mean_kb": round(megabytes * 1000 / n, 1),
               "groups": len(planted.groups), "copies": sum(len(g) - 1 for g in planted.groups),
               "far": len(planted.far), "distinct": len(planted.distinct), "windows": sources,
               "cpu_seconds": {k: round(v, 2) for k, v in seconds.items()},
               "docs_per_cpu_second": {k: round(n / v) for k, v in seconds.items()},
               "rnj_vs_rensa": round(seconds["rensa"] / seconds["rnj"], 2),
               "load_average": [round(x, 1) for x in load_before + load_after], "scores": scores}
    if spark:
        spark_seconds, spark_kept, report = spark
        figures["spark_seconds"] = [round(s, 1) for s in spark_seconds]
        figures["spark_docs_per_s_per_core"] = round(n / min(spark_seconds) / args.cores)
        figures["same_survivors_spark_vs_local"] = spark_kept == kept["rnj"]
        figures["spark_scores"] = score(planted, spark_kept)
        figures["spark_near_report"] = {k: v for k, v in report["rounds"]["near"].items() if k != "sample_clusters"}
        rows.insert(1, row(f"**rnj** `jobs.dedup` on Spark `local[{args.cores}]` (wall clock, best of "
                           f"{args.runs}; docs/s per core)", f"{figures['spark_docs_per_s_per_core']:,}",
                           figures["spark_scores"]))
    print(json.dumps(figures, indent=2))
    print(table(rows))
    if args.write:
        write_section(Path(args.write), section(figures, rows, args))


def section(figures: dict, rows: list[tuple], args) -> str:
    f = figures
    spark = ""
    if "spark_seconds" in f:
        spark = (f" Spark job runs: {f['spark_seconds']} s (the first starts the Python workers); survivors "
                 f"identical to the engine-free path's: {f['same_survivors_spark_vs_local']}.")
    return f"""{SECTION}

`python -m bench.dedup_peers{' --spark' if 'spark_seconds' in f else ''}` (one process, same run, same
documents). Planted like `/work/shared/peers.md`'s benchmark: {f['documents']:,} documents ({f['megabytes']} MB,
{f['mean_kb']} KB on average) of real code and prose of this machine ({', '.join(f'{v} {k}' for k, v in f['windows'].items())}
before planting), {f['groups']} groups of an original + {args.copies} near copies ({f['copies']:,} copies: word edits
to a true word-5-gram Jaccard of 0.86–0.97, a paragraph moved in about half, whitespace/case/punctuation
noise), {f['far']} far variants (Jaccard 0.45–0.70) and {f['distinct']:,} unrelated documents, shuffled.
"Distinct docs kept" counts the unrelated documents and the far variants. Rates are documents per
CPU-second of the process (best of {args.repeats}, tools interleaved), so the shared machine's load (load
average {f['load_average'][0]} before, {f['load_average'][3]} after) does not count; rnj's engine-free path is
**{f['rnj_vs_rensa']}×** rensa's rate.{spark}

{table(rows)}
"""


if __name__ == "__main__":
    main()
