"""`rnj tokenizer ...`: the build's tokenizer report, its special ids, and how it encodes a text.

TARGET is a build file (its committed tokenize output is used), the tokenize output folder, or (for
`encode` and `specials`) a tokenizer.json or a folder holding one.
"""

from __future__ import annotations

import json
import os
import sys

import click
from rich.console import Console
from rich.table import Table

from pipeline.errors import UserError

console = Console()


@click.group("tokenizer")
def tokenizer_group() -> None:
    """The tokenizer: bytes per token by domain, special ids, encoding a text."""


def _tokenize_output(target: str) -> str:
    """The tokenize job's output folder named by TARGET (a build file or that folder)."""
    if target.endswith(".toml"):
        from pipeline.commit import JobOutput
        from pipeline.config import load_build

        cfg = load_build(target)
        output = JobOutput(cfg.build.output, "tokenize")
        if output.committed_hash() is None:
            raise UserError(f"the tokenize job of {target} is not committed: run "
                                       f"`rnj run {target} --until tokenize` first")
        return output.child()
    return target


def _load(target: str):
    from pipeline.config import TokenizerConfig, load_build
    from tokenizer import load_committed_tokenizer, load_tokenizer

    try:
        if target.endswith(".toml"):
            _tokenize_output(target)
            return load_committed_tokenizer(load_build(target))
        if os.path.isdir(target) and os.path.isdir(os.path.join(target, "tokenizer")):
            target = os.path.join(target, "tokenizer")
        return load_tokenizer(target, TokenizerConfig())
    except (OSError, ValueError) as err:
        raise UserError(str(err)) from err


@tokenizer_group.command("report")
@click.argument("target")
@click.option("--all-documents", is_flag=True, help="bytes/token over every document, not the held-out ones")
@click.option("--json", "as_json", is_flag=True, help="print report.json as it is")
def report(target: str, all_documents: bool, as_json: bool) -> None:
    """Bytes per token by domain, the training sample's make-up and the special ids."""
    from tokenizer.report import report_rows

    folder = _tokenize_output(target)
    path = folder if folder.endswith(".json") else os.path.join(folder.removeprefix("file://"), "report.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as err:
        raise UserError(f"cannot read {path}: {err}") from err
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    info = data["tokenizer"]
    console.print(f"tokenizer {info['source']} sha256 {info['sha256'][:16]}..., {info['vocab_size']} ids "
                  f"(bos {info['bos_id']}, eos {info['eos_id']}, pad {info['pad_id']})")
    part = "all_documents" if all_documents else "heldout"
    title = "all documents" if all_documents else f"held-out documents ({data['heldout_fraction']:.0%})"
    table = Table(title=f"bytes/token by domain, {title}")
    for column in ("domain", "documents", "bytes", "tokens", "bytes/token"):
        table.add_column(column, justify="left" if column == "domain" else "right")
    for domain, documents, size, tokens, ratio in report_rows(data, part):
        table.add_row(domain, f"{documents:,}", f"{size:,}", f"{tokens:,}", "-" if ratio is None else f"{ratio:.3f}")
    console.print(table)
    if data.get("sample"):
        sample = Table(title=f"training sample: {data['sample']['bytes']:,} of {data['sample']['target_bytes']:,} bytes")
        for column in ("domain", "weight", "target bytes", "available", "sampled bytes", "documents"):
            sample.add_column(column, justify="left" if column == "domain" else "right")
        for domain, s in data["sample"]["domains"].items():
            sample.add_row(domain, f"{s['weight']:g}", f"{s['target_bytes']:,}", f"{s['available_bytes']:,}",
                           f"{s['bytes']:,}", f"{s['documents']:,}")
        console.print(sample)


@tokenizer_group.command("encode")
@click.argument("target")
@click.argument("text", required=False)
@click.option("--file", "file_", type=click.File("r", encoding="utf-8"), help="encode this file ('-': stdin)")
def encode(target: str, text: str | None, file_) -> None:
    """Show how TEXT (or --file) is tokenized: ids, pieces, bytes/token, and the round trip."""
    if (text is None) == (file_ is None):
        raise click.UsageError("give either TEXT or --file")
    text = text if text is not None else file_.read()
    tok = _load(target)
    ids = tok.encode(text)
    pieces = [tok.decode([i]) for i in ids]
    click.echo(f"{len(ids)} tokens, {len(text.encode('utf-8'))} bytes"
               + (f", {len(text.encode('utf-8')) / len(ids):.3f} bytes/token" if ids else ""))
    click.echo("ids: " + " ".join(map(str, ids)))
    click.echo("pieces: " + " ".join(repr(p) for p in pieces))
    exact = tok.decode(ids) == text
    click.echo("round trip: " + ("exact" if exact else "DIFFERENT (a normalising tokenizer and non-NFC text?)"))
    if not exact:
        sys.exit(1)


@tokenizer_group.command("specials")
@click.argument("target")
@click.option("--reserved", is_flag=True, help="list the reserved slots too")
def specials(target: str, reserved: bool) -> None:
    """The special tokens and their ids."""
    tok = _load(target)
    table = Table(title=f"special tokens ({tok.vocab_size} ids in all)")
    table.add_column("id", justify="right")
    table.add_column("token")
    table.add_column("role")
    roles = {tok.bos_id: "bos", tok.eos_id: "eos", tok.pad_id: "pad"}
    for name, token_id in sorted(tok.special_ids.items(), key=lambda kv: kv[1]):
        if reserved or not name.startswith("<|reserved_special_token_"):
            table.add_row(str(token_id), name, roles.get(token_id, ""))
    console.print(table)
