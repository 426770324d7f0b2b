"""Size, training FLOPs and memory of a model config, computed from the config alone (no weights built).

FLOPs per token follow torchtitan's convention (also the trainer's MFU): 6·N + 12·L·H·Dh·T, where N counts
every parameter that takes part in a matmul — here all of them, since the tied embedding is the LM head —
and the second term is attention's q·k and p·v over a full (unmasked) context of T tokens, forward and
backward. Causal attention does half of that attention work and document masking less still;
`training_flops_per_token` counts attention either way ("full", "causal" or "document"), so that an MFU
figure can say which.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.config import ModelConfig

__all__ = ["ATTENTION_COUNTS", "ModelInfo", "count_params", "model_info", "training_flops_per_token"]

GIB = 2 ** 30

ATTENTION_COUNTS = ("full", "causal", "document")
"""How attention's FLOPs are counted: every query against all T keys (torchtitan, PaLM); against the keys at
or before it (T/2 on average: the work a causal kernel does); against the keys of its own document that
come before it (the work a document-masked kernel needs on packed rows)."""


def count_params(cfg: ModelConfig) -> dict[str, int]:
    """Parameters by kind: `embedding` (tied with the LM head), `matrices` (attention and MLP projections,
    the 2D weights an optimizer like Muon takes) and `norms`; `total` is their sum."""
    D, L = cfg.d_model, cfg.n_layers
    attention = D * cfg.head_dim * (2 * cfg.n_heads + 2 * cfg.n_kv_heads)  # wq, wo and wk, wv
    mlp = 3 * D * cfg.d_ff
    norms = L * (4 * D + 2 * cfg.head_dim) + D
    counts = {"embedding": cfg.vocab_size * D, "matrices": L * (attention + mlp), "norms": norms}
    counts["total"] = sum(counts.values())
    return counts


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What `rnj model info` prints. Memory figures are bytes per GPU with the state sharded evenly over
    `n_gpus` (FSDP); activations, which depend on batch, sequence length and checkpointing, are not included."""

    name: str
    n_params: int
    """Every parameter, the tied embedding once."""
    n_embedding: int
    n_matrices: int
    n_norms: int
    flops_per_token: dict[int, float]
    """Training FLOPs per token (forward + backward) at each sequence length."""
    n_gpus: int
    bf16_weights_bytes: float
    """A bf16 copy of the weights (what the forward reads under FSDP mixed precision or autocast casts)."""
    fp32_master_bytes: float
    """float32 master weights the optimizer updates."""
    fp32_grads_bytes: float
    """float32 gradients."""
    optimizer_bytes: float
    """Muon: one float32 momentum buffer per hidden matrix; AdamW: two float32 moments for the embedding and
    the norms."""

    @property
    def total_bytes(self) -> float:
        return self.bf16_weights_bytes + self.fp32_master_bytes + self.fp32_grads_bytes + self.optimizer_bytes


def model_info(cfg: ModelConfig, *, seq_lens: tuple[int, ...] = (8192, 32768), n_gpus: int = 1) -> ModelInfo:
    """Parameter count, training FLOPs per token at `seq_lens`, and memory per GPU over `n_gpus`."""
    if n_gpus < 1:
        raise ValueError(f"n_gpus must be at least 1 (got {n_gpus})")
    counts = count_params(cfg)
    n = counts["total"]
    attention_per_t = 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim
    adamw_params = counts["embedding"] + counts["norms"]
    return ModelInfo(
        name=cfg.name, n_params=n, n_embedding=counts["embedding"], n_matrices=counts["matrices"],
        n_norms=counts["norms"], flops_per_token={t: 6.0 * n + attention_per_t * t for t in seq_lens},
        n_gpus=n_gpus, bf16_weights_bytes=2.0 * n / n_gpus, fp32_master_bytes=4.0 * n / n_gpus,
        fp32_grads_bytes=4.0 * n / n_gpus,
        optimizer_bytes=(4.0 * counts["matrices"] + 8.0 * adamw_params) / n_gpus,
    )


def training_flops_per_token(cfg: ModelConfig, seq_len: int, attention: str = "full",
                             doc_lengths: list[list[int]] | None = None) -> float:
    """Training FLOPs (forward + backward) per token: 6·N + attention, the latter counted as `attention`
    says (ATTENTION_COUNTS). "document" needs each row's document lengths (rows of `seq_len` tokens): a
    document of n tokens costs n²/2 query-key pairs, against T²/2 for a causal row."""
    n = count_params(cfg)["total"]
    per_pair = 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim  # FLOPs per query-key pair, forward + backward
    if attention == "full":
        return 6.0 * n + per_pair * seq_len
    if attention == "causal":
        return 6.0 * n + per_pair * seq_len / 2
    if attention == "document":
        if not doc_lengths:
            raise ValueError("attention='document' needs the rows' document lengths")
        pairs = sum(length * length / 2 for row in doc_lengths for length in row)
        return 6.0 * n + per_pair * pairs / (len(doc_lengths) * seq_len)
    raise ValueError(f"attention must be one of {ATTENTION_COUNTS} (got {attention!r})")
