"""Process group, device, model wrapping and reductions: one process, or one rank of a torchrun job."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @classmethod
    @contextlib.contextmanager
    def setup(cls):
        """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPU); leave it after."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if world_size > 1:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        try:
            yield cls(rank=int(os.environ.get("RANK", "0")), world_size=world_size, local_rank=local_rank,
                      device=device)
        finally:
            if world_size > 1 and dist.is_initialized():
                dist.destroy_process_group()

    def wrap(self, model: nn.Module, train_cfg) -> nn.Module:
        """DDP across ranks when there are several; the model itself otherwise."""
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def no_sync(self, model: nn.Module):
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        return model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext()

    def all_reduce_sum(self, value: float | int) -> float | int:
        if self.world_size == 1:
            return value
        tensor = torch.tensor(value, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return type(value)(tensor.item())

    def autocast(self):
        """bf16 autocast on GPU; float32 everywhere on CPU."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()
