"""The Rnj-1 transformer: Gemma 3's text model with global attention in every layer, and YaRN.

Reads top to bottom: norm → rotary embedding → attention → MLP → block → model → loss.

Shape legend (names in comments and variables):
    B  batch (rows)                       T   sequence length (tokens per row)
    D  d_model (residual width)           F   d_ff (GeGLU hidden width)
    H  query heads                        K   key/value heads (H / K queries share one K/V head)
    Dh head_dim                           V   vocab_size
    N  B·T tokens, flattened for the loss

Block (pre- and post-norm around each branch, "sandwich" norms as in Gemma 2/3):
    x ── attn_norm ── attention ── attn_post_norm ──(+)── mlp_norm ── GeGLU ── mlp_post_norm ──(+)──▶
    └───────────────────────────────────────────────┘└─────────────────────────────────────────┘

Precision: parameters stay float32; on GPU run under `torch.autocast("cuda", torch.bfloat16)`. Norms, RoPE
and the loss compute in float32 whatever the autocast dtype; the residual stream stays float32 (under FSDP2
too: model/distributed.py's policy keeps each block's inputs, and the embedding, in float32).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from model.attention_masks import AttentionMask, AttnImpl, attend, build_attention_mask
from model.config import ModelConfig

__all__ = [
    "IGNORE_INDEX",
    "Attention",
    "Block",
    "GeGLU",
    "LossOutput",
    "RMSNorm",
    "Transformer",
    "apply_rope",
    "rope_frequencies",
    "rope_tables",
]

IGNORE_INDEX = -100
"""Targets equal to this are left out of the loss (as in torch's cross_entropy)."""


# -- norm -------------------------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    """RMSNorm computed in float32 with a (1 + weight) gain: zero-initialised weight = identity gain, so
    weight decay pulls the gain towards 1, not 0 (Gemma's convention; checkpoints store the zero-based w)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:  # (..., dim) -> (..., dim), in x's dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * (1.0 + self.weight.float())).type_as(x)


# -- rotary position embedding (rotate-half layout) with YaRN ---------------------------------------------

def rope_frequencies(cfg: ModelConfig) -> tuple[Tensor, float]:
    """Inverse frequencies (Dh/2,) float32 and the factor on cos/sin (1.0 without YaRN).

    YaRN as in the paper (arXiv 2309.00071, §3.2-3.4) and transformers' `_compute_yarn_parameters`: a
    frequency that completes r rotations over the original context is kept when r > beta_fast, divided by
    `factor` when r < beta_slow, and linearly blended in between; the band's ends are rounded outwards to
    whole dimensions. `extrapolation_factor` (vLLM) scales the "keep" weight; 1.0 is the paper."""
    dim = cfg.head_dim
    theta = cfg.rope_theta
    # Same expression as transformers, so the float32 results agree bit for bit.
    pos_freqs = theta ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim)
    inv_freq = 1.0 / pos_freqs
    yarn = cfg.yarn
    if yarn is None:
        return inv_freq, 1.0

    def dim_of(rotations: float) -> float:  # the (fractional) dimension pair that turns `rotations` times
        return dim * math.log(yarn.original_max_seq_len / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(dim_of(yarn.beta_fast)), 0)
    high = min(math.ceil(dim_of(yarn.beta_slow)), dim - 1)
    if low == high:
        high += 0.001  # a zero-width ramp would divide by zero
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = (1 - ramp) * yarn.extrapolation_factor  # 1 = keep the original frequency, 0 = interpolate
    inv_freq = 1.0 / (yarn.factor * pos_freqs) * (1 - keep) + inv_freq * keep
    return inv_freq, yarn.attention_scaling


