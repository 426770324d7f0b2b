"""Tiny built phases for trainer tests, written with the shard format's own writer (no Spark, no tokenizer).

Documents are short arithmetic-progression runs over a small vocabulary, so a model can learn them and the
loss visibly falls within a few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.commit import JobOutput
from pipeline.config import load_build
from pipeline.curriculum import phase_fingerprint
from pipeline.packing import best_fit_decreasing
from pipeline.shards import FORMAT_VERSION, Item, assemble, write_manifest, write_shard

VOCAB = 96
BOS, EOS, PAD = 93, 94, 95

BUILD = """
[build]
name = "trainer-test"
output = "out"
seed = 0

[[sources]]
name = "fake"
uri = "unused.jsonl"
format = "jsonl"

[[stages]]
name = "pretrain"
kind = "pretrain"
seq_len = 64
global_batch_tokens = 512
shard_sequences = 16

[[stages.phases]]
name = "stable"
tokens = {stable_tokens}
weights = {{ "code" = 1.0 }}
lr_shape = "constant"
lr_start = 1e-2
lr_warmup_steps = 2

[[stages.phases]]
name = "decay"
tokens = 2048
weights = {{ "code" = 1.0 }}
lr_shape = "cosine"
lr_start = 1e-2
lr_end = 1e-3

[[stages]]
name = "midtrain"
kind = "midtrain"
seq_len = 128
global_batch_tokens = 512
shard_sequences = 8

[[stages.phases]]
name = "long"
tokens = 2048
weights = {{ "code" = 1.0 }}
lr_start = 1e-3

[train]
preset = "tiny"
micro_batch_size = 2
checkpoint_every = {checkpoint_every}
keep_checkpoints = 2
eval_sequences = 4
"""


def write_build(folder: Path, stable_tokens: int = 4096, checkpoint_every: int = 4) -> Path:
    """A build file whose phases are written as shards under folder/out/build; returns its path."""
    config = folder / "build.toml"
    config.write_text(BUILD.format(stable_tokens=stable_tokens, checkpoint_every=checkpoint_every))
    cfg = load_build(str(config))
    rng = np.random.default_rng(0)
    for stage in cfg.stages:
        for phase in stage.phases:
            folder_uri = JobOutput(cfg.build.output, "build").child(stage.name, phase.name)
            Path(folder_uri.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
            train = _write_split(folder_uri, "train", phase.tokens // stage.seq_len, stage.seq_len, rng)
            held = _write_split(folder_uri, "eval", 4, stage.seq_len, rng)
            manifest = {
                "format_version": FORMAT_VERSION, "stage": stage.name, "phase": phase.name,
                "seq_len": stage.seq_len, "vocab_size": VOCAB, "tokenizer_sha256": "none",
                "build_hash": phase_fingerprint(stage, phase, cfg.build.seed), "seed": cfg.build.seed,
                "num_sequences": train["num_sequences"], "num_tokens": train["num_sequences"] * stage.seq_len,
                "num_padding_tokens": train["padding"], "tokens_by_domain": {}, "tokens_by_tier": {},
                "tokens_by_source": {}, "shards": train["shards"],
                "eval": {"num_sequences": held["num_sequences"], "shards": held["shards"]},
            }
            write_manifest(folder_uri, manifest)
    return config


def _write_split(folder_uri: str, split: str, num_sequences: int, seq_len: int, rng) -> dict:
    items = []
    while sum(len(i.tokens) for i in items) < num_sequences * seq_len * 0.97:
        start, stride = int(rng.integers(0, 80)), int(rng.integers(1, 4))
        length = int(rng.integers(8, seq_len + 40))
        body = (start + stride * np.arange(length)) % 90
        tokens = np.concatenate([[BOS], body, [EOS]]).astype(np.uint32)
        items.append(Item(tokens=tokens, mask=None, doc_id=f"d{len(items)}", source=0, domain=0, tier=0))
    bins = best_fit_decreasing([len(i.tokens) for i in items], seq_len)
    bins = bins[:num_sequences]
    while len(bins) < num_sequences:
        bins.append(bins[len(bins) % max(1, len(bins))])
    packed = assemble(bins, items, seq_len, PAD, loss_mask=False)
    name = f"{split}-00000.arrow"
    sha, size = write_shard(f"{folder_uri}/{name}", packed.table)
    return {"num_sequences": num_sequences, "padding": packed.num_padding,
            "shards": [{"path": name, "num_sequences": num_sequences, "sha256": sha, "bytes": size}]}


def read_losses(metrics: Path) -> list[tuple[int, str, float]]:
    return [(r["step"], r["phase"], r["loss"]) for r in map(json.loads, metrics.read_text().splitlines())]
