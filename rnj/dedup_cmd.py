"""`rnj dedup ...`: look into a committed dedup output without Spark (pyarrow reads the tables).

    rnj dedup clusters configs/demo.toml            the largest clusters
    rnj dedup show configs/demo.toml CLUSTER_ID     one cluster's members side by side
"""

from __future__ import annotations

import json
import os

import click
import pyarrow.compute as pc
import pyarrow.dataset as ds
from rich.columns import Columns
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from pipeline.errors import UserError

console = Console()


@click.group("dedup")
def dedup_group() -> None:
    """Inspect the dedup job's clusters and report."""


def _output_root(build_or_config: str) -> tuple[str, tuple[str, ...]]:
    """(build output root, upstream jobs) from a build file, or from the output root itself."""
    if build_or_config.endswith(".toml"):
        from jobs.common import upstream_jobs
        from pipeline.config import load_build

        cfg = load_build(build_or_config)
        return cfg.build.output, upstream_jobs(cfg, "dedup")
    upstream = tuple(j for j in ("ingest", "traces") if os.path.isdir(os.path.join(build_or_config, j, "documents")))
    return build_or_config, upstream


def _clusters(root: str):
    path = os.path.join(root, "dedup", "clusters")
    if not os.path.isdir(path):
        raise UserError(f"no committed dedup output under {root}: run the dedup job first")
    return ds.dataset(path, format="parquet")


@dedup_group.command("clusters")
@click.argument("build_or_config")
@click.option("--top", default=20, show_default=True, help="how many clusters to list")
@click.option("--round", "round_", type=click.Choice(["exact", "near"]), default=None, help="only this round")
def list_clusters(build_or_config: str, top: int, round_: str | None) -> None:
    """List the largest clusters (id, size, kept member)."""
    root, _ = _output_root(build_or_config)
    table = _clusters(root).to_table()
    if round_:
        ids = table.filter(pc.equal(table["round"], round_))["cluster_id"].unique()
        table = table.filter(pc.is_in(table["cluster_id"], ids))
    sizes = table.group_by("cluster_id").aggregate([("id", "count")]).sort_by([("id_count", "descending"),
                                                                                ("cluster_id", "ascending")])
    kept = {r["cluster_id"]: r["id"] for r in table.filter(table["kept"]).to_pylist()}
    out = Table(title=f"largest dedup clusters under {root}")
    for column in ("cluster_id", "size", "kept"):
        out.add_column(column)
    for row in sizes.slice(0, top).to_pylist():
        out.add_row(row["cluster_id"], str(row["id_count"]), kept.get(row["cluster_id"], ""))
    console.print(out)


@dedup_group.command("show")
@click.argument("build_or_config")
@click.argument("cluster_id")
@click.option("--chars", default=600, show_default=True, help="characters of each member's text to show")
@click.option("--max-members", default=4, show_default=True, help="members side by side (kept one first)")
def show(build_or_config: str, cluster_id: str, chars: int, max_members: int) -> None:
    """Show a cluster's members side by side: the kept one first, then the dropped ones."""
    root, upstream = _output_root(build_or_config)
    members = _clusters(root).to_table(filter=ds.field("cluster_id") == cluster_id).to_pylist()
    if not members:
        raise UserError(f"no cluster {cluster_id!r}: list them with `rnj dedup clusters`")
    members.sort(key=lambda m: (not m["kept"], m["id"]))
    texts = _texts(root, upstream, [m["id"] for m in members[:max_members]])
    panels = []
    for m in members[:max_members]:
        text = texts.get(m["id"], "(text not found upstream)")
        body = text[:chars] + ("..." if len(text) > chars else "")
        title = f"{'KEPT' if m['kept'] else 'dropped'} · {m['round']} · {len(text)} chars"
        panels.append(Panel(body, title=title, subtitle=m["id"], border_style="green" if m["kept"] else "red"))
    console.print(f"cluster {cluster_id}: {len(members)} members"
                  + (f" (showing {max_members})" if len(members) > max_members else ""))
    console.print(Columns(panels, equal=True, expand=True))


@dedup_group.command("report")
@click.argument("build_or_config")
def report(build_or_config: str) -> None:
    """Print each round's in/out counts from report.json."""
    root, _ = _output_root(build_or_config)
    with open(os.path.join(root, "dedup", "report.json")) as f:
        data = json.load(f)
    out = Table(title=f"dedup rounds under {root}")
    for column in ("round", "enabled", "in", "out", "dropped"):
        out.add_column(column)
    for name, r in data.get("rounds", {}).items():
        out.add_row(name, str(r.get("enabled")), str(r.get("in")), str(r.get("out")), str(r.get("dropped")))
    console.print(out)


def _texts(root: str, upstream: tuple[str, ...], ids: list[str]) -> dict[str, str]:
    """Members' original texts, from the upstream documents the dedup job read."""
    found: dict[str, str] = {}
    for job in upstream:
        path = os.path.join(root, job, "documents")
        if not os.path.isdir(path):
            continue
        rows = ds.dataset(path, format="parquet").to_table(columns=["id", "text"], filter=ds.field("id").isin(ids))
        found.update(zip(rows["id"].to_pylist(), rows["text"].to_pylist()))
    return found
