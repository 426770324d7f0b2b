"""Prose rules: every rule fails under its exact name, clean prose and real formulas pass."""

from __future__ import annotations

import dataclasses
import math

import pytest

from pipeline.filters import filter_document, quality_check
from pipeline.filters.prose import prose_failures, prose_signals
from pipeline.filters.text import mask_math
from pipeline.grading.config import FiltersConfig, ProseFilterConfig

CLEAN = (
    "The river rises in the hills to the north of the town and runs south through a wide valley. "
    "In spring the water is high, and the farmers who live along its banks move their animals to the "
    "upper fields. By late summer the level falls again, leaving pools where children fish for small trout.\n\n"
    "Most of the old mills that once stood beside the river have gone. One of them has been restored by "
    "volunteers, and on open days visitors can watch the wheel turn and see flour ground with the same "
    "stones that were used two hundred years ago. The work is slow, but the people who run the mill say "
    "that it is worth it."
)

# Real formulas: the quadratic formula, Euler's identity, Cauchy–Schwarz, the Gaussian integral, Bayes' rule.
FORMULAS = r"""For $ax^2 + bx + c = 0$ with $a \neq 0$ the roots are
$$x = \frac{-b \pm \sqrt{b^2 - 4ac}}{2a}.$$
Euler's identity $e^{i\pi} + 1 = 0$ links five constants, and the Cauchy–Schwarz inequality states
$$\left| \sum_{i=1}^{n} u_i v_i \right|^2 \le \left( \sum_{i=1}^{n} u_i^2 \right) \left( \sum_{i=1}^{n} v_i^2 \right).$$
The Gaussian integral is \[ \int_{-\infty}^{\infty} e^{-x^2} \, dx = \sqrt{\pi}, \] and Bayes' rule reads
\( P(A \mid B) = P(B \mid A) P(A) / P(B) \). With the plain identity 2 + 2 = 4 and f(x) = 3x^2 - 2x + 1 we
have every kind of formula that a textbook page holds, together with the words that explain them to the reader.
"""


PROSE_RULES = ProseFilterConfig()


def failures(text: str, cfg: ProseFilterConfig = PROSE_RULES, math_aware: bool = True) -> list[str]:
    return prose_failures(prose_signals(text, cfg, math_aware), cfg)


def test_clean_prose_passes_every_rule():
    assert failures(CLEAN) == []


@pytest.mark.parametrize(
    "text, rule",
    [
        ("Too short to be a document at all.", "gopher_word_count"),
        (CLEAN + " " + "Pneumonoultramicroscopicsilicovolcanoconiosis " * 60, "gopher_mean_word_length"),
        (CLEAN + "\n" + "#tag #news #viral #follow " * 10, "gopher_symbol_ratio"),
        (CLEAN + "\n" + "- item of the list\n" * 200, "gopher_bullet_lines"),
        ("\n".join(["The story goes on and on and then..."] * 3 + CLEAN.split(". ")), "gopher_ellipsis_lines"),
        ("Sunny weather ahead, rain later, wind from east; cold nights, warm days, clear skies over hills. " * 8,
         "gopher_stop_words"),
        (CLEAN + "\n" + "Subscribe to our newsletter for the latest updates.\n" * 12, "gopher_dup_lines"),
        (CLEAN + " " + "lorem ipsum dolor sit amet.", "c4_lorem_ipsum"),
    ],
)
def test_each_rule_fails_under_its_name(text, rule):
    assert rule in failures(text)


def test_repetition_rules_name_the_ngram_length():
    spam = CLEAN + " " + "buy cheap watches online today " * 40
    failed = failures(spam)
    assert "gopher_top_2gram" in failed and "gopher_dup_5gram" in failed and "gopher_dup_10gram" in failed


def test_fineweb_line_rules():
    lines = "\n".join(f"entry number {i} of the list and more words here" for i in range(60))
    assert "fineweb_line_punct" in failures(lines)
    short = "\n".join(["Ok.", "Yes.", "No.", "Fine, and the rest."] * 20)
    assert "fineweb_short_lines" in failures(short)


