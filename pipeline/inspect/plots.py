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
    if ylabel in ("documents", "sequences", "clusters"):
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if len(series) > 1:
        _legend_above_bars(ax, [v or 0 for values in series.values() for v in values], len(series))


def _legend_above_bars(ax, values: list[float], entries: int) -> None:
    """A one-row legend in headroom kept free above the tallest bar, so it never hides a bar (a phase with
    one bucket at weight 1.0 fills its panel to the top)."""
    top = max(values, default=0) or 1.0
    ax.set_ylim(0, top * 1.35)
    ax.legend(fontsize=8, loc="upper center", ncol=entries, frameon=False)


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


def bar_panels(panels: list[tuple[str, list[str], dict[str, list[float]]]], ylabel: str, title: str | None = None,
               cols: int = 3) -> bytes:
    """One grouped-bar panel per entry: (title, categories, {series: values}), `cols` panels a row."""
    cols = min(len(panels), cols)
    rows = -(-len(panels) // cols)
    fig, axes = _figure(rows, cols, 4.2 * cols, 3.4 * rows)
    for ax, (name, categories, series) in zip(axes.flat, panels):
        _grouped(ax, categories, series, name, ylabel)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    return _png(fig)


def mixture_panels(panels: list[tuple[str, list[str], dict[str, list[float]]]]) -> bytes:
    """One grouped-bar panel per phase: (title, buckets, {series: weights})."""
    return bar_panels(panels, "weight")


def _hbars(ax, names: list[str], values: list[float], title: str, unit: str, colour: str) -> None:
    """Horizontal bars on an axis scaled to the largest value (not 0-100%), each labelled with its value."""
    y = np.arange(len(names))
    ax.barh(y, values, color=colour)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    top = max(values, default=0) or 1.0
    ax.set_xlim(0, top * 1.3)
    for k, v in enumerate(values):
        ax.text(v + top * 0.02, k, f"{v:.3g}{unit}", va="center", fontsize=8)
    ax.set_title(title, fontsize=10)


def phase_packing(names: list[str], padding_percent: list[float], cut_percent: list[float]) -> bytes:
    """Padding and cut documents per phase, each on its own scale so that small differences show."""
    fig, axes = _figure(1, 2, 11, 0.9 + 0.45 * max(len(names), 2))
    _hbars(axes[0, 0], names, padding_percent, "padding (% of token slots)", "%", COLOURS[1])
    _hbars(axes[0, 1], names, cut_percent, "documents cut across sequences (% of pieces)", "%", COLOURS[3])
    axes[0, 1].set_yticks([])
    return _png(fig)


def histogram_panels(panels: list[tuple[str, list[str], list[int]]], xlabel: str, ylabel: str, title: str,
                     cols: int = 3) -> bytes:
    """Small multiples of one histogram each: (panel title, bin labels, counts)."""
    cols = min(len(panels), cols)
    rows = -(-len(panels) // cols)
    fig, axes = _figure(rows, cols, 4.2 * cols, 3.0 * rows)
    for k, (ax, (name, labels, counts)) in enumerate(zip(axes.flat, panels)):
        bars = ax.bar(np.arange(len(labels)), counts, color=COLOURS[k % len(COLOURS)])
        ax.bar_label(bars, [f"{c:,}" if c else "" for c in counts], fontsize=7)  # small bars stay readable
        ax.margins(y=0.12)
        ax.set_xticks(np.arange(len(labels)), labels, rotation=45 if len(labels) > 5 else 0,
                      ha="right" if len(labels) > 5 else "center", fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(ylabel)
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return _png(fig)


def distribution_lines(edges: list[float], series: dict[str, list[int]], title: str, xlabel: str) -> bytes:
    """Each series' counts over the same bins as a share of its own total, so groups of any size compare."""
    fig, axes = _figure(1, 1, 8, 3.6)
    ax = axes[0, 0]
    for k, (name, counts) in enumerate(series.items()):
        total = sum(counts) or 1
        ax.stairs([c / total for c in counts], edges, label=f"{name} ({sum(counts):,})", linewidth=1.8,
                  color=COLOURS[k % len(COLOURS)])
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of the group")
    ax.set_title(title, fontsize=10)
    if series:
        ax.legend(fontsize=8)
    return _png(fig)


def order_lines(series: dict[str, list[float | None]], title: str, ylabel: str) -> bytes:
    """A value per tenth of each phase's training order (one line per phase)."""
    fig, axes = _figure(1, 1, 8, 3.4)
    ax = axes[0, 0]
    for k, (name, values) in enumerate(series.items()):
        x = [i + 1 for i, v in enumerate(values) if v is not None]
        ax.plot(x, [v for v in values if v is not None], marker="o", label=name, color=COLOURS[k % len(COLOURS)])
    ax.set_xticks(range(1, 11), [f"{10 * i}%" for i in range(1, 11)])
    ax.set_xlabel("tenth of the phase's training tokens (in training order)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def dedup_rounds(rounds: list[str], dropped: list[int], kept_share: list[float],
                 cluster_sizes: dict[str, dict[str, int]]) -> bytes:
    """Left: documents dropped per round, labelled with the share each round kept. Right: clusters by size
    per round (the size bins as the dedup report gives them)."""
    fig, axes = _figure(1, 2, 12, 3.6)
    ax = axes[0, 0]
    ax.bar(rounds, dropped, color=COLOURS[3])
    top = max(dropped, default=0) or 1
    ax.set_ylim(0, top * 1.25)
    for k, (d, share) in enumerate(zip(dropped, kept_share)):
        ax.text(k, d + top * 0.03, f"{d:,} (kept {100 * share:.2f}%)", ha="center", fontsize=8)
    ax.set_title("documents dropped per round", fontsize=10)
    ax.set_ylabel("documents")
    sizes = list(dict.fromkeys(k for per in cluster_sizes.values() for k in per))
    sizes.sort(key=lambda k: int(str(k).split("-")[0].rstrip("+")))
    if sizes:
        _grouped(axes[0, 1], sizes, {name: [per.get(k, 0) for k in sizes] for name, per in cluster_sizes.items()},
                 "clusters by size (documents in the cluster)", "clusters")
        for bars in axes[0, 1].containers:
            axes[0, 1].bar_label(bars, [f"{v:,.0f}" if v else "" for v in bars.datavalues], fontsize=7)
        if len(cluster_sizes) == 1:
            axes[0, 1].set_title(f"{next(iter(cluster_sizes))}: clusters by size", fontsize=10)
    else:
        axes[0, 1].set_visible(False)
    return _png(fig)


def training_curves(records: list[dict], title: str) -> bytes:
    """Loss (held-out loss as crosses) and learning rate against the step, coloured by stage, with every
    phase boundary marked and named."""
    rows = [r for r in records if "loss" in r]
    fig, axes = _figure(2, 1, 10, 6)
    ax_loss, ax_lr = axes[0, 0], axes[1, 0]
    for k, stage in enumerate(dict.fromkeys(r.get("stage") for r in rows)):
        part = [r for r in rows if r.get("stage") == stage]
        colour = COLOURS[k % len(COLOURS)]
        steps = [r["step"] for r in part]
        ax_loss.plot(steps, [r["loss"] for r in part], label=str(stage), color=colour, linewidth=1.2)
        ax_lr.plot(steps, [r.get("lr") for r in part], color=colour)
        evals = [r for r in part if r.get("eval_loss") is not None]
        if evals:
            ax_loss.scatter([r["step"] for r in evals], [r["eval_loss"] for r in evals], marker="x", s=36,
                            color=colour, label=f"{stage} held-out")
    starts = []
    for r in rows:
        name = f"{r.get('stage')}/{r.get('phase')}"
        if not starts or starts[-1][1] != name:
            starts.append((r["step"], name))
    for ax in (ax_loss, ax_lr):
        for step, _ in starts[1:]:
            ax.axvline(step - 0.5, color="#8C8C8C", linestyle=":", linewidth=1)
    if starts:  # the phases named above the loss panel, each at its middle, clear of the curves
        ends = [step - 0.5 for step, _ in starts[1:]] + [rows[-1]["step"] + 0.5]
        middles = [(step - 0.5 + end) / 2 for (step, _), end in zip(starts, ends)]
        names = ax_loss.secondary_xaxis("top")
        names.set_xticks(middles, [name for _, name in starts], fontsize=7, rotation=15 if len(starts) > 3 else 0)
        names.tick_params(length=0, colors="#3b4455")
    ax_loss.set_ylabel("loss")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step (dotted: phase boundaries)")
    if rows:
        ax_loss.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title, fontsize=11)
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
