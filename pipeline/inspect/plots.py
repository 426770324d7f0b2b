"""matplotlib figures as PNG bytes (for `--plot` files and the HTML report). No pyplot: each figure is a
standalone `Figure`, so nothing depends on a display or a global backend."""

from __future__ import annotations

import io

import numpy as np

from pipeline.inspect.tables import Table

COLOURS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def _figure(rows: int, cols: int, width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    return fig, axes


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _grouped(ax, categories: list[str], series: dict[str, list[float]], title: str, ylabel: str) -> None:
    x = np.arange(len(categories))
    width = 0.8 / max(len(series), 1)
    for k, (label, values) in enumerate(series.items()):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, [v or 0 for v in values], width, label=label,
               color=COLOURS[k % len(COLOURS)])
    ax.set_xticks(x, categories, rotation=30 if len(categories) > 4 else 0, ha="right" if len(categories) > 4 else "center")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    if ylabel in ("documents", "sequences"):
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if len(series) > 1:
        ax.legend(fontsize=8)


def _stacked(ax, categories: list[str], stacks: dict[str, list[float]], title: str, ylabel: str) -> None:
    bottom = np.zeros(len(categories))
    for k, (label, values) in enumerate(stacks.items()):
        values = np.array([v or 0 for v in values], dtype=float)
        ax.bar(categories, values, bottom=bottom, label=label, color=COLOURS[k % len(COLOURS)])
        bottom += values
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=30 if len(categories) > 4 else 0)
    ax.legend(fontsize=8)


def grouped_bars(title: str, categories: list[str], series: dict[str, list[float]], ylabel: str,
                 size: tuple[float, float] = (8, 3.6)) -> bytes:
    fig, axes = _figure(1, 1, *size)
    _grouped(axes[0, 0], categories, series, title, ylabel)
    return _png(fig)


def stacked_bars(title: str, categories: list[str], stacks: dict[str, list[float]], ylabel: str,
                 size: tuple[float, float] = (8, 3.6)) -> bytes:
    fig, axes = _figure(1, 1, *size)
    _stacked(axes[0, 0], categories, stacks, title, ylabel)
    return _png(fig)


def mixture_panels(panels: list[tuple[str, list[str], dict[str, list[float]]]]) -> bytes:
    """One grouped-bar panel per phase: (title, buckets, {series: weights})."""
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    fig, axes = _figure(rows, cols, 4.2 * cols, 3.4 * rows)
    for ax, (title, categories, series) in zip(axes.flat, panels):
        _grouped(ax, categories, series, title, "weight")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    return _png(fig)


def stats_figure(phases: list[tuple[str, dict[str, Table]]]) -> bytes:
    """Per phase: mixture (target vs measured per bucket, or tokens per domain), document lengths, pieces per
    sequence."""
    fig, axes = _figure(len(phases), 3, 14, 3.6 * len(phases))
    for row, (name, tables) in zip(axes, phases):
        buckets = tables["buckets"]
        if buckets.rows:
            categories = [r[0] for r in buckets.rows]
            _grouped(row[0], categories, {"target": [r[1] for r in buckets.rows],
                                          "measured": [r[3] for r in buckets.rows]}, f"{name}: mixture", "weight")
        else:
            domains: dict[str, int] = {}
            for r in tables["mixture"].to_records():
                domains[r["domain"]] = domains.get(r["domain"], 0) + r["tokens"]
            _grouped(row[0], list(domains), {"tokens": list(domains.values())}, f"{name}: tokens by domain", "tokens")
        lengths = tables["document_lengths"]
        labels = [f"{r[0]}-{r[1]}" for r in lengths.rows]
        _grouped(row[1], labels, {"documents": [r[2] for r in lengths.rows]}, f"{name}: document length (tokens)",
                 "documents")
        pieces = tables["pieces_per_sequence"]
        _grouped(row[2], [str(r[0]) for r in pieces.rows], {"sequences": [r[1] for r in pieces.rows]},
                 f"{name}: document pieces per sequence", "sequences")
    return _png(fig)
