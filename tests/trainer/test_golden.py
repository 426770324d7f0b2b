"""The tiny run's losses, bit for bit: a refactor of the trainer that should not change the maths must not.

golden_losses.json holds the per-step loss and grad norm (as float.hex) of fake_build's three stages
trained with `--all` in one process on the CPU, and the machine that recorded them. Bits are compared on
that machine (same CPU model, torch version and kernel capability); on another one the BLAS and ATen kernels
take other instruction sets and sum in another order, so the figures are compared to a relative 1e-3
(an Intel AVX-512 machine and an AMD AVX2 one differ by up to 2e-4 after 16 steps). Regenerate it only for
a deliberate change of the maths: `python -m tests.trainer.test_golden --write`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from model.train import main as train_main
from tests.trainer.fake_build import write_build

GOLDEN = Path(__file__).with_name("golden_losses.json")
ELSEWHERE_RELATIVE = 1e-3


def this_machine() -> str:
    """What decides the bits of a CPU run: the CPU model, torch's version and its kernels' capability."""
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
              if line.startswith("model name")]
    return f"{models[0] if models else 'unknown CPU'}; torch {torch.__version__}; {torch.backends.cpu.get_cpu_capability()}"


def tiny_run(folder: Path) -> list[dict]:
    train_main([str(write_build(folder)), "--all"])
    records = [json.loads(line) for line in (folder / "out/train/metrics.jsonl").read_text().splitlines()]
    return [{"step": r["step"], "phase": r["phase"], "loss": r["loss"].hex(), "grad_norm": r["grad_norm"].hex()}
            for r in records]


def test_tiny_run_reproduces_the_golden_losses_bit_for_bit(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    expected = golden["steps"]
    got = tiny_run(tmp_path)
    assert [r["step"] for r in got] == list(range(1, 17))
    if golden["recorded_on"] == this_machine():
        for mine, want in zip(got, expected, strict=True):
            assert mine == want, f"step {want['step']}: {float.fromhex(mine['loss'])} != {float.fromhex(want['loss'])}"
        return
    for mine, want in zip(got, expected, strict=True):
        assert mine["phase"] == want["phase"]
        for key in ("loss", "grad_norm"):
            assert float.fromhex(mine[key]) == pytest.approx(float.fromhex(want[key]), rel=ELSEWHERE_RELATIVE), \
                f"step {want['step']} {key}, recorded on {golden['recorded_on']!r}, run on {this_machine()!r}"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    with tempfile.TemporaryDirectory() as tmp:
        document = json.loads(GOLDEN.read_text())
        document["steps"] = tiny_run(Path(tmp))
        document["recorded_on"] = this_machine()
        GOLDEN.write_text(json.dumps(document, indent=1) + "\n")
