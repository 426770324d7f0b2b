"""A tiny complete build output, written without Spark: every job's ledger and report, a tokenizer trained
here, a pretraining phase (two train shards and an eval shard), an SFT phase with loss masks, and a
training run's metrics.jsonl. The shards are written with pipeline.shards' own writer.

    OUTPUT/ingest, traces, dedup, grade, tokenize     _LEDGER.json, _SUCCESS, report.json
    OUTPUT/tokenize/tokenizer/                        tokenizer.json, tokenizer_config.json
    OUTPUT/build/curriculum.json, report.json         pretrain/stable, sft/chat
    OUTPUT/train/metrics.jsonl
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pipeline.config import TokenizerConfig
from pipeline.grading.config import GradeConfig
from pipeline.grading.report import build_report
from pipeline.inspect.figures import counts_by_bin, merge_counts, padding_per_sequence
from pipeline.ledger import Ledger
from pipeline.packing import best_fit_decreasing, cut_documents, pack_exact
from pipeline.shards import FORMAT_VERSION, Item, assemble, write_manifest, write_shard
from tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
from tokenizer.report import DomainCount, bytes_per_token

SEQ_LEN = 64
SHARD_SEQUENCES = 8
DOMAINS = ["code", "math", "science", "general", "trace"]
SOURCES = ["code", "docs", "math"]
WEIGHTS = {"code": 0.5, "math": 0.3, "general": 0.2}
SOURCE_OF = {"code": "code", "math": "math", "general": "docs"}
TOKENIZER = TokenizerConfig(vocab_size=512, min_frequency=1, sample_bytes=100_000)
WORDS = ["alpha", "beta", "gamma", "delta", "shard", "phase", "token", "merge", "value", "count", "index", "table",
         "window", "batch", "packing", "sequence", "document", "river", "mountain", "cloud", "garden", "letter",
         "number", "answer", "question", "simple"]


def _texts(rng: np.random.Generator) -> dict[str, list[str]]:
    """Deterministic code, math and prose documents of varied lengths."""
    def words(n: int) -> str:
        return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n))

    code = []
    for i in range(24):
        name = "_".join(WORDS[j] for j in rng.integers(0, len(WORDS), 2))
        body = "\n".join(f"    {WORDS[j]} = {int(k)} * {WORDS[(j + 3) % len(WORDS)]}"
                         for j, k in zip(rng.integers(0, len(WORDS), 1 + i % 6), rng.integers(1, 99, 1 + i % 6)))
        code.append(f"def {name}_{i}(x):\n{body}\n    return x\n")
    code.append("def long_function():\n" + "\n".join(f"    step_{k} = {k} + {k * 7}" for k in range(40)) + "\n")
    math_ = [f"What is {a} + {b}? The answer is {a + b}." for a, b in rng.integers(10, 999, (30, 2))]
    prose = [words(int(n)).capitalize() + "." for n in rng.integers(4, 30, 30)]
    return {"code": code, "math": math_, "general": prose}


def _tokenizer(output: Path, texts: dict[str, list[str]]):
    rng = np.random.default_rng(1)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    filler = [" ".join("".join(rng.choice(letters, int(k))) for k in rng.integers(2, 8, 40)) for _ in range(40)]
    corpus = [t for group in texts.values() for t in group] * 3 + filler  # enough distinct pairs to learn
    folder = output / "tokenize" / "tokenizer"
    sha = save_tokenizer(train_tokenizer(corpus, TOKENIZER), str(folder), TOKENIZER)
    return load_tokenizer(str(folder), TOKENIZER, expect_sha256=sha)


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _commit(output: Path, job: str, ledger: Ledger, report: dict | None = None) -> None:
    ledger.check()
    (output / job).mkdir(parents=True, exist_ok=True)
    (output / job / "_LEDGER.json").write_text(ledger.to_json())
    if report is not None:
        _write_json(output / job / "report.json", report)
    _write_json(output / job / "_SUCCESS", {"job": job, "input_hash": f"{job}-hash"})


def make_build(output: Path) -> dict:
    """Write the build under `output`; returns facts the tests check against."""
    rng = np.random.default_rng(7)
    texts = _texts(rng)
    tok = _tokenizer(output, texts)
    docs = []
    for domain, group in texts.items():
        for i, text in enumerate(group):
            docs.append({"id": f"{SOURCE_OF[domain]}/{domain}-{i}", "domain": domain, "source": SOURCE_OF[domain],
                         "tier": i % 5, "text": text, "tokens": tok.encode(text)})
    _job_outputs(output, docs, tok)
    built = [_pretrain_phase(output, docs, tok), _sft_phase(output, tok)]
    phases = [m for m, _ in built]
    _write_json(output / "build" / "curriculum.json", {"fingerprint": "f" * 64, "phases": [
        {"stage": m["stage"], "phase": m["phase"], "kind": m["kind"], "first_step": m["first_step"],
         "steps": m["steps"]} for m in phases]})
    _write_json(output / "build" / "report.json", {"tokenizer_sha256": tok.sha256, "phases": {
        f"{m['stage']}/{m['phase']}": {"num_sequences": m["num_sequences"], "non_padding": m["packing"]["non_padding"],
                                       "cut_fraction": m["packing"]["cut"] / max(m["packing"]["pieces"], 1),
                                       "eval_sequences": m["eval"]["num_sequences"], "mixture": m["mixture"],
                                       "tokens_by_domain": m["tokens_by_domain"], "seconds": 0.1, "seq_len": SEQ_LEN}
        | figures for m, figures in built}})
    build = Ledger(job="build")
    build.add("code", "written", None, 20)
    build.add("code", "dropped", "not_sampled", 5)
    build.add("docs", "dropped", "not_in_any_mixture", 2)
    _commit(output, "build", build)
    _metrics(output / "train" / "metrics.jsonl")
    return {"tokenizer": tok, "docs": {d["id"]: d for d in docs}, "manifests": phases}


def _job_outputs(output: Path, docs: list[dict], tok) -> None:
    ingest = Ledger(job="ingest")
    ingest.add("code", "written", None, 30)
    ingest.add("code", "quarantined", "invalid_utf8", 2)
    ingest.add("math", "written", None, 31)
    ingest.add("docs", "written", None, 30)
    _commit(output, "ingest", ingest)
    dedup = Ledger(job="dedup")
    dedup.add("code", "written", None, 25)
    dedup.add("code", "dropped", "exact_duplicate", 3)
    dedup.add("code", "dropped", "near_duplicate", 2)
    dedup.add("math", "written", None, 30)
    dedup.add("math", "dropped", "contaminated", 1)
    dedup.add("docs", "written", None, 30)
    _commit(output, "dedup", dedup, {"input": 91, "output": 85, "rounds": {
        "exact": {"enabled": True, "in": 91, "out": 88, "dropped": 3, "clusters": 2,
                  "cluster_sizes": {"2": 1, "3-4": 1},
                  "sample_clusters": [{"cluster_id": "code/a", "size": 3, "kept": "code/a",
                                       "members": ["code/a", "code/a~1", "code/a~2"]}]},
        "near": {"enabled": True, "in": 88, "out": 86, "dropped": 2, "bands": 14, "rows": 9, "clusters": 1,
                 "cluster_sizes": {"3-4": 1},
                 "sample_clusters": [{"cluster_id": "code/b", "size": 3, "kept": "code/c",
                                      "members": ["code/b", "code/c", "code/d"]}]},
        "boilerplate": {"enabled": True, "in": 86, "out": 86, "dropped": 0, "lines_removed": 4},
        "decontaminate": {"enabled": True, "in": 86, "out": 85, "dropped": 1},
    }})
    grade = Ledger(job="grade")
    for d in docs:
        grade.add(d["source"], "written", None, 1)
    grade.add("docs", "dropped", "too_short", 4)
    tiers = {}
    for d in docs:
        row = tiers.setdefault((d["domain"], d["tier"]), {"domain": d["domain"], "tier": d["tier"], "documents": 0,
                                                          "bytes": 0, "score_min": 0.1, "score_max": 0.9})
        row["documents"] += 1
        row["bytes"] += len(d["text"].encode())
    report = build_report(GradeConfig(), grade, tier_rows=list(tiers.values()), decider_rows=[],
                          feature_rows=[], example_rows=[], flagged_rows=[], common_words=0)
    report["difficulty"] = _difficulty(docs)
    _commit(output, "grade", grade, report)
    tokenize = Ledger(job="tokenize")
    counts = {}
    for d in docs:
        tokenize.add(d["source"], "written", None, 1)
        c = counts.get(d["domain"], DomainCount(d["domain"], 0, 0, 0))
        counts[d["domain"]] = DomainCount(d["domain"], c.documents + 1, c.bytes + len(d["text"].encode()),
                                          c.tokens + len(d["tokens"]))
    figures = bytes_per_token(list(counts.values()))
    _commit(output, "tokenize", tokenize, {
        "tokenizer": {"sha256": tok.sha256, "source": "trained", "vocab_size": tok.vocab_size, "bos_id": tok.bos_id,
                      "eos_id": tok.eos_id, "pad_id": tok.pad_id},
        "heldout_fraction": 0.02, "heldout": figures, "all_documents": figures, "sample": None})


def _difficulty(docs: list[dict]) -> dict:
    """The grade report's calibrated-difficulty figures: scores in ten bins per domain, and tiers."""
    edges = [round(0.1 * i, 1) for i in range(11)]
    histogram, tiers = {}, {}
    for d in docs:
        score = min(0.999, d["tier"] / 5 + (0.05 if d["domain"] == "math" else 0.12))
        histogram.setdefault(d["domain"], [0] * 10)[int(score * 10)] += 1
        per = tiers.setdefault(d["domain"], {})
        per[str(d["tier"])] = per.get(str(d["tier"]), 0) + 1
    return {"source": "model", "model": {"uri": "pipeline/grading/models/tiny", "version": "1",
                                         "fingerprint": "d" * 64}, "bins": edges, "histogram": histogram,
            "tiers": tiers}


