"""`rnj shards ls | stats | show | diff` on the tiny build, locally and on memory://."""

from __future__ import annotations

import json

import fsspec
import pytest

STABLE = "build/pretrain/stable"
CHAT = "build/sft/chat"


def test_ls_lists_phases_and_their_shards(rnj, output):
    result = rnj("shards", "ls", output)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "pretrain/stable (pretrain)" in out and "sft/chat (sft)" in out
    assert "16 sequences x 64 = 1,024 token slots, 5.08% padding" in out
    for name in ("train-00000.arrow", "train-00001.arrow", "eval-00000.arrow"):
        assert name in out
    assert "MISSING" not in out and "NOT IN MANIFEST" not in out
    assert "\x1b[" not in out  # piped: no colours


def test_one_shard_uri(rnj, output):
    out = rnj("shards", "ls", output / STABLE / "train-00001.arrow").stdout
    assert "train-00001.arrow" in out and "train-00000.arrow" not in out
    (phase,) = json.loads(rnj("shards", "stats", output / STABLE / "eval-00000.arrow", "--json").stdout)["phases"]
    assert (phase["split"], phase["shard"], phase["summary"]["sequences"]) == ("eval", "eval-00000.arrow", 1)
    assert phase["summary"]["padding tokens"] == 10
    verify = rnj("shards", "verify", output / STABLE / "train-00001.arrow")
    assert verify.exit_code == 0 and "ok: 1 phase, 1 shards, 8 sequences hold" in verify.stderr


