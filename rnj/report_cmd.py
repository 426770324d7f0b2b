"""`rnj report BUILD_URI [--html FILE] [--run RUN_DIR]`: the whole build on one page, in the terminal and as
one self-contained HTML file (plots inlined, nothing fetched when it is viewed).

BUILD_URI is the build output (`[build] output`: the folder holding ingest/, dedup/ ... build/), on any
fsspec URI, or a build file (.toml) naming it. The training curves come from RUN_DIR/metrics.jsonl, by
default OUTPUT/train/metrics.jsonl (or the build file's `[train] run_dir`) when it exists.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import fsspec
from rich.rule import Rule
from rich.text import Text

from pipeline.errors import UserError
from rnj.shards_cmd import console, note, print_table


def _output_and_run(build_uri: str, run_dir: str | None) -> tuple[str, str | None]:
    """(build output URI, metrics.jsonl path or None)."""
    default_run = None
    if build_uri.endswith(".toml"):
        from pipeline.config import ConfigError, load_build

        try:
            cfg = load_build(build_uri)
        except (ConfigError, OSError) as err:
            raise UserError(str(err)) from err
        build_uri = cfg.build.output
        default_run = cfg.train.run_dir or cfg.output_uri("train")
    fs, root = fsspec.core.url_to_fs(build_uri)
    if default_run is None:
        default_run = fs.unstrip_protocol(root.rstrip("/") + "/train")
    chosen = run_dir or default_run
    local = Path(chosen.removeprefix("file://"))
    metrics = local if local.name.endswith(".jsonl") else local / "metrics.jsonl"
    if metrics.is_file():
        return build_uri, str(metrics)
    if run_dir is not None:
        raise UserError(f"no metrics.jsonl in {run_dir}: name a training run folder (the trainer's "
                                   "run_dir) or its metrics.jsonl")
    return build_uri, None


def _training(metrics_path: str | None):
    if metrics_path is None:
        return None
    from pipeline.inspect.report import TrainingRun

    with open(metrics_path, encoding="utf-8") as f:
        return TrainingRun(metrics_path, [json.loads(line) for line in f if line.strip()])


@click.command("report")
@click.argument("build_uri")
@click.option("--html", "html_uri", default=None, help="also write the report as one self-contained HTML file")
@click.option("--run", "run_dir", default=None,
              help="training run folder with metrics.jsonl (default: OUTPUT/train when it exists)")
@click.option("--no-plots", is_flag=True, help="skip drawing the plots (faster; the HTML then has tables only)")
def report_command(build_uri: str, html_uri: str | None, run_dir: str | None, no_plots: bool) -> None:
    """One page for the whole build: each job's ledger, dedup rounds and clusters, grading per domain and
    tier, tokenizer bytes per token, the mixture per phase against its target, packing efficiency and, when
    a training run is there, its loss curves."""
    from pipeline.inspect.html import render_html
    from pipeline.inspect.report import build_report

    output, metrics = _output_and_run(build_uri, run_dir)
    with_plots = not no_plots and html_uri is not None
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=6, desc="report", file=sys.stderr, leave=False)
    try:
        report = build_report(output, _training(metrics), with_plots=with_plots,
                              progress=(lambda name: (bar.set_postfix_str(name), bar.update(1))) if bar else None)
    except ValueError as err:
        raise UserError(str(err)) from err
    finally:
        if bar:
            bar.close()
    out = console()
    out.print(Text(f"rnj build report: {report.uri}", style="bold" if out.is_terminal else ""))
    for section in report.sections:
        out.print(Rule(section.title) if out.is_terminal else Text(f"\n== {section.title} =="))
        for line in section.notes:
            out.print(Text(line))
        for table in section.tables:
            print_table(out, table)
        if section.images:
            out.print(Text(f"({len(section.images)} plot{'s' if len(section.images) > 1 else ''} in the HTML report)"))
    if html_uri:
        page = render_html(report)
        with fsspec.open(html_uri, "w", encoding="utf-8") as f:
            f.write(page)
        note(f"wrote {html_uri} ({len(page.encode()) / 1024:.0f} KiB, "
             f"{sum(len(s.images) for s in report.sections)} plots inlined)")
