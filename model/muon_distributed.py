"""Muon for FSDP2: momentum on the local shard, Newton–Schulz on whole matrices split between ranks.

`torch.optim.Muon` is not DTensor-aware: under FSDP2 each rank holds rows [r·c, (r+1)·c) of every matrix,
and Newton–Schulz on that block is not the block of Newton–Schulz on the matrix (it orthogonalises the
wrong thing). `DistributedMuon` runs torch's own maths, split where it is exact to split:

1. momentum, elementwise on the local shard (`buf.lerp_(grad, 1 - μ)`, Nesterov `grad.lerp(buf, μ)`), so
   the momentum buffer stays sharded exactly like its parameter (and checkpoints through DCP like it);
2. each matrix's update is gathered, as bf16 (Newton–Schulz casts its input to bf16 first, so casting
   before the gather changes no bit), to one owner rank; matrices are dealt to owners round-robin, so every
   rank orthogonalises about 1/W of them and the ranks work in parallel;
3. the owner runs `torch.optim._muon._zeropower_via_newtonschulz` on the whole matrix and scatters each
   rank its rows back (a scatter, not a broadcast: a rank receives only the rows it holds);
4. each rank applies torch's decoupled decay and update to its shard: `p·(1 − lr·wd)`, then
   `p − adjusted_lr·O`, with `_adjust_lr` computed from the FULL matrix shape.

Communication per matrix is one gather and one scatter of the bf16 update (the same volume as FSDP's own
all-gather and reduce-scatter of it in bf16); memory is one full bf16 matrix per owned matrix, transiently.
The result equals single-process `torch.optim.Muon` on the same gradients bit for bit
(tests/trainer/test_distributed.py).

Parameters may be DTensors with one `Shard(0)` placement on some mesh dimension (FSDP2; with HSDP the
other dimensions are `Replicate` and each replica group does the same work) or replicated; plain tensors
fall back to torch's single-tensor path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.optim._muon import _adjust_lr, _zeropower_via_newtonschulz

__all__ = ["DistributedMuon"]


@dataclass
class _Pending:
    """One matrix in flight: its local shard of the update and where its rows live."""

    param: Tensor
    local_update: Tensor
    """This rank's rows of the (Nesterov) momentum update, float32."""
    group: dist.ProcessGroup | None
    """The ranks the matrix's rows are split over (None: this rank holds the whole matrix)."""
    owner: int
    """Rank within `group` that orthogonalises the whole matrix."""
    rows_per_rank: int
    """torch.chunk's chunk size: rank r holds rows [r·c, min((r+1)·c, rows))."""


