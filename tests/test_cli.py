import json

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


def test_run_rejects_an_unknown_job():
    result = CliRunner().invoke(main, ["run", "configs/demo.toml", "--only", "nosuchjob"])
    assert result.exit_code != 0 and "unknown job 'nosuchjob'" in result.output
