"""`rnj shards ...`: look into built phases on any fsspec URI (local, gs://, s3://, memory://).

    rnj shards ls URI                       stages, phases and their shards (sizes, sequences, tokens)
    rnj shards stats URI [--json] [--plot FILE.png]   mixture vs target, padding, lengths, pieces, tiers
    rnj shards show URI --seq N [--ids]     one sequence decoded, documents and loss spans marked
    rnj shards show URI --doc ID            the sequences that hold a document
    rnj shards verify URI                   every problem, one line each; exit 1 if there is any
    rnj shards diff A B                     two builds' or phases' manifests side by side

URI: a build output (OUTPUT), OUTPUT/build, a stage, a phase, or one shard file. docs/inspect.md has examples.
The logic lives in pipeline/inspect/; this module parses arguments and draws.
"""

from __future__ import annotations

import json
import sys

import click
import fsspec
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from pipeline.errors import UserError
from pipeline.inspect.tables import Table, format_value, human_bytes

PIECE_COLOURS = ["cyan", "magenta", "yellow", "green", "blue", "red"]


def console() -> Console:
    """stdout; colours only on a terminal (rich also honours NO_COLOR); wide tables when piped."""
    return Console(soft_wrap=False, width=None if sys.stdout.isatty() else 160)


def progress(iterable, total: int | None = None, desc: str = ""):
    """A progress bar on stderr when it is a terminal; otherwise the items as they are (quiet when piped)."""
    if not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False, unit="shard")


def note(message: str) -> None:
    click.echo(message, err=True)


def resolve(uri: str):
    from pipeline.inspect import resolve_target
    from pipeline.shards import ShardError

    try:
        return resolve_target(uri)
    except ShardError as err:
        raise UserError(str(err)) from err


def open_checked(phase_uri: str, split: str):
    """The phase opened with the reader's metadata checks (sizes, schema; not the hashes: `verify` does)."""
    from pipeline.shards import ShardError, open_phase

    try:
        return open_phase(phase_uri, split=split, verify="metadata")
    except ShardError as err:
        raise UserError(f"{err}\n(run `rnj shards verify {phase_uri}` to list every problem)") from err


def rich_table(table: Table) -> RichTable:
    out = RichTable()
    for i, column in enumerate(table.columns):
        numeric = any(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in table.rows)
        out.add_column(column, justify="right" if numeric else "left")
    for row in table.rows:
        out.add_row(*[format_value(v) for v in row])
    return out


def print_table(out: Console, table: Table) -> None:
    """Title line, the table, then its notes (titles and notes never wrap to the table's width)."""
    out.print(Text(table.title, style="bold" if out.is_terminal else ""))
    out.print(rich_table(table))
    for line in table.notes:
        out.print(Text(line, style="dim" if out.is_terminal else ""))


@click.group("shards")
def shards_group() -> None:
    """Inspect built shards: list, statistics, one sequence decoded, verify, diff."""


# --- ls ---------------------------------------------------------------------------------------------------

