"""From unit rows to trace rows: what each Spark task of the traces job does, engine-free.

Unit rows (UNIT_SCHEMA) carry a serialised Unit, or the reason a record is not one. Trace rows
(TRACE_SCHEMA) are documents (DOCUMENT_SCHEMA) plus `status` (`ok`, a sandbox status or a drop reason),
`origin` (the ledger source), `detail`, `sandbox_mode`, `seconds` and the unit's SFT examples. Only `ok` rows
become documents; every row becomes a line of the status table (STATUS_SCHEMA).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import fsspec
import pyarrow as pa

from pipeline.documents import DOCUMENT_SCHEMA
from pipeline.traces.config import TracesConfig
from pipeline.traces.format import RenderedRun, SourceLines, render_document, render_run
from pipeline.traces.sandbox import Sandbox, SandboxResult
from pipeline.traces.sft import SftExample, question, rng_for, spot_error
from pipeline.traces.units import Unit, UnitError, doctest_units, script_unit, units_from_jsonl

SOURCE = "traces"
"""The `source` column of every trace document."""
INVALID_UNIT, DUPLICATE_ID, TOO_LARGE = "invalid_unit", "duplicate_id", "too_large"

UNIT_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("origin", pa.string(), nullable=False),
    pa.field("uri", pa.string()),
    pa.field("unit", pa.string()),
    pa.field("invalid", pa.string()),
])
SFT_TYPE = pa.list_(pa.struct([("kind", pa.string()), ("prompt", pa.string()), ("response", pa.string())]))
TRACE_SCHEMA = pa.schema(list(DOCUMENT_SCHEMA) + [
    pa.field("status", pa.string(), nullable=False),
    pa.field("origin", pa.string(), nullable=False),
    pa.field("detail", pa.string()),
    pa.field("sandbox_mode", pa.string()),
    pa.field("seconds", pa.float64()),
    pa.field("sft", SFT_TYPE),
])
STATUS_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("origin", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("sandbox_mode", pa.string()),
    pa.field("seconds", pa.float64()),
])
"""The per-unit status table (`OUTPUT/traces/status/`): every unit's outcome, written or dropped. `reason` says
why for anything but `ok`; `sandbox_mode` and `seconds` (wall clock in the sandbox) are null for units
dropped before they ran (`invalid_unit`, `duplicate_id`, `too_large`)."""
SFT_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("trace_id", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("prompt", pa.string(), nullable=False),
    pa.field("response", pa.string(), nullable=False),
])


# ------------------------------------------------------------------------------------------------ units in

def unit_rows_from_file(uri: str, origin: str, name: str) -> list[dict]:
    """A JSONL units file (origin `units`) or a script (origin `scripts`) as unit rows."""
    with fsspec.open(uri, "rb", compression="infer") as f:
        text = f.read().decode("utf-8", "replace")
    if origin == "scripts":
        return [_unit_row(script_unit(text, uri, name))]
    rows = []
    for item in units_from_jsonl(text, uri):
        if isinstance(item, UnitError):
            rows.append({"id": f"invalid/{uri}#{len(rows)}", "origin": "units", "uri": uri, "unit": None,
                         "invalid": item.reason})
        else:
            rows.append(_unit_row(item))
    return rows


def unit_rows_from_documents(batch: pa.RecordBatch, cfg: TracesConfig) -> list[dict]:
    """Doctest units of a batch of Python documents (DOCUMENT_SCHEMA)."""
    rows = []
    columns = {name: batch.column(name).to_pylist() for name in ("id", "text", "uri", "repo", "meta")}
    for i, doc_id in enumerate(columns["id"]):
        meta = dict(columns["meta"][i] or [])
        units = doctest_units(doc_id, columns["text"][i], columns["uri"][i], columns["repo"][i],
                              meta.get("license"), meta.get("path"), cfg.max_doctests_per_document,
                              cfg.max_examples_per_doctest)
        rows.extend(_unit_row(unit) for unit in units)
    return rows


def _unit_row(unit: Unit) -> dict:
    return {"id": unit.id, "origin": unit.origin, "uri": unit.uri, "unit": unit.to_json(), "invalid": None}


def list_files(uris: tuple[str, ...], suffixes: tuple[str, ...]) -> list[tuple[str, str]]:
    """(uri, name) of every file a list of files, folders or globs names; name is relative to its root."""
    found = []
    for uri in uris:
        fs, path = fsspec.core.url_to_fs(uri)
        if fs.isdir(path):
            root, paths = path, [p for p in fs.find(path) if p.endswith(suffixes)]
        elif any(c in path for c in "*?["):
            root, paths = posixpath.dirname(path.split("*")[0].split("?")[0].split("[")[0]), fs.glob(path)
        else:
            if not fs.exists(path):
                raise FileNotFoundError(f"[traces] names {uri}, which does not exist")
            root, paths = posixpath.dirname(path), [path]
        for p in sorted(paths):
            found.append((fs.unstrip_protocol(p), posixpath.relpath(p, root)))
    return found


# ------------------------------------------------------------------------------------------------ traces out

@dataclass(frozen=True)
class Traced:
    unit: Unit
    result: SandboxResult


def trace_rows(rows: list[dict], cfg: TracesConfig, sandbox: Sandbox) -> list[dict]:
    """Run the units of some unit rows (cfg.workers at a time) and render one trace row per row."""
    out: list[dict | None] = [None] * len(rows)
    runnable = []
    for i, row in enumerate(rows):
        if row["invalid"]:
            out[i] = _dropped(row, row["invalid"], None)
            continue
        unit = Unit.from_json(row["unit"])
        if len(unit.shown_source().encode("utf-8")) > cfg.max_source_bytes:
            out[i] = _dropped(row, TOO_LARGE, f"source over {cfg.max_source_bytes} bytes")
            continue
        runnable.append((i, unit))
    results = sandbox.run_many([unit.request() for _, unit in runnable])
    for (i, unit), result in zip(runnable, results):
        layers = {"sandbox": "+".join(sandbox.layers), "sandbox_mode": sandbox.mode}
        if result.status != "ok":
            out[i] = _dropped(rows[i], result.status, result.detail, layers)
        else:
            try:
                out[i] = trace_row(Traced(unit, result), cfg, sandbox.layers, sandbox.mode)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
                # Only a unit that forged its own result gets here: the runner's results always render.
                out[i] = _dropped(rows[i], "error", f"malformed result: {type(err).__name__}", layers)
        out[i].update(sandbox_mode=sandbox.mode, seconds=round(result.seconds, 4))
    return out


def trace_row(traced: Traced, cfg: TracesConfig, layers: tuple[str, ...], mode: str) -> dict:
    """The document and SFT examples of a unit that ran to the end."""
    unit, result = traced.unit, traced.result
    lines = SourceLines(unit.code, unit.examples)
    runs = [render_run(run, lines) for run in result.runs]
    source = unit.shown_source()
    text, truncated = render_document(source, runs, cfg.max_trace_bytes)
    meta = {
        "unit_id": unit.id, "unit_kind": unit.kind, "calls": str(len(runs)),
        "steps": str(sum(1 for run in runs for s in run.steps if s.kind == "line")),
        "truncated": "true" if truncated or result.truncated else "false", "sandbox": "+".join(layers),
        "sandbox_mode": mode,
    }
    if unit.license:
        meta["license"] = unit.license
    if result.tests:
        meta["tests"] = result.tests
    if unit.kind == "doctest":
        meta["doctest_matches"] = f"{_doctest_matches(unit, result.runs)}/{len(unit.examples)}"
    return {"id": f"trace/{unit.id}", "text": text, "source": SOURCE, "domain": "trace", "uri": unit.uri,
            "repo": unit.repo, "lang": "python", "meta": meta, "status": "ok", "origin": unit.origin,
            "detail": None, "sandbox_mode": mode, "seconds": None, "sft": [e.__dict__ for e in sft_examples(unit, source, runs, cfg)]}


def sft_examples(unit: Unit, source: str, runs: list[RenderedRun], cfg: TracesConfig) -> list[SftExample]:
    examples = []
    if cfg.sft_question:
        examples.append(question(unit.kind, source, runs, rng_for(cfg.seed, unit.id, "question")))
    if cfg.sft_spot_error:
        examples.append(spot_error(source, runs, rng_for(cfg.seed, unit.id, "spot_error")))
    return [e for e in examples if e is not None]


def _doctest_matches(unit: Unit, runs: list[dict]) -> int:
    """Examples whose displayed output is what the docstring expects (whitespace-insensitive)."""
    matches = 0
    for (_source, want), run in zip(unit.examples, runs):
        if "raises" in run["result"]:
            last = want.strip().splitlines()[-1] if want.strip() else ""
            matches += want.startswith("Traceback") and last.startswith(run["result"]["raises"].split(":")[0])
        else:
            matches += run.get("output", "").split() == want.split()
    return matches


def _dropped(row: dict, status: str, detail: str | None, meta: dict | None = None) -> dict:
    return {"id": f"trace/{row['id']}", "text": "", "source": SOURCE, "domain": "trace", "uri": row["uri"],
            "repo": None, "lang": "python", "meta": meta or {}, "status": status, "origin": row["origin"],
            "detail": detail, "sandbox_mode": None, "seconds": None, "sft": []}


def trace_table(rows: list[dict]) -> pa.Table:
    columns = {name: [row[name] for row in rows] for name in TRACE_SCHEMA.names}
    columns["meta"] = [list(row["meta"].items()) for row in rows]
    return pa.table(columns, schema=TRACE_SCHEMA)


def sft_rows(trace: dict) -> list[dict]:
    """The SFT table's rows of one trace row."""
    return [{"id": f"{trace['id']}#{e['kind']}", "trace_id": trace["id"], **e} for e in trace["sft"]]
