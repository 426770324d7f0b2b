"""Difficulty of source files: Python from its AST, other languages from tokens and indentation.

Features (the same names for both paths, so one weights table serves every language):

| feature                  | Python (AST)                                              | fallback                        |
|--------------------------|-----------------------------------------------------------|---------------------------------|
| cyclomatic               | 1 + decision points in the file (McCabe)                  | 1 + branch keywords, && and ||  |
| max_function_complexity  | largest McCabe number of one function                     | cyclomatic / functions          |
| max_nesting              | deepest nesting of compound statements                    | deepest brace or indent level   |
| functions, classes       | definitions                                               | definition keywords             |
| mean_function_lines      | mean lines per function                                   | lines / functions               |
| recursion                | functions that call themselves                            | 0                               |
| comprehensions           | list/set/dict comprehensions and generator expressions    | 0                               |
| generators               | functions that yield                                      | `yield` keywords                |
| async                    | async defs, awaits, async for/with                        | `async`/`await` keywords        |
| imports                  | distinct top-level modules imported                       | distinct include/import/use     |
| lines                    | lines holding code (docstrings and comments excluded)     | non-blank, non-comment lines    |
| parsed                   | 1                                                         | 0                               |
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Callable
from typing import ClassVar

from pipeline.filters.text import nesting_depth
from pipeline.grading.base import GradeContext, Grader, saturating

_DECISIONS = frozenset({ast.If, ast.For, ast.AsyncFor, ast.While, ast.IfExp, ast.ExceptHandler, ast.Assert,
                        ast.match_case})
_COMPOUND = frozenset({ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.With, ast.AsyncWith, ast.FunctionDef,
                       ast.AsyncFunctionDef, ast.ClassDef, ast.Match, getattr(ast, "TryStar", ast.Try)})
_FUNCTIONS = frozenset({ast.FunctionDef, ast.AsyncFunctionDef})
_COMPREHENSIONS = frozenset({ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp})
_ASYNC = frozenset({ast.Await, ast.AsyncFor, ast.AsyncWith, ast.AsyncFunctionDef})
_YIELDS = frozenset({ast.Yield, ast.YieldFrom})


class CodeGrader(Grader):
    name = "code"
    normalisers: ClassVar[dict[str, Callable[[float], float]]] = {
        "cyclomatic": saturating(40), "max_function_complexity": saturating(10), "max_nesting": saturating(4),
        "functions": saturating(10), "classes": saturating(3), "mean_function_lines": saturating(15),
        "recursion": saturating(1), "comprehensions": saturating(5), "generators": saturating(2),
        "async": saturating(3), "imports": saturating(6), "lines": saturating(200), "parsed": saturating(1),
    }

    def features(self, text: str, lang: str | None, context: GradeContext) -> dict[str, float]:
        if lang in (None, "python", "cython"):
            try:
                tree = ast.parse(text)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                tree = None
            if tree is not None:
                try:
                    return python_features(tree)
                except RecursionError:  # pathologically deep nesting: the fallback still measures it
                    pass
        return token_features(text)


def python_features(tree: ast.Module) -> dict[str, float]:
    return python_tree(tree)[0]


def python_tree(tree: ast.Module) -> tuple[dict[str, float], int, int]:
    """(the grader's features, syntax-tree nodes, tree depth) from one walk over the tree."""
    visitor = _PythonVisitor()
    visitor.visit(tree)
    sizes = visitor.function_lines
    return _features(visitor, sizes), visitor.nodes, visitor.tree_depth


def _features(visitor: _PythonVisitor, sizes: list[int]) -> dict[str, float]:
    return {
        "cyclomatic": 1.0 + visitor.decisions,
        "max_function_complexity": float(max(visitor.function_complexity, default=0)),
        "max_nesting": float(visitor.max_depth),
        "functions": float(len(sizes)),
        "classes": float(visitor.classes),
        "mean_function_lines": sum(sizes) / len(sizes) if sizes else 0.0,
        "recursion": float(visitor.recursive),
        "comprehensions": float(visitor.comprehensions),
        "generators": float(visitor.generators),
        "async": float(visitor.asyncs),
        "imports": float(len(visitor.modules)),
        "lines": float(len(visitor.code_lines)),
        "parsed": 1.0,
    }


class _PythonVisitor:
    """One pass over the tree (a plain recursive walk: ast.NodeVisitor's dispatch costs more than the work)."""

    def __init__(self) -> None:
        self.decisions = 0
        self.depth = self.max_depth = 0
        self.function_lines: list[int] = []
        self.function_complexity: list[int] = []
        self.classes = self.recursive = self.comprehensions = self.generators = self.asyncs = 0
        self.modules: set[str] = set()
        self.code_lines: set[int] = set()
        self._stack: list[dict] = []  # the enclosing functions: name, decisions, yields, recursive
        self.nodes = self.tree_depth = self._level = 0

    def visit(self, node: ast.AST) -> None:
        self.nodes += 1
        self._level += 1
        self.tree_depth = max(self.tree_depth, self._level)
        self._visit(node)
        self._level -= 1

    def _visit(self, node: ast.AST) -> None:
        kind = type(node)
        if isinstance(node, ast.stmt):
            self._count_lines(node, kind)
        if kind in _DECISIONS:
            self._decide(1)
        elif kind is ast.comprehension:
            self._decide(1 + len(node.ifs))
        elif kind is ast.BoolOp:
            self._decide(len(node.values) - 1)
        if kind in _COMPREHENSIONS:
            self.comprehensions += 1
        if kind in _ASYNC:
            self.asyncs += 1
        if kind in _YIELDS and self._stack:
            self._stack[-1]["yields"] = True
        elif kind is ast.ClassDef:
            self.classes += 1
        elif kind is ast.Import:
            self.modules.update(alias.name.split(".")[0] for alias in node.names)
        elif kind is ast.ImportFrom:
            self.modules.add("." * node.level + (node.module or "").split(".")[0])
        elif kind is ast.Call and self._stack and _callee(node) == self._stack[-1]["name"]:
            self._stack[-1]["recursive"] = True
        if kind in _FUNCTIONS:
            self._visit_function(node)
        elif kind in _COMPOUND:
            self._nested(node)
        else:
            self._visit_children(node)

    def _visit_function(self, node) -> None:
        self._stack.append({"name": node.name, "decisions": 0, "yields": False, "recursive": False})
        self._nested(node)
        frame = self._stack.pop()
        self.function_lines.append((node.end_lineno or node.lineno) - node.lineno + 1)
        self.function_complexity.append(1 + frame["decisions"])
        self.generators += frame["yields"]
        self.recursive += frame["recursive"]

    def _nested(self, node: ast.AST) -> None:
        self.depth += 1
        self.max_depth = max(self.max_depth, self.depth)
        self._visit_children(node)
        self.depth -= 1

    def _visit_children(self, node: ast.AST) -> None:
        """`ast.iter_child_nodes` without its two generators per node, which cost more than the visit."""
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, ast.AST):
                self.visit(value)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.AST):
                        self.visit(item)

    def _decide(self, count: int) -> None:
        self.decisions += count
        if self._stack:
            self._stack[-1]["decisions"] += count

    def _count_lines(self, node: ast.stmt, kind: type) -> None:
        if kind is ast.Expr and type(node.value) is ast.Constant and isinstance(node.value.value, str):
            return  # a docstring or a bare string: text, not code
        if kind in _COMPOUND:
            self.code_lines.add(node.lineno)
        else:
            self.code_lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))


