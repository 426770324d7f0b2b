"""The tokenize job's report.json: bytes per token by domain, the sample's make-up, the special ids."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tokenizer.sample import is_heldout, sample_key

NO_DOMAIN = "none"
"""Domain label of documents that carry none."""

TALLY_SCHEMA = pa.schema([
    pa.field("source", pa.string()), pa.field("domain", pa.string()), pa.field("heldout", pa.bool_()),
    pa.field("documents", pa.int64()), pa.field("bytes", pa.int64()), pa.field("tokens", pa.int64()),
])
"""What the ledger and the report need of a tokenized table: sums per (source, domain, held out)."""


@dataclass(frozen=True)
class DomainCount:
    domain: str
    documents: int
    bytes: int
    tokens: int


def tally(batch: pa.RecordBatch | pa.Table, seed: int, heldout_fraction: float) -> pa.Table:
    """TALLY_SCHEMA rows of tokenized documents (`id`, `source`, `domain`, `text`, `num_tokens`)."""
    heldout = [is_heldout(sample_key(i, seed), heldout_fraction) for i in batch.column("id").to_pylist()]
    table = pa.table({
        "source": batch.column("source"), "domain": pc.fill_null(batch.column("domain"), NO_DOMAIN),
        "heldout": pa.array(heldout, pa.bool_()), "bytes": pc.binary_length(batch.column("text")),
        "tokens": batch.column("num_tokens"),
    })
    sums = table.group_by(["source", "domain", "heldout"], use_threads=False).aggregate(
        [("bytes", "count"), ("bytes", "sum"), ("tokens", "sum")])
    return pa.table([sums["source"], sums["domain"], sums["heldout"], sums["bytes_count"],
                     pc.cast(sums["bytes_sum"], pa.int64()), pc.cast(sums["tokens_sum"], pa.int64())],
                    schema=TALLY_SCHEMA)


def merge_tallies(rows: list[dict]) -> list[dict]:
    """TALLY_SCHEMA rows (as dicts) summed per (source, domain, heldout), sorted."""
    sums: dict[tuple, list[int]] = {}
    for r in rows:
        total = sums.setdefault((r["source"], r["domain"], r["heldout"]), [0, 0, 0])
        for i, name in enumerate(("documents", "bytes", "tokens")):
            total[i] += r[name] or 0
    return [{"source": s, "domain": d, "heldout": h, "documents": n, "bytes": b, "tokens": t}
            for (s, d, h), (n, b, t) in sorted(sums.items())]


def bytes_per_token(counts: list[DomainCount]) -> dict:
    """{"domains": {d: {documents, bytes, tokens, bytes_per_token}}, "all": {...}} from per-domain sums."""
    domains = {c.domain: _figures(c.documents, c.bytes, c.tokens) for c in sorted(counts, key=lambda c: c.domain)}
    total = _figures(sum(c.documents for c in counts), sum(c.bytes for c in counts), sum(c.tokens for c in counts))
    return {"domains": domains, "all": total}


def _figures(documents: int, size: int, tokens: int) -> dict:
    ratio = round(size / tokens, 4) if tokens else None
    return {"documents": documents, "bytes": size, "tokens": tokens, "bytes_per_token": ratio}


def report_rows(report: dict, part: str = "heldout") -> list[tuple[str, int, int, int, float | None]]:
    """(domain, documents, bytes, tokens, bytes/token) rows of one part of a report, `all` last."""
    section = report[part]
    rows = [(d, f["documents"], f["bytes"], f["tokens"], f["bytes_per_token"]) for d, f in section["domains"].items()]
    a = section["all"]
    return rows + [("all", a["documents"], a["bytes"], a["tokens"], a["bytes_per_token"])]
