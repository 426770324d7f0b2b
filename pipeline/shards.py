"""The shard format: writing packed sequences, the per-phase manifest, and the reader the trainer uses.

Layout: `OUTPUT/build/STAGE/PHASE/` holds `manifest.json`, `train-00000.arrow` ... (in training order) and
`eval-00000.arrow` (held-out sequences). Each shard is an uncompressed Arrow IPC file (see docs/shards.md):

| column        | type                               | meaning                                          |
|---------------|------------------------------------|--------------------------------------------------|
| `tokens`      | fixed_size_list<uint32>[seq_len]   | token ids; padding (pad id) only at the end      |
| `doc_offsets` | list<int32>                        | start of each document piece, then the end of the last (cu_seqlens) |
| `doc_ids`     | list<string>                       | the id of each piece's document                  |
| `doc_source`  | list<uint16>                       | index into the manifest's `sources`              |
| `doc_domain`  | list<uint8>                        | index into the manifest's `domains`              |
| `doc_tier`    | list<uint8>                        | tier 0..4                                         |
| `loss_mask`   | fixed_size_list<uint8>[seq_len]    | SFT only: 1 where the loss counts (assistant tokens) |

The reader (`open_phase`) checks the manifest, every shard's schema, size and sha256 before use (style
habit 4), memory-maps local files (remote ones are copied to a local cache first), and gives zero-copy numpy
and torch views by global sequence index, plus a resumable, rank-sharded iterator.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import fsspec
import numpy as np
import pyarrow as pa

from pipeline.packing import Piece

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ROWS_PER_BATCH = 64
"""Sequences per Arrow record batch inside a shard (the unit of zero-copy slicing)."""
REQUIRED_KEYS = (
    "format_version", "stage", "phase", "seq_len", "vocab_size", "tokenizer_sha256", "build_hash", "seed",
    "num_sequences", "num_tokens", "num_padding_tokens", "tokens_by_domain", "tokens_by_tier",
    "tokens_by_source", "shards",
)


class ShardError(ValueError):
    """Shards that must not be trained on: the message names the file, the key and what was expected."""


def shard_schema(seq_len: int, loss_mask: bool, metadata: dict[str, str] | None = None) -> pa.Schema:
    fields = [
        pa.field("tokens", pa.list_(pa.uint32(), seq_len), nullable=False),
        pa.field("doc_offsets", pa.list_(pa.int32()), nullable=False),
        pa.field("doc_ids", pa.list_(pa.string()), nullable=False),
        pa.field("doc_source", pa.list_(pa.uint16()), nullable=False),
        pa.field("doc_domain", pa.list_(pa.uint8()), nullable=False),
        pa.field("doc_tier", pa.list_(pa.uint8()), nullable=False),
    ]
    if loss_mask:
        fields.append(pa.field("loss_mask", pa.list_(pa.uint8(), seq_len), nullable=False))
    return pa.schema(fields, metadata=metadata)


# --- writing ----------------------------------------------------------------------------------------------

@dataclass
class Item:
    """One packable piece of a document: its framed token slots and what the shard records about it."""

    tokens: np.ndarray
    """uint32 token slots (with `<bos>`/`<eos>` where this piece holds the document's start/end)."""
    mask: np.ndarray | None
    doc_id: str
    source: int
    domain: int
    tier: int


@dataclass
class PackedShard:
    table: pa.Table
    num_padding: int
    tokens_by_domain: dict[int, int]
    tokens_by_tier: dict[int, int]
    tokens_by_source: dict[int, int]


def assemble(bins: list[list[Piece]], items: Sequence[Item], seq_len: int, pad_id: int, loss_mask: bool,
             metadata: dict[str, str] | None = None) -> PackedShard:
    """Packed bins to a shard table: tokens padded at the end, document offsets and ids per sequence."""
    n = len(bins)
    tokens = np.full((n, seq_len), pad_id, dtype=np.uint32)
    mask = np.zeros((n, seq_len), dtype=np.uint8) if loss_mask else None
    offsets, ids, sources, domains, tiers = [], [], [], [], []
    by_domain: dict[int, int] = {}
    by_tier: dict[int, int] = {}
    by_source: dict[int, int] = {}
    for row, pieces in enumerate(bins):
        at, starts = 0, []
        for index, offset, length in pieces:
            item = items[index]
            tokens[row, at:at + length] = item.tokens[offset:offset + length]
            if mask is not None and item.mask is not None:
                mask[row, at:at + length] = item.mask[offset:offset + length]
            starts.append(at)
            at += length
            by_domain[item.domain] = by_domain.get(item.domain, 0) + length
            by_tier[item.tier] = by_tier.get(item.tier, 0) + length
            by_source[item.source] = by_source.get(item.source, 0) + length
        offsets.append(starts + [at])
        ids.append([items[i].doc_id for i, _, _ in pieces])
        sources.append([items[i].source for i, _, _ in pieces])
        domains.append([items[i].domain for i, _, _ in pieces])
        tiers.append([items[i].tier for i, _, _ in pieces])
    schema = shard_schema(seq_len, loss_mask, metadata)
    columns = [
        pa.FixedSizeListArray.from_arrays(pa.array(tokens.reshape(-1), pa.uint32()), seq_len),
        pa.array(offsets, pa.list_(pa.int32())),
        pa.array(ids, pa.list_(pa.string())),
        pa.array(sources, pa.list_(pa.uint16())),
        pa.array(domains, pa.list_(pa.uint8())),
        pa.array(tiers, pa.list_(pa.uint8())),
    ]
    if mask is not None:
        columns.append(pa.FixedSizeListArray.from_arrays(pa.array(mask.reshape(-1), pa.uint8()), seq_len))
    used = sum(length for pieces in bins for _, _, length in pieces)
    return PackedShard(pa.Table.from_arrays(columns, schema=schema), n * seq_len - used, by_domain, by_tier, by_source)


def shard_bytes(table: pa.Table) -> bytes:
    """The IPC file bytes of a shard: uncompressed, fixed record batch size, hence deterministic."""
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=ROWS_PER_BATCH):
            writer.write_batch(batch)
    return sink.getvalue()


