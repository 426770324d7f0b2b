"""Features of the learned difficulty model: cheap dense measures and hashed token n-grams, over many texts.

Dense features (one row per text, columns in DENSE_FEATURES order):

| feature            | meaning                                                                          |
|--------------------|----------------------------------------------------------------------------------|
| log_chars          | log(1 + characters)                                                              |
| log_words          | log(1 + whitespace words)                                                        |
| log_lines          | log(1 + non-blank lines)                                                         |
| log_latex          | log(1 + LaTeX commands)  (\\frac, \\int ...)                                     |
| latex_per_word     | LaTeX commands per word                                                          |
| max_bracket_depth  | deepest nesting of (), [] and {}                                                 |
| log_ast_nodes      | log(1 + Python syntax-tree nodes); 0 when the text does not parse                |
| ast_depth          | depth of that tree                                                               |
| parsed             | 1 when the text parses as Python                                                 |
| bytes_per_token    | UTF-8 bytes per pre-token (the byte-level BPE pre-tokenizer's split)             |
| digit_fraction     | share of characters that are digits                                              |
| log_numbers        | log(1 + numbers)                                                                 |
| log_max_number     | log10(1 + the largest number, capped at 1e12)                                    |
| notation_level     | the math grader's notation rung 0-4                                              |
| log_equations      | log(1 + `=` signs)                                                               |
| log_steps          | log(1 + the math grader's reasoning steps)                                       |
| log_cyclomatic     | log of the code grader's cyclomatic number (AST or token fallback)               |
| max_nesting        | the code grader's deepest nesting of compound statements                         |
| log_functions      | log(1 + functions defined)                                                       |
| recursion          | functions calling themselves                                                     |
| log_imports        | log(1 + distinct modules imported)                                               |

Hashed n-grams: tokens are LaTeX commands, identifiers and words, numbers (as one token `0`) and runs of
up to three punctuation characters; uni- and bigrams, hashed into `buckets` columns (scikit-learn's
HashingVectorizer: MurmurHash3, stable across runs and machines), sublinear counts, L2-normalised.
"""

from __future__ import annotations

import ast
import math
import re
import warnings

import numpy as np

from pipeline.filters.text import nesting_depth
from pipeline.grading.code_grader import python_tree, token_features
from pipeline.grading.math_grader import notation_level, reasoning_steps

DENSE_FEATURES = (
    "log_chars", "log_words", "log_lines", "log_latex", "latex_per_word", "max_bracket_depth", "log_ast_nodes",
    "ast_depth", "parsed", "bytes_per_token", "digit_fraction", "log_numbers", "log_max_number", "notation_level",
    "log_equations", "log_steps", "log_cyclomatic", "max_nesting", "log_functions", "recursion", "log_imports",
)
SINGLE_FEATURES = {"length (words)": "log_words", "LaTeX commands": "log_latex", "AST nodes": "log_ast_nodes"}
"""The simple one-feature baselines the benchmark compares the model against."""
TOKEN_PATTERN = r"\\[A-Za-z]+|[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?|[^\sA-Za-z0-9_]{1,3}"
FEATURE_SPEC_VERSION = 2
"""Bumped whenever a feature changes meaning: a model records the version it was fitted with."""

