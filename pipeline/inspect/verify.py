"""Every problem of a phase, one line each (`rnj shards verify`).

The reader (`pipeline.shards.open_phase`) refuses a phase at its first problem; this walks everything and
lists what it finds, using the reader's own checks for the manifest and each file (`manifest_problems`,
`shard_file_problems`, `unlisted_shards`) and adding the content checks below, per sequence:

    tokens       every id below the manifest's vocab_size; padding (the pad id) only after the last piece
    doc_offsets  starting at 0, strictly increasing, ending inside the row (<= seq_len)
    labels       doc_ids / doc_source / doc_domain / doc_tier one per piece, indices inside the manifest's
                 `sources` and `domains`, tiers 0..4
    loss_mask    (SFT) values 0 or 1, never 1 on padding; its length is the schema's seq_len
    totals       sequences per shard, padding, and tokens by domain, tier and source against the manifest

A problem names the phase, the shard (or manifest.json) and, where it applies, the sequence: its global
index in the split, the number `rnj shards show --seq` takes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.inspect.scan import Progress, no_progress
from pipeline.shards import (
    MANIFEST,
    ShardError,
    local_shard_path,
    manifest_problems,
    read_manifest,
    shard_file_problems,
    unlisted_shards,
)

TIERS = 5


@dataclass(frozen=True)
class Problem:
    phase: str
    """STAGE/PHASE, or the phase folder's URI when its manifest cannot be read."""
    shard: str
    """The shard's file name, or manifest.json."""
    message: str
    sequence: int | None = None
    """Global index of the sequence in its split (train or eval), when the problem is in one."""
    kind: str = "file"

    def line(self) -> str:
        where = f"{self.phase}/{self.shard}" + (f" seq {self.sequence}" if self.sequence is not None else "")
        return f"{where}: {self.message}"


@dataclass
class _Totals:
    """Token slots by label index, and padding, summed over the shards read."""

    padding: int = 0
    complete: bool = True
    by_domain: np.ndarray | None = None
    by_tier: np.ndarray | None = None
    by_source: np.ndarray | None = None

    def add(self, name: str, values: np.ndarray, weights: np.ndarray) -> None:
        counts = np.bincount(values, weights=weights).astype(np.int64) if len(values) else np.zeros(0, np.int64)
        current = getattr(self, name)
        if current is None:
            setattr(self, name, counts)
            return
        size = max(len(current), len(counts))
        setattr(self, name, np.pad(current, (0, size - len(current))) + np.pad(counts, (0, size - len(counts))))


def verify_phase(uri: str, limit: int = 10, progress: Progress = no_progress, cache_dir: str | None = None,
                 shard: str | None = None) -> list[Problem]:
    """Every problem of the phase at `uri` (or of its shard `shard` only); empty when everything holds.
    At most `limit` sequences per shard and kind of problem are named (0: all), then one line counts the rest."""
    try:
        manifest = read_manifest(uri)
    except ShardError as err:
        return [Problem(uri, MANIFEST, str(err))]
    name = f"{manifest['stage']}/{manifest['phase']}"
    problems = [Problem(name, MANIFEST, p) for p in manifest_problems(manifest)]
    splits = [("train", manifest["shards"]), ("eval", manifest.get("eval", {}).get("shards", []))]
    work = [(split, entry, first) for split, entries in splits
            for entry, first in zip(entries, np.cumsum([0] + [e["num_sequences"] for e in entries]))
            if shard is None or entry["path"] == shard]
    totals = {"train": _Totals(), "eval": _Totals()}
    for split, entry, first in progress(work, total=len(work), desc=f"verify {name}"):
        found = list(_shard_problems(uri, manifest, entry, int(first), totals[split], cache_dir))
        problems += _capped([Problem(name, entry["path"], m, s, k) for s, k, m in found], limit)
    if shard is None:
        problems += [Problem(name, MANIFEST, m) for m in _total_problems(manifest, totals)]
        problems += [Problem(name, n, "not listed in the manifest (a leftover of another build, or copied in by "
                                      "hand): the reader never reads it") for n in unlisted_shards(uri, manifest)]
    return problems


def _capped(problems: list[Problem], limit: int) -> list[Problem]:
    if not limit:
        return problems
    out, seen = [], {}
    for p in problems:
        if p.sequence is None:
            out.append(p)
            continue
        seen[p.kind] = seen.get(p.kind, 0) + 1
        if seen[p.kind] <= limit:
            out.append(p)
    for kind, count in seen.items():
        if count > limit:
            shard = next(p.shard for p in problems if p.kind == kind)
            out.append(Problem(problems[0].phase, shard, f"... and {count - limit} more sequences with this "
                               f"problem ({kind}); --limit 0 lists them all", None, kind))
    return out