def rope_tables(cfg: ModelConfig, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """cos and sin (max_seq_len, Dh/2) float32 for positions 0..max_seq_len-1, times the YaRN scaling."""
    inv_freq, scaling = rope_frequencies(cfg)
    angles = torch.arange(cfg.max_seq_len, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return (angles.cos() * scaling).to(device), (angles.sin() * scaling).to(device)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, T, heads, Dh) by cos/sin (B or 1, T, 1, Dh/2); float32 inside, x's dtype out.

    Rotate-half layout (GPT-NeoX, Hugging Face Gemma): dimension i pairs with i + Dh/2, not with i + 1."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).type_as(x)


# -- attention --------------------------------------------------------------------------------------------

class Attention(nn.Module):
    """Grouped-query attention with per-head RMSNorm on queries and keys before RoPE (Gemma 3)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.scale = cfg.attn_scale
        self.wq = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)
        self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)

    def forward(self, x_BTD: Tensor, cos: Tensor, sin: Tensor, mask: AttentionMask) -> Tensor:
        B, T, _ = x_BTD.shape
        q_BTHDh = self.wq(x_BTD).view(B, T, self.n_heads, self.head_dim)
        k_BTKDh = self.wk(x_BTD).view(B, T, self.n_kv_heads, self.head_dim)
        v_BTKDh = self.wv(x_BTD).view(B, T, self.n_kv_heads, self.head_dim)
        q_BTHDh = apply_rope(self.q_norm(q_BTHDh), cos, sin)
        k_BTKDh = apply_rope(self.k_norm(k_BTKDh), cos, sin)
        y_BHTDh = attend(q_BTHDh.transpose(1, 2), k_BTKDh.transpose(1, 2), v_BTKDh.transpose(1, 2), mask,
                         self.scale)
        return self.wo(y_BHTDh.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


# -- feed-forward -----------------------------------------------------------------------------------------

class GeGLU(nn.Module):
    """down(gelu_tanh(gate(x)) · up(x)): Gemma's gated feed-forward with the tanh-approximated GELU."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w_gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.w_up = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.w_down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x_BTD: Tensor) -> Tensor:
        h_BTF = F.gelu(self.w_gate(x_BTD), approximate="tanh") * self.w_up(x_BTD)
        return self.w_down(h_BTF)


# -- block ------------------------------------------------------------------------------------------------

class Block(nn.Module):
    """One layer: normed attention and normed GeGLU, each wrapped in a pre-norm and a post-norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.attn_post_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = GeGLU(cfg)
        self.mlp_post_norm = RMSNorm(cfg.d_model, cfg.norm_eps)

    def forward(self, x_BTD: Tensor, cos: Tensor, sin: Tensor, mask: AttentionMask) -> Tensor:
        x_BTD = x_BTD + self.attn_post_norm(self.attn(self.attn_norm(x_BTD), cos, sin, mask))
        return x_BTD + self.mlp_post_norm(self.mlp(self.mlp_norm(x_BTD)))


# -- model ------------------------------------------------------------------------------------------------

class LossOutput(NamedTuple):
    """Summed cross-entropy and the number of tokens it covers, so that a trainer can divide by the token
    count of the whole global batch (across micro-batches and ranks), not average per micro-batch."""

    loss_sum: Tensor
    """float32 scalar: sum of per-token cross-entropy over the counted tokens."""
    num_tokens: Tensor
    """int64 scalar: tokens counted (targets != IGNORE_INDEX and loss_mask true)."""

    @property
    def mean(self) -> Tensor:
        """Mean loss over this call's tokens (for logging or a one-micro-batch step)."""
        return self.loss_sum / self.num_tokens.clamp(min=1)


class Transformer(nn.Module):
    """The decoder: scaled token embedding → n_layers blocks → final norm → tied LM head (optional softcap).

    `forward(tokens, doc_ids=None)` gives float32 logits (B, T, V); with `targets` it gives a `LossOutput`
    computed in chunks of `loss_chunk_tokens` tokens, each recomputed in backward, so the full (N, V) float32
    logits never exist at once (15.7 GiB at 32K × 128K).

    Built on the meta device (FSDP), call `to_empty(device=...)` then `init_weights()`, which also fills the
    RoPE tables: they are non-persistent buffers, derived from the config, and absent from the state dict —
    which is why a stage switch (YaRN on) is: build a model from the new config, load the same state dict.
    """

    loss_chunk_tokens: int = 4096
    """Tokens per chunk of the LM-head + cross-entropy; 4096 × 128K float32 logits ≈ 2 GiB per chunk."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in cfg.resolved_layer_types)
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        # RoPE tables (max_seq_len, Dh/2): filled by init_weights → reset_rope.
        self.register_buffer("rope_cos", torch.empty(cfg.max_seq_len, cfg.head_dim // 2), persistent=False)
        self.register_buffer("rope_sin", torch.empty(cfg.max_seq_len, cfg.head_dim // 2), persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise every weight (and recompute the RoPE tables). See docs/model.md, "Initialisation".

        - Embedding (tied with the LM head): normal, std 1/sqrt(D). Times sqrt(D) at the input it gives
          unit-RMS token vectors, and against the unit-RMS final norm output unit-variance logits, so the
          initial loss is about ln(V) + 1/2 (the input token's own logit is larger, ~sqrt(D / (2L+1)),
          as tying echoes it; at d_model 4096 that adds little).
        - Every linear layer: normal, std 1/sqrt(fan_in), so each projection keeps unit variance.
          No 1/sqrt(2·n_layers) shrinking of output projections (GPT-2): the post-norms rescale each
          branch to unit RMS before it joins the residual stream, whatever the projection's scale.
        - RMSNorm weights: zero, i.e. a gain of exactly 1.
        Normals are truncated at ±3 std, so no weight starts as an outlier."""
        std = self.cfg.d_model ** -0.5
        nn.init.trunc_normal_(self.embed.weight, std=std, a=-3 * std, b=3 * std)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                std = module.in_features ** -0.5
                nn.init.trunc_normal_(module.weight, std=std, a=-3 * std, b=3 * std)
            elif isinstance(module, RMSNorm):
                nn.init.zeros_(module.weight)
        self.reset_rope()

    @torch.no_grad()
    def reset_rope(self) -> None:
        """Recompute the RoPE tables in float32 on their current device (after `to_empty`, or after a cast
        of the whole model to bf16, which would otherwise round the tables)."""
        cos, sin = rope_tables(self.cfg, device=self.rope_cos.device)
        self.rope_cos, self.rope_sin = cos, sin

    def num_params(self) -> int:
        """Parameters, the tied embedding counted once."""
        return sum(p.numel() for p in self.parameters())

    def compile_blocks(self, **compile_kwargs) -> None:
        """torch.compile each block in place, fullgraph by default (a graph break in a block is a bug).

        The per-batch work outside the blocks (mask, positions, the single-document check) stays eager."""
        for block in self.blocks:
            block.compile(**{"fullgraph": True, **compile_kwargs})

    def forward(self, tokens: Tensor, doc_ids: Tensor | None = None, targets: Tensor | None = None,
                loss_mask: Tensor | None = None, *, attn_impl: AttnImpl = "auto") -> Tensor | LossOutput:
        """tokens (B, T) int64. doc_ids (B, T): document of each token in packed rows (see
        model/attention_masks.py); None = each row is one document. targets (B, T): next-token ids, with
        IGNORE_INDEX where no loss is wanted; loss_mask (B, T) bool, False also excludes a token.

        Returns logits (B, T, V) float32 without targets, else LossOutput(loss_sum, num_tokens)."""
        B, T = tokens.shape
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len {self.cfg.max_seq_len}; "
                             f"for longer context use a config with YaRN (cfg.with_yarn(...))")
        if doc_ids is not None and doc_ids.shape != tokens.shape:
            raise ValueError(f"doc_ids shape {tuple(doc_ids.shape)} must equal tokens shape {tuple(tokens.shape)}")
        positions_BT, mask = build_attention_mask(doc_ids, attn_impl)  # built once, shared by every layer
        if positions_BT is None:
            cos, sin = self.rope_cos[None, :T, None, :], self.rope_sin[None, :T, None, :]
        else:
            cos, sin = self.rope_cos[positions_BT][:, :, None, :], self.rope_sin[positions_BT][:, :, None, :]

        x_BTD = self.embed(tokens)
        # sqrt(D) rounded to the embedding's dtype first, as Gemma does (matters for bf16 weights only).
        x_BTD = x_BTD * torch.tensor(self.cfg.d_model ** 0.5, dtype=x_BTD.dtype, device=x_BTD.device)
        for block in self.blocks:
            x_BTD = block(x_BTD, cos, sin, mask)
        h_BTD = self.norm(x_BTD)

        if targets is None:
            return self._logits(h_BTD)
        if targets.shape != tokens.shape:
            raise ValueError(f"targets shape {tuple(targets.shape)} must equal tokens shape {tuple(tokens.shape)}")
        if loss_mask is not None:
            targets = targets.masked_fill(~loss_mask.bool(), IGNORE_INDEX)
        return self._chunked_loss(h_BTD.reshape(B * T, -1), targets.reshape(B * T))

    def _logits(self, h: Tensor) -> Tensor:  # (..., D) -> (..., V) float32
        logits = F.linear(h, self.embed.weight).float()
        cap = self.cfg.final_logit_softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def _loss_sum(self, h_ND: Tensor, targets_N: Tensor) -> Tensor:
        return F.cross_entropy(self._logits(h_ND), targets_N, ignore_index=IGNORE_INDEX, reduction="sum")

    def _chunked_loss(self, h_ND: Tensor, targets_N: Tensor) -> LossOutput:
        N, chunk = h_ND.shape[0], self.loss_chunk_tokens
        num_tokens = (targets_N != IGNORE_INDEX).sum()
        if N <= chunk:  # one chunk: recomputing it in backward would cost a matmul and save nothing
            return LossOutput(self._loss_sum(h_ND, targets_N), num_tokens)
        # Each chunk's logits are freed after its forward and recomputed in backward: the peak is one chunk.
        loss_sum = sum(checkpoint(self._loss_sum, h_ND[s:s + chunk], targets_N[s:s + chunk], use_reentrant=False)
                       for s in range(0, N, chunk))
        return LossOutput(loss_sum, num_tokens)