_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")
_PRETOKEN = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]+|\s+(?!\S)|\s+""")
_IS_DIGIT = np.zeros(256, dtype=bool)
_IS_DIGIT[ord("0"):ord("9") + 1] = True
_PY2_PRINT = re.compile(r"^(\s*)print\b(?!\s*\()\s*(.*?)\s*$", re.MULTILINE)
_PY2_EXCEPT = re.compile(r"^(\s*except\s+[\w.]+)\s*,\s*(\w+)\s*:", re.MULTILINE)
MAX_AST_CHARS = 200_000
"""Longer texts are not parsed (parsing cost grows with size; such files are rare in graded corpora)."""


def dense_features(texts: list[str], domain: str | None = None) -> np.ndarray:
    """(len(texts), len(DENSE_FEATURES)) float64. With a `domain`, only its own family of features is measured
    (code: the syntax tree and the code grader's; math: the math grader's) and the others are 0: each costs
    as much as the rest together, and a model of one domain is fitted and applied with the same rule."""
    out = np.zeros((len(texts), len(DENSE_FEATURES)), dtype=np.float64)
    for row, text in enumerate(texts):
        out[row] = _dense_row(text, domain in (None, "code"), domain in (None, "math"))
    return out


_NO_CODE = {"cyclomatic": 1.0, "max_nesting": 0.0, "functions": 0.0, "recursion": 0.0, "imports": 0.0}


def _dense_row(text: str, code_features: bool = True, math_features: bool = True) -> list[float]:
    words = len(text.split())
    latex = len(_LATEX_COMMAND.findall(text))
    numbers = _NUMBER.findall(text)
    largest = max((float(n) for n in numbers), default=0.0)
    tree = _parse_python(text) if code_features else None
    code, nodes, depth = _code_features(text, tree) if code_features else (_NO_CODE, 0, 0)
    pretokens = len(_PRETOKEN.findall(text))
    raw = text.encode("utf-8", "surrogatepass")
    codes = np.frombuffer(raw, dtype=np.uint8)
    digits = int(np.count_nonzero(_IS_DIGIT[codes]))
    return [
        math.log1p(len(text)),
        math.log1p(words),
        math.log1p(sum(1 for line in text.split("\n") if line.strip())),
        math.log1p(latex),
        latex / words if words else 0.0,
        float(nesting_depth(text)),
        math.log1p(nodes),
        float(depth),
        float(tree is not None),
        len(raw) / pretokens if pretokens else 0.0,
        digits / len(raw) if raw else 0.0,
        math.log1p(len(numbers)),
        math.log10(1.0 + min(largest, 1e12)),
        float(notation_level(text)) if math_features else 0.0,
        math.log1p(text.count("=")),
        math.log1p(reasoning_steps(text)) if math_features else 0.0,
        math.log(max(code["cyclomatic"], 1.0)),
        code["max_nesting"],
        math.log1p(code["functions"]),
        code["recursion"],
        math.log1p(code["imports"]),
    ]


def _parse_python(text: str) -> ast.Module | None:
    """The syntax tree of `text`, also of Python 2 code (print statements and `except E, e:` rewritten first:
    much public Python is Python 2, and its tree is as telling); None when it is not Python."""
    if len(text) > MAX_AST_CHARS or not text.strip():
        return None
    for attempt in (text, None):
        if attempt is None:
            attempt = _PY2_EXCEPT.sub(r"\1 as \2:", _PY2_PRINT.sub(r"\1print(\2)", text))
            if attempt == text:
                return None
        try:
            with warnings.catch_warnings():  # "invalid decimal literal" and the like: text, not a problem
                warnings.simplefilter("ignore", SyntaxWarning)
                return ast.parse(attempt)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
    return None


def _code_features(text: str, tree: ast.Module | None) -> tuple[dict[str, float], int, int]:
    """(the code grader's features, syntax-tree nodes, tree depth); token features and 0, 0 without a tree."""
    if tree is not None:
        try:
            return python_tree(tree)
        except RecursionError:
            pass
    return token_features(text), 0, 0


def ngram_vectorizer(buckets: int):
    """The hashed uni- and bigram featuriser (stateless: nothing is fitted)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(n_features=buckets, token_pattern=TOKEN_PATTERN, ngram_range=(1, 2), lowercase=True,
                             alternate_sign=False, norm="l2", dtype=np.float32,
                             preprocessor=_numbers_as_one_token)


_DIGITS = re.compile(r"\d+(?:\.\d+)?")


def _numbers_as_one_token(text: str) -> str:
    return _DIGITS.sub("0", text.lower())