def _shard_problems(uri: str, manifest: dict, entry: dict, first: int, totals: _Totals,
                    cache_dir: str | None) -> Iterator[tuple[int | None, str, str]]:
    """(sequence or None, kind, message) for one listed shard."""
    seq_len, name = manifest["seq_len"], entry["path"]
    try:
        path = local_shard_path(uri, name, cache_dir)
    except ShardError:
        totals.complete = False
        yield None, "file", "listed in the manifest but missing"
        return
    file_problems = shard_file_problems(path, entry, seq_len, manifest, "full")
    for message in file_problems:
        yield None, "file", message.removeprefix(f"{name}: ")
    if any("not an Arrow IPC file" in m or "schema" in m for m in file_problems):
        totals.complete = False
        return
    reader = pa.ipc.open_file(pa.memory_map(path, "r"))
    stored = (reader.schema.metadata or {}).get(b"rnj.seq_len")
    if stored is not None and int(stored) != seq_len:
        yield None, "file", f"schema metadata rnj.seq_len {int(stored)} differs from the manifest's {seq_len}"
    rows = 0
    for b in range(reader.num_record_batches):
        try:
            batch = reader.get_batch(b)
        except (pa.ArrowInvalid, OSError) as err:
            totals.complete = False
            yield None, "file", f"record batch {b} cannot be read ({err})"
            continue
        yield from ((first + rows + r, kind, m) for r, kind, m in content_problems(batch, manifest, totals))
        rows += batch.num_rows
    if rows != entry["num_sequences"]:
        yield None, "file", f"holds {rows} sequences, the manifest says {entry['num_sequences']}"


def content_problems(batch: pa.RecordBatch, manifest: dict, totals: _Totals | None = None
                     ) -> list[tuple[int, str, str]]:
    """(row, kind, message) for every sequence of `batch` that breaks the format; adds its token slots by
    label to `totals`. Vectorised over the batch."""
    n, seq_len = batch.num_rows, manifest["seq_len"]
    out: list[tuple[int, str, str]] = []
    tokens = batch.column("tokens").flatten().to_numpy(zero_copy_only=False).reshape(n, seq_len)
    vocab = manifest["vocab_size"]
    above = tokens >= vocab
    for r in np.nonzero(above.any(axis=1))[0]:
        p = int(np.argmax(above[r]))
        message = f"{int(above[r].sum())} token ids >= vocab_size {vocab} (first: id {int(tokens[r, p])} at position {p})"
        out.append((int(r), "token_id", message))
    docs = batch.column("doc_offsets")
    values = docs.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    bounds = docs.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    bounds -= bounds[0]
    lengths = np.diff(bounds)
    row_of = np.repeat(np.arange(n), lengths)
    for r in np.nonzero(lengths == 0)[0]:
        out.append((int(r), "offsets", "doc_offsets is empty (it needs the start of each piece and the end)"))
    has = lengths > 0
    firsts = np.where(has, values[np.minimum(bounds[:-1], max(len(values) - 1, 0))] if len(values) else 0, 0)
    lasts = np.where(has, values[np.maximum(bounds[1:] - 1, 0)] if len(values) else 0, 0)
    for r in np.nonzero(has & (firsts != 0))[0]:
        out.append((int(r), "offsets", f"doc_offsets starts at {int(firsts[r])}, not 0"))
    within = np.ones(max(len(values) - 1, 0), dtype=bool)
    ends_of_rows = bounds[1:][has] - 1
    within[ends_of_rows[ends_of_rows < len(within)]] = False
    falling = np.nonzero(within & (np.diff(values) <= 0))[0]
    for r in np.unique(row_of[falling]):
        i = int(falling[row_of[falling] == r][0])
        piece = i - int(bounds[r])
        message = f"doc_offsets not increasing at piece {piece} ({int(values[i])} then {int(values[i + 1])})"
        out.append((int(r), "offsets", message))
    outside = has & (lasts > seq_len)
    for r in np.nonzero(outside)[0]:
        out.append((int(r), "offsets", f"doc_offsets ends at {int(lasts[r])}, beyond the row (seq_len {seq_len})"))
    negative = np.unique(row_of[values < 0])
    for r in negative:
        out.append((int(r), "offsets", "doc_offsets holds a negative offset"))
    pieces = np.maximum(lengths - 1, 0)
    out += _label_problems(batch, manifest, pieces)
    end = np.clip(lasts, 0, seq_len)
    special = manifest.get("special_tokens") or {}
    if "pad" in special:
        after = np.arange(seq_len)[None, :] >= end[:, None]
        wrong = after & (tokens != special["pad"])
        for r in np.nonzero(wrong.any(axis=1))[0]:
            p = int(np.argmax(wrong[r]))
            message = (f"token {int(tokens[r, p])} at position {p}, after the last piece (ends at {int(end[r])}): "
                       f"padding must be the pad id {special['pad']}")
            out.append((int(r), "padding", message))
    if "loss_mask" in batch.schema.names:
        out += _mask_problems(batch, n, seq_len, end)
    if totals is not None:
        totals.padding += int((seq_len - end).sum())
        _add_totals(batch, values, bounds, pieces, totals, clean=not out)
    out.sort(key=lambda p: p[0])
    return out


