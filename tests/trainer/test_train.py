import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.data import StageData, batch_tensors
from model.train import main as train_main
from pipeline.config import load_build
from pipeline.errors import UserError
from pipeline.shards import ShardError
from tests.trainer.fake_build import BOS, EOS, read_losses, write_build

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _train(config: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "model.train", str(config), *args], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def test_targets_stay_inside_documents_and_skip_padding():
    import numpy as np

    from pipeline.shards import SequenceView

    tokens = np.array([BOS, 5, 6, EOS, BOS, 7, EOS, 0, 0, 0], dtype=np.uint32)
    view = SequenceView(0, tokens, np.array([0, 4, 7], dtype=np.int32), None)
    batch = batch_tensors([view], torch.device("cpu"))
    assert batch["doc_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 1, 2, 2, 2]]
    assert batch["targets"].tolist() == [[5, 6, EOS, -100, 7, EOS, -100, -100, -100, -100]]
    masked = SequenceView(0, tokens, np.array([0, 4, 7], dtype=np.int32),
                          np.array([0, 0, 1, 1, 0, 1, 1, 0, 0, 0], dtype=np.uint8))
    assert batch_tensors([masked], torch.device("cpu"))["targets"].tolist() == [
        [-100, 6, EOS, -100, 7, EOS, -100, -100, -100, -100]]


def test_dry_run_prints_the_plan(tmp_path, capsys):
    config = write_build(tmp_path)
    train_main([str(config), "--dry-run"])
    out = capsys.readouterr().out
    assert "stable       steps       0 .. 8" in out and "decay        steps       8 .. 12" in out
    assert "long         steps      12 .. 16" in out and "after 2 warm-up steps" in out


def test_shards_from_another_build_are_refused(tmp_path):
    config = write_build(tmp_path)
    edited = config.read_text().replace('name = "decay"\ntokens = 2048\nweights = { "code" = 1.0 }',
                                        'name = "decay"\ntokens = 2048\nweights = { "math" = 1.0 }')
    config.write_text(edited)
    cfg = load_build(str(config))
    with pytest.raises(UserError, match=r"shards of pretrain/decay .* build_hash .* --only build --force") as err:
        StageData(cfg, cfg.stages[0])
    assert isinstance(err.value.__cause__, ShardError)


@pytest.mark.slow
def test_killed_run_resumes_with_identical_losses_and_every_sequence_once(tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    reference.mkdir(), resumed.mkdir()
    ref_config = write_build(reference, stable_tokens=16384)
    run_config = write_build(resumed, stable_tokens=16384)

    full = _train(ref_config, "--stage", "pretrain")
    assert full.wait(timeout=600) == 0, full.stderr.read().decode()

    metrics = resumed / "out" / "train" / "metrics.jsonl"
    victim = _train(run_config, "--stage", "pretrain")
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 7):
        assert victim.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert len(metrics.read_text().splitlines()) < 36, "killed mid-way, not at the end"

    again = _train(run_config, "--stage", "pretrain")
    assert again.wait(timeout=600) == 0, again.stderr.read().decode()
    expected = read_losses(reference / "out" / "train" / "metrics.jsonl")
    assert len(expected) == 36
    assert read_losses(metrics) == expected, "per-step losses after the resume equal the uninterrupted run's"
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    for phase, count in (("stable", 256), ("decay", 32)):
        seen = [i for r in records if r["phase"] == phase for i in range(*r["sequences"])]
        assert sorted(seen) == list(range(count)), f"every {phase} sequence exactly once"


def test_stages_chain_and_yarn_switches_on_for_the_long_stage(tmp_path):
    config = write_build(tmp_path)
    train_main([str(config), "--all"])
    records = read_losses(tmp_path / "out" / "train" / "metrics.jsonl")
    assert [r[0] for r in records] == list(range(1, 17))
    stable = [loss for _, phase, loss in records if phase == "stable"]
    assert stable[-1] < stable[0], "the loss falls"
    checkpoints = sorted(p.name for p in (tmp_path / "out" / "train" / "checkpoints").glob("step-*"))
    assert {"step-000000012", "step-000000016"} <= set(checkpoints), "stage-final checkpoints are kept"
    state = torch.load(tmp_path / "out/train/checkpoints/step-000000016/trainer_state-rank0.pt", weights_only=False)
    assert state["stage"] == "midtrain"
    from model.train import Trainer, model_config
    cfg = load_build(str(config))
    assert model_config(cfg, cfg.stages[1], 96).yarn.factor == 2.0
    assert model_config(cfg, cfg.stages[0], 96).yarn is None
    train_main([str(config), "--all"])  # everything done: a no-op
    assert len(read_losses(tmp_path / "out" / "train" / "metrics.jsonl")) == 16
    del Trainer
