"""Quality rules for natural-language documents, after Gopher (MassiveText quality and repetition rules), C4 and
FineWeb. `prose_signals` measures, `prose_failures` judges: each rule is one named bound on one signal, so a
test or a report can name exactly which rule removed a document.
"""

from __future__ import annotations

import numpy as np

from pipeline.filters.kernels import ngram_fractions
from pipeline.filters.text import FORMULA_WORD, alpha_words, lines, mask_math, paragraphs, ratio, words
from pipeline.grading.config import ProseFilterConfig

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
"""Gopher's stop-word list: real English prose uses at least two of them."""
BULLETS = ("•", "●", "○", "▪", "‣", "-", "*", "–", "—")
ELLIPSES = ("...", "…")
TERMINAL = (".", "!", "?", '"', "'", ":", ")", "”", "’")


def prose_signals(text: str, cfg: ProseFilterConfig, math_aware: bool, numbers: bool = False) -> dict[str, float]:
    """Every signal the prose rules read, by name (all finite floats). With `math_aware`, formulas (and with
    `numbers` also lone numbers) are masked as one word each first."""
    masked, formulas = mask_math(text, numbers) if math_aware else (text, 0)
    n_words, word_chars, alpha_tokens, stop_words = token_counts(masked)
    all_lines = lines(masked)
    signals = {
        "words": float(n_words),
        "formulas": float(formulas),
        "mean_word_length": ratio(word_chars, n_words),
        "symbol_word_ratio": ratio(sum(masked.count(s) for s in ("#", *ELLIPSES)), n_words),
        "alpha_word_fraction": ratio(alpha_tokens, n_words),
        "stop_words": float(stop_words),
        "bullet_line_fraction": ratio(sum([ln.startswith(BULLETS) for ln in all_lines]), len(all_lines)),
        "ellipsis_line_fraction": ratio(sum([ln.endswith(ELLIPSES) for ln in all_lines]), len(all_lines)),
        "line_punct_fraction": ratio(sum([ln.endswith(TERMINAL) for ln in all_lines]), len(all_lines)),
        "short_line_fraction": ratio(sum([len(ln) < cfg.short_line_chars for ln in all_lines]), len(all_lines)),
        "newline_word_ratio": ratio(masked.count("\n"), n_words),
        "lorem_ipsum": float("lorem ipsum" in text.lower()),
    }
    signals.update(_duplication(all_lines, "line"))
    signals.update(_duplication(paragraphs(masked), "paragraph"))
    # Masked formulas are not repeated words: two different formulas must not make a repeated n-gram.
    lowered = [t for t in alpha_words(masked) if t != FORMULA_WORD] if formulas else alpha_words(masked)
    top_ns = sorted(cfg.max_top_ngram_fraction, key=int)
    dup_ns = sorted(cfg.max_dup_ngram_fraction, key=int)
    top, dup = ngram_fractions(*word_ranks(lowered), _ns(top_ns), _ns(dup_ns))
    for n, value in zip(top_ns, top.tolist()):
        signals[f"top_{n}gram_fraction"] = value
    for n, value in zip(dup_ns, dup.tolist()):
        signals[f"dup_{n}gram_fraction"] = value
    return signals


