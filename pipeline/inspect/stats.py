"""What a phase's shards hold, measured from the shards themselves (`rnj shards stats`).

Tables (polars underneath; `Table` for rendering, `to_json` for machines):

    summary         sequences, token slots, tokens, padding, documents, pieces, loss tokens
    buckets         the manifest's mixture buckets: target weight, the builder's achieved weight, and the
                    weight measured here from the shards (token slots by bucket / content slots)
    mixture         tokens by domain x tier x source, with the bucket each cell falls in
    tiers           tokens and documents by tier
    document_lengths  distinct documents by length (token slots of one copy, <bos>/<eos> included)
    pieces_per_sequence  sequences by the number of document pieces they hold

Token counts are slots: a document costs its tokens plus its <bos> and <eos>, as in the manifest.
"""

from __future__ import annotations

import polars as pl

from pipeline.curriculum import parse_bucket
from pipeline.inspect.scan import PhaseScan
from pipeline.inspect.tables import Table


def bucket_of(keys: list[str], domain: str, tier: int, source: str) -> str | None:
    for key in keys:
        if parse_bucket(key).matches(domain, tier, source):
            return key
    return None


def _share(column: str, total: int) -> pl.Expr:
    return (pl.col(column) / total if total else pl.lit(0.0)).round(6).alias("share")


def length_bin(length: int) -> tuple[int, int]:
    """The power-of-two bin [lo, hi] holding `length` (1, 2-3, 4-7, ...)."""
    lo = 1 << (max(length, 1).bit_length() - 1)
    return lo, 2 * lo - 1


def phase_stats(scan: PhaseScan) -> dict[str, Table]:
    manifest, pieces, sequences = scan.manifest, scan.pieces, scan.sequences
    tokens = int(pieces["length"].sum() or 0)
    buckets = list((manifest.get("mixture") or {}).get("buckets", {}))
    keys = pieces.select("domain", "tier", "source").unique()
    keys = keys.with_columns(pl.Series("bucket", [bucket_of(buckets, d, t, s) for d, t, s in keys.iter_rows()],
                                       dtype=pl.String))
    labelled = pieces.join(keys, on=["domain", "tier", "source"], how="left")
    return {
        "summary": _summary(scan, tokens),
        "buckets": _buckets(scan, labelled, tokens),
        "mixture": Table.from_frame(
            f"{scan.name} ({scan.split}): tokens by domain x tier x source",
            labelled.group_by("domain", "tier", "source", "bucket").agg(pl.col("length").sum().alias("tokens"))
            .with_columns(_share("tokens", tokens)).sort(["tokens", "domain", "tier", "source"],
                                                         descending=[True, False, False, False])),
        "tiers": Table.from_frame(
            f"{scan.name} ({scan.split}): tokens per tier",
            pieces.group_by("tier").agg(pl.col("length").sum().alias("tokens"),
                                        pl.col("starts_document").sum().cast(pl.Int64).alias("documents"))
            .with_columns(_share("tokens", tokens)).sort("tier").select("tier", "tokens", "share", "documents")),
        "document_lengths": _lengths(scan),
        "pieces_per_sequence": Table.from_frame(
            f"{scan.name} ({scan.split}): document pieces per sequence",
            sequences.group_by("pieces").agg(pl.len().cast(pl.Int64).alias("sequences")).sort("pieces")
            .with_columns(_share("sequences", len(sequences)))),
    }


