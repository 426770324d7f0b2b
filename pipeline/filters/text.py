"""Text pieces the filters and graders share: words, lines, paragraphs, and the masking of math."""

from __future__ import annotations

import functools
import re

import numpy as np

FORMULA_WORD = "formula"
"""What a masked formula becomes: one ordinary word, so it neither helps nor hurts the word rules."""

# LaTeX spans: $$..$$, $..$, \[..\], \(..\) and equation-like environments (non-greedy, bounded length).
# Inline $..$ may wrap onto the next line (a single line break, as in hard-wrapped text), never across a
# blank line: otherwise the first $ of a wrapped formula pairs with the next formula's opening $.
_LATEX_SPAN = re.compile(
    r"\$\$.{1,4000}?\$\$|\$(?:[^$\n]|\n(?![ \t]*\n)){1,1000}?\$|\\\[.{1,4000}?\\\]|\\\(.{1,1000}?\\\)"
    r"|\\begin\{(equation|align|gather|multline|eqnarray|displaymath)\*?\}.{0,8000}?\\end\{\1\*?\}",
    re.DOTALL,
)
# A run of at least three whitespace-separated chunks built from numbers, lone letters, operators and
# brackets, with at least one operator: "12 + 34 x 5 = 182", "f(x) = 3x^2 - 2x". Two letters in a row end a
# chunk, so ordinary words never match. Atomic groups keep the matching linear on long symbol strings.
_ATOM = (r"(?>[0-9]+(?:[.,][0-9]+)?)|[A-Za-z](?![A-Za-z])|\\[A-Za-z]+"
         r"|[-+*/=<>^_()\[\]{}|!.,:;%'×÷·−≤≥≠≈∑∫√πθλμσ∞]")
_CHUNK = rf"(?:{_ATOM})++"
_FORMULA_RUN = re.compile(rf"(?<!\S){_CHUNK}(?:[ \t]+{_CHUNK}){{2,}}(?!\S)")
_OPERATOR = re.compile(r"[-+*/=<>^×÷·−≤≥≠≈∑∫√]|\\[A-Za-z]+")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")

_ALPHA_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
_ASCII_LOWER_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
"""`_ALPHA_WORD` on lower-case ASCII text, where its letters are a-z (and ’ cannot occur): a plain class that
the regular-expression engine scans for quickly."""
_SENTENCE_END = re.compile(r"[.!?]+(?:[\"')\]]*)(?=\s|$)")


_NUMBER_TOKEN = re.compile(r"(?<!\S)[(\[]?[-+]?\d+(?:[.,]\d+)*[.,:;)\]]*(?!\S)")


def mask_math(text: str, numbers: bool = False) -> tuple[str, int]:
    """`text` with every LaTeX span and formula run replaced by one word; also how many were replaced.
    With `numbers`, lone numbers ("191", "2.", "(3)") count as formulas too (for math documents, where
    numbered steps and answers are the content): masked after the formulas, so both ways share that step."""
    masked, count = _mask_formulas(text)
    if numbers:
        masked, lone = _NUMBER_TOKEN.subn(FORMULA_WORD, masked)
        count += lone
    return masked, count


@functools.lru_cache(maxsize=8)
def _mask_formulas(text: str) -> tuple[str, int]:
    """The LaTeX spans, then the formula runs that hold an operator, masked. (Cached for the last few texts:
    the domain scorer, the prose filters and the prose grader each mask the same document, one after the
    other.)"""
    masked, count = _LATEX_SPAN.subn(FORMULA_WORD, text)
    runs = 0

    def replace_run(match: re.Match) -> str:
        nonlocal runs
        if not _OPERATOR.search(match.group(0)):
            return match.group(0)
        runs += 1
        return FORMULA_WORD

    return _FORMULA_RUN.sub(replace_run, masked), count + runs


def latex_marks(text: str) -> int:
    """LaTeX commands plus math delimiters: how much of the text is written in LaTeX."""
    return len(_LATEX_COMMAND.findall(text)) + len(_LATEX_SPAN.findall(text))


def latex_commands(text: str) -> int:
    """Number of LaTeX commands (\\frac, \\int ...)."""
    return len(_LATEX_COMMAND.findall(text))


def words(text: str) -> list[str]:
    """Whitespace-separated tokens, as the Gopher rules count them. (`str.split()` splits on exactly the
    characters the regular expression `\\s` matches, and is several times faster than `findall(r"\\S+")`.)"""
    return text.split()


def alpha_words(text: str) -> list[str]:
    """Lower-case alphabetic words (letters, inner apostrophes): the vocabulary of prose statistics."""
    return list(_alpha_words(text))


