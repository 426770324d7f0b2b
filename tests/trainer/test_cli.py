"""`rnj train` / `rnj export` and `python -m model.train`: their options, their progress lines, and what a
user sees when the inputs are wrong (one or two lines saying what to do, exit code 2, no traceback)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from model.distributed import Distributed
from model.progress import Progress
from model.train import Trainer, build_parser, run_dir_of
from pipeline.config import load_build
from pipeline.errors import UserError
from rnj.cli import main as rnj
from tests.trainer.fake_build import write_build

REPO = Path(__file__).parents[2]


def user_error(result) -> str:
    """The message of the UserError a command ended with: printed by the CLI's handler (exit code 2, no
    traceback) where one is wired, else still the exception itself."""
    if isinstance(result.exception, UserError):
        return str(result.exception)
    assert result.exit_code == 2 and "Traceback" not in result.output, (result.exit_code, result.output)
    return result.stderr


def short(message: str) -> str:
    assert 0 < len(message.strip().splitlines()) <= 2, message
    return message


# -- options ----------------------------------------------------------------------------------------------

def test_rnj_train_help_shows_the_trainers_options():
    result = CliRunner().invoke(rnj, ["train", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--stage", "--all", "--dry-run", "--max-steps", "--plot", "--log-interval", "--peak-tflops"):
        assert option in result.output, option
    assert "CONFIG" in result.output


def test_rnj_train_and_python_m_model_train_take_the_same_options():
    click_options = {opt for param in rnj.commands["train"].params for opt in param.opts if opt.startswith("--")}
    argparse_options = {opt for action in build_parser()._actions for opt in action.option_strings
                        if opt.startswith("--") and opt != "--help"}
    assert click_options == argparse_options


def test_rnj_train_dry_run(tmp_path):
    result = CliRunner().invoke(rnj, ["train", str(write_build(tmp_path)), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "stable       steps       0 .. 8" in result.output


# -- user errors ------------------------------------------------------------------------------------------

def test_training_before_the_shards_exist_says_to_build_them(tmp_path):
    config = write_build(tmp_path)
    for phase in (tmp_path / "out" / "build").glob("*/*/manifest.json"):
        phase.unlink()
    message = short(user_error(CliRunner().invoke(rnj, ["train", str(config), "--all"])))
    assert "no shards for stage 'pretrain', phase 'stable'" in message and f"rnj run {config}" in message


def test_a_bad_build_file_is_named(tmp_path):
    config = tmp_path / "build.toml"
    config.write_text("[build\nname = 1\n")
    assert "not valid TOML" in short(user_error(CliRunner().invoke(rnj, ["train", str(config), "--all"])))
    missing = tmp_path / "nope.toml"
    assert "does not exist" in short(user_error(CliRunner().invoke(rnj, ["train", str(missing), "--all"])))


def test_unknown_stage_no_stages_and_no_metrics(tmp_path):
    config = write_build(tmp_path)
    message = short(user_error(CliRunner().invoke(rnj, ["train", str(config), "--stage", "warmup"])))
    assert "unknown stage 'warmup'" in message and "'pretrain', 'midtrain'" in message
    message = short(user_error(CliRunner().invoke(rnj, ["train", str(config), "--plot", str(tmp_path / "x.png")])))
    assert "no training metrics" in message and "train first" in message
    text = config.read_text()
    config.write_text(text[:text.index("[[stages]]")] + text[text.index("[train]"):])
    assert "has no [[stages]]" in short(user_error(CliRunner().invoke(rnj, ["train", str(config), "--all"])))


def test_a_later_stage_before_the_earlier_ones_says_which_command_to_run(tmp_path):
    config = write_build(tmp_path)
    message = short(user_error(CliRunner().invoke(rnj, ["train", str(config), "--stage", "midtrain"])))
    assert "starts from the end of the previous stage" in message and f"rnj train {config} --all" in message


def test_a_world_size_that_cannot_share_the_batch_is_refused_before_anything_runs(tmp_path):
    cfg = load_build(str(write_build(tmp_path)))
    three = Distributed(rank=0, world_size=3, local_rank=0, device=torch.device("cpu"))
    with pytest.raises(UserError, match=r"8 sequences per step, which 3 ranks cannot share evenly: run on one "
                                        r"of \[1, 2, 4, 8\] ranks"):
        Trainer(cfg, cfg.stages[0], run_dir_of(cfg), three)


def test_exporting_before_training_says_to_train(tmp_path):
    config = write_build(tmp_path)
    message = short(user_error(CliRunner().invoke(rnj, ["export", str(config), str(tmp_path / "hf")])))
    assert "no complete checkpoint" in message and f"rnj train {config} --all" in message


def test_python_m_model_train_prints_the_problem_and_exits_2(tmp_path):
    config = write_build(tmp_path)
    done = subprocess.run([sys.executable, "-m", "model.train", str(config), "--stage", "nope"], cwd=REPO, check=False,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("error: unknown stage 'nope'"), done.stderr


# -- progress ---------------------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(step: int) -> dict:
    return {"loss": 3.0 - step / 100, "lr": 2e-3, "tokens_per_s": 12345.0, "mfu": 0.41}


def test_without_a_terminal_progress_is_plain_lines_at_a_bounded_rate():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(total=100, initial=0, stage="pretrain", interval_s=30.0, stream=stream, clock=clock)
    for step in range(100):
        clock.now += 2.0  # a step every 2 s: 200 s in all
        progress.update(_record(step))
    progress.close()
    lines = stream.getvalue().splitlines()
    # the first step, then one line per 30 s at most (200 s / 30 s = 6), and the last step
    assert 3 <= len(lines) <= 8, lines
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue(), "no bar redraws in a log"
    assert lines[0].startswith("pretrain step 1/100 (1.0%) loss 3.0000 lr 2.00e-03 12,345 tok/s mfu 41.0%")
    assert lines[-1].startswith("pretrain step 100/100 (100.0%)") and "eta 0:00:00" in lines[-1]
    assert "elapsed 0:00:02 eta 0:03:18" in lines[0]


def test_progress_resumed_mid_stage_counts_from_where_it_is():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(total=10, initial=6, stage="sft", interval_s=0.0, stream=stream, clock=clock)
    for step in range(4):
        clock.now += 1.0
        progress.update({**_record(step), "mfu": None})
    lines = stream.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["7/10", "8/10", "9/10", "10/10"]
    assert "mfu" not in lines[0] and "eta 0:00:03" in lines[0]


def test_training_writes_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    config = write_build(tmp_path)
    done = subprocess.run([sys.executable, "-m", "model.train", str(config), "--stage", "pretrain",
                           "--max-steps", "3", "--log-interval", "0"], cwd=REPO, check=False, capture_output=True,
                          text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("pretrain step")]
    assert [line.split()[2] for line in lines] == ["1/12", "2/12", "3/12"], done.stderr
    assert "MFU against no peak" in done.stderr, "the peak used (here none, on a CPU) is printed"
    again = subprocess.run([sys.executable, "-m", "model.train", str(config), "--stage", "pretrain",
                            "--max-steps", "1"], cwd=REPO, check=False, capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
    assert "resumed pretrain at step 3" in again.stderr, "a run stopped by --max-steps checkpoints where it stops"