def _summary(scan: PhaseScan, tokens: int) -> Table:
    sequences, pieces, manifest = scan.sequences, scan.pieces, scan.manifest
    slots = len(sequences) * scan.seq_len
    padding = int(sequences["padding"].sum() or 0)
    documents = int(pieces["starts_document"].sum() or 0)
    rows = [
        ["sequences", len(sequences)],
        ["seq_len", scan.seq_len],
        ["token slots", slots],
        ["tokens (non-padding)", tokens],
        ["padding tokens", padding],
        ["padding %", round(100 * padding / slots, 4) if slots else 0.0],
        ["documents started (<bos>)", documents],
        ["document pieces", len(pieces)],
        ["continuation pieces (cut documents)", len(pieces) - documents],
        ["mean pieces per sequence", round(len(pieces) / len(sequences), 4) if len(sequences) else 0.0],
    ]
    if manifest.get("loss_mask"):
        loss = int(sequences["loss_tokens"].sum() or 0)
        rows += [["loss tokens (mask 1)", loss], ["loss share of tokens", round(loss / tokens, 4) if tokens else 0.0]]
    if scan.shard is None:
        expected = manifest["num_padding_tokens"] if scan.split == "train" else manifest.get("eval", {}).get(
            "num_padding_tokens")
        rows.append(["padding in the manifest", expected])
    title = f"{scan.name} ({scan.split}{', ' + scan.shard if scan.shard else ''})"
    return Table(title, ["figure", "value"], rows)


def _buckets(scan: PhaseScan, labelled: pl.DataFrame, tokens: int) -> Table:
    mixture = scan.manifest.get("mixture") or {}
    measured = dict(labelled.group_by("bucket").agg(pl.col("length").sum()).iter_rows())
    rows = []
    for key, b in mixture.get("buckets", {}).items():
        got = int(measured.get(key, 0))
        rows.append([key, b.get("target_weight"), b.get("achieved_weight"), round(got / tokens, 6) if tokens else 0.0,
                     b.get("target_tokens"), got, b.get("epochs")])
    if measured.get(None):
        rows.append(["(no bucket)", None, None, round(measured[None] / tokens, 6), None, int(measured[None]), None])
    notes = ["measured = token slots of the bucket in these shards / all their token slots"]
    if scan.split == "eval" or scan.shard:
        notes.append("targets are for the whole training split; this scan covers "
                     f"{scan.shard or 'the held-out sequences'}")
    return Table(f"{scan.name} ({scan.split}): mixture, target vs achieved",
                 ["bucket", "target weight", "achieved (manifest)", "measured", "target tokens", "measured tokens",
                  "epochs"], rows, notes)


def _lengths(scan: PhaseScan) -> Table:
    """Distinct documents by the length of one copy: a document's slots here over the copies that start."""
    per_doc = scan.pieces.group_by("doc_id").agg(pl.col("length").sum().alias("slots"),
                                                 pl.col("starts_document").sum().alias("copies"))
    per_doc = per_doc.with_columns((pl.col("slots") / pl.max_horizontal(pl.col("copies"), 1)).round(0)
                                   .cast(pl.Int64).alias("length"))
    counts: dict[int, int] = {}
    for n in per_doc["length"].to_list():
        lo = length_bin(n)[0]
        counts[lo] = counts.get(lo, 0) + 1
    low, high = (min(counts).bit_length() - 1, max(counts).bit_length() - 1) if counts else (0, -1)
    edges = [1 << k for k in range(low, high + 1)]  # every bin from the shortest to the longest, empty ones too
    table = pl.DataFrame({"from": edges, "to": [2 * e - 1 for e in edges],
                          "documents": [counts.get(e, 0) for e in edges]},
                         schema={"from": pl.Int64, "to": pl.Int64, "documents": pl.Int64})
    table = table.with_columns(_share("documents", len(per_doc)))
    return Table.from_frame(f"{scan.name} ({scan.split}): document lengths (token slots, <bos>/<eos> included)",
                            table, [(f"{len(per_doc)} distinct documents; mean length "
                                     f"{per_doc['length'].mean() or 0:.1f}, max {per_doc['length'].max() or 0}")])


def to_json(scan: PhaseScan, tables: dict[str, Table]) -> dict:
    summary = {row[0]: row[1] for row in tables["summary"].rows}
    return {"phase": scan.name, "split": scan.split, "shard": scan.shard, "summary": summary,
            "tables": {name: t.to_records() for name, t in tables.items() if name != "summary"}}
