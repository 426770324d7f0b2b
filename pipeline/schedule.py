"""Learning-rate shapes, per phase: the WSD schedule is phases of the curriculum, not a separate clock.

A phase declares how its rate moves from `lr_start` to `lr_end` over its own steps: `constant`, `linear`
(warm-up) or `cosine` (decay). Rnj-1's pretraining schedule is four phases: warm-up 0 → 2e-3 (5K steps),
stable 2e-3 (to 230K), cosine 2e-3 → 2e-5 (to 380K), constant 2e-5 (to 443.5K). Since phase lengths in steps
come from their token budgets and the global batch, data phases and learning-rate phases cannot drift apart.
"""

from __future__ import annotations

import math
from typing import Literal

LRShape = Literal["constant", "linear", "cosine"]


def lr_at(shape: LRShape, lr_start: float, lr_end: float, fraction: float) -> float:
    """The rate a fraction (0 ≤ f < 1) of the way through a phase."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    if shape == "constant":
        return lr_start
    if shape == "linear":
        return lr_start + (lr_end - lr_start) * fraction
    if shape == "cosine":
        return lr_end + 0.5 * (lr_start - lr_end) * (1.0 + math.cos(math.pi * fraction))
    raise ValueError(f"unknown learning-rate shape {shape!r}: use constant, linear or cosine")