def test_stats_measures_the_mixture_padding_and_lengths(rnj, built):
    output, facts = built
    manifest = facts["manifests"][0]
    result = rnj("shards", "stats", output / STABLE, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (phase,) = data["phases"]
    assert phase["phase"] == "pretrain/stable" and phase["split"] == "train"
    summary = phase["summary"]
    assert summary["sequences"] == 16 and summary["padding tokens"] == manifest["num_padding_tokens"] == 52
    assert summary["tokens (non-padding)"] == 16 * 64 - 52
    buckets = {r["bucket"]: r for r in phase["tables"]["buckets"]}
    for key, b in manifest["mixture"]["buckets"].items():  # measured from the shards = what the builder packed
        assert buckets[key]["measured tokens"] == b["tokens"]
        assert buckets[key]["measured"] == pytest.approx(b["achieved_weight"], abs=1e-6)
    tiers = {r["tier"]: r["tokens"] for r in phase["tables"]["tiers"]}
    assert {str(k): v for k, v in tiers.items()} == manifest["tokens_by_tier"]
    cells = phase["tables"]["mixture"]
    assert sum(c["tokens"] for c in cells) == summary["tokens (non-padding)"]
    assert {(c["domain"], c["bucket"]) for c in cells} == {("code", "code"), ("math", "math"), ("general", "general")}
    per_sequence = phase["tables"]["pieces_per_sequence"]
    assert sum(r["sequences"] for r in per_sequence) == 16
    assert sum(r["pieces"] * r["sequences"] for r in per_sequence) == summary["document pieces"]
    lengths = phase["tables"]["document_lengths"]
    # the long code document, cut to the prefix that fills its bucket: 64 + 64 + 64 + 51 = 243 slots
    assert lengths[-1] | {"share": None} == {"from": 128, "to": 255, "documents": 1, "share": None}
    assert [r["from"] for r in lengths] == [8, 16, 32, 64, 128]  # empty bins are kept


def test_stats_of_a_build_prints_tables_and_draws_a_plot(rnj, output, tmp_path):
    png = tmp_path / "stats.png"
    result = rnj("shards", "stats", output, "--plot", png)
    assert result.exit_code == 0, result.output
    for title in ("pretrain/stable (train): mixture, target vs achieved", "sft/chat (train): tokens per tier",
                  "document lengths", "document pieces per sequence", "loss tokens (mask 1)"):
        assert title in result.stdout
    assert f"plot written to {png}" in result.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_show_decodes_a_sequence_with_documents_marked(rnj, output):
    result = rnj("shards", "show", output / STABLE, "--seq", "3")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "pretrain/stable train sequence 3 of 16 (train-00000.arrow row 3)" in out
    assert "--- piece 1/2: doc code/code-24 | source code | domain code | tier 4 | tokens 0-51 (51) | continues" in out
    assert "piece 2/2: doc math/math-13 | source math | domain math | tier 3" in out
    assert "<|begin_of_text|>What is" in out and "step_16 = 16 + 112" in out
    assert "--- padding: 4 tokens" in out
    assert "\x1b[" not in out


def test_show_marks_loss_spans_and_colours_on_a_terminal(rnj, output):
    plain = rnj("shards", "show", output / CHAT, "--seq", "1").stdout
    assert "<loss>The answer is 88.<|eot_id|></loss>" in plain
    assert "loss counts on <loss>...</loss> tokens: 8 of 64" in plain
    coloured = rnj("shards", "show", output / CHAT, "--seq", "1", env={"FORCE_COLOR": "1", "TERM": "xterm"}).stdout
    assert "\x1b[" in coloured and "<loss>" not in coloured and "The answer is 88." in coloured


def test_show_ids_and_finding_a_document(rnj, built):
    output, facts = built
    tok = facts["tokenizer"]
    ids = rnj("shards", "show", output / CHAT, "--seq", "1", "--ids").stdout
    answer = " ".join(map(str, tok.encode("The answer is 88."))) + f" {tok.eos_id} </loss>"
    assert f"<loss>{answer}" in ids
    found = rnj("shards", "show", output / STABLE, "--doc", "code/code-24")
    assert found.exit_code == 0, found.output
    rows = [line for line in found.stdout.splitlines() if "train-00000.arrow" in line]
    assert len(rows) == 4  # a 243-slot document over four 64-token sequences
    held = rnj("shards", "show", output / STABLE, "--doc", "math/math-0").stdout
    assert "eval" in held and "eval-00000.arrow" in held
    missing = rnj("shards", "show", output / STABLE, "--doc", "nope")
    assert missing.exit_code == 2 and "document 'nope' is in no sequence" in missing.output


def test_show_needs_one_phase_and_a_tokenizer(rnj, output, tmp_path):
    many = rnj("shards", "show", output, "--seq", "0")
    assert many.exit_code == 2 and "show reads one phase" in many.output
    assert "out of range" in rnj("shards", "show", output / STABLE, "--seq", "99").output
    fs = fsspec.filesystem("file")
    fs.copy(str(output / STABLE), str(tmp_path / "phase"), recursive=True)
    alone = rnj("shards", "show", tmp_path / "phase", "--seq", "0")
    assert alone.exit_code == 2 and "no tokenizer found" in alone.output and "--ids" in alone.output
    assert rnj("shards", "show", tmp_path / "phase", "--seq", "0", "--ids").exit_code == 0
    given = rnj("shards", "show", tmp_path / "phase", "--seq", "0", "--tokenizer", output / "tokenize" / "tokenizer")
    assert given.exit_code == 0 and "<|begin_of_text|>def long_function" in given.stdout


def test_commands_work_on_any_fsspec_uri(rnj, output):
    fs = fsspec.filesystem("memory")
    for path in output.rglob("*"):
        if path.is_file():
            fs.pipe(f"/inspect-test/{path.relative_to(output)}", path.read_bytes())
    root = "memory://inspect-test"
    try:
        assert "train-00001.arrow" in rnj("shards", "ls", f"{root}/build").stdout
        stats = json.loads(rnj("shards", "stats", f"{root}/{STABLE}", "--json").stdout)
        assert stats["phases"][0]["summary"]["padding tokens"] == 52
        verify = rnj("shards", "verify", root)
        assert verify.exit_code == 0 and "ok: 2 phases, 4 shards, 21 sequences hold" in verify.stderr
        shown = rnj("shards", "show", f"{root}/{CHAT}", "--seq", "1")
        assert "<loss>The answer is 88." in shown.stdout
    finally:
        fs.rm("/inspect-test", recursive=True)


def test_diff_shows_changes_in_mixture_tokenizer_and_seq_len(rnj, output, copy):
    same = rnj("shards", "diff", output, output)
    assert same.exit_code == 0 and "no changes in settings, mixture or phases" in same.stdout
    path = copy / STABLE / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["tokenizer_sha256"] = "c" * 64
    manifest["seq_len"] = 128
    manifest["mixture"]["buckets"]["code"]["achieved_weight"] = 0.45
    path.write_text(json.dumps(manifest))
    result = rnj("shards", "diff", output / STABLE, copy / STABLE)
    out = result.stdout
    assert "pretrain/stable: tokenizer_sha256 changed" in out and "seq_len changed (64 -> 128)" in out
    assert "bucket code achieved weight moved -0.0500 (0.5 -> 0.45)" in out
    data = json.loads(rnj("shards", "diff", output, copy, "--json").stdout)
    assert any("tokenizer_sha256 changed" in line for line in data["changes"])
    phases = next(t for t in data["tables"] if t["title"] == "phases")["rows"]
    assert {r["phase"]: r[""] for r in phases} == {"pretrain/stable": "differs", "sft/chat": "same"}


def test_diff_judges_by_content_and_names_a_configuration_hash_apart(rnj, output, copy):
    """The same shards with other input and build hashes (the same data built from another path or with
    another job setting) are the same content; a changed shard is not."""
    for phase in (STABLE, CHAT):
        path = copy / phase / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["input_hash"], manifest["build_hash"] = "9" * 64, "8" * 64
        path.write_text(json.dumps(manifest))
    result = rnj("shards", "diff", output, copy)
    assert result.exit_code == 0, result.output
    assert "content differs" not in result.stdout and "│ differs" not in result.stdout
    assert "pretrain/stable: same content (every shard's sha256, the sequences and the mixture match); only the " \
           "configuration hash differs (build_hash, input_hash)" in result.stdout
    phases = next(t for t in json.loads(rnj("shards", "diff", output, copy, "--json").stdout)["tables"]
                  if t["title"] == "phases")["rows"]
    assert {r[""] for r in phases} == {"same content, configuration hash differs"}

    path = copy / STABLE / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["shards"][1]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))
    changed = rnj("shards", "diff", output / STABLE, copy / STABLE).stdout
    assert "pretrain/stable: content differs (1 of 3 shards' sha256)" in changed
    assert "build_hash changed" in changed