@shards_group.command("ls")
@click.argument("uri")
def ls(uri: str) -> None:
    """The phases under URI and their shards: sizes, sequences and tokens (from the manifests and the
    storage listing; nothing is downloaded)."""
    from pipeline.shards import ShardError, read_manifest, unlisted_shards

    target = resolve(uri)
    out = console()
    for phase_uri in target.phases:
        try:
            manifest = read_manifest(phase_uri)
        except ShardError as err:
            out.print(f"[red]{err}[/red]")
            continue
        fs, root = fsspec.core.url_to_fs(phase_uri)
        sizes = {info["name"].rstrip("/").rsplit("/", 1)[-1]: info.get("size") for info in fs.ls(root, detail=True)}
        seq_len, slots = manifest["seq_len"], manifest["num_tokens"]
        padding = manifest["num_padding_tokens"]
        header = (f"{manifest['stage']}/{manifest['phase']} ({manifest.get('kind', '?')}) {phase_uri}\n"
                  f"  {manifest['num_sequences']:,} sequences x {seq_len:,} = {slots:,} token slots, "
                  f"{100 * padding / slots if slots else 0:.2f}% padding; vocab {manifest['vocab_size']:,}, "
                  f"tokenizer {manifest['tokenizer_sha256'][:12]}..., build {manifest['build_hash'][:12]}...")
        out.print(Text(header))
        rows = []
        entries = [("train", e) for e in manifest["shards"]]
        entries += [("eval", e) for e in manifest.get("eval", {}).get("shards", [])]
        for split, e in entries:
            if target.shard and e["path"] != target.shard:
                continue
            on_disk = sizes.get(e["path"])
            state = "MISSING" if on_disk is None else ("ok" if on_disk == e.get("bytes") else
                                                       f"size {on_disk:,} differs")
            rows.append([e["path"], split, e["num_sequences"], e["num_sequences"] * seq_len,
                         human_bytes(e.get("bytes")), e["sha256"][:12], state])
        if not target.shard:
            rows += [[n, "-", None, None, human_bytes(sizes.get(n)), None, "NOT IN MANIFEST"]
                     for n in unlisted_shards(phase_uri, manifest)]
        print_table(out, Table("shards", ["file", "split", "sequences", "token slots", "bytes", "sha256",
                                          "on storage"], rows))


# --- stats ------------------------------------------------------------------------------------------------

@shards_group.command("stats")
@click.argument("uri")
@click.option("--split", type=click.Choice(["train", "eval"]), default="train", show_default=True,
              help="which sequences (a shard URI picks its own)")
@click.option("--json", "as_json", is_flag=True, help="print the tables as JSON (for machines)")
@click.option("--plot", "plot_uri", default=None, help="draw the mixture and the histograms to this PNG")
def stats(uri: str, split: str, as_json: bool, plot_uri: str | None) -> None:
    """Mixture achieved vs target (domain x tier x source), padding, document lengths, pieces per sequence
    and tokens per tier, measured from the shards."""
    from pipeline.inspect.scan import scan_phase
    from pipeline.inspect.stats import phase_stats, to_json

    target = resolve(uri)
    results = []
    for phase_uri in target.phases:
        if target.shard:
            from pipeline.shards import read_manifest

            split = target.split_of(read_manifest(phase_uri))
        scan = scan_phase(open_checked(phase_uri, split), shard=target.shard, progress=progress)
        results.append((scan, phase_stats(scan)))
    if as_json:
        click.echo(json.dumps({"uri": uri, "phases": [to_json(s, t) for s, t in results]}, indent=2))
    else:
        out = console()
        for _, tables in results:
            for table in tables.values():
                print_table(out, table)
    if plot_uri:
        from pipeline.inspect.plots import stats_figure

        png = stats_figure([(s.name, t) for s, t in results])
        with fsspec.open(plot_uri, "wb") as f:
            f.write(png)
        note(f"plot written to {plot_uri}")


# --- show -------------------------------------------------------------------------------------------------

def _tokenizer(target, manifest: dict, tokenizer_uri: str | None):
    from pipeline.inspect.target import tokenizer_folder
    from tokenizer import load_tokenizer

    folder = tokenizer_uri or tokenizer_folder(target)
    if folder is None:
        raise UserError(
            f"no tokenizer found for {target.uri}: expected OUTPUT/tokenize/tokenizer/tokenizer.json beside "
            "OUTPUT/build; pass --tokenizer URI (a tokenizer.json or its folder), or --ids for raw token ids")
    try:
        tok = load_tokenizer(folder)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the tokenizer at {folder}: {err}") from err
    if tok.sha256 != manifest.get("tokenizer_sha256"):
        note(f"warning: {folder} has sha256 {tok.sha256[:12]}..., the shards were built with "
             f"{str(manifest.get('tokenizer_sha256'))[:12]}...: the text below may be decoded wrongly")
    return tok


