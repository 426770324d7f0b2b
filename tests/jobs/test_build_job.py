"""The build job end to end on a committed fake `tokenize` output (documents + a tiny BPE tokenizer)."""

import dataclasses
import json
import math
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from jobs import build
from pipeline.commit import JobOutput
from pipeline.config import load_build
from pipeline.documents import DOCUMENT_SCHEMA
from pipeline.ledger import Ledger
from pipeline.mixing import MixtureError
from pipeline.shards import list_phases, open_phase

pytestmark = pytest.mark.spark

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
TEMPLATE = (
    "{{ bos_token }}{% if messages and messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = 'You are rnj.' %}{% endif %}"
    "<|start_header_id|>system<|end_header_id|>\n\n{{ system }}<|eot_id|>"
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
WORDS = ["alpha", "beta", "gamma", "delta", "sum", "prime", "integral", "def", "return", "class", "import", "while", "lambda", "proof", "lemma", "the", "of"]
UPSTREAM = pa.schema(list(DOCUMENT_SCHEMA) + [
    pa.field("tier", pa.int32()), pa.field("difficulty", pa.float64()),
    pa.field("tokens", pa.list_(pa.int32())), pa.field("num_tokens", pa.int64()),
])

CONFIG = """
[build]
name = "t"
output = "out"
seed = 7

[[sources]]
name = "unused"
uri = "nothing.jsonl"
format = "jsonl"

[[stages]]
name = "pretrain"
kind = "pretrain"
seq_len = 64
global_batch_tokens = 256
shard_sequences = 8

[[stages.phases]]
name = "stable"
tokens = 2048
ordering = "shuffle"
weights = { "code" = 0.5, "math" = 0.25, "general/1-4" = 0.25 }

[[stages]]
name = "midtrain"
kind = "midtrain"
seq_len = 256
global_batch_tokens = 512
shard_sequences = 4

[[stages.phases]]
name = "long"
tokens = 2048
ordering = "interleave"
length_bias = 1.0
repo_document_tokens = 600
eval_sequences = 1
weights = { "code" = 0.7, "math" = 0.3 }

[[stages]]
name = "sft"
kind = "sft"
seq_len = 64
global_batch_tokens = 128
shard_sequences = 8

[[stages.phases]]
name = "chat"
tokens = 512
ordering = "easy_to_hard"
pack_slack = 0.02
eval_sequences = 1
sft_uris = { chat = "sft/chat.jsonl", traces = "sft/traces" }
weights = { "*/*/chat" = 0.5, "*/*/traces" = 0.5 }
"""


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _tokenizer(texts: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def _documents(tok: Tokenizer, rng: random.Random) -> list[dict]:
    docs = []
    for i in range(150):
        domain = ("code", "math", "general")[i % 3]
        text = _text(rng, rng.choice([3, 8, 20, 40, 90]))
        repo = f"pkg{i % 2}" if domain == "code" else None
        ids = tok.encode(text, add_special_tokens=False).ids
        docs.append({
            "id": f"{domain}/{i:03d}", "text": text, "source": "web" if domain == "general" else domain,
            "domain": domain, "uri": f"file:///corpus/code/{repo}/mod{i}.py" if repo else f"file:///c/{i}",
            "repo": repo, "lang": None, "meta": [], "tier": i % 5, "difficulty": rng.random(),
            "tokens": ids, "num_tokens": len(ids),
        })
    return docs


def _commit_upstream(cfg, docs: list[dict], tok: Tokenizer, files: int) -> None:
    output = JobOutput(cfg.build.output, "tokenize")
    tmp = output.begin().removeprefix("file://")
    out = Path(tmp)
    (out / "documents").mkdir()
    for k in range(files):
        part = [d for j, d in enumerate(docs) if j % files == k]
        pq.write_table(pa.Table.from_pylist(part, schema=UPSTREAM), out / "documents" / f"part-{k:05d}.parquet")
    (out / "tokenizer").mkdir()
    tok.save(str(out / "tokenizer" / "tokenizer.json"))
    (out / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    ledger = Ledger(job="tokenize")
    ledger.add("all", "written", None, len(docs))
    output.commit(tmp, "fake-upstream", ledger)


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    rng = random.Random(0)
    texts = [_text(rng, 30) for _ in range(50)]
    tok = _tokenizer(texts)
    sft = root / "sft"
    (sft / "traces").mkdir(parents=True)
    chats = [{"messages": [{"role": "user", "content": _text(rng, 5)},
                           {"role": "assistant", "content": _text(rng, rng.choice([4, 12, 25]))}],
              "difficulty": rng.random()} for _ in range(40)]
    lines = [json.dumps(c) for c in chats] + ["{broken", json.dumps(chats[0])]
    (sft / "chat.jsonl").write_text("\n".join(lines) + "\n")
    forms = [{"id": f"t{i}", "trace_id": f"t{i}", "kind": "question", "prompt": f"what does f({i}) return?",
              "response": _text(rng, 10)} for i in range(30)]
    pq.write_table(pa.Table.from_pylist(forms), sft / "traces" / "part-00000.parquet")
    (root / "build.toml").write_text(CONFIG)
    cfg = load_build(str(root / "build.toml"))
    docs = _documents(tok, rng)
    _commit_upstream(cfg, docs, tok, files=3)
    result = build.run(spark, cfg)
    return cfg, tok, docs, result


def _phases(cfg) -> dict:
    uris = list_phases(JobOutput(cfg.build.output, "build").uri)
    return {uri.rsplit("/", 2)[-2] + "/" + uri.rsplit("/", 1)[-1]: uri for uri in uris}


def test_phases_meet_their_budgets_exactly(built):
    cfg = built[0]
    phases = _phases(cfg)
    assert list(phases) == ["pretrain/stable", "midtrain/long", "sft/chat"]
    for stage in cfg.stages:
        for phase in stage.phases:
            manifest = open_phase(phases[f"{stage.name}/{phase.name}"]).manifest
            assert manifest["num_sequences"] * stage.seq_len == phase.tokens == manifest["num_tokens"]
            content = manifest["mixture"]["content_tokens"]
            assert sum(manifest["tokens_by_source"].values()) == content  # every selected slot is in a shard
            assert manifest["num_padding_tokens"] == phase.tokens - content
            assert manifest["num_padding_tokens"] == math.ceil(phase.tokens * phase.pack_slack)
            for bucket in manifest["mixture"]["buckets"].values():
                assert bucket["tokens"] == bucket["target_tokens"]  # fail mode: achieved == target
    stable = open_phase(phases["pretrain/stable"]).manifest
    assert abs(stable["mixture"]["buckets"]["code"]["achieved_weight"] - 0.5) < 1e-3  # 1019 of 2037 slots
    assert [s["path"] for s in stable["shards"]] == [f"train-{i:05d}.arrow" for i in range(4)]
    assert set(stable) >= {"format_version", "stage", "phase", "seq_len", "vocab_size", "tokenizer_sha256",
                           "build_hash", "seed", "num_tokens", "tokens_by_domain", "tokens_by_tier", "shards"}


def test_sequences_hold_whole_framed_documents_with_boundaries(built):
    cfg, tok, docs, _ = built
    by_id = {d["id"]: d for d in docs}
    bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|eot_id|>")
    phase = open_phase(_phases(cfg)["pretrain/stable"])
    train_ids, starts = set(), 0
    for i in range(len(phase)):
        seq = phase.sequence(i)
        row_ids = phase._shards[i // 8].batches[0].column("doc_ids")[i % 8].as_py()
        for doc_id, a, b in zip(row_ids, seq.doc_offsets[:-1], seq.doc_offsets[1:]):
            train_ids.add(doc_id)
            piece = seq.tokens[a:b].tolist()
            if piece[0] == bos:  # a piece that starts a document is that document, framed, from the start
                starts += 1
                framed = [bos] + by_id[doc_id]["tokens"] + [eos]
                assert piece == framed[: len(piece)]
        assert all(t == tok.token_to_id("<|end_of_text|>") for t in seq.tokens[seq.num_tokens:])
    assert starts > 20
    held = open_phase(_phases(cfg)["pretrain/stable"], split="eval")
    assert len(held) >= 1
    held_ids = {d for i in range(len(held)) for d in held._shards[0].batches[0].column("doc_ids")[i].as_py()}
    assert held_ids and not held_ids & train_ids


def test_midtrain_builds_repository_documents(built):
    cfg, tok, _, _ = built
    phase = open_phase(_phases(cfg)["midtrain/long"])
    ids = {d for s in phase._shards for b in s.batches for row in b.column("doc_ids").to_pylist() for d in row}
    assert any(d.startswith("repo:pkg") for d in ids)
    first = next(i for i in range(len(phase)) if any(d.startswith("repo:pkg") for d in phase.row(i)["doc_ids"]))
    text = tok.decode(phase.tokens(first).tolist(), skip_special_tokens=False)
    assert "# file: pkg" in text


def test_sft_loss_mask_covers_assistant_turns_only(built):
    cfg, tok, _, result = built
    phase = open_phase(_phases(cfg)["sft/chat"])
    assert phase.manifest["loss_mask"] and phase.manifest["tokens_by_source"].keys() == {"chat", "traces"}
    header = tok.token_to_id("<|start_header_id|>")
    trained, everything = [], []
    for i in range(len(phase)):
        seq = phase.sequence(i)
        assert not seq.loss_mask[seq.num_tokens:].any()
        trained += seq.tokens[seq.loss_mask == 1].tolist()
        everything += seq.tokens[: seq.num_tokens].tolist()
    assert header not in trained  # headers, system and user turns never count
    assert "what does f(" in tok.decode(everything) and "what does f(" not in tok.decode(trained)
    assert 0.1 < len(trained) / len(everything) < 0.8  # short answers after a system turn
    ledger = result.ledger
    assert ledger.dropped.get("malformed_json") == 1 and ledger.dropped.get("duplicate_conversation") == 1
    assert ledger.by_source["sft/chat/chat"]["read"] == 42


def test_ledger_accounts_for_every_upstream_document(built):
    _, _, docs, result = built
    ledger = result.ledger
    ledger.check()
    upstream = sum(v["read"] for k, v in ledger.by_source.items() if not k.startswith("sft/"))
    assert upstream == len(docs)
    assert set(ledger.dropped) <= {"not_in_any_mixture", "not_sampled", "malformed_json", "duplicate_conversation"}
    assert ledger.dropped.get("not_in_any_mixture") == 10  # general tier-0 documents match no bucket anywhere


def test_shards_are_byte_identical_whatever_the_partitioning(spark, built):
    cfg, tok, docs, _ = built
    before = {name: open_phase(uri).manifest for name, uri in _phases(cfg).items()}
    _commit_upstream(cfg, list(reversed(docs)), tok, files=7)
    old = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "3")
    try:
        build.run(spark, cfg, force=True)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", old)
    after = {name: open_phase(uri).manifest for name, uri in _phases(cfg).items()}
    for name in before:
        assert before[name]["shards"] == after[name]["shards"], name
        assert before[name]["eval"] == after[name]["eval"], name


def test_a_bucket_that_cannot_fill_its_share_fails_naming_it(spark, built):
    cfg, *_ = built
    pre = cfg.stages[0]
    greedy = dataclasses.replace(pre.phases[0], tokens=256 * 40, max_epochs=1.0)
    cfg = dataclasses.replace(cfg, stages=(dataclasses.replace(pre, phases=(greedy,)),))
    with pytest.raises(MixtureError, match="phase 'stable': bucket 'code' cannot supply"):
        build.run(spark, cfg, force=True)


def _report(cfg) -> dict:
    return json.loads(Path(JobOutput(cfg.build.output, "build").child("report.json").removeprefix("file://")).read_text())


def test_held_out_documents_respect_the_cap_of_each_bucket(built):
    """midtrain/long has length_bias 1: its selection keys crowd the first key bin, where holding out whole
    bins used to take nearly all of a bucket."""
    cfg = built[0]
    report = _report(cfg)
    for stage in cfg.stages:
        for phase in stage.phases:
            name = f"{stage.name}/{phase.name}"
            buckets = report["phases"][name]["mixture"]["buckets"]
            held = report["phases"][name]["held_out_tokens"]
            for key, b in buckets.items():
                total = b["supply_tokens"] + held.get(key, 0)
                assert held.get(key, 0) <= phase.max_eval_fraction * total, (name, key, held, b)
            assert sum(held.values()) > 0, name
    long = open_phase(_phases(cfg)["midtrain/long"], split="eval").manifest["eval"]
    assert 1 <= long["num_sequences"] <= 3


def test_report_records_lengths_padding_and_difficulty_order(built):
    cfg = built[0]
    phases = _report(cfg)["phases"]
    stable = phases["pretrain/stable"]
    assert sum(stable["padding_per_sequence"].values()) == stable["num_sequences"] == 32
    assert stable["padding_tokens"] == open_phase(_phases(cfg)["pretrain/stable"]).manifest["num_padding_tokens"]
    assert all(int(k) & (int(k) - 1) == 0 for k in stable["document_lengths"])  # power-of-two bins
    assert sum(stable["document_lengths"].values()) > 20
    assert "difficulty_by_decile" not in stable  # shuffled: no order to show
    order = phases["sft/chat"]["difficulty_by_decile"]  # easy_to_hard
    assert len(order) == 10 and order == sorted(order) and order[0] < 0.2 and order[-1] > 0.45