def _manifest(tok, stage: str, phase: str, kind: str, shards: list[dict], held: list[dict], packed: list,
              mixture: dict, first_step: int, sizes_cut: int, pieces: int, eval_padding: int) -> dict:
    n = sum(s["num_sequences"] for s in shards)
    padding = sum(p.num_padding for p in packed)

    def total(attr: str, names) -> dict:
        sums: dict[str, int] = {}
        for p in packed:
            for k, v in getattr(p, attr).items():
                sums[names(k)] = sums.get(names(k), 0) + v
        return dict(sorted(sums.items()))

    return {
        "format_version": FORMAT_VERSION, "stage": stage, "phase": phase, "kind": kind, "seq_len": SEQ_LEN,
        "vocab_size": tok.vocab_size, "tokenizer_sha256": tok.sha256, "build_hash": f"{phase}-" + "b" * 58,
        "input_hash": "i" * 64, "seed": 0, "num_sequences": n, "num_tokens": n * SEQ_LEN,
        "num_padding_tokens": padding, "loss_mask": kind == "sft",
        "special_tokens": {"bos": tok.bos_id, "eos": tok.eos_id, "pad": tok.pad_id},
        "global_batch_tokens": 4 * SEQ_LEN, "sequences_per_step": 4, "steps": n // 4, "first_step": first_step,
        "tokens_by_domain": total("tokens_by_domain", lambda i: DOMAINS[i]),
        "tokens_by_tier": total("tokens_by_tier", str),
        "tokens_by_source": total("tokens_by_source", lambda i: SOURCES[i]),
        "sources": SOURCES, "domains": DOMAINS, "mixture": mixture,
        "packing": {"pieces": pieces, "cut": sizes_cut, "non_padding": 1 - padding / (n * SEQ_LEN)},
        "shards": shards,
        "eval": {"num_sequences": sum(s["num_sequences"] for s in held),
                 "num_padding_tokens": eval_padding, "shards": held},
    }


