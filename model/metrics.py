"""Training metrics: one JSON line per step, MFU where a GPU is present, and loss / lr plots."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

# Dense bf16 peak FLOP/s (no sparsity), by a substring of torch.cuda.get_device_name().
BF16_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 70e12}


def device_peak_flops(device: torch.device) -> float | None:
    """The device's bf16 peak, or None on CPU or an unknown GPU (then no MFU is reported)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_FLOPS.items() if key in name), None)


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops: float | None, world_size: int = 1) -> float | None:
    """Model FLOPs utilisation (torchtitan's convention: 6·N + 12·L·H·Dh·T FLOPs per token)."""
    if peak_flops is None:
        return None
    return tokens_per_second * flops_per_token / (peak_flops * world_size)


class MetricsLog:
    """Appends step records to `metrics.jsonl` (rank 0 only) and keeps the throughput clock."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._last = time.perf_counter()
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        """Seconds since the last call (the step time)."""
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        return seconds

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_metrics(metrics_path: str | Path, out_png: str | Path) -> Path:
    """Loss and learning-rate curves of a run, coloured by stage, to one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in read_metrics(metrics_path) if "loss" in r]
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for stage in dict.fromkeys(r["stage"] for r in records):
        rows = [r for r in records if r["stage"] == stage]
        steps = [r["step"] for r in rows]
        ax_loss.plot(steps, [r["loss"] for r in rows], label=stage)
        ax_lr.plot(steps, [r["lr"] for r in rows], label=stage)
        evals = [r for r in rows if r.get("eval_loss") is not None]
        if evals:
            ax_loss.scatter([r["step"] for r in evals], [r["eval_loss"] for r in evals], marker="x", s=30)
    ax_loss.set_ylabel("loss (x: held-out)")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    ax_loss.legend()
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