@functools.lru_cache(maxsize=8)
def _alpha_words(text: str) -> tuple[str, ...]:
    """Cached for the last few texts: the domain scorer, the prose filters and the prose grader each read the
    words of the same masked document, one after the other."""
    if text.isascii():
        return _ascii_alpha_words(text)
    return tuple(map(str.lower, _ALPHA_WORD.findall(text)))


# ASCII letters lowered, the apostrophe kept, every other byte a space.
_LOWER_LETTER_OR_QUOTE = bytes(b + 32 if 65 <= b <= 90 else b if 97 <= b <= 122 or b == 39 else 32 for b in range(256))


def _ascii_alpha_words(text: str) -> tuple[str, ...]:
    """`alpha_words` of ASCII text: the matches of `_ASCII_LOWER_WORD` in the lowered text. Every character
    outside a-z and the apostrophe separates words, so after turning those into spaces (and lowering the
    letters) in C, the words are the whitespace-separated tokens; only tokens holding an apostrophe (where
    the pattern allows one inner apostrophe) need the pattern."""
    cleaned = text.encode("ascii").translate(_LOWER_LETTER_OR_QUOTE).decode("ascii")
    if "'" not in cleaned:
        return tuple(cleaned.split())
    found: list[str] = []
    for token in cleaned.split():
        if "'" in token:
            found += _ASCII_LOWER_WORD.findall(token)
        else:
            found.append(token)
    return tuple(found)


def lines(text: str) -> list[str]:
    """Non-blank lines, stripped."""
    return [line for line in map(str.strip, text.split("\n")) if line]


def paragraphs(text: str) -> list[str]:
    """Blocks separated by blank lines, stripped."""
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def sentences(text: str) -> list[str]:
    """Sentences split after . ! ? and at paragraph breaks; never empty for non-empty text."""
    parts = []
    for paragraph in paragraphs(text):
        start = 0
        for match in _SENTENCE_END.finditer(paragraph):
            parts.append(paragraph[start:match.end()])
            start = match.end()
        parts.append(paragraph[start:])
    return [p.strip() for p in parts if _ALPHA_WORD.search(p)]


@functools.lru_cache(maxsize=1 << 16)
def syllables(word: str) -> int:
    """English syllables by vowel groups, a silent final e dropped; at least one. (Cached: a corpus repeats
    its words, and this is called once per word of every prose document.)"""
    word = word.lower()
    groups = len(re.findall(r"[aeiouy]+", word))
    if word.endswith("e") and not word.endswith(("le", "ee", "ye")) and groups > 1:
        groups -= 1
    return max(1, groups)


def ratio(part: float, whole: float) -> float:
    """part / whole, 0 for an empty whole (signals are never NaN)."""
    return part / whole if whole else 0.0


@functools.lru_cache(maxsize=8)
def _not_brackets(brackets: str) -> bytes:
    """Every byte but the (ASCII) `brackets`: what `bytes.translate` deletes to leave the brackets alone."""
    keep = set(brackets.encode("ascii"))
    return bytes(b for b in range(256) if b not in keep)


def _loop_depth(brackets: bytes, opening: frozenset[int]) -> int:
    """Deepest nesting over a string of brackets alone: the depth clamped at 0 (a closing one with none open
    is ignored), which is the running sum minus its lowest value so far, as in `nesting_depth`."""
    depth = deepest = 0
    for code in brackets:
        if code in opening:
            depth += 1
            deepest = max(deepest, depth)
        elif depth:
            depth -= 1
    return deepest


@functools.lru_cache(maxsize=8)
def _bracket_steps(opening: str, closing: str) -> np.ndarray:
    steps = np.zeros(256, dtype=np.int32)
    steps[[ord(c) for c in opening]] = 1
    steps[[ord(c) for c in closing]] = -1
    return steps


_FEW_BRACKETS = 256
"""Up to this many brackets a Python loop over them alone beats numpy's per-call cost."""


def nesting_depth(text: str, opening: str = "([{", closing: str = ")]}") -> int:
    """Deepest nesting of the (ASCII) `opening` brackets; a closing one with none open is ignored. With c the
    running sum of +1/-1 over the UTF-8 bytes, depth_i = c_i - min(0, min_{j<=i} c_j): numpy instead of a
    Python loop per character; with few brackets, a loop over the brackets alone (deleted from the rest in C)."""
    if not any(bracket in text for bracket in opening):  # running sums never above 0: no depth to measure
        return 0
    raw = text.encode("utf-8", "surrogatepass")
    brackets = raw.translate(None, _not_brackets(opening + closing))
    if len(brackets) <= _FEW_BRACKETS:
        return _loop_depth(brackets, frozenset(opening.encode("ascii")))
    codes = np.frombuffer(raw, dtype=np.uint8)
    running = np.cumsum(_bracket_steps(opening, closing)[codes])
    return int((running - np.minimum(np.minimum.accumulate(running), 0)).max())
