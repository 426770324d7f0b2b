"""`rnj`: the command line on top of the jobs and the model. Nothing imports this module."""

from __future__ import annotations

import os
import shlex
import sys
import time
import traceback
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from jobs.registry import JOB_ORDER
from rnj.dedup_cmd import dedup_group
from rnj.errors import EXIT_USER_ERROR, user_message
from rnj.grade_cmd import grade_group
from rnj.model_cmd import convert_group, model_group
from rnj.report_cmd import report_command
from rnj.shards_cmd import shards_group
from rnj.tokenizer_cmd import tokenizer_group
from rnj.traces_cmd import traces_group

console = Console(width=None if sys.stdout.isatty() else 160)  # logs keep whole table rows


class RnjGroup(click.Group):
    """The top-level group: a user error raised by any command (pipeline.errors.UserError and the other
    kinds rnj.errors knows, or a SystemExit with a message) is printed as its message, exit code 2, without
    a traceback unless --debug."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except SystemExit as done:  # `raise SystemExit("message")`, a script's way to stop on a user error
            if not isinstance(done.code, str):
                raise
            click.echo(f"Error: {done.code}", err=True)
            ctx.exit(EXIT_USER_ERROR)
        except Exception as err:
            message = user_message(err)
            if message is None:
                raise
            if ctx.params.get("debug"):
                traceback.print_exception(err)
            click.echo(f"Error: {message}", err=True)
            ctx.exit(EXIT_USER_ERROR)


@click.group(cls=RnjGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, envvar="RNJ_DEBUG",
              help="show the Python traceback of user errors too (also RNJ_DEBUG=1)")
def main(debug: bool) -> None:
    """rnj: data pipeline, curriculum builder and trainer for an Rnj-1-style model.

    A problem you can fix (a bad build file, a missing source, a step not run yet) is reported in one or two
    lines with exit code 2; --debug adds the traceback."""


@main.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="folder to write the sample to")
@click.option("--max-docs", default=3000, show_default=True, help="documents in the whole sample (about)")
@click.option("--max-bytes", default=20_000_000, show_default=True, help="bytes in the whole sample (about)")
@click.option("--seed", default=0, show_default=True, help="seed of every random choice")
def sample(out: str, max_docs: int, max_bytes: int, seed: int) -> None:
    """Build a sample corpus from this machine's Python installation (code, docs, math problems)."""
    from pipeline.sample import build_sample

    start = time.perf_counter()
    stats = build_sample(out, max_docs=max_docs, max_bytes=max_bytes, seed=seed)
    table = Table(title=f"sample corpus in {out} ({time.perf_counter() - start:.1f}s)")
    table.add_column("part")
    table.add_column("documents", justify="right")
    table.add_row("code files", f"{stats.code_files} ({stats.code_bytes / 1e6:.1f} MB, {len(stats.repos)} repos)")
    table.add_row("docstrings", str(stats.docstrings))
    table.add_row("package docs", str(stats.docs))
    table.add_row("math problems", str(stats.problems))
    table.add_row("held-out problems (eval)", str(stats.heldout))
    table.add_row("runnable units", str(stats.units))
    console.print(table)


JOB_NAMES = ", ".join(JOB_ORDER)


@main.command(help=f"""Run the build's jobs in order in one SparkSession, then print their ledgers.

The jobs, in order: {JOB_NAMES}. Sources are listed and checked before Spark starts. Without a terminal
(a log file, a pod) a progress line per running Spark stage is printed every --progress-every seconds.""")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--only", default=None, type=click.Choice(JOB_ORDER), help="run just this job")
@click.option("--until", default=None, type=click.Choice(JOB_ORDER),
              help="run the jobs up to and including this one")
@click.option("--force", is_flag=True, help="rerun jobs whose output is already committed")
@click.option("--master", default=None, help="Spark master (default: $SPARK_MASTER, else local[*])")
@click.option("--progress-every", type=float, default=None, metavar="SECONDS",
              help="seconds between progress lines without a terminal (default $RNJ_PROGRESS_SECONDS or 30; "
                   "0: none)")
