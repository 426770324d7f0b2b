"""Runnable units: JSONL function records, doctests found in Python documents, standalone scripts.

A unit is what one sandbox process runs. Its `request()` is what the runner receives; `display` is the
source shown at the top of the rendered trace; `origin` is the ledger source it is counted under.
"""

from __future__ import annotations

import ast
import doctest
import json
import sys
from dataclasses import asdict, dataclass

ORIGINS = ("units", "doctests", "scripts")


class UnitError(ValueError):
    """A record that is not a usable unit; `reason` is the ledger's drop reason."""

    def __init__(self, message: str, reason: str = "invalid_unit"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class Unit:
    id: str
    """Stable id: the record's own, `doctest/DOC_ID/QUALNAME` or `script/PATH`."""
    kind: str
    """`function` (call entry_point once per inputs entry), `doctest` (run the examples) or `script`."""
    code: str
    """The code the sandbox executes (for a doctest, the whole module that holds the docstring)."""
    origin: str
    """Ledger source: one of ORIGINS."""
    uri: str | None = None
    repo: str | None = None
    license: str | None = None
    entry_point: str | None = None
    inputs: tuple = ()
    """Argument lists (JSON values), one traced call each."""
    tests: str | None = None
    """Test code run untraced after the calls: asserts, or a `check(candidate)` function (HumanEval)."""
    examples: tuple[tuple[str, str], ...] = ()
    """Doctest examples: (source, expected output)."""
    display: str | None = None
    """The source shown in the trace; `code` when None."""

    def shown_source(self) -> str:
        return self.code if self.display is None else self.display

    def request(self) -> dict:
        """The runner's request (the sandbox adds the limits)."""
        return {"kind": self.kind, "code": self.code, "entry_point": self.entry_point,
                "inputs": [list(args) for args in self.inputs], "tests": self.tests,
                "examples": [list(e) for e in self.examples]}

    def to_json(self) -> str:
        """Fields in their declared order and dicts inside `inputs` in theirs: key order is input to
        order-sensitive code, so it is never sorted."""
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Unit:
        data = json.loads(text)
        data["inputs"] = tuple(tuple(args) for args in data["inputs"])
        data["examples"] = tuple(tuple(e) for e in data["examples"])
        return cls(**data)


def unit_from_record(record: object, uri: str | None = None) -> Unit:
    """A JSONL record `{id, code, entry_point?, inputs?, tests?}`; no entry_point makes it a script."""
    if not isinstance(record, dict):
        raise UnitError(f"a unit must be a JSON object, got {type(record).__name__}")
    unit_id, code = record.get("id"), record.get("code")
    if not isinstance(unit_id, (str, int)) or isinstance(unit_id, bool) or str(unit_id) == "":
        raise UnitError("a unit needs an `id` (string or integer)")
    if not isinstance(code, str) or not code.strip():
        raise UnitError(f"unit {unit_id!r} needs non-empty `code`")
    entry, inputs, tests = record.get("entry_point"), record.get("inputs", [[]]), record.get("tests")
    if entry is not None and (not isinstance(entry, str) or not entry.isidentifier()):
        raise UnitError(f"unit {unit_id!r}: `entry_point` must be a function name, got {entry!r}")
    if not isinstance(inputs, list) or not all(isinstance(args, list) for args in inputs):
        raise UnitError(f"unit {unit_id!r}: `inputs` must be a list of argument lists")
    if tests is not None and not isinstance(tests, str):
        raise UnitError(f"unit {unit_id!r}: `tests` must be a string of Python code")
    if entry is None:
        return Unit(id=str(unit_id), kind="script", code=code, origin="units", uri=uri, tests=tests)
    return Unit(id=str(unit_id), kind="function", code=code, origin="units", uri=uri, entry_point=entry,
                inputs=tuple(tuple(args) for args in inputs or [[]]), tests=tests)


def units_from_jsonl(text: str, uri: str) -> list[Unit | UnitError]:
    """Every non-empty line: a Unit, or the UnitError saying why it is not one (the ledger counts both)."""
    out: list[Unit | UnitError] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(unit_from_record(json.loads(line), f"{uri}#line{number}"))
        except ValueError as err:  # json.JSONDecodeError and UnitError are both ValueErrors
            out.append(err if isinstance(err, UnitError) else UnitError(f"{uri}#line{number}: not JSON: {err}"))
    return out


def script_unit(text: str, uri: str, name: str) -> Unit:
    """A standalone script run without arguments as `__main__`."""
    return Unit(id=f"script/{name}", kind="script", code=text, origin="scripts", uri=uri)


def doctest_units(doc_id: str, text: str, uri: str | None = None, repo: str | None = None,
                  license: str | None = None, path: str | None = None,
                  max_units: int = 4, max_examples: int = 12) -> list[Unit]:
    """Units for the docstrings with examples of a Python module that can run in the sandbox.

    The module must parse and import only the standard library, with no relative imports (the sandbox
    holds the Python installation and nothing else). Examples marked `+SKIP` are left out.
    """
    if ">>>" not in text or max_units == 0:
        return []
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    if not _imports_only_stdlib(tree):
        return []
    parser = doctest.DocTestParser()
    units = []
    for qualname, node in _documented(tree):
        docstring = ast.get_docstring(node, clean=True)
        if not docstring or ">>>" not in docstring:
            continue
        try:
            examples = [e for e in parser.get_examples(docstring) if not e.options.get(doctest.SKIP)]
        except ValueError:  # inconsistent indentation and the like
            continue
        if not examples:
            continue
        examples = examples[:max_examples]
        units.append(Unit(
            id=f"doctest/{doc_id}/{qualname}", kind="doctest", code=text, origin="doctests", uri=uri,
            repo=repo, license=license, examples=tuple((e.source, e.want) for e in examples),
            display=_display(text, node, qualname, path or uri or doc_id, examples),
        ))
        if len(units) >= max_units:
            break
    return units


def _imports_only_stdlib(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                return False
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        if any(name.split(".")[0] not in sys.stdlib_module_names for name in names):
            return False
    return True


def _documented(tree: ast.Module):
    """(qualname, node) for the module and every function or class, in source order."""
    yield "<module>", tree
    stack = [("", tree)]
    found = []
    while stack:
        prefix, parent = stack.pop()
        for child in ast.iter_child_nodes(parent):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                found.append((child.lineno, name, child))
                stack.append((f"{name}.", child))
    for _, name, node in sorted(found, key=lambda item: item[0]):
        yield name, node


def _display(text: str, node: ast.AST, qualname: str, where: str, examples) -> str:
    """What the trace shows as source: a function whole, a class up to its docstring, a module's examples."""
    lines = text.splitlines()
    if isinstance(node, ast.Module):
        body = "".join(f">>> {e.source}" for e in examples)
        return f"# {where}: examples from the module docstring\n{body}".rstrip("\n")
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    last = node.body[0].end_lineno if isinstance(node, ast.ClassDef) else node.end_lineno
    segment = "\n".join(lines[first - 1:last])
    return f"# {where}, lines {first}-{last} ({qualname})\n{segment}"
