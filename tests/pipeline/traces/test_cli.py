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
    assert ("rlimits + audit-hook + empty-env + timeout-kill" in check.output
            or "the default sandbox cannot run here" in check.output)


def test_check_summarises_the_status_table(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.traces.generate import STATUS_SCHEMA

    status = tmp_path / "out" / "traces" / "status"
    status.mkdir(parents=True)
    rows = [{"id": "a", "origin": "units", "status": "ok", "reason": None, "sandbox_mode": "bubblewrap",
             "seconds": 0.25},
            {"id": "b", "origin": "units", "status": "timeout", "reason": "still running after 4 s (wall clock)",
             "sandbox_mode": "none", "seconds": 4.0},
            {"id": "c", "origin": "units", "status": "invalid_unit", "reason": "not JSON", "sandbox_mode": None,
             "seconds": None}]
    pq.write_table(pa.Table.from_pylist(rows, schema=STATUS_SCHEMA), status / "part-00000.parquet")
    result = CliRunner().invoke(traces_group, ["check", str(tmp_path / "out"), "--failures", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1:] == [
        "statuses: invalid_unit 1, ok 1, timeout 1", "sandbox modes: bubblewrap 1, none 1, not run 1",
        "sandbox time: 4.2 s in all, 4.00 s at most", "warning: 1 units ran without bubblewrap (sandbox = 'none')",
        "  c: invalid_unit (not JSON)", "  ... and 1 more"]
    missing = CliRunner().invoke(rnj, ["traces", "check", str(tmp_path / "elsewhere")])
    assert missing.exit_code == 2 and "no traces status table" in missing.stderr
