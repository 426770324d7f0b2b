import dataclasses

import pytest

from pipeline.config import ConfigError, load_build, parse_build
from pipeline.curriculum import (
    PhaseConfig,
    StageConfig,
    curriculum_fingerprint,
    lookup,
    parse_bucket,
    phase_fingerprint,
    schedule,
    total_steps,
)

STEM = ("math", "science", "code", "trace")


def stage(name="pretrain", seq_len=8, batch=32, phases=None, kind="pretrain"):
    phases = phases or (PhaseConfig(name="a", tokens=64, weights={"code": 1.0}),
                        PhaseConfig(name="b", tokens=96, weights={"code": 1.0}))
    return StageConfig(name=name, kind=kind, seq_len=seq_len, global_batch_tokens=batch, phases=phases)


def test_lookup_maps_steps_to_stage_phase_and_fraction():
    stages = (stage(), stage(name="midtrain", kind="midtrain", seq_len=16, batch=16,
                             phases=(PhaseConfig(name="long", tokens=64, weights={"code": 1.0}),)))
    spans = schedule(stages)
    assert [(s.stage.name, s.phase.name, s.first_step, s.steps) for s in spans] == [
        ("pretrain", "a", 0, 2), ("pretrain", "b", 2, 3), ("midtrain", "long", 5, 4)]
    assert total_steps(stages) == 9
    p = lookup(stages, 3)
    assert (p.stage.name, p.phase.name, p.step_in_phase, p.step_in_stage, p.fraction) == ("pretrain", "b", 1, 3, 1 / 3)
    assert p.first_sequence == 4  # 32 tokens / 8 per sequence = 4 sequences per step
    last = lookup(stages, 8)
    assert (last.stage.name, last.step_in_stage, last.fraction) == ("midtrain", 3, 0.75)
    with pytest.raises(ValueError, match="past the end"):
        lookup(stages, 9)


def test_rnj1_recipe_matches_the_model_card():
    cfg = load_build("configs/rnj1.toml")
    by_name = {s.name: s for s in cfg.stages}
    pre, mid, sft = by_name["pretrain"], by_name["midtrain"], by_name["sft"]
    assert (pre.seq_len, mid.seq_len, sft.seq_len) == (8192, 32768, 8192)
    assert [s.global_batch_tokens / 2**20 for s in (pre, mid, sft)] == [18, 24, 16]
    pre_tokens = sum(p.tokens for p in pre.phases)
    assert abs(pre_tokens - 8.4e12) / 8.4e12 < 0.005
    assert abs(sum(p.tokens for p in mid.phases) - 380e9) / 380e9 < 0.001
    assert abs(sum(p.tokens for p in sft.phases) - 150e9) / 150e9 < 0.001
    # WSD boundaries: the pretraining phases end at the schedule's turns (230K, 380K, 443.5K steps)
    ends = [s.end_step for s in schedule(cfg.stages) if s.stage.name == "pretrain"]
    assert ends == [230_000, 380_000, 443_500]
    assert lookup(cfg.stages, 229_999).phase.name == "stable" and lookup(cfg.stages, 230_000).phase.name == "decay"
    # STEM (math, science, code and traces) is at least 40% of the pretraining tokens
    stem = 0.0
    for phase in pre.phases:
        weights = phase.target_weights()
        stem += phase.tokens * sum(w for k, w in weights.items() if parse_bucket(k).domains <= set(STEM))
    assert stem / pre_tokens >= 0.40
    assert mid.phases[0].repo_document_tokens > mid.seq_len and mid.phases[0].length_bias > 0
    assert sft.kind == "sft" and sft.phases[0].sft_uris


def test_demo_has_the_three_stages():
    cfg = load_build("configs/demo.toml")
    assert [(s.kind, s.seq_len) for s in cfg.stages] == [("pretrain", 1024), ("midtrain", 2048), ("sft", 1024)]


def test_buckets_parse_and_overlaps_are_refused():
    b = parse_bucket("math/2-4/arxiv")
    assert b.matches("math", 3, "arxiv") and not b.matches("math", 1, "arxiv") and not b.matches("math", 3, "web")
    assert parse_bucket("*/0,1").matches("code", 1, "x")
    with pytest.raises(ValueError, match="domain 'maths'"):
        parse_bucket("maths")
    with pytest.raises(ValueError, match="tiers"):
        parse_bucket("code/7")
    with pytest.raises(ValueError, match="'code' and 'code/3' overlap"):
        PhaseConfig(name="p", tokens=8, weights={"code": 1.0, "code/3": 1.0})
    phase = PhaseConfig(name="p", tokens=8, weights={"code/0-2": 1.0, "code/3-4": 1.0})
    assert phase.bucket_of("code", 3, "s") == "code/3-4" and phase.bucket_of("math", 3, "s") is None