def write_shard(uri: str, table: pa.Table) -> tuple[str, int]:
    """Write a shard, read it back and hash what is on storage; returns (sha256, size in bytes)."""
    data = shard_bytes(table)
    expected = hashlib.sha256(data).hexdigest()
    with fsspec.open(uri, "wb") as f:
        f.write(data)
    with fsspec.open(uri, "rb") as f:
        stored = _sha256(f)
    if stored != expected:
        raise OSError(f"{uri}: the shard read back differs from what was written (storage fault?)")
    return expected, len(data)


def _sha256(f) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 22), b""):
        digest.update(block)
    return digest.hexdigest()


def write_manifest(folder_uri: str, manifest: dict) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    assert not missing, f"manifest lacks {missing}"
    with fsspec.open(posixpath.join(folder_uri, MANIFEST), "w") as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


# --- reading ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SequenceView:
    """One sequence: numpy views into the shard (no copy), read-only."""

    index: int
    tokens: np.ndarray
    """uint32 [seq_len]."""
    doc_offsets: np.ndarray
    """int32 [documents + 1]: piece starts, then the end of the last (the rest is padding)."""
    loss_mask: np.ndarray | None
    """uint8 [seq_len] for SFT phases; None means every non-padding token counts."""

    @property
    def num_tokens(self) -> int:
        """Non-padding tokens."""
        return int(self.doc_offsets[-1])


class _Shard:
    """One memory-mapped shard file and its record batches."""

    def __init__(self, path: str, seq_len: int):
        self.source = pa.memory_map(path, "r")
        self.reader = pa.ipc.open_file(self.source)
        self.batches = [self.reader.get_batch(i) for i in range(self.reader.num_record_batches)]
        self.starts = np.cumsum([0] + [b.num_rows for b in self.batches])
        self.seq_len = seq_len
        self._views: dict[int, tuple] = {}

    @property
    def num_rows(self) -> int:
        return int(self.starts[-1])

    def views(self, b: int) -> tuple:
        """Zero-copy numpy views of record batch b: tokens [rows, L], offsets values/starts, mask or None."""
        if b not in self._views:
            batch = self.batches[b]
            tokens = batch.column("tokens").flatten().to_numpy(zero_copy_only=True).reshape(-1, self.seq_len)
            docs = batch.column("doc_offsets")
            values = docs.values.to_numpy(zero_copy_only=True)
            starts = docs.offsets.to_numpy(zero_copy_only=True)
            mask = None
            if "loss_mask" in batch.schema.names:
                mask = batch.column("loss_mask").flatten().to_numpy(zero_copy_only=True).reshape(-1, self.seq_len)
            self._views[b] = (tokens, values, starts, mask)
        return self._views[b]

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        b = int(np.searchsorted(self.starts, i, side="right") - 1)
        r = i - int(self.starts[b])
        tokens, values, starts, mask = self.views(b)
        return tokens[r], values[starts[r]:starts[r + 1]], None if mask is None else mask[r]


