"""The table every inspection part returns: a title, column names, rows of plain values, and notes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import polars as pl


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list]
    """Plain values (str, int, float, None); renderers format them."""
    notes: list[str] = field(default_factory=list)
    """Lines printed under the table (what a column means, what was left out)."""

    @staticmethod
    def from_frame(title: str, frame: pl.DataFrame, notes: list[str] | None = None) -> Table:
        return Table(title, list(frame.columns), [list(r) for r in frame.iter_rows()], notes or [])

    def to_records(self) -> list[dict]:
        return [dict(zip(self.columns, row)) for row in self.rows]


def format_value(value) -> str:
    """How a cell reads in a terminal or an HTML table: thousands separators, 4 significant decimals."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value == int(value) and abs(value) >= 1000:
            return f"{int(value):,}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={format_value(v)}" for k, v in value.items()) or "-"
    return str(value)


def human_bytes(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