def word_ranks(tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(each token's rank among the sorted distinct tokens, each token's length), int64: the input of
    `kernels.ngram_fractions`, where comparing ranks compares the words."""
    distinct = sorted(set(tokens))
    rank = dict(zip(distinct, range(len(distinct))))
    ranks = np.fromiter(map(rank.__getitem__, tokens), dtype=np.int64, count=len(tokens))
    # each distinct word's length, looked up by rank: the same integers as len() of every token
    return ranks, np.fromiter(map(len, distinct), dtype=np.int64, count=len(distinct))[ranks]


def _ns(keys: list[str]) -> np.ndarray:
    return np.array([int(n) for n in keys], dtype=np.int64)


def prose_failures(signals: dict[str, float], cfg: ProseFilterConfig) -> list[str]:
    """Names of the rules `signals` fail, in a fixed order (the first is the ledger reason)."""
    s = signals
    checks = [
        ("gopher_word_count", not cfg.min_words <= s["words"] <= cfg.max_words),
        ("gopher_mean_word_length",
         not cfg.min_mean_word_length <= s["mean_word_length"] <= cfg.max_mean_word_length),
        ("gopher_symbol_ratio", s["symbol_word_ratio"] > cfg.max_symbol_word_ratio),
        ("gopher_alpha_words", s["alpha_word_fraction"] < cfg.min_alpha_word_fraction),
        ("gopher_stop_words", s["stop_words"] < cfg.min_stop_words),
        ("gopher_bullet_lines", s["bullet_line_fraction"] > cfg.max_bullet_line_fraction),
        ("gopher_ellipsis_lines", s["ellipsis_line_fraction"] > cfg.max_ellipsis_line_fraction),
        ("gopher_dup_lines", s["dup_line_fraction"] > cfg.max_dup_line_fraction),
        ("gopher_dup_paragraphs", s["dup_paragraph_fraction"] > cfg.max_dup_paragraph_fraction),
        ("gopher_dup_line_chars", s["dup_line_char_fraction"] > cfg.max_dup_line_char_fraction),
        ("gopher_dup_paragraph_chars", s["dup_paragraph_char_fraction"] > cfg.max_dup_paragraph_char_fraction),
    ]
    for n, bound in sorted(cfg.max_top_ngram_fraction.items(), key=lambda kv: int(kv[0])):
        checks.append((f"gopher_top_{n}gram", s[f"top_{n}gram_fraction"] > bound))
    for n, bound in sorted(cfg.max_dup_ngram_fraction.items(), key=lambda kv: int(kv[0])):
        checks.append((f"gopher_dup_{n}gram", s[f"dup_{n}gram_fraction"] > bound))
    checks += [
        ("c4_lorem_ipsum", cfg.lorem_ipsum and s["lorem_ipsum"] > 0),
        ("fineweb_line_punct", s["line_punct_fraction"] < cfg.min_line_punct_fraction),
        ("fineweb_short_lines", s["short_line_fraction"] > cfg.max_short_line_fraction),
        ("fineweb_list_like", s["newline_word_ratio"] > cfg.max_newline_word_ratio),
    ]
    return [name for name, failed in checks if failed]


def token_counts(text: str) -> tuple[int, int, int, int]:
    """Of the whitespace-separated tokens of `text` (`words(text)`): how many, their characters, how many hold a
    letter, and how many distinct stop words they are (lower-cased)."""
    if text.isascii():
        return _ascii_token_counts(text)
    tokens = words(text)
    return (len(tokens), sum(map(len, tokens)), sum(1 for t in tokens if any(c.isalpha() for c in t)),
            len(STOP_WORDS.intersection(map(str.lower, tokens))))


# Byte tables for ASCII text, where str.split()'s whitespace is the bytes for which chr(b).isspace():
# `_TOKEN_MARKS` turns whitespace into spaces and everything else into `a` (with the bytes of
# `_NOT_LETTER_OR_SPACE` deleted first, `a` is left for letters only); `_LOWER_SPACED` lowers the letters and
# turns whitespace into spaces.
_ASCII_SPACE = frozenset(b for b in range(128) if chr(b).isspace())
_TOKEN_MARKS = bytes(32 if b in _ASCII_SPACE else 97 for b in range(256))
_NOT_LETTER_OR_SPACE = bytes(b for b in range(128) if not chr(b).isalpha() and b not in _ASCII_SPACE)
_LOWER_SPACED = bytes(32 if b in _ASCII_SPACE else b + 32 if 65 <= b <= 90 else b for b in range(256))
_PADDED_STOP_WORDS = tuple(f" {w} ".encode("ascii") for w in sorted(STOP_WORDS))


def _ascii_token_counts(text: str) -> tuple[int, int, int, int]:
    """`token_counts` of ASCII text without making the tokens: a token starts at each `a` after a space (or
    at the start) of the two-symbol image, its characters are the non-spaces, a token holds a letter when it
    is still there once the non-letters are deleted, and a stop word is a token when it occurs between
    spaces in the lowered, space-padded text."""
    raw = text.encode("ascii")
    marks = raw.translate(_TOKEN_MARKS)
    tokens = marks.count(b" a") + marks.startswith(b"a")
    letters = raw.translate(_TOKEN_MARKS, _NOT_LETTER_OR_SPACE)
    alpha_tokens = letters.count(b" a") + letters.startswith(b"a")
    padded = b" " + raw.translate(_LOWER_SPACED) + b" "
    stop_words = sum(1 for word in _PADDED_STOP_WORDS if word in padded)
    return tokens, len(raw) - marks.count(b" "), alpha_tokens, stop_words


def _duplication(items: list[str], unit: str) -> dict[str, float]:
    """Gopher: share of items that repeat an earlier one, and share of characters in those repeats."""
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        seen.add(item)
    return {
        f"dup_{unit}_fraction": ratio(dup_items, len(items)),
        f"dup_{unit}_char_fraction": ratio(dup_chars, sum(map(len, items))),
    }


class _Ngrams:
    """The reference of `kernels.ngram_fractions` (the tests hold the kernel to it): the word n-grams of one
    document as integer group ids (numpy), for the repetition signals. The group
    of the n-gram at i is the rank of the pair (group of the (n-1)-gram at i, word at i+n-1): exact (no
    hashing), one 1-D integer `np.unique` per n, instead of a Python tuple per n-gram."""

    def __init__(self, tokens: list[str]) -> None:
        index: dict[str, int] = {}
        self.tokens = tokens
        self.ids = np.fromiter((index.setdefault(t, len(index)) for t in tokens), dtype=np.int64, count=len(tokens))
        self.lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        self.total = int(self.lengths.sum())
        self._groups = {1: self.ids}

    def groups(self, n: int) -> np.ndarray:
        """Group id of the n-gram starting at each position 0 .. len - n (equal ids: equal n-grams)."""
        if n not in self._groups:
            shorter = self.groups(n - 1)[:-1]
            pairs = (shorter << 32) | self.ids[n - 1:]
            self._groups[n] = np.unique(pairs, return_inverse=True)[1].ravel()
        return self._groups[n]

    def top_fraction(self, n: int) -> float:
        """Gopher: characters covered by the most frequent n-gram (counted each time it occurs) over all
        word characters; ties go to the greatest n-gram (as tuples of words). One occurrence is no repetition."""
        if len(self.tokens) < n:
            return 0.0
        groups = self.groups(n)
        counts = np.bincount(groups)
        top = int(counts.max())
        if top < 2:
            return 0.0
        starts = np.flatnonzero(counts[groups] == top).tolist()
        gram = max(tuple(self.tokens[i:i + n]) for i in starts)
        return ratio(top * sum(len(w) for w in gram), self.total)

    def dup_fraction(self, n: int) -> float:
        """Gopher: characters of words inside n-grams that occur more than once, over all word characters
        (each word counted once even when several repeated n-grams cover it)."""
        if len(self.tokens) < n:
            return 0.0
        groups = self.groups(n)
        starts = (np.bincount(groups)[groups] > 1).astype(np.int64)
        cover = np.zeros(len(self.tokens) + 1, dtype=np.int64)
        cover[: len(starts)] += starts
        cover[n: n + len(starts)] -= starts
        covered = np.cumsum(cover[:-1]) > 0
        return ratio(int(self.lengths[covered].sum()), self.total)
