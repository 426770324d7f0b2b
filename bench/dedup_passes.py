"""The dedup job's two passes over the text, engine-free: `document_features` and `rewrite_batch` on real
documents (parts of a build's ingest and traces output), timed per step in one process.

    .venv/bin/python -m bench.dedup_passes --build /work/data/scale-100k/scale.toml --parts 2
    .venv/bin/python -m bench.dedup_passes ... --profile          # cProfile of both passes
    .venv/bin/python -m bench.dedup_passes ... --dump DIR         # write both passes' outputs (Arrow IPC)

The boilerplate table of the rewrite is the lines held by more documents than the job's threshold among
all documents of every part (the job counts the survivors of the exact and near rounds: close enough to
time the pass; `--dump` outputs of two checkouts compare on the same table). To time or dump another
checkout (main's, to compare byte for byte), run a copy of this file placed outside `bench/` (whose
`tokenize.py` shadows the standard library's when the file runs as a script) with `PYTHONPATH` at that
checkout.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import load_build
from pipeline.dedup.boilerplate import boilerplate_threshold
from pipeline.dedup.decontaminate import load_eval_ngrams
from pipeline.dedup.features import document_features
from pipeline.dedup.rewrite import RewriteStats, rewrite_batch

PASSTHROUGH = ("id", "source", "length", "quality")


def read_batches(build_dir: Path, parts: int) -> list[pa.RecordBatch]:
    """One batch per part file of the dedup job's inputs (ingest then traces documents), as the features
    pass receives it: id, source, length, quality, text, domain (quality null: the scale corpus has none)."""
    batches = []
    for table in ("ingest", "traces"):
        files = sorted((build_dir / table / "documents").glob("part-*.parquet"))[:parts]
        for path in files:
            t = pq.read_table(path, columns=["id", "text", "source", "domain"])
            batches.append(pa.RecordBatch.from_arrays(
                [t["id"].combine_chunks(), t["source"].combine_chunks(),
                 pc.utf8_length(t["text"]).cast(pa.int64()).combine_chunks(),
                 pa.nulls(t.num_rows, pa.float64()), t["text"].combine_chunks(), t["domain"].combine_chunks()],
                names=[*PASSTHROUGH, "text", "domain"]))
    return batches


def boilerplate_table(features: list[pa.RecordBatch], cfg, total_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted uint64 hashes of the lines in more documents than the threshold, the top 20 of them)."""
    hashes = np.concatenate([pc.list_flatten(f.column("line_hashes")).to_numpy() for f in features])
    values, counts = np.unique(hashes, return_counts=True)
    threshold = boilerplate_threshold(cfg.boilerplate, total_docs)
    lines = values[counts > threshold]
    top = lines[np.argsort(-counts[counts > threshold], kind="stable")][:20]
    return np.sort(lines.view(np.uint64)), top.view(np.uint64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default="/work/data/scale-100k/scale.toml")
    parser.add_argument("--parts", type=int, default=2, help="part files of each input table")
    parser.add_argument("--table-parts", type=int, default=16,
                        help="part files whose lines make the boilerplate table (not timed)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each pass (best kept)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--dump", type=Path)
    args = parser.parse_args()
    build = load_build(args.build)
    cfg = build.dedup
    build_dir = Path(build.output_uri())
    batches = read_batches(build_dir, args.parts)
    docs = sum(b.num_rows for b in batches)
    bands, rows = cfg.near.bands or 16, cfg.near.rows or 8
    eval_ngrams, _ = load_eval_ngrams(cfg.decontaminate)

    def features_pass():
        return [document_features(b, cfg, bands, rows, PASSTHROUGH) for b in batches]

    features = features_pass()  # compiles or loads the kernels
    table_batches = read_batches(build_dir, args.table_parts)
    boilerplate, top = boilerplate_table([document_features(b, cfg, bands, rows, PASSTHROUGH) for b in table_batches],
                                         cfg, sum(b.num_rows for b in table_batches))
    del table_batches

    def rewrite_pass():
        stats = RewriteStats()
        return [rewrite_batch(b, cfg, boilerplate, eval_ngrams, top, stats) for b in batches], stats

    rewritten, stats = rewrite_pass()
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
        for name, out in (("features", features), ("rewrite", rewritten)):
            with pa.OSFile(str(args.dump / f"{name}.arrow"), "wb") as sink, \
                    pa.ipc.new_file(sink, out[0].schema) as writer:
                for b in out:
                    writer.write_batch(b)
        (args.dump / "stats.txt").write_text(repr(stats))
    print(f"{docs} documents in {len(batches)} batches, {len(boilerplate)} boilerplate lines, "
          f"{stats.lines} lines removed")
    for name, run in (("features", features_pass), ("rewrite", rewrite_pass)):
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            run()
            profile.disable()
            print(f"--- {name}")
            pstats.Stats(profile).sort_stats("cumulative").print_stats(35)
            continue
        times = []
        for _ in range(args.repeat):
            start = time.process_time()
            run()
            times.append(time.process_time() - start)
        best = min(times)
        print(f"{name}: best {best:.3f} CPU-s of {[f'{t:.3f}' for t in times]}: "
              f"{best / docs * 1e6:.1f} us/doc, {docs / best:,.0f} docs/CPU-s")


if __name__ == "__main__":
    main()