def _label_problems(batch: pa.RecordBatch, manifest: dict, pieces: np.ndarray) -> list[tuple[int, str, str]]:
    out = []
    limits = {"doc_source": len(manifest.get("sources") or []) or None,
              "doc_domain": len(manifest.get("domains") or []) or None, "doc_tier": TIERS}
    for column in ("doc_ids", "doc_source", "doc_domain", "doc_tier"):
        array = batch.column(column)
        lengths = np.diff(array.offsets.to_numpy(zero_copy_only=False).astype(np.int64))
        for r in np.nonzero(lengths != pieces)[0]:
            out.append((int(r), "labels", f"{column} holds {int(lengths[r])} entries for {int(pieces[r])} pieces"))
        limit = limits.get(column)
        if limit is None:
            continue
        values = array.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        row_of = np.repeat(np.arange(batch.num_rows), lengths)
        for r in np.unique(row_of[values >= limit]):
            bad = values[(row_of == r) & (values >= limit)]
            what = "tier" if column == "doc_tier" else f"index into the manifest's {column[4:]}s ({limit} entries)"
            out.append((int(r), "labels", f"{column} value {int(bad[0])} is not a valid {what}"))
    return out


def _mask_problems(batch: pa.RecordBatch, n: int, seq_len: int, end: np.ndarray) -> list[tuple[int, str, str]]:
    out = []
    mask = batch.column("loss_mask").flatten().to_numpy(zero_copy_only=False)
    if len(mask) != n * seq_len:
        return [(0, "loss_mask", f"loss_mask holds {len(mask)} values for {n} sequences of {seq_len}")]
    mask = mask.reshape(n, seq_len)
    for r in np.nonzero((mask > 1).any(axis=1))[0]:
        out.append((int(r), "loss_mask", f"loss_mask value {int(mask[r].max())}: it must be 0 or 1"))
    on_padding = (np.arange(seq_len)[None, :] >= end[:, None]) & (mask != 0)
    for r in np.nonzero(on_padding.any(axis=1))[0]:
        out.append((int(r), "loss_mask", f"loss_mask is 1 on padding at position {int(np.argmax(on_padding[r]))}"))
    return out


def _add_totals(batch: pa.RecordBatch, values: np.ndarray, bounds: np.ndarray, pieces: np.ndarray, totals: _Totals,
                clean: bool) -> None:
    """Token slots by label; a batch with broken offsets or labels makes the totals incomplete."""
    if not clean:
        totals.complete = False
        return
    keep = np.ones(len(values), dtype=bool)
    keep[bounds[1:][np.diff(bounds) > 0] - 1] = False
    index = np.nonzero(keep)[0]
    lengths = values[index + 1] - values[index]
    for name, column in (("by_domain", "doc_domain"), ("by_tier", "doc_tier"), ("by_source", "doc_source")):
        totals.add(name, batch.column(column).flatten().to_numpy(zero_copy_only=False).astype(np.int64), lengths)


def _total_problems(manifest: dict, totals: dict[str, _Totals]) -> list[str]:
    train, held = totals["train"], totals["eval"]
    out = []
    if train.complete and train.padding != manifest["num_padding_tokens"]:
        out.append(f"the training shards hold {train.padding} padding tokens, num_padding_tokens says "
                   f"{manifest['num_padding_tokens']}")
    expected_eval = manifest.get("eval", {}).get("num_padding_tokens")
    if held.complete and expected_eval is not None and held.padding != expected_eval:
        out.append(f"the eval shards hold {held.padding} padding tokens, eval.num_padding_tokens says {expected_eval}")
    if not train.complete:
        return out
    names = {"by_domain": manifest.get("domains"), "by_source": manifest.get("sources"), "by_tier": None}
    for key, labels in names.items():
        expected = manifest.get(f"tokens_{key}") or {}
        if not expected:  # builds that do not record the totals (nothing to compare)
            continue
        counts = getattr(train, key)
        counts = counts if counts is not None else np.zeros(0, np.int64)
        found = {(labels[i] if labels and i < len(labels) else str(i)): int(v) for i, v in enumerate(counts) if v}
        if found != {k: v for k, v in expected.items() if v}:
            differing = sorted(k for k in set(found) | set(expected) if found.get(k, 0) != expected.get(k, 0))
            detail = ", ".join(f"{k}: {found.get(k, 0)} vs {expected.get(k, 0)}" for k in differing[:6])
            out.append(f"tokens_{key} differs from the shards (shards vs manifest: {detail})")
    return out
