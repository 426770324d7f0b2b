"""`rnj model ...` and `rnj convert ...`: two click groups for the main `rnj` group to register.

    rnj model info PRESET [--gpus N]
    rnj model list
    rnj convert hf-to-rnj SRC DST
    rnj convert rnj-to-hf SRC DST [--max-shard-size 5GB] [--dtype bfloat16]
"""

from __future__ import annotations

import re

import click
from rich.console import Console
from rich.table import Table

from pipeline.errors import UserError

__all__ = ["convert_group", "model_group"]

console = Console()


@click.group("model", context_settings={"help_option_names": ["-h", "--help"]})
def model_group() -> None:
    """Model presets: size, FLOPs and memory."""


@model_group.command("list")
def list_presets() -> None:
    """List the presets with their shapes."""
    from model.config import PRESETS
    from model.info import count_params

    table = Table(title="model presets")
    for column in ("preset", "parameters", "layers", "d_model", "d_ff", "heads / kv", "head_dim", "vocab"):
        table.add_column(column, justify="left" if column == "preset" else "right")
    for name, cfg in PRESETS.items():
        table.add_row(name, _count(count_params(cfg)["total"]), str(cfg.n_layers), str(cfg.d_model),
                      str(cfg.d_ff), f"{cfg.n_heads} / {cfg.n_kv_heads}", str(cfg.head_dim), f"{cfg.vocab_size:,}")
    console.print(table)


@model_group.command("info")
@click.argument("preset")
@click.option("--gpus", default=1, show_default=True, type=click.IntRange(min=1),
              help="GPUs the weights, gradients and optimizer state are sharded over (FSDP)")
def info(preset: str, gpus: int) -> None:
    """Parameters, training FLOPs per token at 8K and 32K, and memory per GPU of PRESET."""
    from model.config import get_preset
    from model.info import GIB, model_info

    try:
        cfg = get_preset(preset)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="PRESET") from err
    mi = model_info(cfg, n_gpus=gpus)
    table = Table(title=f"{cfg.name}: {cfg.n_layers} layers, d_model {cfg.d_model}, d_ff {cfg.d_ff}, "
                        f"{cfg.n_heads}/{cfg.n_kv_heads} heads × {cfg.head_dim}, vocab {cfg.vocab_size:,}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("parameters", f"{_count(mi.n_params)} ({mi.n_params:,})")
    table.add_row("  embedding (tied LM head)", _count(mi.n_embedding))
    table.add_row("  attention + MLP matrices", _count(mi.n_matrices))
    table.add_row("  norms", _count(mi.n_norms))
    for seq_len, flops in mi.flops_per_token.items():
        table.add_row(f"training FLOPs / token at {seq_len // 1024}K", f"{flops / 1e9:.1f} GFLOP")
    per_gpu = f"per GPU over {gpus}" if gpus > 1 else "on one GPU"
    table.add_row(f"bf16 weights ({per_gpu})", f"{mi.bf16_weights_bytes / GIB:.2f} GiB")
    table.add_row(f"fp32 master weights ({per_gpu})", f"{mi.fp32_master_bytes / GIB:.2f} GiB")
    table.add_row(f"fp32 gradients ({per_gpu})", f"{mi.fp32_grads_bytes / GIB:.2f} GiB")
    table.add_row(f"optimizer state, Muon + AdamW ({per_gpu})", f"{mi.optimizer_bytes / GIB:.2f} GiB")
    table.add_row(f"total without activations ({per_gpu})", f"{mi.total_bytes / GIB:.2f} GiB")
    console.print(table)


@click.group("convert", context_settings={"help_option_names": ["-h", "--help"]})
def convert_group() -> None:
    """Convert checkpoints between Hugging Face Gemma 3 text (Gemma3ForCausalLM) and rnj folders."""


@convert_group.command("hf-to-rnj")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="replace a checkpoint already in DST")
def hf_to_rnj_cmd(src: str, dst: str, overwrite: bool) -> None:
    """Import the Hugging Face folder SRC (config.json + safetensors) into the rnj folder DST."""
    from model.hf import hf_to_rnj

    try:
        cfg = hf_to_rnj(src, dst, overwrite=overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        raise UserError(str(err)) from err
    yarn = f", YaRN ×{cfg.yarn.factor:g}" if cfg.yarn else ""
    console.print(f"wrote {dst}: {cfg.n_layers} layers, d_model {cfg.d_model}, context {cfg.max_seq_len}{yarn}")


@convert_group.command("rnj-to-hf")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--max-shard-size", default="5GB", show_default=True,
              help="largest safetensors shard, e.g. 5GB, 500MB, 2GiB")
@click.option("--dtype", type=click.Choice(["keep", "bfloat16", "float16", "float32"]), default="keep",
              show_default=True, help="dtype of the exported tensors")
@click.option("--overwrite", is_flag=True, help="replace a checkpoint already in DST")
def rnj_to_hf_cmd(src: str, dst: str, max_shard_size: str, dtype: str, overwrite: bool) -> None:
    """Export the rnj folder SRC as a Gemma3ForCausalLM folder DST (transformers, vLLM, llama.cpp)."""
    import torch

    from model.hf import rnj_to_hf

    try:
        files = rnj_to_hf(src, dst, max_shard_bytes=parse_size(max_shard_size), overwrite=overwrite,
                          dtype=None if dtype == "keep" else getattr(torch, dtype))
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        raise UserError(str(err)) from err
    console.print(f"wrote {dst}: {', '.join(files)}")


_UNITS = {"": 1, "B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "KIB": 2 ** 10, "MIB": 2 ** 20, "GIB": 2 ** 30}


def parse_size(text: str) -> int:
    """'5GB' → 5_000_000_000, '2GiB' → 2·2³⁰ (Hugging Face's reading of these units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise click.BadParameter(f"{text!r} is not a size; write e.g. 5GB, 500MB or 2GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)
