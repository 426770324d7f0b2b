"""Checkpoints: model, both optimizers, schedule position, data-iterator state and every RNG.

Weights and optimizer state go through `torch.distributed.checkpoint` (sharded, one file per rank, works
without a process group too); the rest is a small per-rank `trainer_state` file.

A checkpoint written by N ranks loads on M ranks, DDP or FSDP2 either side: DCP stores each tensor's
global shape and which piece every file holds, and each loading rank reads the pieces its own state needs
(whole tensors under DDP or one process, its rows under FSDP2). The trainer state is the same on every rank
but the RNG states are per rank: they are restored only when M = N (the caller reseeds them otherwise). A checkpoint is written into
`.tmp-step-N/`, completed with a `COMPLETE` marker and renamed to `step-N/`: a half-written checkpoint is
never picked up. The last `keep` checkpoints are kept, plus every one saved with `keep_forever`
(the end of each stage).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

COMPLETE = "COMPLETE"
KEEP = "KEEP"


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _read_trainer_state(path: Path) -> dict:
    """This rank's trainer state, or rank 0's when the checkpoint was written by fewer ranks (the fields
    other than the RNGs are the same on every rank)."""
    own = path / f"trainer_state-rank{_rank()}.pt"
    return torch.load(own if own.exists() else path / "trainer_state-rank0.pt", weights_only=False)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def seed_rngs(seed: int) -> None:
    """Seed Python's, numpy's and torch's (CPU and CUDA) generators from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """The checkpoints of one training run, in `folder` (a local or mounted path)."""

    def __init__(self, folder: str | os.PathLike, keep: int = 2):
        self.folder = Path(folder)
        self.keep = keep

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.folder.exists():
            return []
        found = [p for p in self.folder.glob("step-*") if (p / COMPLETE).exists()]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def save(self, step: int, model: nn.Module, optimizers: list[torch.optim.Optimizer], trainer_state: dict,
             keep_forever: bool = False) -> Path:
        """Write checkpoint `step` atomically; every rank calls this (DCP save is collective)."""
        final = self.folder / f"step-{step:09d}"
        tmp = self.folder / f".tmp-step-{step:09d}"
        if _rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        model_state, optim_state = get_state_dict(model, optimizers)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp))
        torch.save({**trainer_state, "rng": rng_state()}, tmp / f"trainer_state-rank{_rank()}.pt")
        _barrier()
        if _rank() == 0:
            if keep_forever:
                (tmp / KEEP).touch()
            (tmp / COMPLETE).touch()
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            self._prune()
        _barrier()
        return final

    def load(self, path: Path, model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> dict:
        """Restore model and optimizers from `path`, resharded onto this job's ranks, and the RNGs when the
        world size is the one it was saved with; returns the trainer state it was saved with."""
        model_state, optim_state = get_state_dict(model, optimizers)
        state = {"model": model_state, "optim": optim_state}
        dcp.load(state, checkpoint_id=str(path))
        set_state_dict(model, optimizers, model_state_dict=state["model"], optim_state_dict=state["optim"])
        trainer_state = _read_trainer_state(path)
        rng = trainer_state.pop("rng")
        if self.world_size_of(path) == _world_size():
            set_rng_state(rng)
        return trainer_state

    @staticmethod
    def world_size_of(path: Path) -> int:
        """How many ranks wrote the checkpoint at `path` (one trainer_state file each)."""
        return len(list(path.glob("trainer_state-rank*.pt")))

    @staticmethod
    def load_weights(path: Path, model: nn.Module) -> dict:
        """Restore only the model's weights from `path` (for export and evaluation); returns the trainer state."""
        state = {"model": get_model_state_dict(model)}
        dcp.load(state, checkpoint_id=str(path))
        set_model_state_dict(model, state["model"])
        trainer_state = _read_trainer_state(path)
        trainer_state.pop("rng", None)
        return trainer_state

    def _prune(self) -> None:
        done = self.complete()
        for old in done[: max(0, len(done) - self.keep)]:
            if not (old / KEEP).exists():
                shutil.rmtree(old, ignore_errors=True)
        for stale in self.folder.glob(".tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)