def _runs(mask, start: int, end: int) -> list[tuple[int, int, bool]]:
    """[start, end) cut into runs of equal loss mask: (from, to, counts)."""
    if mask is None:
        return [(start, end, False)]
    runs, at = [], start
    while at < end:
        value = bool(mask[at])
        stop = at
        while stop < end and bool(mask[stop]) == value:
            stop += 1
        runs.append((at, stop, value))
        at = stop
    return runs


@shards_group.command("show")
@click.argument("uri")
@click.option("--seq", "index", type=int, default=None, help="global index of the sequence in its split")
@click.option("--split", type=click.Choice(["train", "eval"]), default="train", show_default=True)
@click.option("--ids", is_flag=True, help="raw token ids instead of decoded text")
@click.option("--doc", "doc_id", default=None, help="list the sequences that hold this document id")
@click.option("--tokenizer", "tokenizer_uri", default=None,
              help="tokenizer.json or its folder (default: OUTPUT/tokenize/tokenizer of the build)")
@click.option("--plain", is_flag=True, help="no colours, markers as text (the default when piped)")
def show(uri: str, index: int | None, split: str, ids: bool, doc_id: str | None, tokenizer_uri: str | None,
         plain: bool) -> None:
    """One sequence decoded with the build's tokenizer: document boundaries, each document's source, domain
    and tier, and (SFT) the loss-masked spans marked; or, with --doc, where a document is."""
    target = resolve(uri)
    if len(target.phases) != 1:
        names = ", ".join(p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for p in target.phases)
        raise click.UsageError(f"show reads one phase; {uri} holds {len(target.phases)}: {names}")
    if doc_id is None and index is None:
        raise click.UsageError("give --seq N (a sequence to show) or --doc ID (a document to find)")
    phase_uri = target.phases[0]
    if target.shard:
        from pipeline.shards import read_manifest

        split = target.split_of(read_manifest(phase_uri))
    out = console()
    colour = out.is_terminal and not plain
    if doc_id is not None:
        _find_document(out, phase_uri, doc_id)
        if index is None:
            return
    phase = open_checked(phase_uri, split)
    try:
        seq = phase.sequence(index)
    except IndexError as err:
        raise UserError(f"{err} ({split} split of {phase_uri})") from err
    manifest = phase.manifest
    row = phase.row(index)
    shard, r = phase.locate(index)
    tok = None if ids else _tokenizer(target, manifest, tokenizer_uri)
    from pipeline.inspect.scan import labels

    sources = labels(manifest, "sources", max(row["doc_source"], default=0) + 1)
    domains = labels(manifest, "domains", max(row["doc_domain"], default=0) + 1)
    tokens, offsets, mask = seq.tokens, seq.doc_offsets, seq.loss_mask
    bos = (manifest.get("special_tokens") or {}).get("bos")
    pieces = len(offsets) - 1
    out.print(Text(f"{manifest['stage']}/{manifest['phase']} {split} sequence {index} of {len(phase)} "
                   f"({shard} row {r}): {seq.num_tokens} tokens in {pieces} pieces, "
                   f"{len(tokens) - seq.num_tokens} padding" + (", loss mask on" if mask is not None else "")))
    for k in range(pieces):
        start, end = int(offsets[k]), int(offsets[k + 1])
        begins = bos is not None and int(tokens[start]) == bos
        style = PIECE_COLOURS[k % len(PIECE_COLOURS)]
        header = (f"--- piece {k + 1}/{pieces}: doc {row['doc_ids'][k]} | source {sources[row['doc_source'][k]]} | "
                  f"domain {domains[row['doc_domain'][k]]} | tier {row['doc_tier'][k]} | tokens {start}-{end} "
                  f"({end - start}) | {'starts the document' if begins else 'continues a cut document'}")
        out.print(Text(header, style=f"bold {style}" if colour else ""))
        body = Text()
        for a, b, counts in _runs(mask, start, end):
            piece = tokens[a:b].tolist()
            text = " ".join(map(str, piece)) + " " if ids else tok.decode(piece)
            if colour:
                body.append(text, style=f"{style} underline bold" if counts else (f"{style} dim" if mask is not None
                                                                                  else style))
            else:
                body.append(f"<loss>{text}</loss>" if counts else text)
        out.print(body)
    padding = len(tokens) - seq.num_tokens
    if padding:
        pad = (manifest.get("special_tokens") or {}).get("pad")
        out.print(Text(f"--- padding: {padding} tokens (pad id {pad})", style="dim" if colour else ""))
    if mask is not None:
        out.print(Text("(loss counts on " + ("underlined" if colour else "<loss>...</loss>") + " tokens: "
                       f"{int(mask.sum())} of {seq.num_tokens})", style="dim" if colour else ""))


