"""Packing benchmark: our best-fit decreasing vs first fit vs concatenate-and-split, same documents, one run.

    .venv/bin/python bench/pack.py [--documents OUTPUT/tokenize/documents] [--seq-len 8192] [--repeat 3]

Documents: the token counts (`num_tokens`) of a committed tokenize output; without one, the demo's dedup
output (out/demo/build/dedup/documents) tokenized here by a 4K byte-level BPE trained on a sample of it (as
the demo's tokenizer is). Every document is framed with <bos>/<eos> (+2 slots). Reports documents/s of the
packer alone, non-padding %, and the share of documents cut into more pieces than their length needs.
`ours (build)` is what jobs/build.py runs: exactly N sequences holding (1 - 0.5%) of their slots (the
selection cuts the last document to fit), `pack_exact` in shard windows of 1024 sequences; padding is fixed
by the slack, so the figure to watch is the cut share.
"""

from __future__ import annotations

import sys

if sys.path and sys.path[0].rstrip("/").endswith("bench"):
    sys.path.pop(0)  # bench/tokenize.py would shadow the standard library's tokenize module

import argparse
import glob
import math
import random
import time

import pyarrow.parquet as pq

from pipeline.packing import (
    best_fit_decreasing,
    concat_split,
    cut_documents,
    first_fit,
    pack_exact,
    padding_fraction,
    shard_sequences_of,
    split_at_shards,
)


def lengths_from(documents: str) -> list[int]:
    files = sorted(glob.glob(f"{documents}/*.parquet"))
    columns = pq.read_schema(files[0]).names
    if "num_tokens" in columns:
        return [n for f in files for n in pq.read_table(f, columns=["num_tokens"]).column(0).to_pylist()]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = [t for f in files for t in pq.read_table(f, columns=["text"]).column(0).to_pylist()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    sample = random.Random(0).sample(texts, min(len(texts), 800))
    tok.train_from_iterator(sample, trainers.BpeTrainer(
        vocab_size=4096, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return [len(e.ids) for e in tok.encode_batch(texts)]


def as_the_build(sizes: list[int], seq_len: int, shard_sequences: int = 1024, slack: float = 0.005):
    """jobs/build.py's packing: N whole sequences, content exactly N * seq_len * (1 - slack) (the selection
    cuts the last document to fit), shard windows of `shard_sequences` holding exactly their share, a
    document crossing a window boundary split there, `pack_exact` inside each window.
    Returns (bins, pieces per document)."""
    n = int(sum(sizes) / (seq_len * (1 - slack)))
    total = n * seq_len - math.ceil(n * seq_len * slack)
    windows: dict[int, list[tuple[int, int]]] = {}
    start = 0
    for doc, size in enumerate(sizes):
        size = min(size, total - start)
        if size <= 0:
            break
        for shard, _, length in split_at_shards(start, size, total, n, shard_sequences):
            windows.setdefault(shard, []).append((doc, length))
        start += size
    bins, pieces = [], [0] * len(sizes)
    for shard in sorted(windows):
        owners = [doc for doc, _ in windows[shard]]
        for b in pack_exact([length for _, length in windows[shard]], seq_len,
                            shard_sequences_of(n, shard_sequences, shard)):
            bins.append(b)
            for item, _, _ in b:
                pieces[owners[item]] += 1
    return bins, pieces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", default="out/demo/build/tokenize/documents")
    parser.add_argument("--fallback", default="out/demo/build/dedup/documents")
    parser.add_argument("--seq-len", type=int, nargs="+", default=[8192, 32768])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    try:
        raw = lengths_from(args.documents)
        origin = args.documents
    except (IndexError, FileNotFoundError):
        raw = lengths_from(args.fallback)
        origin = f"{args.fallback} (tokenized here, 4K BPE)"
    sizes = [n + 2 for n in raw]
    random.Random(0).shuffle(sizes)  # training order is a seeded shuffle
    print(f"{len(sizes)} documents from {origin}; {sum(sizes):,} slots; median {sorted(sizes)[len(sizes) // 2]}")
    print("| seq_len | packer | docs/s | non-padding % | documents cut % |")
    print("|---:|---|---:|---:|---:|")
    packers = [("ours: best-fit decreasing", best_fit_decreasing), ("first fit", first_fit),
               ("concatenate and split", concat_split)]
    for seq_len in args.seq_len:
        for name, packer in packers + [("ours (build): exact windows", None)]:
            best = math.inf
            for _ in range(args.repeat):
                start = time.perf_counter()
                result = packer(sizes, seq_len) if packer else as_the_build(sizes, seq_len)
                best = min(best, time.perf_counter() - start)
            if packer:
                bins, cuts = result, cut_documents(result, sizes, seq_len)
            else:
                bins, pieces = result
                cuts = sum(1 for n, size in zip(pieces, sizes) if n > -(-size // seq_len))
            cut = f"{100 * cuts / len(sizes):.2f}"
            print(f"| {seq_len} | {name} | {len(sizes) / best:,.0f} | "
                  f"{100 * (1 - padding_fraction(bins, seq_len)):.2f} | {cut} |")


if __name__ == "__main__":
    main()