def test_budgets_must_be_whole_steps_and_sft_needs_inputs():
    with pytest.raises(ValueError, match="multiple of global_batch_tokens"):
        stage(phases=(PhaseConfig(name="a", tokens=40, weights={"code": 1.0}),))
    with pytest.raises(ValueError, match="multiple of seq_len"):
        stage(batch=30)
    with pytest.raises(ValueError, match="sft_uris is required"):
        stage(kind="sft")


def test_build_file_errors_name_the_key():
    text = """
[build]
name = "t"
output = "out"
[[sources]]
name = "s"
uri = "x.jsonl"
format = "jsonl"
[[stages]]
name = "sft"
kind = "sft"
seq_len = 8
global_batch_tokens = 16
[[stages.phases]]
name = "chat"
tokens = 32
weights = { "*/*/chat" = 1.0 }
sft_uris = { chat = "data/chat.jsonl" }
"""
    cfg = parse_build(text, "/b/build.toml")
    assert cfg.stages[0].phases[0].sft_uris == {"chat": "/b/data/chat.jsonl"}
    with pytest.raises(ConfigError, match="ordering"):
        parse_build(text.replace('tokens = 32', 'tokens = 32\nordering = "random"'), "/b/build.toml")


def test_fingerprints_change_with_any_parameter():
    s = stage()
    base = phase_fingerprint(s, s.phases[0], seed=0)
    assert base == phase_fingerprint(stage(), stage().phases[0], seed=0)
    assert base != phase_fingerprint(s, s.phases[0], seed=1)
    changed = dataclasses.replace(s.phases[0], max_epochs=2.0)
    assert base != phase_fingerprint(s, changed, seed=0)
    assert curriculum_fingerprint((s,), 0) != curriculum_fingerprint((dataclasses.replace(s, seq_len=16),), 0)


@pytest.mark.parametrize("step, phase, lr", [
    (0, "stable", 2e-3 / 5000), (2499, "stable", 1e-3), (4999, "stable", 2e-3), (100_000, "stable", 2e-3),
    (230_000, "decay", 2e-3), (305_000, "decay", (2e-3 + 2e-5) / 2), (380_000, "anneal", 2e-5),
    (443_499, "anneal", 2e-5), (443_500, "long_context", 2e-5),
])
def test_rnj1_learning_rate_is_wsd_and_lines_up_with_the_data_phases(step, phase, lr):
    position = lookup(load_build("configs/rnj1.toml").stages, step)
    assert position.phase.name == phase
    assert position.lr == pytest.approx(lr, rel=1e-3)


def test_learning_rate_fields_do_not_change_the_shards_fingerprint():
    phase = PhaseConfig(name="p", tokens=8, weights={"code": 1.0})
    stage = StageConfig(name="s", kind="pretrain", seq_len=4, global_batch_tokens=8, phases=(phase,))
    faster = dataclasses.replace(phase, lr_start=1.0, lr_shape="cosine", lr_end=0.5, lr_warmup_steps=3)
    assert phase_fingerprint(stage, phase, 0) == phase_fingerprint(stage, faster, 0)
    assert phase_fingerprint(stage, phase, 0) != phase_fingerprint(stage, dataclasses.replace(phase, tokens=16), 0)


def test_an_sft_phase_built_in_two_places_hashes_the_same():
    text = """
[build]
name = "b"
output = "{out}"
[[sources]]
name = "s"
uri = "x.jsonl"
format = "jsonl"
[[stages]]
name = "sft"
kind = "sft"
seq_len = 8
global_batch_tokens = 16
[[stages.phases]]
name = "chat"
tokens = 32
weights = { "*/*/traces" = 1.0 }
sft_uris = { traces = "{out}/traces/sft" }
"""
    here = parse_build(text.replace("{out}", "out-a"), "/home/a/build.toml")
    there = parse_build(text.replace("{out}", "out-b"), "/mnt/b/build.toml")
    assert here.stages[0].phases[0].sft_uris != there.stages[0].phases[0].sft_uris
    assert (phase_fingerprint(here.stages[0], here.stages[0].phases[0], 0)
            == phase_fingerprint(there.stages[0], there.stages[0].phases[0], 0))
    renamed = parse_build(text.replace("{out}", "out-a").replace("traces", "chat"), "/home/a/build.toml")
    assert (phase_fingerprint(renamed.stages[0], renamed.stages[0].phases[0], 0)
            != phase_fingerprint(here.stages[0], here.stages[0].phases[0], 0))  # the source names count