def _item(doc: dict, tok, start: int = 0, length: int | None = None) -> Item:
    framed = np.array([tok.bos_id, *doc["tokens"], tok.eos_id], dtype=np.uint32)
    framed = framed[start:start + length] if length is not None else framed
    return Item(framed, None, doc["id"], SOURCES.index(doc["source"]), DOMAINS.index(doc["domain"]), doc["tier"])


def _pretrain_phase(output: Path, docs: list[dict], tok) -> dict:
    """16 sequences in two shards: each bucket's share of the content, the last document of a bucket cut."""
    folder = output / "build" / "pretrain" / "stable"
    folder.mkdir(parents=True)
    num_sequences, slack = 16, 0.05
    content = num_sequences * SEQ_LEN - math.ceil(num_sequences * SEQ_LEN * slack)
    per_shard = content // 2
    held_ids = {"docs/general-0", "math/math-0"}
    buckets, items = {}, [[], []]
    for shard in range(2):
        for key, weight in WEIGHTS.items():
            target = round(per_shard * weight) if key != "general" else per_shard - sum(
                round(per_shard * w) for k, w in WEIGHTS.items() if k != "general")
            pool = [d for d in docs if d["domain"] == key and d["id"] not in held_ids]
            pool.sort(key=lambda d: d["id"] != "code/code-24")  # the long one in shard 0: it crosses sequences
            filled = 0
            for d in pool[shard::2]:
                cost = len(d["tokens"]) + 2
                take = min(cost, target - filled)
                if take <= 0:
                    break
                items[shard].append(_item(d, tok, 0, take))
                filled += take
            buckets[key] = buckets.get(key, 0) + filled
    packed, entries, cut, pieces, all_bins = [], [], 0, 0, []
    for shard, shard_items in enumerate(items):
        sizes = [len(i.tokens) for i in shard_items]
        bins = pack_exact(sizes, SEQ_LEN, SHARD_SEQUENCES)
        all_bins.append(bins)
        cut += cut_documents(bins, sizes, SEQ_LEN)
        pieces += len(shard_items)
        packed.append(assemble(bins, shard_items, SEQ_LEN, tok.pad_id, False, {"rnj.format_version": "1"}))
        name = f"train-{shard:05d}.arrow"
        sha, size = write_shard(str(folder / name), packed[-1].table)
        entries.append({"path": name, "num_sequences": SHARD_SEQUENCES, "sha256": sha, "bytes": size})
    held_items = [_item(next(d for d in docs if d["id"] == i), tok) for i in sorted(held_ids)]
    held_bins = best_fit_decreasing([len(i.tokens) for i in held_items], SEQ_LEN)
    held = assemble(held_bins, held_items, SEQ_LEN, tok.pad_id, False)
    sha, size = write_shard(str(folder / "eval-00000.arrow"), held.table)
    mixture = {"content_tokens": content, "redistributed": False, "buckets": {
        key: {"target_weight": w, "achieved_weight": round(buckets[key] / content, 6),
              "target_tokens": round(content * w), "tokens": buckets[key], "supply_tokens": 5000, "epochs": 0.2,
              "max_epochs": 4.0} for key, w in WEIGHTS.items()}}
    manifest = _manifest(tok, "pretrain", "stable", "pretrain", entries,
                         [{"path": "eval-00000.arrow", "num_sequences": len(held_bins), "sha256": sha, "bytes": size}],
                         packed, mixture, 0, cut, pieces, held.num_padding)
    write_manifest(str(folder), manifest)
    figures = {"padding_per_sequence": merge_counts(padding_per_sequence(b, SEQ_LEN) for b in all_bins),
               "document_lengths": counts_by_bin(len(i.tokens) for shard in items for i in shard if i.tokens[0] == tok.bos_id),
               "held_out_tokens": {"general": 10, "math": 12}}
    return manifest, figures


