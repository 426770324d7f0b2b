"""Plot layout checks that need no eyes: legends never cover bars, the training plot names its phases."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from pipeline.inspect import plots


@pytest.mark.parametrize("series", [
    {"target": [1.0], "measured": [1.0]},  # an SFT phase: one bucket at weight 1.0 fills the panel
    {"target": [0.5, 0.3, 0.2], "measured": [0.49, 0.31, 0.2]},
    {"target": [0.1, 0.9], "measured": [0.1, 0.9], "eval": [0.2, 0.8]},
])
def test_a_legend_never_covers_a_bar(series):
    fig = Figure(figsize=(4.2, 3.6), layout="constrained")
    ax = fig.subplots()
    categories = [f"b{i}" for i in range(len(next(iter(series.values()))))]
    plots._grouped(ax, categories, series, "sft/chat: mixture", "weight")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    for bar in ax.patches:
        assert not legend.overlaps(bar.get_window_extent(renderer)), (series, legend, bar.get_window_extent(renderer))


def test_training_curves_have_a_title_and_phase_boundaries():
    records = [{"step": s, "stage": "pretrain" if s <= 6 else "sft", "phase": "stable" if s <= 3 else
                "decay" if s <= 6 else "chat", "loss": 5.0 / s, "lr": 1e-3} for s in range(1, 10)]
    fig_png = plots.training_curves(records, "training run: 9 steps")
    image = np.asarray(Image.open(io.BytesIO(fig_png)).convert("RGB"))
    assert image.shape[0] > 500

    drawn = []
    original = plots._png
    try:
        plots._png = lambda fig: drawn.append(fig) or original(fig)
        plots.training_curves(records, "training run: 9 steps")
    finally:
        plots._png = original
    fig = drawn[0]
    assert fig._suptitle.get_text() == "training run: 9 steps"
    loss, lr = fig.axes[:2]
    boundaries = sorted({line.get_xdata()[0] for line in loss.lines if line.get_linestyle() == ":"})
    assert boundaries == [3.5, 6.5]  # stable -> decay, decay -> chat
    names = loss.child_axes[0]  # the phases, named above the loss panel at their middles
    assert [t.get_text() for t in names.get_xticklabels()] == ["pretrain/stable", "pretrain/decay", "sft/chat"]
    assert list(names.get_xticks()) == [2.0, 5.0, 8.0]
    assert sorted({line.get_xdata()[0] for line in lr.lines if line.get_linestyle() == ":"}) == [3.5, 6.5]