class Phase:
    """The shards of one phase (`split` train or eval), opened and checked. Index = global sequence index."""

    def __init__(self, uri: str, manifest: dict, split: str, paths: list[str]):
        self.uri, self.manifest, self.split = uri, manifest, split
        self.seq_len: int = manifest["seq_len"]
        entries = _split_entries(manifest, split)
        self._shards = [_Shard(p, self.seq_len) for p in paths]
        for entry, shard, path in zip(entries, self._shards, paths):
            if shard.num_rows != entry["num_sequences"]:
                raise ShardError(f"{entry['path']}: holds {shard.num_rows} sequences, the manifest says "
                                 f"{entry['num_sequences']}")
        self._starts = np.cumsum([0] + [s.num_rows for s in self._shards])

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def build_hash(self) -> str:
        return self.manifest["build_hash"]

    def sequence(self, index: int) -> SequenceView:
        if not 0 <= index < len(self):
            raise IndexError(f"sequence {index} out of range: the phase holds {len(self)}")
        s = int(np.searchsorted(self._starts, index, side="right") - 1)
        tokens, offsets, mask = self._shards[s].row(index - int(self._starts[s]))
        return SequenceView(index, tokens, offsets, mask)

    def tokens(self, index: int) -> np.ndarray:
        return self.sequence(index).tokens

    def torch_tokens(self, index: int):
        """The tokens as a torch tensor sharing the mapped memory (read-only: copy before writing)."""
        return as_torch(self.tokens(index))

    def batch(self, indices: Sequence[int]) -> np.ndarray:
        """Tokens of several sequences stacked into a new [len(indices), seq_len] array (a copy)."""
        return np.stack([self.tokens(i) for i in indices]) if indices else np.empty((0, self.seq_len), np.uint32)

    def iterator(self, rank: int = 0, world: int = 1) -> PhaseIterator:
        return PhaseIterator(self, rank, world)

    @property
    def entries(self) -> list[dict]:
        """The manifest's entries of this split's shards, in order."""
        return _split_entries(self.manifest, self.split)

    def record_batches(self) -> Iterator[tuple[str, int, pa.RecordBatch]]:
        """(shard name, global index of its first row, batch) for every record batch in order: every column
        of the shards (document ids and labels too), for inspection tools."""
        for entry, shard, start in zip(self.entries, self._shards, self._starts):
            for b, batch in enumerate(shard.batches):
                yield entry["path"], int(start + shard.starts[b]), batch

    def locate(self, index: int) -> tuple[str, int]:
        """(shard name, row inside it) of global sequence `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"sequence {index} out of range: the phase holds {len(self)}")
        s = int(np.searchsorted(self._starts, index, side="right") - 1)
        return self.entries[s]["path"], index - int(self._starts[s])

    def row(self, index: int) -> dict:
        """Every column of sequence `index` as Python values (a copy; for display, not for training)."""
        name, r = self.locate(index)
        shard = self._shards[[e["path"] for e in self.entries].index(name)]
        b = int(np.searchsorted(shard.starts, r, side="right") - 1)
        return shard.batches[b].slice(r - int(shard.starts[b]), 1).to_pylist()[0]


def as_torch(array: np.ndarray):
    """A torch tensor over the same memory. Shard pages are read-only, which torch warns about; the
    tensors must not be written in place (the trainer copies them to the device)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array.view(np.int32) if array.dtype == np.uint32 else array)


