"""The tokenize job's report.json: bytes per token by domain, the sample's make-up, the special ids."""

from __future__ import annotations

from dataclasses import dataclass

NO_DOMAIN = "none"
"""Domain label of documents that carry none."""


@dataclass(frozen=True)
class DomainCount:
    domain: str
    documents: int
    bytes: int
    tokens: int


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