@click.option("--print-spark-submit", is_flag=True, help="print the equivalent spark-submit commands instead")
def run(config: str, only: str | None, until: str | None, force: bool, master: str | None,
        progress_every: float | None, print_spark_submit: bool) -> None:
    from jobs.registry import job_module, preflight, select_jobs
    from pipeline.config import load_build

    cfg = load_build(config)
    names = select_jobs(only, until, cfg)
    if print_spark_submit:
        for name in names:
            click.echo(spark_submit_command(name, config, force))
        return
    for line in preflight(cfg, names):
        click.echo(line)
    from jobs.common import describe
    from jobs.progress import SparkProgress, progress_interval, ui_address
    from jobs.spark import get_spark

    spark = get_spark(master, app_name=f"rnj-{cfg.build.name}")
    click.echo(ui_address(spark))
    results = []
    for i, name in enumerate(names, start=1):
        title = f"[{i}/{len(names)}] {name}"
        if console.is_terminal:
            with console.status(f"{title} ...") as status, SparkProgress(
                    spark, name, every=1.0, emit=lambda lines, t=title, s=status: s.update(f"{t}: {lines[0]}")):
                result = job_module(name).run(spark, cfg, force=force)
        else:
            click.echo(f"{title} started")
            with SparkProgress(spark, name, every=progress_interval(progress_every)):
                result = job_module(name).run(spark, cfg, force=force)
        click.echo(describe(result))
        results.append(result)
    console.print(_ledger_table(results))
    console.print(f"outputs under {cfg.build.output}")


def spark_submit_command(job: str, config: str, force: bool) -> str:
    jobs_dir = Path(__file__).resolve().parent.parent / "jobs"
    # PYTHONSAFEPATH: a script run puts its own folder first on sys.path, where jobs/tokenize.py would
    # shadow the standard library's tokenize module.
    parts = ["env", "PYTHONSAFEPATH=1", "spark-submit", "--conf", f"spark.pyspark.python={sys.executable}",
             str(jobs_dir / f"{job}.py"), "--config", os.path.abspath(config)]
    if force:
        parts.append("--force")
    return shlex.join(parts)


def _ledger_table(results) -> Table:
    table = Table(title="ledgers")
    for column in ("job", "state", "read", "written", "dropped", "quarantined", "seconds"):
        table.add_column(column, justify="left" if column in ("job", "state") else "right")
    for r in results:
        ledger = r.ledger
        dropped = ", ".join(f"{k}={v}" for k, v in ledger.dropped.items()) or "0"
        quarantined = ", ".join(f"{k}={v}" for k, v in ledger.quarantined.items()) or "0"
        table.add_row(r.job, "skipped" if r.skipped else "ran", str(ledger.read), str(ledger.written), dropped,
                      quarantined, f"{r.seconds:.1f}")
    return table


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--stage", default=None, help="train this stage only (it starts from the end of the previous stage)")
@click.option("--all", "all_stages", is_flag=True, help="train every stage in order, resuming where it stopped")
@click.option("--dry-run", is_flag=True, help="print the step plan per phase and exit")
@click.option("--max-steps", type=int, default=None,
              help="stop after this many steps in all (checkpointed: a rerun continues)")
@click.option("--plot", metavar="PNG", default=None, help="draw the run's loss and lr curves to PNG and exit")
@click.option("--log-interval", type=float, default=30.0, show_default=True, metavar="SECONDS",
              help="without a terminal (a log file, a pod), one progress line per this many seconds")
@click.option("--peak-tflops", type=float, default=None,
              help="the GPU's peak for MFU (default: its dense bf16 data-sheet figure, by exact name)")
def train(config: str, stage: str | None, all_stages: bool, dry_run: bool, max_steps: int | None,
          plot: str | None, log_interval: float, peak_tflops: float | None) -> None:
    """Train the model on the build's shards, stage by stage (as `python -m model.train`; under torchrun
    use that)."""
    if stage and all_stages:
        raise click.UsageError("--stage and --all exclude each other")
    from model.train import train_command

    train_command(config, stage=stage, all_stages=all_stages, dry_run=dry_run, max_steps=max_steps, plot=plot,
                  log_interval_s=log_interval, peak_tflops=peak_tflops)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--generate", "prompt", default=None, help="then load DST with transformers and continue PROMPT")
def export(config: str, dst: str, prompt: str | None) -> None:
    """Export the run's latest checkpoint to DST as a Hugging Face Gemma 3 text folder."""
    from model.export import export_run, generate, require_transformers
    from pipeline.config import load_build

    if prompt is not None:
        require_transformers()  # before the export, not after it
    folder = export_run(load_build(config), dst)
    console.print(f"exported to {folder} (Gemma3ForCausalLM, model_type gemma3_text)")
    if prompt is not None:
        console.print(f"transformers, greedy: {prompt!r} -> {generate(folder, prompt)!r}")


main.add_command(model_group)
main.add_command(convert_group)
main.add_command(traces_group)
main.add_command(dedup_group)
main.add_command(grade_group)
main.add_command(tokenizer_group)
main.add_command(shards_group)
main.add_command(report_command)


if __name__ == "__main__":
    main()
