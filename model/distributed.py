"""Process group, device, model wrapping and reductions: one process, or one rank of a torchrun job.

Wrapping order (`Distributed.wrap`): activation checkpointing → torch.compile → DDP or FSDP2. The first two
act on each block in place and keep parameter names (the optimizer table and the checkpoints' keys do not
change with them); FSDP2's `fully_shard` replaces parameters by DTensor shards, so optimizers are built
after wrapping.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint

ActivationCheckpointing = Literal["none", "selective", "full"]


@dataclass
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @classmethod
    @contextlib.contextmanager
    def setup(cls):
        """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPU); leave it after.

        torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT, for one node
        (`--nproc-per-node 8`) or many (`--nnodes 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400`)."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if world_size > 1:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    device_id=device if device.type == "cuda" else None)
        try:
            yield cls(rank=int(os.environ.get("RANK", "0")), world_size=world_size, local_rank=local_rank,
                      device=device)
        finally:
            if world_size > 1 and dist.is_initialized():
                dist.destroy_process_group()

    def wrap(self, model: nn.Module, train_cfg) -> nn.Module:
        """Checkpoint and compile blocks as configured, then DDP or FSDP2 across ranks.

        Returns the module to call for training. Under FSDP2 that is `model` itself, sharded in place (its
        parameters become DTensors); under DDP the DDP wrapper around `model`. A model built on the CPU is
        moved to the device here: FSDP2 moves one block at a time and keeps only its shard, so the full
        model never sits on one GPU."""
        apply_activation_checkpointing(model, train_cfg.activation_checkpointing)
        if train_cfg.compile:
            compile_blocks(model)
        if self.world_size > 1 and train_cfg.parallel == "fsdp":
            return shard_model(model, self.device, self.param_dtype)
        model.to(self.device)
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def no_sync(self, model: nn.Module):
        """Skip DDP's gradient all-reduce on all but the last micro-batch of a step.

        FSDP2 reduce-scatters after every micro-batch instead: skipping it would keep whole unsharded
        gradients across the micro-batches, the memory FSDP is there to save."""
        return model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext()

    @property
    def loss_scale(self) -> int:
        """DDP and FSDP2 average gradients over ranks, but each rank's loss is already divided by the whole
        global batch's token count: scaling by the world size makes the reduced gradient the global sum."""
        return self.world_size

    def all_reduce_sum(self, value: float | torch.Tensor) -> float | int:
        """The sum over ranks of a host number or a device scalar (read back to the host: one sync)."""
        if isinstance(value, torch.Tensor):
            if self.world_size > 1:
                value = value.to(torch.float64, copy=True)
                dist.all_reduce(value)
            return value.item()
        if self.world_size == 1:
            return value
        tensor = torch.tensor(value, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return type(value)(tensor.item())

    @property
    def param_dtype(self) -> torch.dtype | None:
        """The dtype FSDP2 gathers the blocks' weights in: bf16 on GPU (what autocast would cast them to),
        float32 (None) on CPU, where the trainer runs without autocast."""
        return torch.bfloat16 if self.device.type == "cuda" else None

    def autocast(self):
        """bf16 autocast on GPU; float32 everywhere on CPU."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def shard_model(model: nn.Module, device: torch.device, param_dtype: torch.dtype | None = None) -> nn.Module:
    """FSDP2: each block is one unit of all-gather / reduce-scatter; the root holds the tied embedding /
    LM head and the final norm.

    `param_dtype` (bf16 on GPU, None = float32 on CPU) is the dtype the *blocks'* weights are gathered in;
    their gradients reduce in float32. Two things are kept in float32 on purpose, so that FSDP2 computes what
    DDP and inference compute under bf16 autocast:
    - `cast_forward_inputs=False`: FSDP2 would otherwise cast every floating-point argument of a block to
      `param_dtype` — the residual stream and the RoPE cos/sin tables (bf16 cos is off by ~2e-3 within 200
      positions, so training would rotate otherwise than serving). Autocast still runs the matmuls in bf16.
    - the root (embedding = LM head, final norm) is gathered in float32: a bf16 embedding would start the
      residual stream from bf16-rounded vectors. The LM head's matmul is cast to bf16 by autocast, as under
      DDP. Cost: the embedding's all-gather moves float32 (4 bytes per element instead of 2), once per step.
    Inside a block the norm gains are gathered in `param_dtype` like the matrices (torchtitan's choice); the
    norms themselves compute in float32 (`RMSNorm`). A forward with bf16 block weights needs autocast."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    block_policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32,
                                        cast_forward_inputs=False)
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=block_policy)
    fully_shard(model, mesh=mesh, mp_policy=MixedPrecisionPolicy(reduce_dtype=torch.float32,
                                                                  cast_forward_inputs=False))
    return model


def checkpointed_blocks(n_blocks: int, mode: ActivationCheckpointing) -> list[int]:
    """Indices of the blocks whose activations are recomputed: none, every other one, or all."""
    if mode == "none":
        return []
    if mode == "selective":
        return list(range(0, n_blocks, 2))
    if mode == "full":
        return list(range(n_blocks))
    raise ValueError(f"activation_checkpointing must be 'none', 'selective' or 'full' (got {mode!r})")


def apply_activation_checkpointing(model: nn.Module, mode: ActivationCheckpointing) -> None:
    """Run the chosen blocks under `torch.utils.checkpoint` (non-reentrant): their inner activations are
    dropped after forward and recomputed in backward; only each block's input is kept.

    The block's `forward` is replaced on the instance rather than wrapping the module, so parameter names
    (the optimizer table, the checkpoint keys) stay as they are. The recomputation replays the same ops on
    the same inputs, so loss and gradients equal those without checkpointing."""
    for i in checkpointed_blocks(len(model.blocks), mode):
        block = model.blocks[i]
        if getattr(block, "_activation_checkpointed", False):
            continue
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
        block._activation_checkpointed = True


def compile_blocks(model: nn.Module) -> None:
    """torch.compile each block's forward (fullgraph), after activation checkpointing so that the compiler
    sees the checkpoint region. The forward, not the module call: FSDP2's and DDP's hooks stay eager."""
    for block in model.blocks:
        block.forward = torch.compile(block.forward, fullgraph=True)


def clip_grad_norm(parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` that also works on FSDP2's sharded gradients: the norm of DTensor
    shards is reduced over ranks (`full_tensor`) before the clip coefficient is applied. Returns the norm as
    a device scalar: reading it is left to the caller, once the step's work is queued."""
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return total
