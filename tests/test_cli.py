import json

import pytest
from click.testing import CliRunner

from rnj.cli import main


def test_help_lists_the_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("sample", "run"):
        assert command in result.output


def test_sample_writes_every_part_deterministically(tmp_path):
    runner = CliRunner()
    args = ["sample", "--max-docs", "120", "--max-bytes", "600000"]
    assert runner.invoke(main, [*args, "--out", str(tmp_path / "a")]).exit_code == 0
    assert runner.invoke(main, [*args, "--out", str(tmp_path / "b")]).exit_code == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)
    parts = {str(f).split("/")[0] for f in files_a}
    assert parts == {"code", "prose", "math", "eval", "units"}
    units = [json.loads(line) for line in (tmp_path / "a/units/tasks.jsonl").read_text().splitlines()]
    assert {"id", "code", "entry_point", "inputs"} <= set(units[0])


def test_run_prints_spark_submit_commands():
    result = CliRunner().invoke(main, ["run", "configs/demo.toml", "--print-spark-submit"])
    assert result.exit_code == 0, result.output
    assert "spark-submit" in result.output and "jobs/ingest.py --config" in result.output


def test_run_rejects_an_unknown_job_and_its_help_lists_the_jobs():
    result = CliRunner().invoke(main, ["run", "configs/demo.toml", "--only", "nosuchjob"])
    assert result.exit_code == 2 and "'nosuchjob' is not one of 'ingest', 'traces'" in result.output
    text = CliRunner().invoke(main, ["run", "--help"]).output
    assert "ingest, traces, dedup, grade, tokenize, build" in " ".join(text.split())


def test_train_help_shows_the_trainers_options():
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    assert "--stage" in result.output and "--all" in result.output and "--max-steps" in result.output


# --- user errors: one or two lines, exit code 2, no traceback -----------------------------------------------

NO_INPUT = {"model list", "traces check"}
"""Commands that read nothing a user could get wrong."""


def _commands(group, prefix=()) -> list[str]:
    found = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found += _commands(command, (*prefix, name))
        else:
            found.append(" ".join((*prefix, name)))
    return found


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> dict[str, list[str]]:
    """Per command, arguments that are wrong the way a user gets them wrong."""
    root = tmp_path_factory.mktemp("broken")
    missing = root / "missing-source.toml"
    missing.write_text(f'[build]\nname = "x"\noutput = "{root}/out"\n\n[[sources]]\nname = "web"\n'
                       f'uri = "{root}/nowhere/*.jsonl"\nformat = "jsonl"\n')
    bad = root / "bad.toml"
    bad.write_text("[build\nname = ")
    empty = root / "empty"
    empty.mkdir()
    nothing = str(root / "nothing")
    return {
        "sample": ["--out", "/proc/no/such/place"],
        "run": [str(missing)],
        "train": [str(missing), "--all"],
        "export": [str(missing), str(root / "hf")],
        "report": [nothing],
        "shards ls": [nothing], "shards stats": [str(empty)], "shards show": [nothing, "--seq", "0"],
        "shards verify": [nothing], "shards diff": [nothing, str(empty)],
        "dedup clusters": [str(missing)], "dedup report": [str(missing)], "dedup show": [str(missing), "c1"],
        "grade report": [str(bad)],
        "tokenizer encode": [str(missing), "hello"], "tokenizer report": [str(missing)],
        "tokenizer specials": [str(bad)],
        "model info": ["no-such-preset"],
        "convert hf-to-rnj": [nothing, str(root / "o1")], "convert rnj-to-hf": [str(empty), str(root / "o2")],
        "traces show": [str(root / "no-units.jsonl")],
    }


def test_every_command_reports_a_broken_input_in_two_lines_with_exit_code_2(broken):
    commands = _commands(main)
    assert set(commands) - NO_INPUT == set(broken), "give each command a broken input here"
    for command, args in broken.items():
        result = CliRunner().invoke(main, [*command.split(), *args])
        assert result.exit_code == 2, (command, result.output, result.exception)
        assert "Traceback" not in result.output, command
        message = [line for line in result.stderr.splitlines() if line.strip()]
        usage = message[0].startswith("Usage:")  # click's own usage errors: usage, hint, error
        assert 1 <= len(message) <= (3 if usage else 2), (command, message)
        assert message[-1].startswith("Error: ") if usage else message[0].startswith("Error: "), (command, message)


def test_debug_adds_the_traceback(broken):
    plain = CliRunner().invoke(main, ["run", *broken["run"]])
    assert "source 'web'" in plain.stderr and "nothing found at" in plain.stderr
    debug = CliRunner().invoke(main, ["--debug", "run", *broken["run"]])
    assert debug.exit_code == 2 and "Traceback" in debug.stderr and "pipeline.errors.UserError" in debug.stderr
    env = CliRunner().invoke(main, ["run", *broken["run"]], env={"RNJ_DEBUG": "1"})
    assert "Traceback" in env.stderr


def test_a_missing_storage_package_names_the_extra_to_install():
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("gcsfs is installed here")
    result = CliRunner().invoke(main, ["shards", "ls", "gs://rnj-no-bucket/build"])
    assert result.exit_code == 2
    assert "pip install 'rnj[gcs]'" in result.stderr


def test_run_needs_the_upstream_jobs_committed_before_spark_starts(tmp_path):
    config = tmp_path / "b.toml"
    config.write_text(f'[build]\nname = "x"\noutput = "{tmp_path}/out"\n\n[[sources]]\nname = "web"\n'
                      f'uri = "{tmp_path}/d.jsonl"\nformat = "jsonl"\n')
    result = CliRunner().invoke(main, ["run", str(config), "--only", "build"])
    assert result.exit_code == 2
    assert f"run `rnj run {config} --until tokenize` first" in result.stderr
