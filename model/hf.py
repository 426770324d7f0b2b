"""Hugging Face interchange: Gemma 3 text checkpoints (`Gemma3ForCausalLM`, model_type `gemma3_text`) ↔ ours.

Our checkpoint folder: `config.json` (a `ModelConfig.to_dict()`) + `model.safetensors` (our parameter names,
stored dtype kept). The Hugging Face folder: `config.json` + `model.safetensors`, or shards
`model-0000i-of-0000n.safetensors` with `model.safetensors.index.json` when larger than the shard size.

YaRN keys differ between engines (docs/model.md, "YaRN in transformers and vLLM"):
- `attn_factor` and `extrapolation_factor` (in the released Rnj-1 config) are vLLM's: vLLM multiplies the
  paper's scaling 0.1·ln(factor) + 1 by `attn_factor` and scales the ramp by `extrapolation_factor`;
  transformers ignores both. We import them with vLLM's meaning.
- `attention_factor` is transformers': the absolute factor on cos/sin. We export it (set to our effective
  scaling) so that transformers computes what we compute; `attn_factor` / `extrapolation_factor` are
  written too when they are not 1, for the vLLM versions that read them.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from model.config import FULL_ATTENTION, ModelConfig, YarnConfig

__all__ = [
    "config_from_hf",
    "config_to_hf",
    "hf_to_rnj",
    "load_model",
    "read_rnj",
    "read_safetensors_folder",
    "rnj_to_hf",
    "state_dict_from_hf",
    "state_dict_to_hf",
    "write_rnj",
    "write_safetensors_sharded",
]

RNJ_1_SPECIAL_IDS = {"bos_token_id": 128_000, "eos_token_id": 128_009, "pad_token_id": 128_001}
"""Special token ids of the released Rnj-1 generation config (Llama-3 layout)."""

DEFAULT_MAX_SHARD_BYTES = 5_000_000_000
"""Hugging Face's default shard size (5 GB)."""

# Hugging Face name → our name. `{i}` is the layer index.
_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "embed.weight",
    "model.norm.weight": "norm.weight",
}
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn.wq.weight",
    "self_attn.k_proj.weight": "attn.wk.weight",
    "self_attn.v_proj.weight": "attn.wv.weight",
    "self_attn.o_proj.weight": "attn.wo.weight",
    "self_attn.q_norm.weight": "attn.q_norm.weight",
    "self_attn.k_norm.weight": "attn.k_norm.weight",
    "post_attention_layernorm.weight": "attn_post_norm.weight",
    "pre_feedforward_layernorm.weight": "mlp_norm.weight",
    "mlp.gate_proj.weight": "mlp.w_gate.weight",
    "mlp.up_proj.weight": "mlp.w_up.weight",
    "mlp.down_proj.weight": "mlp.w_down.weight",
    "post_feedforward_layernorm.weight": "mlp_post_norm.weight",
}
_HF_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")


# -- names and shapes -------------------------------------------------------------------------------------