def _callee(call: ast.Call) -> str | None:
    """Name of a plain call `f(...)` or of a method call on self/cls `self.f(...)`."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in ("self", "cls"):
        return func.attr
    return None


# Possessive runs (`*+`, `++`) where what follows cannot start with what the run gives back (an alternative
# that needs a non-space after spaces, a space after word characters ...): the same matches, without
# retrying after each character of each indentation and identifier (tests/pipeline/grading/test_graders.py).
_COMMENT = re.compile(r"^\s*+(?://|#(?!\s*(?:include|import|define|if|pragma)\b)|/\*|\*|--|;|%)")
_BRANCH = re.compile(r"\b(?:if|elif|elsif|for|foreach|while|case|catch|except|when|guard|unless)\b|&&|\|\|")
_DEFINITION = re.compile(
    r"\b(?:def|function|fn|func|sub|procedure|fun)\s+\w+|^\s*+(?:[\w<>\[\]*&:,]++\s++)+\**\w++\s*\([^;]*\)\s*\{?\s*$",
    re.MULTILINE,
)
_TYPE = re.compile(r"\b(?:class|struct|interface|trait|impl|enum)\s+\w+")
# `\s*+` (possessive): giving back indentation can never help the alternatives (each needs a non-space where
# it starts, or, for `.*`, finds its `require` past the indentation anyway), and retrying them once per space
# made this pattern the costliest of the grader.
_IMPORT = re.compile(r"^\s*+(?:#\s*include\s*[<\"]([^>\"]+)|import\s+([\w.]+)|use\s+([\w:]+)|"
                     r".*\brequire\s*\(\s*['\"]([^'\"]+))", re.MULTILINE)


_WORD_RUN = re.compile(r"\w+")
_WORD_OR_SPACE = bytes(code if code < 128 and (chr(code).isalnum() or chr(code) == "_") else ord(" ") for code in range(256))
"""Byte table keeping the ASCII word characters and turning every other byte into a space."""
_BRANCH_WORDS = ("if", "elif", "elsif", "for", "foreach", "while", "case", "catch", "except", "when", "guard", "unless")
_TYPE_WORDS = ("class", "struct", "interface", "trait", "impl", "enum")
_IMPORT_WORDS = ("include", "import", "use", "require")


def token_features(text: str) -> dict[str, float]:
    """The language-agnostic fallback: keywords, braces and indentation.

    A keyword between `\\b`s matches exactly a whole run of word characters, so the keyword counts come from
    one count of the word runs instead of one scan of the text per pattern (the same counts); a pattern
    that needs a keyword none of the runs is cannot match, and is skipped."""
    code = _code_lines(text)
    body = "\n".join(code)
    runs = _word_runs(body)
    functions = len(_DEFINITION.findall(body))
    branches = sum(runs[w] for w in _BRANCH_WORDS) + body.count("&&") + body.count("||")
    imports = _imports(code, body) if any(w in runs for w in _IMPORT_WORDS) else []
    modules = {next(g for g in m if g) for m in imports}
    return {
        "cyclomatic": 1.0 + branches,
        "max_function_complexity": (1.0 + branches) / max(functions, 1),
        "max_nesting": float(_max_nesting(code, body)),
        "functions": float(functions),
        "classes": float(_type_count(body, runs)),
        "mean_function_lines": len(code) / functions if functions else 0.0,
        "recursion": 0.0,
        "comprehensions": 0.0,
        "generators": float(runs["yield"]),
        "async": float(runs["async"] + runs["await"]),
        "imports": float(len(modules)),
        "lines": float(len(code)),
        "parsed": 0.0,
    }


_COMMENT_STARTS = frozenset("/#*-;%")
"""The characters `_COMMENT` can see first after the indentation."""


def _code_lines(text: str) -> list[str]:
    """The non-blank lines of `text` that `_COMMENT` does not match, in order. The pattern is tried only on
    lines whose first character after the indentation (what `\\s*+` skips, exactly what `str.lstrip` strips)
    can start a comment."""
    return [line for line in text.split("\n")
            if (rest := line.lstrip()) and (rest[0] not in _COMMENT_STARTS or not _COMMENT.match(line))]


def _word_runs(text: str) -> Counter[str]:
    """How often each maximal run of word characters (each match of `\\w+`) occurs; for ASCII text, where
    those characters are A-Z, a-z, 0-9 and _, by turning every other character into a space and splitting."""
    if text.isascii():
        return Counter(text.encode("ascii").translate(_WORD_OR_SPACE).decode("ascii").split())
    return Counter(_WORD_RUN.findall(text))


def _type_count(body: str, runs: Counter[str]) -> int:
    """`len(_TYPE.findall(body))`, tried only where one of its keywords occurs (found with `str.find`): a
    match starts with a keyword, and the pattern is not scanned over everything in between."""
    starts = sorted(start for word in _TYPE_WORDS if word in runs for start in _occurrences(body, word))
    count = end = 0
    for start in starts:
        if start >= end:
            match = _TYPE.match(body, start)
            if match:
                count += 1
                end = match.end()
    return count


def _occurrences(text: str, word: str) -> list[int]:
    found, start = [], text.find(word)
    while start >= 0:
        found.append(start)
        start = text.find(word, start + 1)
    return found


def _imports(code: list[str], body: str) -> list[tuple[str, ...]]:
    """`_IMPORT.findall(body)` (`body` is the `code` lines joined by newlines), tried only at the starts of the
    lines where a match can begin: after the indentation `#`, `import` or `use`, or `require` in the line."""
    found: list[tuple[str, ...]] = []
    start = end = 0
    for line in code:
        if start >= end and (line.lstrip().startswith(("#", "import", "use")) or "require" in line):
            match = _IMPORT.match(body, start)
            if match:
                found.append(match.groups(default=""))
                end = match.end()
        start += len(line) + 1
    return found


def _max_nesting(code: list[str], body: str) -> int:
    """The deeper of brace depth and indentation depth (in units of the smallest indent used); `body` is
    the lines joined by newlines."""
    indents = [len(line) - len(line.lstrip(" \t")) for line in code]
    unit = min((i for i in indents if i > 0), default=0)
    indent_depth = max(indents, default=0) // unit if unit else 0
    return max(indent_depth, nesting_depth(body, "{", "}"))
