"""The rounds' names, their ledger reasons, and how a cluster's survivor is chosen."""

from __future__ import annotations

from dataclasses import dataclass

EXACT = "exact"
NEAR = "near"
BOILERPLATE = "boilerplate"
DECONTAMINATE = "decontaminate"
ROUNDS = (EXACT, NEAR, BOILERPLATE, DECONTAMINATE)

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
BOILERPLATE_TOO_SHORT = "boilerplate_too_short"
CONTAMINATED = "contaminated"
REASONS = {EXACT: EXACT_DUPLICATE, NEAR: NEAR_DUPLICATE, BOILERPLATE: BOILERPLATE_TOO_SHORT,
           DECONTAMINATE: CONTAMINATED}
"""The ledger reason of a document each round drops."""


@dataclass(frozen=True)
class SortKey:
    column: str
    descending: bool


def survivor_order(rule: str) -> tuple[SortKey, ...]:
    """The ordering whose first member survives: every rule ends with the id, so ties cannot exist.

    Columns: `quality` (double, null when the input has no signal: nulls sort last), `centrality` (summed
    signature agreement with the rest of the cluster; equal for exact copies), `length` (characters).
    """
    by_id = SortKey("id", False)
    if rule == "best":
        return SortKey("quality", True), SortKey("centrality", True), SortKey("length", True), by_id
    if rule == "central":
        return SortKey("centrality", True), SortKey("length", True), by_id
    if rule == "longest":
        return SortKey("length", True), by_id
    if rule == "smallest_id":
        return (by_id,)
    raise ValueError(f"unknown survivor rule {rule!r}: use best, central, longest or smallest_id")


def pick_survivor(members: list[dict], rule: str) -> str:
    """The id `survivor_order(rule)` keeps among `members` (dicts with id, length, quality, centrality;
    a missing key counts as a missing signal)."""

    def key(member: dict):
        parts = []
        for sort in survivor_order(rule):
            value = member.get(sort.column)
            if sort.column == "id":
                parts.append((0, value))
            elif value is None:
                parts.append((1, 0.0))  # missing signals sort after every present one
            else:
                parts.append((0, -value if sort.descending else value))
        return parts

    return min(members, key=key)["id"]


def size_bucket(size: int) -> str:
    """Histogram bucket of a cluster size: 2, 3-4, 5-8, 9-16 ... (powers of two)."""
    if size <= 2:
        return str(size)
    upper = 1 << (size - 1).bit_length()
    return f"{upper // 2 + 1}-{upper}"


def size_histogram(sizes: dict[int, int]) -> dict[str, int]:
    """{cluster size: number of clusters} folded into `size_bucket`s, smallest first."""
    out: dict[str, int] = {}
    for size in sorted(sizes):
        bucket = size_bucket(size)
        out[bucket] = out.get(bucket, 0) + sizes[size]
    return out
