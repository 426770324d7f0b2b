"""`rnj model ...` and `rnj convert ...` through click's test runner."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from model import Transformer, get_preset, write_rnj
from rnj.cli import main as rnj
from rnj.model_cmd import convert_group, model_group, parse_size


def test_model_info_prints_size_flops_and_memory():
    result = CliRunner().invoke(model_group, ["info", "rnj-1", "--gpus", "8"])
    assert result.exit_code == 0, result.output
    assert "8.31B" in result.output
    assert "training FLOPs / token at 8K" in result.output and "at 32K" in result.output
    assert "fp32 master weights (per GPU over 8)" in result.output


def test_model_info_unknown_preset_lists_the_choices():
    result = CliRunner().invoke(model_group, ["info", "rnj-9"])
    assert result.exit_code != 0 and "choose one of ['rnj-1', 'rnj-2b', 'rnj-200m', 'tiny']" in result.output


def test_model_list():
    result = CliRunner().invoke(model_group, ["list"])
    assert result.exit_code == 0 and "rnj-200m" in result.output


def test_convert_round_trip(tmp_path):
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    write_rnj(tmp_path / "rnj", cfg, Transformer(cfg).state_dict())
    runner = CliRunner()
    result = runner.invoke(convert_group, ["rnj-to-hf", str(tmp_path / "rnj"), str(tmp_path / "hf"),
                                           "--dtype", "bfloat16", "--max-shard-size", "100KB"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == "bfloat16"
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    result = runner.invoke(convert_group, ["hf-to-rnj", str(tmp_path / "hf"), str(tmp_path / "back")])
    assert result.exit_code == 0, result.output
    # User errors go through rnj's handler: one line on stderr, exit code 2.
    result = runner.invoke(rnj, ["convert", "hf-to-rnj", str(tmp_path / "hf"), str(tmp_path / "back")])
    assert result.exit_code == 2 and "already exists" in result.stderr
    result = runner.invoke(rnj, ["convert", "hf-to-rnj", str(tmp_path / "rnj"), str(tmp_path / "x")])
    assert result.exit_code == 2 and "model_type is None, expected 'gemma3_text'" in result.stderr


def test_parse_size():
    assert parse_size("5GB") == 5_000_000_000 and parse_size("2GiB") == 2 * 2 ** 30 and parse_size("100") == 100
    with pytest.raises(Exception, match="is not a size"):
        parse_size("lots")