def test_formulas_are_masked_and_do_not_fail_as_symbols():
    assert failures(FORMULAS) == []
    assert "gopher_alpha_words" in failures(FORMULAS, math_aware=False)
    masked, count = mask_math(FORMULAS)
    assert count >= 7 and "\\frac" not in masked and "\\int" not in masked


def test_math_documents_get_the_math_bounds_and_number_masking():
    solution = "Problem. Compute $12 + 34 \\times 5$.\n\nSolution.\n1. Multiplication first: 34 \\times 5 = 170.\n" \
               "2. Then add: 12 + 170 = 182.\n\nAnswer: 182\n"
    cfg = FiltersConfig()
    assert quality_check(solution, "math", cfg).failed == ()
    assert quality_check(solution, "general", cfg).failed[0] == "gopher_word_count"


def test_drop_flag_and_disabled_rules():
    text = CLEAN + " lorem ipsum dolor sit amet."
    assert filter_document(text, "general", FiltersConfig()) == (False, "c4_lorem_ipsum")
    assert filter_document(text, "general", FiltersConfig(action="flag")) == (True, None)
    assert filter_document(text, "general", FiltersConfig(disabled_rules=("c4_lorem_ipsum",))) == (True, None)
    assert filter_document(text, "general", FiltersConfig(enabled=False)) == (True, None)
    assert quality_check(text, "trace", FiltersConfig()).signals == {}


def test_signals_are_finite_on_empty_and_odd_text():
    for text in ("", "\n\n\n", "$$", "…", "x" * 5000):
        signals = prose_signals(text, ProseFilterConfig(), True)
        assert all(math.isfinite(value) for value in signals.values())


def test_ngram_bounds_are_configurable():
    cfg = dataclasses.replace(ProseFilterConfig(), max_top_ngram_fraction={"2": 1.0}, max_dup_ngram_fraction={})
    spam = CLEAN + " " + "buy cheap watches online today " * 40
    assert not any(r.startswith(("gopher_top", "gopher_dup_5")) for r in failures(spam, cfg))


def test_inline_dollar_math_may_wrap_onto_the_next_line():
    """A hard-wrapped `$x +\ny = 3$` is one formula; the `$z$` after it stays its own. (Before: the first
    `$` could not reach past the line break, so it paired with the `$` of `$z$` and masked the prose between.)"""
    from pipeline.filters.text import mask_math

    text = "Let $x +\ny = 3$ and let $z$ be positive. It costs $5 today.\n\nAnd $2 tomorrow."
    masked, count = mask_math(text)
    assert masked == "Let formula and let formula be positive. It costs $5 today.\n\nAnd $2 tomorrow."
    assert count == 2  # never across the blank line: the two prices stay text


WORKED = r"""We first pick the chair of the committee and then its two other members. There are $5$ ways
to choose the chair. Once the chair is fixed, the number of ways to choose the other members is
$\binom{4}{2} = 6$, since any two of the remaining four people will do. By the multiplication principle,
the number of ways to choose the committee is $5 \cdot 6 = 30$, so the answer is $\boxed{30}$."""


def test_math_rules_keep_worked_solutions_and_short_problems():
    """Worked solutions repeat their own phrases ("the number of ways to choose"): the web-text bound on
    repeated 5-grams drops them, the math bounds keep them; a one-line problem is not too short."""
    from pipeline.filters import quality_check
    from pipeline.grading.config import FiltersConfig

    cfg = FiltersConfig()
    assert "gopher_dup_5gram" in quality_check(WORKED, "general", cfg).failed  # prose bounds: dropped
    assert quality_check(WORKED, "math", cfg).passed
    assert quality_check(r"Compute $\dbinom{8}{4}$.", "math", cfg).passed
    assert quality_check("Subscribe now! " * 40, "math", cfg).failed  # spam still fails


def _reference_top(tokens: list[str], n: int) -> float:
    from collections import Counter

    if len(tokens) < n:
        return 0.0
    gram, count = max(Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)).items(),
                      key=lambda kv: (kv[1], kv[0]))
    total = sum(map(len, tokens))
    return count * sum(map(len, gram)) / total if count > 1 and total else 0.0


