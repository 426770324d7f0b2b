"""`ModelConfig`, the YaRN settings and the registry of named presets.

A config is frozen and keyword-only; make variants with `dataclasses.replace(cfg, ...)`,
`get_preset(name, **overrides)` or `cfg.with_yarn(...)`. It describes the architecture only: how the model is
run (attention kernel, compilation, precision) is decided by the caller, never stored here.

Values that Essential AI's model card does not state (rope theta, the final-logit softcap, the norm epsilon)
are Gemma-family defaults and are marked as assumptions below.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["PRESETS", "ModelConfig", "YarnConfig", "get_preset", "preset_names"]

FULL_ATTENTION = "full_attention"
"""The only layer type this model implements: causal attention over the whole (document of the) row."""

CONFIG_FORMAT = "rnj-model/1"
"""Written into our `config.json` so that a file from another tool is recognised as such."""


@dataclass(frozen=True, kw_only=True)
class YarnConfig:
    """YaRN (arXiv 2309.00071): stretches RoPE's low frequencies by `factor` to extend the context.

    Frequencies that turn fewer than `beta_slow` times over the original context are interpolated (divided by
    `factor`), those that turn more than `beta_fast` times are kept, and a linear ramp blends the band in
    between. cos and sin are multiplied by `attention_scaling` (0.1·ln(factor) + 1, times `attn_factor`),
    which sharpens the softmax to make up for the flatter attention at long range.
    """

    factor: float
    """Context extension ratio: new context / `original_max_seq_len` (4.0 takes 8K to 32K)."""
    original_max_seq_len: int
    """The context the model was pretrained at, before YaRN (Hugging Face: original_max_position_embeddings)."""
    beta_fast: float = 32.0
    """Rotations over the original context above which a frequency is kept unchanged (the paper's β)."""
    beta_slow: float = 1.0
    """Rotations over the original context below which a frequency is fully interpolated (the paper's α)."""
    attn_factor: float = 1.0
    """vLLM's meaning: a multiplier on the paper's attention scaling 0.1·ln(factor) + 1. transformers has no
    such key (it reads an absolute `attention_factor` instead); see docs/model.md."""
    extrapolation_factor: float = 1.0
    """vLLM's meaning: scales the ramp's "keep" weight, 1.0 = the paper. transformers cannot express any other
    value, so exporting a config with another value warns that transformers will compute other logits."""

    def __post_init__(self) -> None:
        _require(self.factor > 1.0, f"YaRN factor must be > 1 (got {self.factor}); to switch YaRN off use yarn=None")
        _require(self.original_max_seq_len > 0, "YaRN original_max_seq_len must be positive")
        _require(self.beta_fast > self.beta_slow > 0,
                 f"YaRN needs beta_fast > beta_slow > 0 (got {self.beta_fast}, {self.beta_slow})")
        _require(self.attn_factor > 0, f"YaRN attn_factor must be positive (got {self.attn_factor})")
        _require(0.0 <= self.extrapolation_factor <= 1.0,
                 f"YaRN extrapolation_factor must be in [0, 1] (got {self.extrapolation_factor})")

    @property
    def attention_scaling(self) -> float:
        """The factor on cos and sin (what transformers calls `attention_factor`)."""
        return (0.1 * math.log(self.factor) + 1.0) * self.attn_factor


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Architecture of a Gemma-3-style decoder whose layers all use global attention (Rnj-1)."""

    name: str = "custom"
    """Free-form label shown by `rnj model info` and written into checkpoints; no code branches on it."""
    vocab_size: int
    """Rows of the (tied) embedding and LM head. Must cover the tokenizer's ids, specials included."""
    d_model: int
    """Width of the residual stream."""
    n_layers: int
    """Number of transformer blocks."""
    n_heads: int
    """Query heads per attention layer."""
    n_kv_heads: int
    """Key/value heads (grouped-query attention); must divide n_heads."""
    head_dim: int
    """Width of one head. Independent of d_model (Gemma style): n_heads·head_dim need not equal d_model."""
    d_ff: int
    """Hidden width of the GeGLU feed-forward (the gate and up projections each have this many outputs)."""
    max_seq_len: int
    """Longest sequence (and largest position + 1) the RoPE tables cover. With YaRN on this is the extended
    context; the pretraining context lives in `yarn.original_max_seq_len`."""
    rope_theta: float = 1_000_000.0
    """RoPE base. Assumption: Gemma 3's global-layer value; Rnj-1's is not public."""
    yarn: YarnConfig | None = None
    """YaRN context extension, or None for plain RoPE. Switch per training stage with `with_yarn`."""
    norm_eps: float = 1e-6
    """RMSNorm epsilon (Gemma 3's value)."""
    query_pre_attn_scalar: float | None = None
    """Queries are scaled by query_pre_attn_scalar ** -0.5 before q·k. None means head_dim (the usual
    1/sqrt(head_dim)); some Gemma 3 sizes use d_model / n_heads instead, hence the field."""
    final_logit_softcap: float | None = None
    """If set, logits become tanh(logits / cap) · cap. The released Rnj-1 sets one (its value is not public;
    the presets assume Gemma 2's 30.0)."""
    layer_types: tuple[str, ...] | None = None
    """Attention type per layer, an explicit list as Hugging Face stores it. None means every layer
    "full_attention", the only type implemented (Rnj-1 has no sliding-window layers)."""

    def __post_init__(self) -> None:
        for field_name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff",
                           "max_seq_len"):
            value = getattr(self, field_name)
            _require(isinstance(value, int) and value > 0, f"{field_name} must be a positive int (got {value!r})")
        _require(self.n_heads % self.n_kv_heads == 0,
                 f"n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads}) for grouped-query attention")
        _require(self.head_dim % 2 == 0, f"head_dim must be even for RoPE (got {self.head_dim})")
        _require(self.rope_theta > 1.0, f"rope_theta must be > 1 (got {self.rope_theta})")
        _require(self.norm_eps > 0, f"norm_eps must be positive (got {self.norm_eps})")
        _require(self.query_pre_attn_scalar is None or self.query_pre_attn_scalar > 0,
                 f"query_pre_attn_scalar must be positive or None (got {self.query_pre_attn_scalar})")
        _require(self.final_logit_softcap is None or self.final_logit_softcap > 0,
                 f"final_logit_softcap must be positive or None (got {self.final_logit_softcap})")
        if self.yarn is not None:
            _require(isinstance(self.yarn, YarnConfig), f"yarn must be a YarnConfig or None (got {self.yarn!r})")
            _require(self.yarn.original_max_seq_len <= self.max_seq_len,
                     f"yarn.original_max_seq_len ({self.yarn.original_max_seq_len}) exceeds max_seq_len "
                     f"({self.max_seq_len}); use cfg.with_yarn(...), which sets both")
        if self.layer_types is not None:
            _require(isinstance(self.layer_types, tuple), "layer_types must be a tuple (or None)")
            _require(len(self.layer_types) == self.n_layers,
                     f"layer_types has {len(self.layer_types)} entries but n_layers is {self.n_layers}")
            other = sorted({t for t in self.layer_types if t != FULL_ATTENTION})
            _require(not other, f"layer types {other} are not implemented: every layer must be "
                                f"'{FULL_ATTENTION}' (Rnj-1 uses global attention in every layer)")

    # -- derived values -----------------------------------------------------------------------------------

    @property
    def attn_scale(self) -> float:
        """The factor on queries before q·k: query_pre_attn_scalar ** -0.5."""
        scalar = self.head_dim if self.query_pre_attn_scalar is None else self.query_pre_attn_scalar
        return float(scalar) ** -0.5

    @property
    def resolved_layer_types(self) -> tuple[str, ...]:
        """`layer_types` with None expanded to one entry per layer."""
        return self.layer_types if self.layer_types is not None else (FULL_ATTENTION,) * self.n_layers

    # -- stage switches -----------------------------------------------------------------------------------

    def with_yarn(self, factor: float = 4.0, **yarn_fields: Any) -> ModelConfig:
        """Turn YaRN on for context extension: the current max_seq_len becomes the original context and
        max_seq_len grows to factor × that (8K → 32K for factor 4). The weights do not change: load the
        previous stage's state dict into a model built from the returned config."""
        if self.yarn is not None:
            raise ValueError(f"YaRN is already on ({self.yarn}); call without_yarn() first to change it")
        yarn = YarnConfig(factor=factor, original_max_seq_len=self.max_seq_len, **yarn_fields)
        return dataclasses.replace(self, yarn=yarn, max_seq_len=round(factor * self.max_seq_len))

    def without_yarn(self) -> ModelConfig:
        """Plain RoPE again, with max_seq_len back to the pretraining context (a no-op without YaRN)."""
        if self.yarn is None:
            return self
        return dataclasses.replace(self, yarn=None, max_seq_len=self.yarn.original_max_seq_len)

    # -- serialisation ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (our checkpoint's config.json), tagged with the format name."""
        out: dict[str, Any] = {"format": CONFIG_FORMAT}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, YarnConfig):
                value = dataclasses.asdict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; an unknown key or a file of another format is an error that names it."""
        data = dict(data)
        fmt = data.pop("format", None)
        if fmt != CONFIG_FORMAT:
            hint = " (a Hugging Face config: use `rnj convert hf-to-rnj`)" if "model_type" in data else ""
            raise ValueError(f"not an rnj model config: format is {fmt!r}, expected {CONFIG_FORMAT!r}{hint}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown keys {unknown} in rnj model config; known keys: {sorted(known)}")
        if data.get("yarn") is not None:
            yarn_known = {f.name for f in dataclasses.fields(YarnConfig)}
            yarn_unknown = sorted(set(data["yarn"]) - yarn_known)
            if yarn_unknown:
                raise ValueError(f"unknown keys {yarn_unknown} in the yarn section; known keys: {sorted(yarn_known)}")
            data["yarn"] = YarnConfig(**data["yarn"])
        if data.get("layer_types") is not None:
            data["layer_types"] = tuple(data["layer_types"])
        return cls(**data)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


# -- presets ----------------------------------------------------------------------------------------------
# Vocabulary 128,256: the Llama-3-style layout of the released tokenizer (128,000 BPE tokens, specials after).
# Every preset is the 8K pretraining shape; mid-training uses get_preset(name).with_yarn(factor=4.0).

PRESETS: dict[str, ModelConfig] = {
    "rnj-1": ModelConfig(
        name="rnj-1", vocab_size=128_256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128,
        d_ff=16_384, max_seq_len=8192, query_pre_attn_scalar=128.0, final_logit_softcap=30.0,
    ),
    # The proxies Essential AI validated recipes on before the flagship (≈ 1.97B and ≈ 0.2B parameters).
    "rnj-2b": ModelConfig(
        name="rnj-2b", vocab_size=128_256, d_model=2048, n_layers=28, n_heads=16, n_kv_heads=4, head_dim=128,
        d_ff=8192, max_seq_len=8192, query_pre_attn_scalar=128.0, final_logit_softcap=30.0,
    ),
    "rnj-200m": ModelConfig(
        name="rnj-200m", vocab_size=128_256, d_model=768, n_layers=12, n_heads=6, n_kv_heads=2, head_dim=128,
        d_ff=3072, max_seq_len=8192, query_pre_attn_scalar=128.0, final_logit_softcap=30.0,
    ),
    # For tests and the CPU demo: a training step in milliseconds. Override vocab_size to the demo tokenizer's.
    "tiny": ModelConfig(
        name="tiny", vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=128,
        max_seq_len=256, rope_theta=10_000.0, query_pre_attn_scalar=16.0, final_logit_softcap=None,
    ),
}


def preset_names() -> list[str]:
    """Names accepted by `get_preset`, in registry order."""
    return list(PRESETS)


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset, with `overrides` applied through `dataclasses.replace` (validated again)."""
    try:
        cfg = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; choose one of {preset_names()}") from None
    return dataclasses.replace(cfg, **overrides) if overrides else cfg
