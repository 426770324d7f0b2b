"""Difficulty of science and general prose: readability grade, rare words, sentence length, technical terms.

- `fk_grade`: Flesch–Kincaid grade level, 0.39 words/sentence + 11.8 syllables/word - 15.59 (at least 0);
- `rare_word_fraction`: share of words the corpus itself uses rarely (fewer than
  `[grade.difficulty] rare_word_per_million` times per million words; the job counts them first);
- `mean_sentence_words`;
- `technical_density`: share of words that are technical terms (vocabulary.TECHNICAL_TERMS) or identifiers
  (snake_case, CamelCase, dotted.names, calls()).
Formulas are masked first (one word each), so LaTeX neither inflates syllables nor counts as rare words.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from operator import mul
from typing import ClassVar

from pipeline.filters.text import alpha_words, mask_math, ratio, sentences, syllables
from pipeline.grading.base import GradeContext, Grader, saturating
from pipeline.grading.vocabulary import TECHNICAL_TERMS, term_hits

_IDENTIFIER = re.compile(r"^[\W]*(?:[a-z]+_\w+|[a-z]+[A-Z]\w*|[A-Z][a-z]+[A-Z]\w*|\w+\.\w+\S*|\w+\(\)?)[\W]*$")
_HINTED_TOKEN = re.compile(r"(?<!\S)[^\s_.(A-Z]*+[_.(A-Z]\S*")
"""A whole whitespace-separated token holding `_`, `.`, `(` or an ASCII capital: a character each alternative
of `_IDENTIFIER` needs."""


class ProseGrader(Grader):
    name = "prose"
    normalisers: ClassVar[dict[str, Callable[[float], float]]] = {
        "fk_grade": saturating(12), "rare_word_fraction": saturating(0.1), "mean_sentence_words": saturating(20),
        "technical_density": saturating(0.05), "words": saturating(500),
    }

    def features(self, text: str, lang: str | None, context: GradeContext) -> dict[str, float]:
        masked, _ = mask_math(text)
        vocabulary = alpha_words(masked)
        n_words = max(1, len(vocabulary))
        n_sentences = max(1, len(sentences(masked)))
        counts = Counter(vocabulary)  # each distinct word and token is measured once
        # sum(syllables(w) * n): an integer sum, so summing in C (map over the cached function) is exact
        syllable_count = sum(map(mul, map(syllables, counts), counts.values()))
        technical = term_hits(counts, TECHNICAL_TERMS)
        technical += identifier_count(masked)
        return {
            "fk_grade": max(0.0, 0.39 * n_words / n_sentences + 11.8 * syllable_count / n_words - 15.59),
            "rare_word_fraction": _rare_word_fraction(counts, len(vocabulary), context.common_words),
            "mean_sentence_words": len(vocabulary) / n_sentences,
            "technical_density": min(1.0, technical / n_words),
            "words": float(len(vocabulary)),
        }


def prose_vocabulary(text: str) -> list[str]:
    """The words the rare-word statistics count: lower-case alphabetic words, formulas masked. The job's
    corpus word counts and the grader must use this same function."""
    return alpha_words(mask_math(text)[0])


def rare_word_fraction(vocabulary: list[str], common: frozenset[str] | None) -> float:
    """Share of `vocabulary` (lower-case words) missing from the corpus's common words; 0 when not computed."""
    if common is None:
        return 0.0
    return ratio(sum(1 for w in vocabulary if w not in common), len(vocabulary))


def _rare_word_fraction(counts: Counter[str], total: int, common: frozenset[str] | None) -> float:
    """`rare_word_fraction` from the word counts (`total` words): each distinct word looked up once."""
    if common is None:
        return 0.0
    return ratio(total - sum(map(counts.__getitem__, common.intersection(counts))), total)


def identifier_count(text: str) -> int:
    """Whitespace-separated tokens of `text` that look like identifiers (`_IDENTIFIER`), each occurrence counted.
    A token without `_`, `.`, `(` or an ASCII capital cannot match (every alternative needs one), so only the
    tokens holding one are collected (one scan of the text) and their distinct values tried."""
    counts = Counter(_HINTED_TOKEN.findall(text))
    return sum(counts[token] for token in counts if _IDENTIFIER.match(token))
