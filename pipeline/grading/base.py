"""The grader interface: features of one document, then a raw score from weighted, normalised features.

A grader turns a text into named features (plain floats, kept as `grade_features`) and scores them as the
weighted mean of each feature mapped into [0, 1] by its normaliser. Normalisers are fixed and documented
(docs/grading.md); weights come from `[grade.difficulty]`. The raw score only orders documents: `difficulty`
and `tier` are its percentile and quantile within the domain, computed over the whole corpus by the job.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from pipeline.grading.config import TraceMarkers


def saturating(half: float) -> Callable[[float], float]:
    """x / (x + half): 0 at 0, 0.5 at `half`, towards 1 beyond; for counts and sizes without a ceiling."""
    return lambda x: max(x, 0.0) / (max(x, 0.0) + half)


def linear(top: float) -> Callable[[float], float]:
    """x / top clipped to [0, 1]: for features with a natural maximum (notation level)."""
    return lambda x: min(max(x / top, 0.0), 1.0)


@dataclass(frozen=True)
class GradeContext:
    """What a grader may read besides the text: corpus statistics and settings."""

    common_words: frozenset[str] | None = None
    """Words used at least `rare_word_per_million` times per million in the corpus (None: not computed)."""
    markers: TraceMarkers = field(default_factory=TraceMarkers)
    """How trace documents are read."""


SHARED_NORMALISERS: dict[str, Callable[[float], float]] = {"reference_loss": saturating(3.0)}
"""Features any grader may carry: `reference_loss` (nats) from the optional reference model."""


class Grader(ABC):
    """Base of the per-domain graders. Subclasses set `name` and `normalisers` and write `features`."""

    name: str = ""
    """Key of the weights table in `[grade.difficulty]` (`{name}_weights`)."""
    normalisers: ClassVar[dict[str, Callable[[float], float]]] = {}
    """Feature -> map into [0, 1]; only these features can carry a weight."""

    @abstractmethod
    def features(self, text: str, lang: str | None, context: GradeContext) -> dict[str, float]:
        """The grader's raw features of one document (names listed in `normalisers`)."""

    def score(self, features: dict[str, float], weights: dict[str, float]) -> float:
        """Weighted mean of the normalised features (a missing feature counts as 0)."""
        total = sum(weights.values())
        value = 0.0
        for name, weight in sorted(weights.items()):
            normalise = self.normalisers.get(name) or SHARED_NORMALISERS[name]
            value += weight * normalise(features.get(name, 0.0))
        return value / total if total else 0.0