def _reference_dup(tokens: list[str], n: int) -> float:
    from collections import Counter

    if len(tokens) < n:
        return 0.0
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    counts, covered = Counter(grams), [False] * len(tokens)
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[i:i + n] = [True] * n
    total = sum(map(len, tokens))
    return sum(len(t) for t, c in zip(tokens, covered) if c) / total if total else 0.0


def test_vectorised_repetition_signals_equal_the_gopher_definitions():
    """The numpy n-gram groups give exactly what the plain definitions (one tuple per n-gram) give, and the
    compiled kernel exactly what the numpy groups give (bit for bit)."""
    import random

    import numpy as np

    from pipeline.filters.kernels import ngram_fractions
    from pipeline.filters.prose import _Ngrams, word_ranks

    rng = random.Random(0)
    ns = np.arange(1, 11, dtype=np.int64)
    for _ in range(400):
        vocabulary = ["".join(rng.choice("abcé") for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 6))]
        tokens = [rng.choice(vocabulary) for _ in range(rng.randint(0, 40))]
        grams = _Ngrams(tokens)
        top, dup = ngram_fractions(*word_ranks(tokens), ns, ns[::-1].copy())
        for n in range(1, 11):
            assert grams.top_fraction(n) == pytest.approx(_reference_top(tokens, n), abs=1e-12), (tokens, n)
            assert grams.dup_fraction(n) == pytest.approx(_reference_dup(tokens, n), abs=1e-12), (tokens, n)
            assert top[n - 1] == grams.top_fraction(n) and dup[10 - n] == grams.dup_fraction(n), (tokens, n)


@pytest.mark.parametrize("text", ["", "a 1 b2 -- 3.4 ok", "x\x1cy\x1f12 #a\t\x0b\x0c!!", "don't 42", "naïve ½ ² ٣ 中文 x1 ...",
                                  "é\u2003-\u3000½x\x85–—\u00a0ß ٣٤ \u2028Ⅻ",
                                  "Rock'n'Roll 'quoted' it's '' a''b x' 'y O'NEIL_x9'z \x1cdon't",
                                  "The\tthe\x0bTHE of,of With\x1fwith AND thatx\r\nhave be\x0cto",
                                  " the", "of ", "\x1c\x1dand\x1e", "With"])
def test_word_counts_equal_their_definitions(text):
    """The fast paths (ASCII bytes, a plain class on lower-case text) count what the definitions count."""
    from pipeline.filters.prose import STOP_WORDS, token_counts
    from pipeline.filters.text import _ALPHA_WORD, alpha_words

    tokens = text.split()
    assert token_counts(text) == (len(tokens), sum(len(t) for t in tokens),
                                  sum(1 for t in tokens if any(c.isalpha() for c in t)),
                                  len(STOP_WORDS.intersection(t.lower() for t in tokens)))
    assert alpha_words(text) == [w.lower() for w in _ALPHA_WORD.findall(text)]
    assert alpha_words(text.upper()) == [w.lower() for w in _ALPHA_WORD.findall(text.upper())]


def test_nesting_depth_equals_its_definition_with_few_and_many_brackets():
    """Both paths of `nesting_depth` (a loop over the brackets alone, numpy over every byte) give the depth
    clamped at 0 of a plain walk over the characters."""
    import random

    from pipeline.filters.text import _FEW_BRACKETS, nesting_depth

    def walked(text: str, opening: str, closing: str) -> int:
        depth = deepest = 0
        for c in text:
            if c in opening:
                depth += 1
                deepest = max(deepest, depth)
            elif c in closing and depth:
                depth -= 1
        return deepest

    rng = random.Random(7)
    for size in (0, 5, 40, _FEW_BRACKETS, _FEW_BRACKETS + 1, 3 * _FEW_BRACKETS):
        for _ in range(30):
            text = "".join(rng.choice("(){}[]ab é\n") for _ in range(size))
            for opening, closing in (("([{", ")]}"), ("{", "}")):
                assert nesting_depth(text, opening, closing) == walked(text, opening, closing), (text, opening)
