"""`rnj grade ...`: look at what the grade job wrote. Registered on the main group by rnj/cli.py."""

from __future__ import annotations

import json
import posixpath

import click
import fsspec
from rich.console import Console
from rich.table import Table

from pipeline.errors import UserError


@click.group(name="grade")
def grade_group() -> None:
    """Inspect the grade job's output (quality filters, domains, difficulty tiers)."""


@grade_group.command()
@click.argument("build_or_report")
@click.option("--json", "as_json", is_flag=True, help="print report.json itself instead of tables")
def report(build_or_report: str, as_json: bool) -> None:
    """Print the grade report of BUILD_OR_REPORT: a build file (.toml), a grade output folder or a report.json."""
    uri = report_uri(build_or_report)
    try:
        with fsspec.open(uri, "r", encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UserError(f"no grade report at {uri}: run the grade job first (rnj run BUILD --until grade)")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    from pipeline.grading.report import report_tables

    console = Console(width=160)
    for title, columns, rows in report_tables(data):
        table = Table(title=title, title_justify="left")
        for i, column in enumerate(columns):
            table.add_column(column, justify="left" if i < 2 else "right", overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)


def report_uri(target: str) -> str:
    """report.json of a build file (its output's grade/ folder), of a folder, or the file itself."""
    if target.endswith(".toml"):
        from pipeline.commit import JobOutput
        from pipeline.config import load_build

        cfg = load_build(target)
        return JobOutput(cfg.build.output, "grade").child("report.json")
    if target.endswith(".json"):
        return target
    fs, path = fsspec.core.url_to_fs(target)
    if fs.exists(posixpath.join(path, "grade", "report.json")):
        return fs.unstrip_protocol(posixpath.join(path, "grade", "report.json"))
    return fs.unstrip_protocol(posixpath.join(path, "report.json"))
