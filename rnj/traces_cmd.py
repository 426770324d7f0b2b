"""`rnj traces`: look at traces without running the job (render a unit, say which sandbox layers work here)."""

from __future__ import annotations

import click

from pipeline.errors import UserError


@click.group(name="traces")
def traces_group() -> None:
    """Execution traces: render one unit's trace, check the sandbox."""


@traces_group.command()
@click.argument("units_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--id", "unit_id", default=None, help="the unit to render (default: the first one)")
@click.option("--sandbox", type=click.Choice(["auto", "bubblewrap", "none"]), default="auto", show_default=True)
@click.option("--sft", is_flag=True, help="also print the SFT forms")
def show(units_file: str, unit_id: str | None, sandbox: str, sft: bool) -> None:
    """Trace one unit of a JSONL units file (or a .py script) and print the document."""
    from pathlib import Path

    from pipeline.traces.config import TracesConfig
    from pipeline.traces.generate import trace_rows, unit_rows_from_file
    from pipeline.traces.sandbox import Sandbox

    origin = "scripts" if units_file.endswith(".py") else "units"
    rows = unit_rows_from_file(units_file, origin, Path(units_file).name)
    chosen = [r for r in rows if unit_id is None or r["id"] == unit_id][:1]
    if not chosen:
        raise UserError(f"no unit with id {unit_id!r} in {units_file}")
    cfg = TracesConfig(enabled=True, sandbox=sandbox)
    (row,) = trace_rows(chosen, cfg, Sandbox(cfg))
    if row["status"] != "ok":
        raise UserError(f"{row['id']}: {row['status']} ({row['detail']})")
    click.echo(row["text"], nl=False)
    for example in row["sft"] if sft else []:
        click.echo(f"\n===== {example['kind']}: prompt\n{example['prompt']}\n===== response\n{example['response']}")


@traces_group.command()
@click.argument("build_or_output", required=False)
@click.option("--failures", default=10, show_default=True, help="how many units that did not end ok to list")
def check(build_or_output: str | None, failures: int) -> None:
    """Say which sandbox layers work here; with a build file (or its output folder), summarise the status
    table the traces job wrote: units per status and per sandbox mode, time, and the units that failed."""
    if build_or_output is None:
        _check_machine()
    else:
        _check_status_table(build_or_output, failures)


def _check_machine() -> None:
    from pipeline.traces.config import TracesConfig
    from pipeline.traces.sandbox import Sandbox, SandboxUnavailable

    try:
        sandbox = Sandbox(TracesConfig(enabled=True))
    except SandboxUnavailable as err:
        click.echo(f"the default sandbox cannot run here: {err}")
    else:
        click.echo("active layers: " + " + ".join(sandbox.layers))


def _check_status_table(build_or_output: str, failures: int) -> None:
    import posixpath
    from collections import Counter

    import fsspec
    import pyarrow.dataset as ds

    root = build_or_output
    if build_or_output.endswith(".toml"):
        from pipeline.config import load_build

        root = load_build(build_or_output).build.output
    fs, path = fsspec.core.url_to_fs(posixpath.join(root, "traces", "status"))
    if not fs.isdir(path):
        raise UserError(f"no traces status table at {path}: run the traces job first (rnj run BUILD)")
    rows = ds.dataset(path, format="parquet", filesystem=fs).to_table().to_pylist()
    statuses = Counter(r["status"] for r in rows)
    modes = Counter(r["sandbox_mode"] or "not run" for r in rows)
    seconds = [r["seconds"] for r in rows if r["seconds"] is not None]
    click.echo(f"{len(rows)} units in {path}")
    click.echo("statuses: " + ", ".join(f"{name} {count}" for name, count in sorted(statuses.items())))
    click.echo("sandbox modes: " + ", ".join(f"{name} {count}" for name, count in sorted(modes.items())))
    if seconds:
        click.echo(f"sandbox time: {sum(seconds):.1f} s in all, {max(seconds):.2f} s at most")
    if modes.get("none"):
        click.echo(f"warning: {modes['none']} units ran without bubblewrap (sandbox = 'none')")
    failed = sorted((r for r in rows if r["status"] != "ok"), key=lambda r: (r["status"], r["id"]))
    for r in failed[:failures]:
        click.echo(f"  {r['id']}: {r['status']} ({r['reason'] or 'no reason given'})")
    if len(failed) > failures:
        click.echo(f"  ... and {len(failed) - failures} more")