def _find_document(out: Console, phase_uri: str, doc_id: str) -> None:
    import polars as pl

    from pipeline.inspect.scan import scan_phase

    rows = []
    for split in ("train", "eval"):
        phase = open_checked(phase_uri, split)
        if not len(phase):
            continue
        pieces = scan_phase(phase, progress=progress).pieces.filter(pl.col("doc_id") == doc_id)
        rows += [[split, *r] for r in pieces.select("seq", "shard", "piece", "start", "length", "starts_document",
                                                     "loss_tokens").iter_rows()]
    if not rows:
        raise UserError(f"document {doc_id!r} is in no sequence of {phase_uri} (train or eval)")
    print_table(out, Table(f"pieces of {doc_id}", ["split", "seq", "shard", "piece", "start", "length",
                                                   "starts document", "loss tokens"], rows,
                           [f"show one: rnj shards show {phase_uri} --seq N [--split eval]"]))


# --- verify -----------------------------------------------------------------------------------------------

@shards_group.command("verify")
@click.argument("uri")
@click.option("--limit", default=10, show_default=True,
              help="sequences named per shard and kind of problem (0: all)")
def verify(uri: str, limit: int) -> None:
    """Check every shard against its manifest: sha256, size and schema; token ids below the vocabulary
    size; document offsets monotone and inside the row; labels and loss masks; totals. One line per
    problem (shard, sequence, what is wrong); exit status 1 when there is any."""
    from pipeline.inspect.verify import verify_phase
    from pipeline.shards import read_manifest

    target = resolve(uri)
    problems, sequences, shards = [], 0, 0
    for phase_uri in target.phases:
        found = verify_phase(phase_uri, limit=limit, progress=progress, shard=target.shard)
        for p in found:
            click.echo(p.line())
        problems += found
        if not found:
            manifest = read_manifest(phase_uri)
            entries = [e for e in manifest["shards"] + manifest.get("eval", {}).get("shards", [])
                       if not target.shard or e["path"] == target.shard]
            shards += len(entries)
            sequences += sum(e["num_sequences"] for e in entries)
    if problems:
        note(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {uri}")
        sys.exit(1)
    note(f"ok: {len(target.phases)} phase{'s' if len(target.phases) != 1 else ''}, {shards} shards, "
         f"{sequences:,} sequences hold")


# --- diff -------------------------------------------------------------------------------------------------

def _manifests(uri: str) -> dict[str, dict]:
    from pipeline.shards import ShardError, read_manifest

    found = {}
    for phase_uri in resolve(uri).phases:
        try:
            m = read_manifest(phase_uri)
        except ShardError as err:
            raise UserError(str(err)) from err
        found[f"{m['stage']}/{m['phase']}"] = m
    return found


@shards_group.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="print the tables as JSON")
def diff(a: str, b: str, as_json: bool) -> None:
    """Two builds' (or phases') manifests side by side: mixture shift, token counts, tokenizer and seq_len."""
    from pipeline.inspect.diff import diff_builds

    tables, headlines = diff_builds(_manifests(a), _manifests(b))
    if as_json:
        click.echo(json.dumps({"a": a, "b": b, "changes": headlines,
                               "tables": [{"title": t.title, "rows": t.to_records()} for t in tables]}, indent=2))
        return
    out = console()
    out.print(Text(f"A = {a}\nB = {b}"))
    for line in headlines or ["no changes in settings, mixture or phases"]:
        out.print(Text(line, style="bold" if out.is_terminal else ""))
    for table in tables:
        print_table(out, table)