class DistributedMuon(torch.optim.Muon):
    """`torch.optim.Muon` for parameters sharded by FSDP2 (same constructor, state and param groups)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        pending: list[tuple[dict, _Pending]] = []
        dealt: dict[tuple[int, ...], int] = {}  # matrices dealt so far per group of ranks: round-robin owners
        for group in self.param_groups:
            params, grads, bufs = [], [], []
            self._init_group(group, params, grads, bufs)
            for param, grad, buf in zip(params, grads, bufs):
                update = _momentum_update(_local(grad), _local(buf), group["momentum"], group["nesterov"])
                item = _locate(param, update)
                if item.group is not None:
                    ranks = tuple(dist.get_process_group_ranks(item.group))
                    item.owner = dealt.get(ranks, 0) % len(ranks)
                    dealt[ranks] = dealt.get(ranks, 0) + 1
                pending.append((group, item))
        orthogonal = _orthogonalise_all([(g, item) for g, item in pending])
        for (group, item), ortho in zip(pending, orthogonal):
            lr = group["lr"]
            lr = lr.item() if isinstance(lr, Tensor) else lr
            adjusted_lr = _adjust_lr(lr, group["adjust_lr_fn"], item.param.shape)  # the full matrix's shape
            local = _local(item.param)
            local.mul_(1 - lr * group["weight_decay"])
            local.add_(ortho, alpha=-adjusted_lr)
        return loss


def _local(tensor: Tensor) -> Tensor:
    """The tensor this rank holds (a DTensor's local shard, shared storage: in-place ops update it)."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _momentum_update(grad: Tensor, buf: Tensor, momentum: float, nesterov: bool) -> Tensor:
    """torch's Muon momentum, elementwise (so exact on any shard)."""
    buf.lerp_(grad, 1 - momentum)
    return grad.lerp(buf, momentum) if nesterov else buf


def _locate(param: Tensor, update: Tensor) -> _Pending:
    """Which ranks share `param`'s rows, from its DTensor placements."""
    if not isinstance(param, DTensor):
        return _Pending(param, update, None, 0, param.shape[0])
    shard_dims = [i for i, p in enumerate(param.placements) if isinstance(p, Shard)]
    others = [p for i, p in enumerate(param.placements) if i not in shard_dims]
    if not all(isinstance(p, Replicate) for p in others) or len(shard_dims) > 1:
        raise ValueError(f"DistributedMuon supports one Shard(0) mesh dimension plus replicated ones, not "
                         f"{param.placements}: use FSDP2's default sharding (fully_shard with a 1-D or HSDP mesh)")
    if not shard_dims:
        return _Pending(param, update, None, 0, param.shape[0])
    mesh_dim = shard_dims[0]
    if param.placements[mesh_dim].dim != 0:
        raise ValueError(f"DistributedMuon expects matrices sharded along rows (Shard(0)), got "
                         f"{param.placements[mesh_dim]}; FSDP2's default shard_placement_fn gives Shard(0)")
    group = param.device_mesh.get_group(mesh_dim)
    world = dist.get_world_size(group)
    return _Pending(param, update, group, 0, -(-param.shape[0] // world))


def _orthogonalise_all(pending: list[tuple[dict, _Pending]]) -> list[Tensor]:
    """Each matrix's orthogonalised update, this rank's rows of it (bf16, as torch's Newton–Schulz gives)."""
    gathers = []
    for _, item in pending:  # launch every gather first, so that owners work while others still send
        if item.group is None:
            gathers.append(None)
            continue
        world, rank = dist.get_world_size(item.group), dist.get_rank(item.group)
        padded = _pad_rows(item.local_update.bfloat16(), item.rows_per_rank)
        parts = [torch.empty_like(padded) for _ in range(world)] if rank == item.owner else None
        work = dist.gather(padded, parts, group_dst=item.owner, group=item.group, async_op=True)
        gathers.append((work, parts))
    full_updates: list[Tensor | None] = []
    for (group, item), gathered in zip(pending, gathers):
        if gathered is None:
            full_updates.append(_newton_schulz(item.local_update, group))
            continue
        work, parts = gathered
        work.wait()
        if parts is None:
            full_updates.append(None)
            continue
        full = torch.cat(parts)[: item.param.shape[0]]
        full_updates.append(_pad_rows(_newton_schulz(full, group), item.rows_per_rank * len(parts)))
    scatters = []
    for (_, item), full in zip(pending, full_updates):
        if item.group is None:
            scatters.append((None, full))
            continue
        received = torch.empty(item.rows_per_rank, item.param.shape[1], dtype=torch.bfloat16,
                               device=item.local_update.device)
        parts = list(full.split(item.rows_per_rank)) if full is not None else None
        work = dist.scatter(received, parts, group_src=item.owner, group=item.group, async_op=True)
        scatters.append((work, received))
    out = []
    for (_, item), (work, received) in zip(pending, scatters):
        if work is not None:
            work.wait()
        out.append(received[: item.local_update.shape[0]])
    return out


def _newton_schulz(update: Tensor, group: dict) -> Tensor:
    return _zeropower_via_newtonschulz(update, group["ns_coefficients"], group["ns_steps"], group["eps"])


def _pad_rows(matrix: Tensor, rows: int) -> Tensor:
    """`matrix` with zero rows appended up to `rows` (collectives need equal sizes; the last shard may be
    shorter, or empty, under torch.chunk's split)."""
    if matrix.shape[0] == rows:
        return matrix.contiguous()
    pad = matrix.new_zeros(rows - matrix.shape[0], *matrix.shape[1:])
    return torch.cat([matrix, pad])