class PhaseIterator:
    """Yields this rank's sequences in training order: global indices rank, rank + world, ...

    Ranks advance in lockstep, so the state is the number of sequences all ranks have consumed together;
    resuming from `state_dict()` (even with another world size that divides it) continues exactly where the
    run stopped: no sequence is repeated or skipped.
    """

    def __init__(self, phase: Phase, rank: int = 0, world: int = 1):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} must lie in [0, world={world})")
        self.phase, self.rank, self.world = phase, rank, world
        self.position = 0
        """Sequences this rank has yielded."""

    def __iter__(self) -> Iterator[SequenceView]:
        return self

    def __next__(self) -> SequenceView:
        index = self.position * self.world + self.rank
        if index >= len(self.phase):
            raise StopIteration
        self.position += 1
        return self.phase.sequence(index)

    def state_dict(self) -> dict:
        return {
            "build_hash": self.phase.build_hash, "split": self.phase.split,
            "consumed": self.position * self.world, "world": self.world,
        }

    def load_state_dict(self, state: dict, allow_other_build: bool = False) -> None:
        if state["build_hash"] != self.phase.build_hash and not allow_other_build:
            raise ShardError(
                f"the iterator state was saved on shards with build_hash {state['build_hash'][:12]}..., these "
                f"have {self.phase.build_hash[:12]}...: the data changed; pass allow_other_build=True to go on"
            )
        if state["split"] != self.phase.split:
            raise ShardError(f"the state is for split {state['split']!r}, this iterator reads {self.phase.split!r}")
        if state["consumed"] % self.world:
            raise ShardError(f"{state['consumed']} consumed sequences cannot be shared by {self.world} ranks in "
                             "lockstep; resume with a world size that divides it")
        self.position = state["consumed"] // self.world


def read_manifest(uri: str) -> dict:
    path = posixpath.join(uri.rstrip("/"), MANIFEST)
    try:
        with fsspec.open(path, "r") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ShardError(f"{uri} holds no {MANIFEST}: not a built phase (expected OUTPUT/build/STAGE/PHASE)") from None
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ShardError(f"{path}: lacks {', '.join(missing)}")
    if manifest["format_version"] > FORMAT_VERSION:
        raise ShardError(f"{path}: format_version {manifest['format_version']} is newer than this reader's "
                         f"{FORMAT_VERSION}: update rnj")
    return manifest


def _split_entries(manifest: dict, split: str) -> list[dict]:
    if split == "train":
        return manifest["shards"]
    if split == "eval":
        return manifest.get("eval", {}).get("shards", [])
    raise ValueError(f"split must be 'train' or 'eval', got {split!r}")


def open_phase(
    uri: str, *, split: Literal["train", "eval"] = "train", verify: Literal["full", "metadata"] = "full",
    expect: dict | None = None, cache_dir: str | None = None,
) -> Phase:
    """Open the phase at `uri` (a folder with manifest.json, on any fsspec filesystem) and check it.

    Checks: the manifest's keys and version; `expect` (e.g. build_hash, tokenizer_sha256, seq_len,
    vocab_size from the build file) key by key; totals (num_tokens = num_sequences * seq_len, shard
    sequences adding up); every listed shard present, of the listed size, with the listed sha256
    (`verify="full"`; `"metadata"` skips the hashing) and with the expected schema. Remote shards are
    copied to `cache_dir` (default: fsspec's temporary cache) and memory-mapped from there.
    """
    manifest = read_manifest(uri)
    for key, value in (expect or {}).items():
        if manifest.get(key) != value:
            raise ShardError(f"{uri}: manifest {key} is {manifest.get(key)!r}, expected {value!r} (built with "
                             "another tokenizer, sequence length or curriculum: rebuild, or fix the build file)")
    for problem in manifest_problems(manifest):
        raise ShardError(f"{uri}: {problem}")
    seq_len = manifest["seq_len"]
    paths = []
    for entry in _split_entries(manifest, split):
        path = local_shard_path(uri, entry["path"], cache_dir)
        _check_file(path, entry, seq_len, manifest, verify)
        paths.append(path)
    return Phase(uri, manifest, split, paths)


def manifest_problems(manifest: dict) -> list[str]:
    """What is inconsistent inside a manifest (its totals), without looking at any shard."""
    problems = []
    if manifest["num_tokens"] != manifest["num_sequences"] * manifest["seq_len"]:
        problems.append(f"num_tokens {manifest['num_tokens']} != num_sequences * seq_len")
    if sum(e["num_sequences"] for e in manifest["shards"]) != manifest["num_sequences"]:
        problems.append(f"the shards' num_sequences do not add up to {manifest['num_sequences']}")
    held = manifest.get("eval", {})
    if "num_sequences" in held and sum(e["num_sequences"] for e in held.get("shards", [])) != held["num_sequences"]:
        problems.append(f"the eval shards' num_sequences do not add up to {held['num_sequences']}")
    return problems


