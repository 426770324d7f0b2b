"""Difficulty of mathematical text: reasoning steps, notation level, LaTeX density, size of the numbers.

Notation level is the highest rung whose marks appear (LaTeX commands or words, case-insensitive):

| level | rung                                   | marks (examples)                                                  |
|-------|----------------------------------------|-------------------------------------------------------------------|
| 0     | arithmetic                             | numbers and + - x / only                                          |
| 1     | fractions, ratios, percentages         | \\frac, a/b, numerator, denominator, percent, ratio, gcd, lcm       |
| 2     | algebra                                | a variable next to an operator, solve, equation, x^2, \\sqrt, \\pm  |
| 3     | calculus, linear algebra, number theory | \\int, \\sum, \\lim, derivative, matrix, \\det, \\equiv, \\pmod, modulo |
| 4     | proofs                                 | proof, prove, theorem, lemma, \\forall, \\exists, contradiction, QED |
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import ClassVar

from pipeline.filters.text import latex_marks, lines, ratio, sentences, words
from pipeline.grading.base import GradeContext, Grader, linear, saturating

NOTATION_LEVELS: tuple[tuple[int, re.Pattern], ...] = tuple(
    (level, re.compile(pattern, re.IGNORECASE)) for level, pattern in (
        (4, (r"\b(?:proof|prove[sd]?|theorem|lemma|corollary|contradiction|q\.e\.d|qed|induction|"
            r"if and only if|iff)\b|\\(?:forall|exists|blacksquare|qed|implies|iff)(?![A-Za-z])")),
        (3, (r"\\(?:int|iint|oint|sum|prod|lim|partial|nabla|det|equiv|pmod|bmod|binom|mathbb|vec|infty)(?![A-Za-z])|"
            r"\b(?:derivative|integral|integrate|limit|matrix|matrices|determinant|eigen\w*|modulo|congruen\w*|"
            r"series|converge\w*|differentiat\w*|antiderivative|vector space|probability)\b")),
        (2, (r"\\(?:sqrt|pm|le|ge|neq|Delta)(?![A-Za-z])|\b(?:solve|equation|unknown|polynomial|quadratic|"
            r"discriminant|inequality|factor\w*|variable)\b|\b[a-z]\s*\^\s*\{?\d|\b\d*[a-z]\s*[-+=]\s*\d")),
        (1, (r"\\(?:frac|dfrac|tfrac|div|%)|\b(?:fraction|numerator|denominator|percent\w*|ratio|gcd|lcm|"
            r"common denominator|decimal)\b|\b\d+\s*/\s*\d+\b|\d%")),
    )
)
_STEP = re.compile(r"^\s*(?:\d+[.)]\s|\(\d+\)\s|step\s*\d+|[-*•]\s)", re.IGNORECASE)
_REASONING = re.compile(r"=|\\equiv|\b(?:therefore|hence|thus|so|then)\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")


class MathGrader(Grader):
    name = "math"
    normalisers: ClassVar[dict[str, Callable[[float], float]]] = {
        "notation_level": linear(4), "steps": saturating(4), "latex_density": saturating(0.3),
        "number_magnitude": saturating(3), "equations": saturating(6), "words": saturating(100),
    }

    def features(self, text: str, lang: str | None, context: GradeContext) -> dict[str, float]:
        tokens = words(text)
        numbers = [float(n) for n in _NUMBER.findall(text)]
        return {
            "notation_level": float(notation_level(text)),
            "steps": float(reasoning_steps(text)),
            "latex_density": ratio(latex_marks(text), len(tokens)),
            "number_magnitude": math.log10(1.0 + max(numbers, default=0.0)) if numbers else 0.0,
            "equations": float(text.count("=") + text.count("\\equiv")),
            "words": float(len(tokens)),
        }


def notation_level(text: str) -> int:
    """The highest notation rung with a mark in `text` (table in the module docstring)."""
    levels = NOTATION_LEVELS
    if text.isascii():  # the same rungs, searched case-sensitively in lower case: faster, same marks
        text, levels = text.lower(), _lower_case_levels()
    for level, pattern in levels:
        if pattern.search(text):
            return level
    return 0


@functools.cache
def _lower_case_levels() -> tuple[tuple[int, re.Pattern], ...]:
    """NOTATION_LEVELS for lower-case ASCII text: each pattern lower-cased (its escapes are all lower-case
    already, so only its letters change) and without IGNORECASE, which in ASCII matches the same places."""
    return tuple((level, re.compile(pattern.pattern.lower())) for level, pattern in NOTATION_LEVELS)


def reasoning_steps(text: str) -> int:
    """Numbered or bulleted lines; without any, sentences that state a relation or draw a conclusion."""
    numbered = sum(1 for line in lines(text) if _STEP.match(line))
    if numbered:
        return numbered
    return sum(1 for sentence in sentences(text) if _REASONING.search(sentence))
