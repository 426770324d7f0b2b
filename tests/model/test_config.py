"""ModelConfig, presets, YaRN switching, serialisation, and the size / FLOPs / memory figures."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model import ModelConfig, Transformer, YarnConfig, get_preset, model_info, preset_names
from model.info import count_params


def test_presets_are_registered():
    assert preset_names() == ["rnj-1", "rnj-2b", "rnj-200m", "tiny"]
    with pytest.raises(ValueError, match="unknown model preset 'rnj-3'.*choose one of"):
        get_preset("rnj-3")


def test_rnj1_has_the_model_card_shape_and_8_3b_parameters():
    cfg = get_preset("rnj-1")
    assert (cfg.n_layers, cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == \
        (32, 4096, 16384, 32, 8, 128)
    assert cfg.max_seq_len == 8192 and cfg.yarn is None and cfg.final_logit_softcap is not None
    n = count_params(cfg)["total"]
    assert 8.25e9 < n < 8.35e9, n
    # The formula agrees with the module tree (built on the meta device: no memory).
    with torch.device("meta"):
        assert Transformer(cfg).num_params() == n


@pytest.mark.parametrize(("name", "low", "high"), [("rnj-2b", 1.95e9, 1.99e9), ("rnj-200m", 0.18e9, 0.22e9)])
def test_proxy_sizes(name, low, high):
    cfg = get_preset(name)
    n = count_params(cfg)["total"]
    assert low < n < high, n
    with torch.device("meta"):
        assert Transformer(cfg).num_params() == n


def test_model_info_flops_and_memory():
    cfg = get_preset("rnj-1")
    info = model_info(cfg)
    n = info.n_params
    attn = 12 * 32 * 32 * 128
    assert info.flops_per_token == {8192: 6 * n + attn * 8192, 32768: 6 * n + attn * 32768}
    assert info.bf16_weights_bytes == 2 * n and info.fp32_master_bytes == 4 * n
    # Muon keeps one fp32 buffer per matrix element; AdamW two for the embedding and norms.
    assert info.optimizer_bytes == 4 * info.n_matrices + 8 * (info.n_embedding + info.n_norms)
    sharded = model_info(cfg, n_gpus=8)
    assert sharded.total_bytes == pytest.approx(info.total_bytes / 8)


def test_with_yarn_switches_context_and_back():
    cfg = get_preset("rnj-1")
    long = cfg.with_yarn(factor=4.0)
    assert long.max_seq_len == 32768 and long.yarn == YarnConfig(factor=4.0, original_max_seq_len=8192)
    assert long.without_yarn() == cfg
    with pytest.raises(ValueError, match="already on"):
        long.with_yarn(factor=2.0)
    # Same parameters: a stage switch only rebuilds the RoPE tables.
    assert count_params(long) == count_params(cfg)


def test_serialisation_round_trip():
    cfg = get_preset("tiny").with_yarn(factor=2.0, attn_factor=1.2)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    cfg2 = dataclasses.replace(get_preset("tiny"), layer_types=("full_attention",) * 2)
    assert ModelConfig.from_dict(cfg2.to_dict()) == cfg2


def test_serialisation_errors_name_the_problem():
    data = get_preset("tiny").to_dict()
    with pytest.raises(ValueError, match=r"unknown keys \['n_embd'\]"):
        ModelConfig.from_dict({**data, "n_embd": 3})
    with pytest.raises(ValueError, match="Hugging Face config: use `rnj convert hf-to-rnj`"):
        ModelConfig.from_dict({"model_type": "gemma3_text"})


@pytest.mark.parametrize(("overrides", "message"), [
    ({"n_kv_heads": 3}, "n_kv_heads .3. must divide n_heads .4."),
    ({"head_dim": 15}, "head_dim must be even"),
    ({"layer_types": ("full_attention", "sliding_attention")}, r"\['sliding_attention'\] are not implemented"),
    ({"layer_types": ("full_attention",)}, "layer_types has 1 entries but n_layers is 2"),
    ({"d_model": 0}, "d_model must be a positive int"),
])
def test_invalid_configs_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_preset("tiny", **overrides)


def test_yarn_validation():
    with pytest.raises(ValueError, match="factor must be > 1"):
        YarnConfig(factor=1.0, original_max_seq_len=8192)
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        get_preset("tiny", yarn=YarnConfig(factor=4.0, original_max_seq_len=4096))
