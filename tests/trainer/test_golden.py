"""The tiny run's losses, bit for bit: a refactor of the trainer that should not change the maths must not.

golden_losses.json holds the per-step loss and grad norm (as float.hex) of fake_build's three stages
trained with `--all` in one process on the CPU. Regenerate it only for a deliberate change of the maths:
`python -m tests.trainer.test_golden --write`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from model.train import main as train_main
from tests.trainer.fake_build import write_build

GOLDEN = Path(__file__).with_name("golden_losses.json")


def tiny_run(folder: Path) -> list[dict]:
    train_main([str(write_build(folder)), "--all"])
    records = [json.loads(line) for line in (folder / "out/train/metrics.jsonl").read_text().splitlines()]
    return [{"step": r["step"], "phase": r["phase"], "loss": r["loss"].hex(), "grad_norm": r["grad_norm"].hex()}
            for r in records]


def test_tiny_run_reproduces_the_golden_losses_bit_for_bit(tmp_path):
    expected = json.loads(GOLDEN.read_text())["steps"]
    got = tiny_run(tmp_path)
    assert [r["step"] for r in got] == list(range(1, 17))
    for mine, want in zip(got, expected, strict=True):
        assert mine == want, f"step {want['step']}: {float.fromhex(mine['loss'])} != {float.fromhex(want['loss'])}"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    with tempfile.TemporaryDirectory() as tmp:
        document = json.loads(GOLDEN.read_text())
        document["steps"] = tiny_run(Path(tmp))
        GOLDEN.write_text(json.dumps(document, indent=1) + "\n")