def _sft_phase(output: Path, tok) -> dict:
    """4 sequences of conversations: loss mask 1 on the assistant's answer and its end of turn."""
    folder = output / "build" / "sft" / "chat"
    folder.mkdir(parents=True)
    specials = tok.special_ids
    header = lambda role: [specials["<|start_header_id|>"], *tok.encode(role), specials["<|end_header_id|>"],
                           *tok.encode("\n\n")]
    items = []
    for i, (a, b) in enumerate([(12, 30), (7, 5), (40, 2), (3, 3), (99, 1), (8, 80)]):
        prompt = [tok.bos_id, *header("user"), *tok.encode(f"What is {a} + {b}?"), tok.eos_id, *header("assistant")]
        answer = [*tok.encode(f"The answer is {a + b}."), tok.eos_id]
        tokens = np.array(prompt + answer, dtype=np.uint32)
        mask = np.array([0] * len(prompt) + [1] * len(answer), dtype=np.uint8)
        items.append(Item(tokens, mask, f"chat/{i:04x}", 2, 1, 0))
    sizes = [len(i.tokens) for i in items]
    bins = pack_exact(sizes, SEQ_LEN, 4)
    packed = assemble(bins, items, SEQ_LEN, tok.pad_id, True)
    sha, size = write_shard(str(folder / "train-00000.arrow"), packed.table)
    content = sum(sizes)
    mixture = {"content_tokens": content, "redistributed": False, "buckets": {
        "math": {"target_weight": 1.0, "achieved_weight": 1.0, "target_tokens": content, "tokens": content,
                 "supply_tokens": content, "epochs": 1.0, "max_epochs": 1.0}}}
    manifest = _manifest(tok, "sft", "chat", "sft", [{"path": "train-00000.arrow", "num_sequences": 4,
                                                      "sha256": sha, "bytes": size}],
                         [], [packed], mixture, 4, cut_documents(bins, sizes, SEQ_LEN), len(items), 0)
    write_manifest(str(folder), manifest)
    figures = {"padding_per_sequence": padding_per_sequence(bins, SEQ_LEN), "document_lengths": counts_by_bin(sizes),
               "held_out_tokens": {}, "difficulty_by_decile": [0.1, 0.15, 0.2, 0.3, 0.35, 0.5, 0.55, 0.7, 0.8, 0.9]}
    return manifest, figures


def _metrics(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in range(1, 7):
        stage, phase = ("pretrain", "stable") if step <= 4 else ("sft", "chat")
        record = {"step": step, "stage": stage, "phase": phase, "loss": 6.0 / step ** 0.5, "lr": 1e-3 if step <= 4
                  else 1e-4, "tokens_seen": step * 256, "tokens_per_s": 1000.0, "grad_norm": 1.0}
        if step in (4, 6):
            record["eval_loss"] = record["loss"] + 0.2
        lines.append(json.dumps(record, sort_keys=True))
    path.write_text("\n".join(lines) + "\n")