def _name_map(cfg: ModelConfig) -> dict[str, str]:
    """Every Hugging Face tensor name of this config → our name, in layer order."""
    names = dict(_GLOBAL_NAMES)
    for i in range(cfg.n_layers):
        for hf_suffix, ours in _LAYER_NAMES.items():
            names[f"model.layers.{i}.{hf_suffix}"] = f"blocks.{i}.{ours}"
    return names


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Our parameter names → shapes for `cfg`, read off a model built on the meta device (no memory)."""
    from model.transformer import Transformer

    with torch.device("meta"):
        model = Transformer(cfg)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _check_tensors(tensors: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]], where: str) -> None:
    missing = [name for name in expected if name not in tensors]
    if missing:
        shown = ", ".join(f"{n} {list(expected[n])}" for n in missing[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise ValueError(f"{where}: missing tensors {shown}{more}; the config expects them with these shapes")
    for name, shape in expected.items():
        got = tuple(tensors[name].shape)
        if got != shape:
            raise ValueError(f"{where}: tensor {name} has shape {list(got)}, expected {list(shape)} from the config")
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise ValueError(f"{where}: unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}; "
                         f"the config ({len(expected)} tensors) has no place for them")


# -- state dicts ------------------------------------------------------------------------------------------

def state_dict_from_hf(hf_tensors: Mapping[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """A Gemma3ForCausalLM state dict → ours. Names, count and shapes are checked against `cfg`; a separate
    `lm_head.weight` is accepted only if it equals the embedding (the model is tied)."""
    names = _name_map(cfg)
    tensors = dict(hf_tensors)
    lm_head = tensors.pop("lm_head.weight", None)
    if lm_head is not None:
        embed = tensors.get("model.embed_tokens.weight")
        if embed is None or lm_head.shape != embed.shape or not torch.equal(lm_head, embed):
            raise ValueError("lm_head.weight differs from model.embed_tokens.weight: untied LM heads are not "
                             "supported (Rnj-1 ties them); expected no lm_head.weight or a copy of the embedding")
    shapes = expected_shapes(cfg)
    _check_tensors(tensors, {hf: shapes[ours] for hf, ours in names.items()}, "Hugging Face checkpoint")
    return {ours: tensors[hf] for hf, ours in names.items()}


def state_dict_to_hf(state_dict: Mapping[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """Our state dict → Gemma3ForCausalLM names (no lm_head.weight: transformers ties it to the embedding)."""
    _check_tensors(state_dict, expected_shapes(cfg), "rnj checkpoint")
    return {hf: state_dict[ours].contiguous() for hf, ours in _name_map(cfg).items()}


# -- configs ----------------------------------------------------------------------------------------------

def _yarn_mscale(factor: float) -> float:
    return 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0


def _full_attention_rope(hf: Mapping[str, Any]) -> dict[str, Any]:
    """The rope parameters of the full-attention layers, from the v5 or the legacy layout."""
    params = hf.get("rope_parameters")
    if params is not None:
        if FULL_ATTENTION in params:
            return dict(params[FULL_ATTENTION])
        if "rope_type" in params or "type" in params:
            raise ValueError("rope_parameters is a flat dict, which transformers ignores for gemma3_text (it "
                             "runs plain RoPE); key it by layer type: {'full_attention': {'rope_type': ...}}")
        raise ValueError(f"rope_parameters has no 'full_attention' entry (keys: {sorted(params)})")
    # transformers 4.x layout: rope_theta for global layers, rope_scaling applied to them.
    rope = dict(hf.get("rope_scaling") or {"rope_type": "default"})
    rope.setdefault("rope_theta", hf.get("rope_theta", 1_000_000.0))
    return rope


def _yarn_from_hf(rope: Mapping[str, Any], max_position_embeddings: int) -> YarnConfig:
    unsupported = sorted(k for k in ("mscale", "mscale_all_dim") if rope.get(k) is not None)
    if unsupported:
        raise ValueError(f"YaRN keys {unsupported} (DeepSeek's variant) are not supported")
    if rope.get("truncate", True) is False:
        raise ValueError("YaRN with truncate=false is not supported (transformers' gemma3 always truncates)")
    for key in ("factor", "original_max_position_embeddings"):
        if rope.get(key) is None:
            raise ValueError(f"YaRN rope parameters lack '{key}' (got keys {sorted(rope)})")
    factor = float(rope["factor"])
    attn_factor = float(rope.get("attn_factor", 1.0))
    if rope.get("attention_factor") is not None:
        implied = float(rope["attention_factor"]) / _yarn_mscale(factor)
        if "attn_factor" not in rope:
            attn_factor = implied  # transformers' absolute factor, re-expressed as vLLM's multiplier
        elif not math.isclose(implied, attn_factor, rel_tol=1e-6):
            warnings.warn(f"YaRN attention_factor {rope['attention_factor']} (transformers) and attn_factor "
                          f"{attn_factor} (vLLM) disagree; following vLLM: scaling = "
                          f"{_yarn_mscale(factor) * attn_factor:.6f}", stacklevel=3)
    original = int(rope["original_max_position_embeddings"])
    if original > max_position_embeddings:
        raise ValueError(f"YaRN original_max_position_embeddings ({original}) exceeds max_position_embeddings "
                         f"({max_position_embeddings})")
    return YarnConfig(factor=factor, original_max_seq_len=original,
                      beta_fast=float(rope.get("beta_fast") or 32.0), beta_slow=float(rope.get("beta_slow") or 1.0),
                      attn_factor=attn_factor, extrapolation_factor=float(rope.get("extrapolation_factor", 1.0)))


def config_from_hf(hf: Mapping[str, Any], name: str = "hf-import") -> ModelConfig:
    """A Hugging Face `gemma3_text` config dict → ModelConfig; anything we cannot reproduce is an error."""
    model_type = hf.get("model_type")
    if model_type == "gemma3":
        raise ValueError("model_type 'gemma3' is the multimodal Gemma 3; only the text model is supported "
                         "(model_type 'gemma3_text', Gemma3ForCausalLM)")
    if model_type != "gemma3_text":
        raise ValueError(f"model_type is {model_type!r}, expected 'gemma3_text' (a Gemma3ForCausalLM checkpoint)")
    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings")
    missing = [k for k in required if hf.get(k) is None]
    if missing:
        raise ValueError(f"config.json lacks {missing}; expected every one of {list(required)}")
    n_layers = int(hf["num_hidden_layers"])
    layer_types = hf.get("layer_types")
    if layer_types is None:
        raise ValueError("config.json has no layer_types: transformers would then make 5 of every 6 layers "
                         "sliding_attention; expected layer_types with 'full_attention' for every layer")
    if len(layer_types) != n_layers:
        raise ValueError(f"layer_types has {len(layer_types)} entries, expected num_hidden_layers = {n_layers}")
    sliding = [i for i, t in enumerate(layer_types) if t != FULL_ATTENTION]
    if sliding:
        raise ValueError(f"layers {sliding} are {layer_types[sliding[0]]!r}; only 'full_attention' layers are "
                         f"supported (Rnj-1 uses global attention in every layer)")
    activation = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    if activation != "gelu_pytorch_tanh":
        raise ValueError(f"hidden_activation is {activation!r}, expected 'gelu_pytorch_tanh' (GeGLU with tanh GELU)")
    for key, expected in (("attention_bias", False), ("use_bidirectional_attention", False),
                          ("tie_word_embeddings", True)):
        value = hf.get(key, expected)
        if bool(value) != expected:
            raise ValueError(f"{key} is {value!r}, expected {expected!r}: not supported")
    if hf.get("attn_logit_softcapping") is not None:
        warnings.warn(f"attn_logit_softcapping={hf['attn_logit_softcapping']} is ignored, as transformers' "
                      f"gemma3 attention ignores it", stacklevel=2)

    rope = _full_attention_rope(hf)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "yarn"):
        raise ValueError(f"rope_type {rope_type!r} for full_attention layers; expected 'default' or 'yarn'")
    max_seq_len = int(hf["max_position_embeddings"])
    yarn = _yarn_from_hf(rope, max_seq_len) if rope_type == "yarn" else None
    cap = hf.get("final_logit_softcapping")
    return ModelConfig(
        name=name, vocab_size=int(hf["vocab_size"]), d_model=int(hf["hidden_size"]), n_layers=n_layers,
        n_heads=int(hf["num_attention_heads"]), n_kv_heads=int(hf["num_key_value_heads"]),
        head_dim=int(hf["head_dim"]), d_ff=int(hf["intermediate_size"]), max_seq_len=max_seq_len,
        rope_theta=float(rope.get("rope_theta", 1_000_000.0)), yarn=yarn,
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        # transformers' default is 256, not head_dim: a config without the key runs with 256 there.
        query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
        final_logit_softcap=None if cap is None else float(cap),
        layer_types=tuple(layer_types),
    )


def _int_if_whole(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def config_to_hf(cfg: ModelConfig, *, dtype: torch.dtype = torch.bfloat16,
                 special_ids: Mapping[str, int | None] | None = None) -> dict[str, Any]:
    """ModelConfig → a `gemma3_text` config dict that transformers, vLLM and llama.cpp load as Gemma 3.

    special_ids: bos/eos/pad_token_id; default Rnj-1's (128000 / 128009 / 128001) where they fit the
    vocabulary, else left out."""
    if special_ids is None:
        special_ids = {k: v for k, v in RNJ_1_SPECIAL_IDS.items() if v < cfg.vocab_size}
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": float(cfg.rope_theta)}
    yarn = cfg.yarn
    if yarn is not None:
        rope = {"rope_type": "yarn", "rope_theta": float(cfg.rope_theta), "factor": float(yarn.factor),
                "original_max_position_embeddings": yarn.original_max_seq_len,
                "beta_fast": float(yarn.beta_fast), "beta_slow": float(yarn.beta_slow),
                "attention_factor": float(yarn.attention_scaling)}
        if yarn.attn_factor != 1.0:
            rope["attn_factor"] = float(yarn.attn_factor)
        if yarn.extrapolation_factor != 1.0:
            rope["extrapolation_factor"] = float(yarn.extrapolation_factor)
            warnings.warn(f"YaRN extrapolation_factor={yarn.extrapolation_factor} is exported for vLLM, but "
                          f"transformers ignores it: its logits will differ from ours", stacklevel=2)
    dtype_name = str(dtype).removeprefix("torch.")
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "query_pre_attn_scalar": _int_if_whole(cfg.head_dim if cfg.query_pre_attn_scalar is None
                                               else cfg.query_pre_attn_scalar),
        "final_logit_softcapping": None if cfg.final_logit_softcap is None else float(cfg.final_logit_softcap),
        "attn_logit_softcapping": None,
        "layer_types": [FULL_ATTENTION] * cfg.n_layers,
        # No layer uses it, but transformers builds the sliding mask anyway and crashes on None.
        "sliding_window": cfg.max_seq_len,
        # transformers 5 reads rope_parameters keyed by layer type (a flat dict would be ignored) ...
        "rope_parameters": {FULL_ATTENTION: rope,
                            "sliding_attention": {"rope_type": "default", "rope_theta": float(cfg.rope_theta)}},
        # ... older readers (transformers 4, vLLM, llama.cpp's converter) read these two.
        "rope_theta": float(cfg.rope_theta),
        "rope_scaling": {k: v for k, v in rope.items() if k != "rope_theta"} if yarn is not None else None,
        "tie_word_embeddings": True,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_bidirectional_attention": False,
        "initializer_range": 0.02,
        "use_cache": True,
        "dtype": dtype_name,
        **{k: v for k, v in special_ids.items() if v is not None},
    }


# -- files ------------------------------------------------------------------------------------------------

def read_safetensors_folder(src_dir: str | Path) -> dict[str, Tensor]:
    """All tensors of a folder: `model.safetensors`, or the shards named in `model.safetensors.index.json`."""
    src = Path(src_dir)
    index = src / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        tensors: dict[str, Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            if not (src / shard).exists():
                raise FileNotFoundError(f"{src / shard} is named in {index.name} but does not exist")
            tensors.update(load_file(src / shard))
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise ValueError(f"{index.name} names tensors that no shard holds: {missing[:5]}")
        return tensors
    if (src / "model.safetensors").exists():
        return load_file(src / "model.safetensors")
    if (src / "pytorch_model.bin").exists() or (src / "pytorch_model.bin.index.json").exists():
        raise ValueError(f"{src} holds pytorch_model.bin; only safetensors checkpoints are read (re-save the "
                         f"model with save_pretrained(..., safe_serialization=True))")
    raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {src}")


def write_safetensors_sharded(tensors: Mapping[str, Tensor], dst_dir: str | Path,
                              max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> list[str]:
    """Write `model.safetensors`, or shards of at most max_shard_bytes (a larger single tensor gets a shard
    of its own) plus `model.safetensors.index.json`, as transformers does. Returns the files written."""
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor.contiguous()
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], dst / "model.safetensors", metadata={"format": "pt"})
        return ["model.safetensors"]
    files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for file, shard in zip(files, shards):
        save_file(shard, dst / file, metadata={"format": "pt"})
        weight_map.update({name: file for name in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return [*files, "model.safetensors.index.json"]


def _prepare_dst(dst_dir: str | Path, overwrite: bool) -> Path:
    dst = Path(dst_dir)
    if (dst / "config.json").exists() and not overwrite:
        raise FileExistsError(f"{dst / 'config.json'} already exists; choose an empty folder or pass overwrite")
    dst.mkdir(parents=True, exist_ok=True)
    return dst


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return json.loads(path.read_text())


def write_rnj(dst_dir: str | Path, cfg: ModelConfig, state_dict: Mapping[str, Tensor], *,
              overwrite: bool = False) -> Path:
    """Write our checkpoint folder: config.json (ModelConfig) + model.safetensors (our names)."""
    _check_tensors(state_dict, expected_shapes(cfg), "rnj checkpoint")
    dst = _prepare_dst(dst_dir, overwrite)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, dst / "model.safetensors",
              metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    return dst


def read_rnj(src_dir: str | Path) -> tuple[ModelConfig, dict[str, Tensor]]:
    """Read our checkpoint folder; names and shapes are checked against its config."""
    src = Path(src_dir)
    cfg = ModelConfig.from_dict(_read_json(src / "config.json"))
    tensors = load_file(src / "model.safetensors")
    _check_tensors(tensors, expected_shapes(cfg), f"rnj checkpoint {src}")
    return cfg, tensors


def load_model(src_dir: str | Path, device: torch.device | str = "cpu"):
    """A float32 `Transformer` from our checkpoint folder (built on the meta device, then filled)."""
    from model.transformer import Transformer

    cfg, tensors = read_rnj(src_dir)
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device=device)
    model.load_state_dict(tensors)
    model.reset_rope()
    return model


def hf_to_rnj(src_dir: str | Path, dst_dir: str | Path, *, overwrite: bool = False) -> ModelConfig:
    """Convert a Hugging Face Gemma 3 text checkpoint folder into our checkpoint folder; returns its config."""
    src = Path(src_dir)
    cfg = config_from_hf(_read_json(src / "config.json"), name=src.resolve().name)
    state_dict = state_dict_from_hf(read_safetensors_folder(src), cfg)
    write_rnj(dst_dir, cfg, state_dict, overwrite=overwrite)
    return cfg


def rnj_to_hf(src_dir: str | Path, dst_dir: str | Path, *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
              dtype: torch.dtype | None = None, special_ids: Mapping[str, int | None] | None = None,
              overwrite: bool = False) -> list[str]:
    """Convert our checkpoint folder into a `Gemma3ForCausalLM` folder (sharded above max_shard_bytes).

    dtype: cast the tensors (e.g. torch.bfloat16); None keeps the stored dtype. Returns the files written."""
    cfg, state_dict = read_rnj(src_dir)
    hf_tensors = state_dict_to_hf(state_dict, cfg)
    if dtype is not None:
        hf_tensors = {k: v.to(dtype) for k, v in hf_tensors.items()}
    stored = next(iter(hf_tensors.values())).dtype
    dst = _prepare_dst(dst_dir, overwrite)
    files = write_safetensors_sharded(hf_tensors, dst, max_shard_bytes)
    hf_config = config_to_hf(cfg, dtype=stored, special_ids=special_ids)
    (dst / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    return ["config.json", *files]
