"""Domain tagging: code, math, science, general or trace, and what decided it.

In order, the first that applies decides (its name goes into `domain_by`):

1. `source`     the source's hint, for the hints in `[grade.domain] trusted_hints` that are `trace`, `math`,
                `science` or `general` (a source that declares its domain is believed by default);
2. `lang`       a programming language in the document's `lang`;
3. `extension`  a source-code extension in its `uri`;
4. `source`     a trusted `code` hint, unless `lang` or the extension says natural language;
5. `content`    most lines look like code;
6. `classifier` the trained linear classifier, when configured and confident;
7. `scorer`     the transparent scorer: math and science term densities and LaTeX/formula density.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter
from dataclasses import dataclass

from pipeline.filters.text import alpha_words, latex_commands, lines, mask_math, ratio
from pipeline.grading.config import DomainConfig
from pipeline.grading.vocabulary import MATH_TERMS, SCIENCE_TERMS, extended, term_hits
from pipeline.io.readers import LANG_BY_EXTENSION

NATURAL_LANGS = frozenset({"en", "latex", "markdown", "rst", "text"})
"""`lang` values meaning prose; any other two-letter code (de, fr ...) also does."""
CODE_LANGS = frozenset(v for v in LANG_BY_EXTENSION.values() if v not in NATURAL_LANGS)
CODE_EXTENSIONS = frozenset(ext for ext, lang in LANG_BY_EXTENSION.items() if lang in CODE_LANGS)
PROSE_EXTENSIONS = frozenset({".md", ".rst", ".txt", ".tex", ".html", ".htm"})
DECIDERS = ("source", "lang", "extension", "content", "classifier", "scorer")

_CODE_LINE = re.compile(
    r"""^(?:(?:def|class|import|from|return|if|elif|else|for|while|try|except|with|async|await|yield|raise|
    fn|func|function|let|const|var|pub|struct|impl|package|public|private|static|void|int|\#include|\#define)
    \b.*|.*[;{}]\s*$|.*\)\s*:\s*$|[A-Za-z_][\w.\[\]]*\s*[-+*/|&]?=\s*\S.*|@\w+.*|//.*|\#\s.*|[})\]],?)$""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class DomainDecision:
    domain: str
    decided_by: str
    """One of DECIDERS."""
    scores: dict[str, float]
    """The scorer's figures (empty when the scorer did not run)."""


def is_natural_lang(lang: str | None) -> bool:
    return lang is not None and (lang in NATURAL_LANGS or (len(lang) == 2 and lang.isalpha()))


def extension_of(uri: str | None) -> str:
    """Lower-case extension of a uri's path, without a `#L12` or `#row=3` suffix."""
    if not uri:
        return ""
    return posixpath.splitext(uri.split("#", 1)[0])[1].lower()


def code_line_fraction(text: str) -> tuple[float, int]:
    """(share of non-blank lines that look like code, number of non-blank lines)."""
    content = lines(text)
    return ratio(sum(1 for line in content if _CODE_LINE.match(line)), len(content)), len(content)


def decide_domain(text: str, hint: str | None, lang: str | None, uri: str | None, cfg: DomainConfig,
                  classifier=None) -> DomainDecision:
    """The domain of one document and what decided it (module docstring)."""
    trusted = hint if hint in cfg.trusted_hints else None
    if trusted in ("trace", "math", "science", "general"):
        return DomainDecision(trusted, "source", {})
    if lang in CODE_LANGS:
        return DomainDecision("code", "lang", {})
    extension = extension_of(uri)
    if extension in CODE_EXTENSIONS:
        return DomainDecision("code", "extension", {})
    says_prose = is_natural_lang(lang) or extension in PROSE_EXTENSIONS
    if trusted == "code" and not says_prose:
        return DomainDecision("code", "source", {})
    if not says_prose:
        fraction, count = code_line_fraction(text)
        if count >= cfg.code_min_lines and fraction >= cfg.code_line_fraction:
            return DomainDecision("code", "content", {"code_line_fraction": fraction})
    scores = prose_scores(text, cfg)
    if classifier is not None:
        label, probability = classifier.predict(text)
        if probability >= cfg.classifier_min_confidence:
            return DomainDecision(label, "classifier", {**scores, "classifier_probability": probability})
    return DomainDecision(scorer_domain(scores, cfg), "scorer", scores)


def prose_scores(text: str, cfg: DomainConfig) -> dict[str, float]:
    """Math score (math terms + 2 x (formulas + LaTeX commands), per 100 words) and science score (science terms per
    100 words). A formula counts as one word."""
    masked, formulas = mask_math(text)
    tokens = alpha_words(masked)
    size = max(1, len(tokens))
    counts = Counter(tokens)
    math_vocab = extended(MATH_TERMS, cfg.extra_math_terms)
    science_vocab = extended(SCIENCE_TERMS, cfg.extra_science_terms)
    marks = formulas + latex_commands(text)
    return {
        "math_score": 100.0 * (term_hits(counts, math_vocab) + 2.0 * marks) / size,
        "science_score": 100.0 * term_hits(counts, science_vocab) / size,
    }


def scorer_domain(scores: dict[str, float], cfg: DomainConfig) -> str:
    math, science = scores["math_score"], scores["science_score"]
    if math >= cfg.min_math_score and math >= science:
        return "math"
    if science >= cfg.min_science_score:
        return "science"
    return "general"
