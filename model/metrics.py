"""Training metrics: one JSON line per step, MFU against a stated peak, and loss / lr plots."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

BF16_DENSE_PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989e12,  # H100 SXM5
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H100 NVL": 835e12,
    "NVIDIA H200": 989e12,  # H200 SXM
    "NVIDIA H200 NVL": 835e12,
    "NVIDIA GH200 480GB": 989e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12,
    "NVIDIA A100-PCIE-40GB": 312e12,
    "NVIDIA L4": 121e12,
}
"""Dense (no sparsity) bf16 tensor-core peak FLOP/s from NVIDIA's data sheets, keyed by the exact name
`torch.cuda.get_device_name()` returns. Exact names, because one family spans several peaks (an H100 PCIe is
756 TFLOP/s, an SXM 989): a substring match would credit a PCIe card with the SXM peak and understate MFU.
Another GPU has no entry: pass its peak explicitly (`--peak-tflops`)."""


@dataclass(frozen=True)
class PeakFlops:
    """The peak an MFU figure is measured against, and where it came from."""

    device: str
    flops: float
    source: str
    """"data sheet" (BF16_DENSE_PEAK_FLOPS) or "given" (an explicit override)."""

    def __str__(self) -> str:
        return f"{self.flops / 1e12:,.0f} TFLOP/s bf16 dense ({self.device}, {self.source})"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def device_peak_flops(device: torch.device, override_tflops: float | None = None) -> PeakFlops | None:
    """The peak to measure MFU against on `device` (see `peak_flops`); None on CPU without an override."""
    if device.type != "cuda" and override_tflops is None:
        return None
    return peak_flops(device_name(device), override_tflops)


def peak_flops(name: str, override_tflops: float | None = None) -> PeakFlops | None:
    """`override_tflops` if given, else the data-sheet figure for exactly this device name, else None (then
    no MFU is reported: an unknown GPU is not guessed)."""
    if override_tflops is not None:
        if override_tflops <= 0:
            raise ValueError(f"peak TFLOP/s must be positive (got {override_tflops})")
        return PeakFlops(name, override_tflops * 1e12, "given")
    if name not in BF16_DENSE_PEAK_FLOPS:
        return None
    return PeakFlops(name, BF16_DENSE_PEAK_FLOPS[name], "data sheet")


def mfu(tokens_per_second: float, flops_per_token: float, peak: PeakFlops | None, world_size: int = 1
        ) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak of all `world_size` devices."""
    if peak is None:
        return None
    return tokens_per_second * flops_per_token / (peak.flops * world_size)


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
