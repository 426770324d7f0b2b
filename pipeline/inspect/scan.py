"""A phase's sequences and document pieces as polars frames, read from the shards with pipeline.shards.

    sequences  seq, shard, tokens (non-padding), padding, pieces, documents (pieces that start a document
               with <bos>), loss_tokens (SFT: tokens whose loss counts; else null)
    pieces     seq, shard, piece (index in its sequence), doc_id, source, domain, tier, start, length,
               starts_document, loss_tokens

Everything is computed per record batch with numpy over the memory-mapped columns; no Python loop per
sequence or per piece.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.shards import Phase

Progress = Callable[..., Iterable]
"""`progress(iterable, total=N, desc=TEXT)` -> the same items (a progress bar, or the iterable itself)."""


def no_progress(iterable: Iterable, **_) -> Iterable:
    return iterable


@dataclass
class PhaseScan:
    name: str
    """STAGE/PHASE."""
    split: str
    manifest: dict
    sequences: pl.DataFrame
    pieces: pl.DataFrame
    shard: str | None = None
    """When the scan covers one shard only."""

    @property
    def seq_len(self) -> int:
        return self.manifest["seq_len"]


def labels(manifest: dict, key: str, count: int) -> list[str]:
    """Names of the indices `doc_source` / `doc_domain` hold (the manifest's tables, else the numbers)."""
    names = list(manifest.get(key) or [])
    return names + [str(i) for i in range(len(names), count)]


def scan_phase(phase: Phase, shard: str | None = None, progress: Progress = no_progress) -> PhaseScan:
    """Read every record batch of `phase` (or of its shard `shard`) into the two frames."""
    manifest = phase.manifest
    bos = (manifest.get("special_tokens") or {}).get("bos")
    seq_parts, piece_parts, ids = [], [], []
    batches = [b for b in phase.record_batches() if shard is None or b[0] == shard]
    desc = f"{manifest['stage']}/{manifest['phase']} {phase.split}"
    for name, first, batch in progress(batches, total=len(batches), desc=desc):
        sequences, pieces, doc_ids = _scan_batch(batch, phase.seq_len, first, bos)
        seq_parts.append(sequences | {"shard": np.full(batch.num_rows, name, dtype=object)})
        piece_parts.append(pieces | {"shard": np.full(len(doc_ids), name, dtype=object)})
        ids.append(doc_ids)
    sequences = _frame(seq_parts, SEQUENCE_COLUMNS)
    pieces = _frame(piece_parts, PIECE_COLUMNS)
    doc_ids = pa.concat_arrays(ids).cast(pa.string()) if ids else pa.array([], pa.string())
    pieces = pieces.with_columns(pl.Series("doc_id", doc_ids.to_pylist(), dtype=pl.String))
    source_names = labels(manifest, "sources", int(pieces["source"].max() or 0) + 1 if len(pieces) else 0)
    domain_names = labels(manifest, "domains", int(pieces["domain"].max() or 0) + 1 if len(pieces) else 0)
    pieces = pieces.with_columns(
        pl.Series("source", source_names, dtype=pl.String).gather(pieces["source"]).alias("source"),
        pl.Series("domain", domain_names, dtype=pl.String).gather(pieces["domain"]).alias("domain"),
    ).select(["seq", "shard", "piece", "doc_id", "source", "domain", "tier", "start", "length",
              "starts_document", "loss_tokens"])
    return PhaseScan(f"{manifest['stage']}/{manifest['phase']}", phase.split, manifest, sequences, pieces, shard)


SEQUENCE_COLUMNS = {"seq": pl.Int64, "shard": pl.String, "tokens": pl.Int64, "padding": pl.Int64,
                    "pieces": pl.Int64, "documents": pl.Int64, "loss_tokens": pl.Int64}
PIECE_COLUMNS = {"seq": pl.Int64, "shard": pl.String, "piece": pl.Int64, "source": pl.Int64, "domain": pl.Int64,
                 "tier": pl.Int64, "start": pl.Int64, "length": pl.Int64, "starts_document": pl.Boolean,
                 "loss_tokens": pl.Int64}


def _frame(parts: list[dict], columns: dict) -> pl.DataFrame:
    if not parts:
        return pl.DataFrame(schema=columns)
    data = {name: np.concatenate([p[name] for p in parts]) for name in columns}
    return pl.DataFrame({name: pl.Series(name, data[name], dtype=dtype, strict=False)
                         for name, dtype in columns.items()})


def _scan_batch(batch: pa.RecordBatch, seq_len: int, first: int, bos: int | None):
    n = batch.num_rows
    tokens = batch.column("tokens").flatten().to_numpy(zero_copy_only=False).reshape(n, seq_len)
    docs = batch.column("doc_offsets")
    values = docs.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    bounds = docs.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    bounds = bounds - bounds[0]
    counts = np.maximum(np.diff(bounds) - 1, 0)
    is_last = np.zeros(len(values), dtype=bool)
    is_last[bounds[1:][np.diff(bounds) > 0] - 1] = True
    index = np.nonzero(~is_last)[0]
    starts, ends = values[index], values[index + 1]
    rows = np.repeat(np.arange(n), counts)
    piece = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    used = np.where(np.diff(bounds) > 0, values[np.maximum(bounds[1:] - 1, 0)], 0)
    safe = np.clip(starts, 0, seq_len - 1)
    begins = tokens[rows, safe] == bos if bos is not None else np.ones(len(rows), dtype=bool)
    loss_rows = np.full(n, None, dtype=object)
    loss_pieces = np.full(len(rows), None, dtype=object)
    if "loss_mask" in batch.schema.names:
        mask = batch.column("loss_mask").flatten().to_numpy(zero_copy_only=False).reshape(n, seq_len)
        cumulative = np.concatenate([np.zeros((n, 1), np.int64), np.cumsum(mask, axis=1, dtype=np.int64)], axis=1)
        loss_rows = cumulative[:, -1]
        loss_pieces = cumulative[rows, np.clip(ends, 0, seq_len)] - cumulative[rows, np.clip(starts, 0, seq_len)]
    flat = lambda column: batch.column(column).flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    sequences = {
        "seq": first + np.arange(n), "tokens": used, "padding": seq_len - used, "pieces": counts,
        "documents": np.bincount(rows[begins], minlength=n), "loss_tokens": loss_rows,
    }
    pieces = {
        "seq": first + rows, "piece": piece, "source": flat("doc_source"), "domain": flat("doc_domain"),
        "tier": flat("doc_tier"), "start": starts, "length": ends - starts, "starts_document": begins,
        "loss_tokens": loss_pieces,
    }
    return sequences, pieces, batch.column("doc_ids").flatten()
