import itertools
import json

import fsspec
import numpy as np
import pytest

from pipeline.packing import best_fit_decreasing
from pipeline.shards import (
    Item,
    ShardError,
    assemble,
    check_listing,
    open_phase,
    shard_bytes,
    write_manifest,
    write_shard,
)

SEQ = 16
PAD = 0


def make_phase(root: str, shards: int = 3, per_shard: int = 5, loss_mask: bool = False) -> dict:
    """A tiny phase: documents of ids counting up, packed by best fit, `shards` files."""
    rng = np.random.default_rng(0)
    entries, next_token = [], 1
    for s in range(shards):
        items = []
        while sum(len(i.tokens) for i in items) < per_shard * SEQ - 10:
            n = int(rng.integers(2, 12))
            tokens = np.arange(next_token, next_token + n, dtype=np.uint32)
            next_token += n
            mask = (tokens % 2).astype(np.uint8) if loss_mask else None
            items.append(Item(tokens, mask, f"d{next_token}", 0, 1, 2))
        bins = best_fit_decreasing([len(i.tokens) for i in items], SEQ)[:per_shard]
        packed = assemble(bins, items, SEQ, PAD, loss_mask)
        name = f"train-{s:05d}.arrow"
        sha, size = write_shard(f"{root}/{name}", packed.table)
        entries.append({"path": name, "num_sequences": len(bins), "sha256": sha, "bytes": size})
    n = sum(e["num_sequences"] for e in entries)
    manifest = {
        "format_version": 1, "stage": "pretrain", "phase": "stable", "seq_len": SEQ, "vocab_size": 1000,
        "tokenizer_sha256": "t" * 64, "build_hash": "b" * 64, "seed": 0, "num_sequences": n,
        "num_tokens": n * SEQ, "num_padding_tokens": 0, "tokens_by_domain": {}, "tokens_by_tier": {},
        "tokens_by_source": {}, "shards": entries, "loss_mask": loss_mask,
    }
    write_manifest(root, manifest)
    return manifest


def test_assemble_records_boundaries_and_pads_at_the_end():
    items = [Item(np.array([5, 6, 7], np.uint32), None, "a", 0, 0, 1),
             Item(np.array([8, 9], np.uint32), None, "b", 1, 2, 3)]
    packed = assemble([[(0, 0, 3), (1, 0, 2)], [(0, 1, 2)]], items, 6, 99, False)
    rows = packed.table.to_pylist()
    assert rows[0]["tokens"] == [5, 6, 7, 8, 9, 99] and rows[0]["doc_offsets"] == [0, 3, 5]
    assert rows[0]["doc_ids"] == ["a", "b"] and rows[0]["doc_source"] == [0, 1] and rows[0]["doc_tier"] == [1, 3]
    assert rows[1]["tokens"] == [6, 7, 99, 99, 99, 99] and rows[1]["doc_offsets"] == [0, 2]
    assert packed.num_padding == 5 and packed.tokens_by_tier == {1: 5, 3: 2}
    assert shard_bytes(packed.table) == shard_bytes(packed.table)  # deterministic bytes


def test_reader_random_access_zero_copy_and_torch(tmp_path):
    manifest = make_phase(str(tmp_path))
    phase = open_phase(str(tmp_path), expect={"seq_len": SEQ, "build_hash": "b" * 64})
    assert len(phase) == manifest["num_sequences"] == 15
    seq = phase.sequence(7)
    assert seq.tokens.shape == (SEQ,) and seq.tokens.dtype == np.uint32
    assert not seq.tokens.flags.owndata and not seq.tokens.flags.writeable  # a view of the mapped file
    assert seq.doc_offsets[0] == 0 and np.all(np.diff(seq.doc_offsets) > 0)
    # inside a document the ids count up by one: boundaries are where that breaks
    for a, b in itertools.pairwise(seq.doc_offsets):
        assert np.all(np.diff(seq.tokens[a:b].astype(np.int64)) == 1)
    tensor = phase.torch_tokens(7)
    assert tensor.data_ptr() == seq.tokens.ctypes.data and tensor.tolist() == seq.tokens.tolist()
    assert phase.batch([0, 14]).shape == (2, SEQ)
    with pytest.raises(IndexError):
        phase.sequence(15)


def test_reader_checks_the_manifest_and_every_shard(tmp_path):
    make_phase(str(tmp_path))
    assert check_listing(str(tmp_path))["num_sequences"] == 15
    with pytest.raises(ShardError, match="tokenizer_sha256"):
        open_phase(str(tmp_path), expect={"tokenizer_sha256": "x"})
    path = tmp_path / "train-00001.arrow"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="train-00001.arrow: sha256"):
        open_phase(str(tmp_path))
    path.write_bytes(bytes(data[:-10]))
    with pytest.raises(ShardError, match="truncated"):
        open_phase(str(tmp_path))
    path.unlink()
    with pytest.raises(ShardError, match="missing"):
        open_phase(str(tmp_path))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps(manifest | {"format_version": 9}))
    with pytest.raises(ShardError, match="newer"):
        open_phase(str(tmp_path))
    with pytest.raises(ShardError, match="no manifest.json"):
        open_phase(str(tmp_path / "nothing"))


def test_remote_phase_is_read_through_a_local_cache(tmp_path):
    root = "memory://rnj-test/phase"
    make_phase(root, loss_mask=True)
    phase = open_phase(root, cache_dir=str(tmp_path / "cache"))
    assert len(phase) == 15 and phase.sequence(3).loss_mask.shape == (SEQ,)
    assert any((tmp_path / "cache").iterdir())
    fsspec.filesystem("memory").rm("/rnj-test", recursive=True)


def test_rank_sharding_and_resume_neither_repeat_nor_skip(tmp_path):
    make_phase(str(tmp_path), shards=3, per_shard=8)  # 24 sequences
    phase = open_phase(str(tmp_path))
    full = [[s.index for s in phase.iterator(rank, 2)] for rank in range(2)]
    assert full == [list(range(0, 24, 2)), list(range(1, 24, 2))]
    # stop both ranks after 5 steps, resume from the saved state (also onto 4 ranks)
    seen = []
    its = [phase.iterator(r, 2) for r in range(2)]
    for _ in range(5):
        seen += [next(it).index for it in its]
    state = its[0].state_dict()
    assert state == its[1].state_dict() | {} and state["consumed"] == 10
    resumed = [phase.iterator(r, 2) for r in range(2)]
    for it in resumed:
        it.load_state_dict(state)
    seen += [s.index for it in resumed for s in it]
    assert sorted(seen) == list(range(24))
    wider = [phase.iterator(r, 5) for r in range(5)]
    for it in wider:
        it.load_state_dict(state)
    assert sorted(s.index for it in wider for s in it) == list(range(10, 24))
    with pytest.raises(ShardError, match="build_hash"):
        its[0].load_state_dict(state | {"build_hash": "c" * 64})
    with pytest.raises(ShardError, match="divides"):
        phase.iterator(0, 3).load_state_dict(state)
