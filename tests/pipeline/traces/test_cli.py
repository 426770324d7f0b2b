"""`rnj traces show` and `rnj traces check`."""

from __future__ import annotations

import json

from click.testing import CliRunner

from rnj.cli import main as rnj
from rnj.traces_cmd import traces_group


def test_show_renders_one_unit_and_check_names_layers(tmp_path):
    units = tmp_path / "units.jsonl"
    units.write_text(json.dumps({"id": "a", "code": "def f(x):\n    return x + 1\n", "entry_point": "f",
                                 "inputs": [[1]]}) + "\n")
    result = CliRunner().invoke(traces_group, ["show", str(units), "--id", "a", "--sft"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("<|source|>\ndef f(x):") and "<|result|> 2\n" in result.output
    assert "===== question: prompt" in result.output
    # A user error goes through rnj's handler: one line on stderr, exit code 2.
    missing = CliRunner().invoke(rnj, ["traces", "show", str(units), "--id", "nope"])
    assert missing.exit_code == 2 and "no unit with id 'nope'" in missing.stderr
    check = CliRunner().invoke(traces_group, ["check"])
    assert "rlimits + audit-hook + empty-env + timeout-kill" in check.output
