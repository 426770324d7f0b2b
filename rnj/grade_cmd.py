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


def _print_table(console, title: str, table: dict) -> None:
    from rich.table import Table

    columns = list(dict.fromkeys(column for row in table.values() for column in row))
    out = Table(title=title, title_justify="left")
    out.add_column("set")
    for column in columns:
        out.add_column(column, justify="right")
    for name, row in table.items():
        out.add_row(name, *(f"{row[c]:.3f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns))
    console.print(out)


@grade_group.command()
@click.argument("labels", nargs=-1, required=True)
@click.option("--out", "out", required=True, help="folder to write the model to (model.json, weights.npz)")
@click.option("--eval", "eval_paths", multiple=True, help="labels file held out from fitting, to report on")
@click.option("--domain", default=None, help="domain of lines that name none")
@click.option("--name", default="difficulty", show_default=True, help="the model's name")
@click.option("--version", "version", default="1", show_default=True, help="the model's version")
@click.option("--alpha", default=10.0, show_default=True, help="ridge penalty")
@click.option("--folds", default=5, show_default=True, help="cross-validation folds")
@click.option("--tiers", default=5, show_default=True, help="tiers (fixed cut-offs stored with the model)")
@click.option("--buckets", default=2 ** 18, show_default=True, help="hashed n-gram columns")
@click.option("--seed", default=0, show_default=True, help="seed of the fold split")
def fit(labels: tuple[str, ...], out: str, eval_paths: tuple[str, ...], domain: str | None, name: str, version: str,
        alpha: float, folds: int, tiers: int, buckets: int, seed: int) -> None:
    """Fit a difficulty model from LABELS (JSONL: text, level, domain?, source?) and save it to --out."""
    from pipeline.grading.fit import FitSettings, evaluate, fit_model, load_labels

    console = Console(width=160)
    examples, files = load_labels(list(labels), domain)
    settings = FitSettings(buckets=buckets, alpha=alpha, folds=folds, tiers=tiers, seed=seed)
    model = fit_model(examples, files, settings, name=name, version=version)
    for model_domain, item in model.domains.items():
        _print_table(console, f"{model_domain}: {folds}-fold cross-validated Spearman with the labelled level",
                     item.info["cv"])
    if eval_paths:
        held, held_files = load_labels(list(eval_paths), domain)
        table = evaluate(model, held)
        model.training["evaluation"] = {"files": held_files, "spearman": table}
        _print_table(console, "held-out sets: Spearman with the true level", table)
    fingerprint = model.save(out)
    console.print(f"model {name} v{version} ({fingerprint[:12]}) written to {out}; "
                  f'use it with [grade.difficulty] model = "{out}"')


@grade_group.command()
@click.argument("input_uri", metavar="INPUT")
@click.option("--endpoint", required=True, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
@click.option("--model", "teacher", required=True, help="the teacher model's name on that server")
@click.option("--out", "out", required=True, help="labels file to write (JSONL for `rnj grade fit`)")
@click.option("--cache", default=None, help="answer cache (JSONL; default: OUT with .cache.jsonl)")
@click.option("--per-domain", default=200, show_default=True, help="documents sampled from each domain")
@click.option("--concurrency", default=8, show_default=True, help="requests in flight")
@click.option("--max-requests", default=1000, show_default=True, help="request budget of this run (retries count)")
@click.option("--retries", default=5, show_default=True, help="retries after a 429, 5xx or timeout")
@click.option("--api-key-env", default=None, help="environment variable holding a bearer token")
@click.option("--seed", default=0, show_default=True, help="seed of the sample")
def annotate(input_uri: str, endpoint: str, teacher: str, out: str, cache: str | None, per_domain: int,
             concurrency: int, max_requests: int, retries: int, api_key_env: str | None, seed: int) -> None:
    """Label a stratified sample of INPUT (a documents Parquet folder or a JSONL file) with a teacher model."""
    import os

    from pipeline.grading.annotate import AnnotateSettings, read_documents
    from pipeline.grading.annotate import annotate as run_annotate

    settings = AnnotateSettings(endpoint=endpoint, model=teacher, per_domain=per_domain, concurrency=concurrency,
                                max_requests=max_requests, retries=retries, seed=seed,
                                api_key=os.environ.get(api_key_env) if api_key_env else None)
    cache = cache or (out.removesuffix(".jsonl")) + ".cache.jsonl"
    stats = run_annotate(read_documents(input_uri), settings, out, cache)
    click.echo(f"sampled {stats.sampled}: {stats.cached} from the cache, {stats.labelled} labelled now, "
               f"{stats.failed} failed, {stats.unanswered} left for a later run (budget); "
               f"{stats.requests} requests; errors {stats.errors or 'none'}")
    click.echo(f"labels in {out}; fit with: rnj grade fit {out} --out MODEL_DIR")
