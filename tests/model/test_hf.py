"""Hugging Face interchange: logits parity with transformers' Gemma3ForCausalLM both ways, and clear errors.

Parity tolerance: max |Δlogit| ≤ 1e-4 in float32. Measured on this machine: 0.0 against transformers' SDPA
attention (the same kernels both sides), 4.6e-6 against its eager attention."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

pytest.importorskip("transformers", reason="transformers is the test-only reference for the parity tests")

from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from model import (
    Transformer,
    config_from_hf,
    config_to_hf,
    get_preset,
    hf_to_rnj,
    load_model,
    read_rnj,
    rnj_to_hf,
    state_dict_from_hf,
    write_rnj,
)
from model.hf import expected_shapes, read_safetensors_folder

PARITY_ATOL = 1e-4


def _hf_config(**overrides) -> Gemma3TextConfig:
    """A tiny gemma3_text config the way the gotchas demand: every layer full_attention, YaRN keyed by layer
    type, sliding_window an int, no attention softcap, query_pre_attn_scalar explicit, a final softcap."""
    kwargs = {
        "vocab_size": 384, "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6, "layer_types": ["full_attention"] * 3, "sliding_window": 512,
        "query_pre_attn_scalar": 24, "final_logit_softcapping": 8.0, "attn_logit_softcapping": None,
        "pad_token_id": 0,
        "rope_parameters": {
            "full_attention": {"rope_type": "yarn", "rope_theta": 10_000.0, "factor": 4.0,
                               "original_max_position_embeddings": 128, "beta_fast": 32.0, "beta_slow": 1.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
    }
    kwargs.update(overrides)
    return Gemma3TextConfig(**kwargs)


def _random_hf_model(config: Gemma3TextConfig, seed: int = 0) -> Gemma3ForCausalLM:
    """Weights at unit-variance scale (transformers' 0.02 init gives logits too small to test much) and
    non-zero norm gains, so that every tensor and the softcap matter."""
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.3)
            elif p.dim() == 2:
                p.normal_(0.0, p.shape[1] ** -0.5)
    return model


def _tokens(vocab: int, seed: int = 1) -> torch.Tensor:
    # 300 tokens: beyond YaRN's original 128-token context, so the interpolated frequencies are exercised.
    return torch.randint(0, vocab, (2, 300), generator=torch.Generator().manual_seed(seed))


def test_hf_to_ours_parity_in_memory():
    hf = _random_hf_model(_hf_config())
    cfg = config_from_hf(hf.config.to_dict())
    assert cfg.yarn is not None and cfg.yarn.factor == 4.0 and cfg.final_logit_softcap == 8.0
    assert cfg.attn_scale == pytest.approx(24 ** -0.5)
    ours = Transformer(cfg).eval()
    ours.load_state_dict(state_dict_from_hf(hf.state_dict(), cfg))
    tokens = _tokens(cfg.vocab_size)
    with torch.no_grad():
        expected = hf(tokens).logits
        got = ours(tokens)
    assert expected.abs().max() > 4.0  # the softcap (8) is in play
    assert (got - expected).abs().max().item() <= PARITY_ATOL


def test_folder_round_trip_through_transformers(tmp_path):
    hf = _random_hf_model(_hf_config())
    hf.save_pretrained(tmp_path / "hf")
    cfg = hf_to_rnj(tmp_path / "hf", tmp_path / "rnj")
    ours = load_model(tmp_path / "rnj")
    tokens = _tokens(cfg.vocab_size)
    with torch.no_grad():
        reference = hf(tokens).logits
        assert (ours(tokens) - reference).abs().max().item() <= PARITY_ATOL

    # Export with a small shard size to exercise sharding and the index file.
    files = rnj_to_hf(tmp_path / "rnj", tmp_path / "back", max_shard_bytes=200_000)
    assert "model.safetensors.index.json" in files and sum(f.endswith(".safetensors") for f in files) > 2
    exported = json.loads((tmp_path / "back" / "config.json").read_text())
    assert exported["model_type"] == "gemma3_text" and exported["architectures"] == ["Gemma3ForCausalLM"]
    assert set(exported["layer_types"]) == {"full_attention"} and isinstance(exported["sliding_window"], int)
    assert exported["rope_parameters"]["full_attention"]["rope_type"] == "yarn"
    reloaded = Gemma3ForCausalLM.from_pretrained(tmp_path / "back", dtype=torch.float32).eval()
    assert reloaded.config.rope_parameters["full_attention"]["rope_type"] == "yarn"
    with torch.no_grad():
        assert (reloaded(tokens).logits - reference).abs().max().item() <= PARITY_ATOL
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()  # tied
    # Against transformers' eager attention (another kernel than SDPA): measured 4.6e-6.
    eager = Gemma3ForCausalLM.from_pretrained(tmp_path / "back", dtype=torch.float32,
                                              attn_implementation="eager").eval()
    with torch.no_grad():
        assert (eager(tokens).logits - ours(tokens)).abs().max().item() <= PARITY_ATOL


def test_our_model_exported_loads_in_transformers_with_vllm_yarn_keys(tmp_path):
    # attn_factor (vLLM's multiplier) becomes transformers' absolute attention_factor on export.
    cfg = get_preset("tiny", final_logit_softcap=5.0).with_yarn(factor=4.0, attn_factor=1.1)
    torch.manual_seed(0)
    ours = Transformer(cfg).eval()
    write_rnj(tmp_path / "rnj", cfg, ours.state_dict())
    rnj_to_hf(tmp_path / "rnj", tmp_path / "hf")
    rope = json.loads((tmp_path / "hf" / "config.json").read_text())["rope_parameters"]["full_attention"]
    assert rope["attention_factor"] == pytest.approx(cfg.yarn.attention_scaling) and rope["attn_factor"] == 1.1
    hf = Gemma3ForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    tokens = torch.randint(0, cfg.vocab_size, (2, 200), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (hf(tokens).logits - ours(tokens)).abs().max().item() <= PARITY_ATOL
    # And back: the import reads attn_factor with vLLM's meaning, giving the same config.
    hf_to_rnj(tmp_path / "hf", tmp_path / "again")
    again, _ = read_rnj(tmp_path / "again")
    assert again.yarn == cfg.yarn


def test_released_style_yarn_keys_follow_vllm():
    hf = _hf_config().to_dict()
    hf["rope_parameters"]["full_attention"].update(attn_factor=0.8, extrapolation_factor=1.0)
    cfg = config_from_hf(hf)
    assert cfg.yarn.attn_factor == 0.8
    assert cfg.yarn.attention_scaling == pytest.approx((0.1 * torch.log(torch.tensor(4.0)).item() + 1) * 0.8)
    # transformers' absolute attention_factor alone is re-expressed as vLLM's multiplier.
    hf["rope_parameters"]["full_attention"].pop("attn_factor")
    hf["rope_parameters"]["full_attention"]["attention_factor"] = 1.5
    assert config_from_hf(hf).yarn.attention_scaling == pytest.approx(1.5)


def test_legacy_rope_scaling_layout_is_read():
    legacy = {k: v for k, v in _hf_config().to_dict().items() if k != "rope_parameters"}
    legacy.update(rope_theta=50_000.0, rope_scaling={"type": "yarn", "factor": 2.0,
                                                    "original_max_position_embeddings": 256})
    cfg = config_from_hf(legacy)
    assert cfg.rope_theta == 50_000.0 and cfg.yarn.factor == 2.0 and cfg.yarn.original_max_seq_len == 256


def test_config_round_trip_through_hf_dict():
    cfg = get_preset("rnj-1").with_yarn(factor=4.0)
    back = config_from_hf(config_to_hf(cfg), name="rnj-1")
    assert back == dataclasses.replace(cfg, layer_types=("full_attention",) * cfg.n_layers)
    assert config_to_hf(cfg)["eos_token_id"] == 128_009
    assert "bos_token_id" not in config_to_hf(get_preset("tiny"))  # Rnj-1's ids do not fit tiny's vocab


# -- errors -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "message"), [
    ({"model_type": "llama"}, "model_type is 'llama', expected 'gemma3_text'"),
    ({"model_type": "gemma3"}, "multimodal Gemma 3"),
    ({"layer_types": ["full_attention", "sliding_attention", "sliding_attention"]},
     r"layers \[1, 2\] are 'sliding_attention'; only 'full_attention'"),
    ({"layer_types": None}, "no layer_types"),
    ({"hidden_activation": "gelu"}, "hidden_activation is 'gelu', expected 'gelu_pytorch_tanh'"),
    ({"tie_word_embeddings": False}, "tie_word_embeddings is False"),
    ({"head_dim": None}, r"lacks \['head_dim'\]"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "flat dict"),
])
def test_unsupported_configs_are_refused_by_name(change, message):
    hf = {**_hf_config().to_dict(), **change}
    with pytest.raises(ValueError, match=message):
        config_from_hf(hf)


def test_missing_and_misshaped_tensors_are_named():
    hf = _random_hf_model(_hf_config())
    cfg = config_from_hf(hf.config.to_dict())
    tensors = dict(hf.state_dict())
    del tensors["model.layers.2.self_attn.k_norm.weight"]
    with pytest.raises(ValueError, match=r"missing tensors model\.layers\.2\.self_attn\.k_norm\.weight \[32\]"):
        state_dict_from_hf(tensors, cfg)
    tensors = dict(hf.state_dict())
    tensors["model.layers.0.mlp.up_proj.weight"] = torch.zeros(100, 64)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.up_proj\.weight has shape \[100, 64\], "
                                         r"expected \[160, 64\]"):
        state_dict_from_hf(tensors, cfg)
    tensors = dict(hf.state_dict())
    tensors["lm_head.weight"] = torch.randn(384, 64)
    with pytest.raises(ValueError, match="untied LM heads are not supported"):
        state_dict_from_hf(tensors, cfg)
    tensors = {**hf.state_dict(), "model.vision_tower.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unexpected tensors \['model\.vision_tower\.weight'\]"):
        state_dict_from_hf(tensors, cfg)


def test_name_map_covers_every_parameter():
    from model.hf import _name_map

    cfg = get_preset("tiny")
    assert sorted(_name_map(cfg).values()) == sorted(expected_shapes(cfg))


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        read_safetensors_folder(tmp_path)
    cfg = get_preset("tiny")
    write_rnj(tmp_path / "rnj", cfg, Transformer(cfg).state_dict())
    with pytest.raises(FileExistsError, match="already exists"):
        write_rnj(tmp_path / "rnj", cfg, Transformer(cfg).state_dict())
    _random_hf_model(_hf_config()).save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match="not an rnj model config.*use `rnj convert hf-to-rnj`"):
        read_rnj(tmp_path / "hf")