def local_shard_path(uri: str, name: str, cache_dir: str | None = None) -> str:
    """A local path to read the shard `name` of the phase at `uri` from: the file itself when the phase is
    local, else a copy in the cache. Raises ShardError when the shard is missing."""
    fs, root = fsspec.core.url_to_fs(uri)
    path = posixpath.join(root, name)
    if not fs.exists(path):
        raise ShardError(f"{fs.unstrip_protocol(path)}: listed in the manifest but missing")
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    return path if local else _cached(fs.unstrip_protocol(path), cache_dir)


def unlisted_shards(uri: str, manifest: dict) -> list[str]:
    """Names of `.arrow` files in the phase folder that the manifest does not list (leftovers of another
    build, or files copied in by hand): the reader never reads them, but they signal a mixed-up folder."""
    fs, root = fsspec.core.url_to_fs(uri)
    listed = {e["path"] for e in manifest["shards"] + manifest.get("eval", {}).get("shards", [])}
    names = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False))
    return [n for n in names if n.endswith(".arrow") and n not in listed]


def _cached(uri: str, cache_dir: str | None) -> str:
    options = {"cache_storage": cache_dir} if cache_dir else {}
    return fsspec.open_local(f"filecache::{uri}", filecache=options)


def _check_file(path: str, entry: dict, seq_len: int, manifest: dict, verify: str) -> None:
    for problem in shard_file_problems(path, entry, seq_len, manifest, verify):
        raise ShardError(problem)


def shard_file_problems(path: str, entry: dict, seq_len: int, manifest: dict,
                        verify: Literal["full", "metadata"] = "full") -> list[str]:
    """Every way the local shard file at `path` differs from its manifest `entry`: size, sha256 (`full`),
    Arrow IPC readability and schema. Each message starts with the shard's name. An empty list: it holds."""
    import os

    name = entry["path"]
    problems = []
    size = os.path.getsize(path)
    if "bytes" in entry and size != entry["bytes"]:
        problems.append(f"{name}: {size} bytes, the manifest says {entry['bytes']} (truncated?)")
    if verify == "full":
        with open(path, "rb") as f:
            digest = _sha256(f)
        if digest != entry["sha256"]:
            problems.append(f"{name}: sha256 {digest[:12]}... differs from the manifest's {entry['sha256'][:12]}... "
                            "(corrupted or replaced)")
    try:
        schema = pa.ipc.open_file(pa.memory_map(path, "r")).schema
    except (pa.ArrowInvalid, OSError) as err:
        problems.append(f"{name}: not an Arrow IPC file ({err})")
        return problems
    expected = shard_schema(seq_len, manifest.get("loss_mask", False))
    if not schema.remove_metadata().equals(expected):
        problems.append(f"{name}: schema {schema.remove_metadata()} differs from the format's {expected}")
    return problems


def check_listing(uri: str) -> dict:
    """The manifest is complete and every shard it lists exists with its size, read from the storage's
    listing only (nothing downloaded): the build's check after writing a phase. Returns the manifest."""
    manifest = read_manifest(uri)
    fs, root = fsspec.core.url_to_fs(uri)
    for entry in manifest["shards"] + manifest.get("eval", {}).get("shards", []):
        path = posixpath.join(root, entry["path"])
        if not fs.exists(path):
            raise ShardError(f"{uri}/{entry['path']}: listed in the manifest but missing")
        if fs.info(path)["size"] != entry["bytes"]:
            raise ShardError(f"{uri}/{entry['path']}: {fs.info(path)['size']} bytes, the manifest says {entry['bytes']}")
    return manifest


def list_phases(build_uri: str) -> list[str]:
    """URIs of every built phase under a build job's output (OUTPUT/build), in training order."""
    fs, root = fsspec.core.url_to_fs(build_uri)
    with fs.open(posixpath.join(root, "curriculum.json"), "r") as f:
        order = json.load(f)["phases"]
    return [fs.unstrip_protocol(posixpath.join(root, p["stage"], p["phase"])) for p in order]
