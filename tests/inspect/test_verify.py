"""`rnj shards verify` on the tiny build and on damaged copies; the content checks on hand-made rows; the
clear errors for URIs that name nothing inspectable."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from pipeline.inspect.verify import content_problems
from pipeline.shards import open_phase, shard_file_problems, shard_schema

STABLE = "build/pretrain/stable"


def lines(result) -> list[str]:
    return result.stdout.splitlines()


def test_a_sound_build_verifies(rnj, output):
    result = rnj("shards", "verify", output)
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "ok: 2 phases, 4 shards, 21 sequences hold" in result.stderr


def test_a_flipped_byte_is_a_sha256_mismatch(rnj, copy):
    path = copy / STABLE / "train-00001.arrow"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = rnj("shards", "verify", copy)
    assert result.exit_code == 1
    assert any(line.startswith("pretrain/stable/train-00001.arrow: sha256 ") and "corrupted or replaced" in line
               for line in lines(result))
    assert all("train-00001.arrow" in line for line in lines(result))  # nothing else is blamed
    assert "problem" in result.stderr


def test_a_truncated_shard(rnj, copy):
    path = copy / STABLE / "train-00000.arrow"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-300])
    out = lines(rnj("shards", "verify", copy / STABLE))
    assert f"pretrain/stable/train-00000.arrow: {size - 300} bytes, the manifest says {size} (truncated?)" in out
    assert any("train-00000.arrow: not an Arrow IPC file" in line for line in out)


def test_a_missing_manifest(rnj, copy):
    (copy / STABLE / "manifest.json").unlink()
    phase = rnj("shards", "verify", copy / STABLE)
    assert phase.exit_code == 2
    assert "holds 3 shard files but no manifest.json" in phase.output and "rebuild" in phase.output
    build = rnj("shards", "verify", copy)  # the curriculum names the phase: one problem line for it
    assert build.exit_code == 1
    assert any(line.endswith(f"{copy / STABLE} holds no manifest.json: not a built phase (expected "
                             "OUTPUT/build/STAGE/PHASE)") for line in lines(build))


def test_a_wrong_vocabulary_size_names_each_sequence(rnj, copy):
    path = copy / STABLE / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(manifest | {"vocab_size": 300}))  # the specials (512+) and many ids lie above
    result = rnj("shards", "verify", copy / STABLE, "--limit", "0")
    assert result.exit_code == 1
    tokens = [line for line in lines(result) if "token ids >= vocab_size 300" in line]
    above = [f"{split}:{i}" for split in ("train", "eval") for phase in [open_phase(str(copy / STABLE), split=split)]
             for i in range(len(phase)) if phase.tokens(i).max() >= 300]
    assert len(tokens) == len(above) == 15  # the two middle pieces of the long code document hold no id >= 300
    assert "pretrain/stable/train-00000.arrow seq 0: " in tokens[0] and "(first: id 512 at position 0)" in tokens[0]
    assert any(line.startswith("pretrain/stable/train-00001.arrow seq 15: ") for line in tokens)
    assert any(line.startswith("pretrain/stable/eval-00000.arrow seq 0: ") for line in tokens)
    capped = lines(rnj("shards", "verify", copy / STABLE, "--limit", "2"))
    assert "pretrain/stable/train-00000.arrow: ... and 4 more sequences with this problem (token_id); --limit 0 " \
           "lists them all" in capped


def test_a_shard_missing_from_disk_and_an_unlisted_one(rnj, copy):
    folder = copy / STABLE
    (folder / "train-00001.arrow").rename(folder / "train-00007.arrow")
    result = rnj("shards", "verify", folder)
    assert result.exit_code == 1
    out = lines(result)
    assert "pretrain/stable/train-00001.arrow: listed in the manifest but missing" in out
    assert ("pretrain/stable/train-00007.arrow: not listed in the manifest (a leftover of another build, or copied "
            "in by hand): the reader never reads it") in out
    listing = rnj("shards", "ls", folder).stdout
    assert "MISSING" in listing and "NOT IN MANIFEST" in listing
    shown = rnj("shards", "show", folder / "train-00007.arrow", "--seq", "0")
    assert shown.exit_code == 2 and "does not list train-00007.arrow" in shown.output


def test_manifest_totals_that_disagree_with_the_shards(rnj, copy):
    path = copy / STABLE / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["num_padding_tokens"] += 1
    manifest["tokens_by_domain"]["code"] += 5
    path.write_text(json.dumps(manifest))
    out = lines(rnj("shards", "verify", copy / STABLE))
    assert ("pretrain/stable/manifest.json: the training shards hold 52 padding tokens, num_padding_tokens says 53"
            in out)
    assert "pretrain/stable/manifest.json: tokens_by_domain differs from the shards (shards vs manifest: code: 486 " \
           "vs 491)" in out


def test_uris_that_name_nothing_give_clear_errors(rnj, copy, tmp_path):
    missing = rnj("shards", "ls", tmp_path / "nowhere")
    assert missing.exit_code == 2 and f"{tmp_path / 'nowhere'} does not exist" in missing.output
    (tmp_path / "empty").mkdir()
    empty = rnj("shards", "stats", tmp_path / "empty")
    assert empty.exit_code == 2 and "holds no manifest.json (not a built phase) and no curriculum.json" in empty.output
    path = copy / STABLE / "manifest.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"format_version": 2}))
    newer = rnj("shards", "ls", copy / STABLE)
    assert newer.exit_code == 2 and "format_version 2 is newer than this reader's 1: update rnj" in newer.output


def test_the_reader_lists_every_file_problem(tmp_path, built):
    output, facts = built
    manifest = facts["manifests"][0]
    entry = manifest["shards"][0]
    data = (output / STABLE / entry["path"]).read_bytes()
    (tmp_path / "cut.arrow").write_bytes(data[:-50])
    problems = shard_file_problems(str(tmp_path / "cut.arrow"), entry, 64, manifest)
    assert problems[0] == f"train-00000.arrow: {len(data) - 50} bytes, the manifest says {len(data)} (truncated?)"
    assert len(problems) == 3 and "sha256" in problems[1] and "not an Arrow IPC file" in problems[2]


def _row_batch(rows: list[dict], seq_len: int = 8, loss_mask: bool = False) -> pa.RecordBatch:
    schema = shard_schema(seq_len, loss_mask)
    columns = {name: [r[name] for r in rows] for name in schema.names}
    return pa.RecordBatch.from_pydict(columns, schema=schema)


MANIFEST = {"seq_len": 8, "vocab_size": 50, "special_tokens": {"bos": 1, "eos": 2, "pad": 0},
            "sources": ["a"], "domains": ["code", "math"]}


def _row(tokens, offsets, n=None, mask=None, tier=0, source=0):
    pieces = len(offsets) - 1 if n is None else n
    row = {"tokens": tokens, "doc_offsets": offsets, "doc_ids": [f"d{i}" for i in range(pieces)],
           "doc_source": [source] * pieces, "doc_domain": [1] * pieces, "doc_tier": [tier] * pieces}
    if mask is not None:
        row["loss_mask"] = mask
    return row


@pytest.mark.parametrize("row, expected", [
    (_row([1, 5, 2, 1, 6, 2, 0, 0], [0, 3, 6]), []),
    (_row([1, 5, 2, 1, 6, 2, 0, 0], [0, 3, 3, 6]), ["doc_offsets not increasing at piece 1 (3 then 3)"]),
    (_row([1, 5, 2, 1, 6, 2, 7, 7], [0, 3, 9]), ["doc_offsets ends at 9, beyond the row (seq_len 8)"]),
    (_row([1, 5, 2, 0, 0, 0, 0, 0], [2, 3]), ["doc_offsets starts at 2, not 0"]),
    (_row([1, 5, 2, 0, 0, 0, 0, 0], []), ["doc_offsets is empty"]),
    (_row([1, 5, 2, 0, 9, 0, 0, 0], [0, 3]), ["token 9 at position 4, after the last piece (ends at 3)"]),
    (_row([1, 55, 2, 0, 0, 0, 0, 0], [0, 3]), ["1 token ids >= vocab_size 50 (first: id 55 at position 1)"]),
    (_row([1, 5, 2, 0, 0, 0, 0, 0], [0, 3], n=2), ["doc_ids holds 2 entries for 1 pieces"]),
    (_row([1, 5, 2, 0, 0, 0, 0, 0], [0, 3], tier=7), ["doc_tier value 7 is not a valid tier"]),
    (_row([1, 5, 2, 0, 0, 0, 0, 0], [0, 3], source=3),
     ["doc_source value 3 is not a valid index into the manifest's sources (1 entries)"]),
])
def test_content_checks_name_what_is_wrong(row, expected):
    found = [message for _, _, message in content_problems(_row_batch([_row([1, 2, 0, 0, 0, 0, 0, 0], [0, 2]), row]),
                                                           MANIFEST)]
    assert len(found) >= len(expected)
    for want in expected:
        assert any(want in message for message in found), (want, found)
    assert all(r == 1 for r, _, _ in content_problems(_row_batch([_row([1, 2, 0, 0, 0, 0, 0, 0], [0, 2]), row]),
                                                      MANIFEST))


def test_loss_mask_checks():
    manifest = MANIFEST | {"loss_mask": True}
    good = _row([1, 5, 2, 0, 0, 0, 0, 0], [0, 3], mask=[0, 1, 1, 0, 0, 0, 0, 0])
    on_padding = _row([1, 5, 2, 0, 0, 0, 0, 0], [0, 3], mask=[0, 1, 1, 0, 1, 0, 0, 0])
    not_binary = _row([1, 5, 2, 0, 0, 0, 0, 0], [0, 3], mask=[0, 3, 1, 0, 0, 0, 0, 0])
    found = content_problems(_row_batch([good, on_padding, not_binary], loss_mask=True), manifest)
    assert [(r, m) for r, _, m in found] == [(1, "loss_mask is 1 on padding at position 4"),
                                             (2, "loss_mask value 3: it must be 0 or 1")]
    assert np.all([k == "loss_mask" for _, k, _ in found])
