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
def check() -> None:
    """Say which sandbox layers are active on this machine."""
    from pipeline.traces.config import TracesConfig
    from pipeline.traces.sandbox import Sandbox, SandboxUnavailable

    try:
        sandbox = Sandbox(TracesConfig(enabled=True))
    except SandboxUnavailable as err:
        click.echo(f"the default sandbox cannot run here: {err}")
    else:
        click.echo("active layers: " + " + ".join(sandbox.layers))
