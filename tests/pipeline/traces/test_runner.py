"""The in-sandbox runner's parts: stable reprs, and the guard's path rules (in a child interpreter: a refusal
ends the process that installed the guard)."""

from __future__ import annotations

import dis
import json
import os
import subprocess
import sys

import pytest

from pipeline.traces.runner import install_guard, stable_repr, strip_addresses


class Plain:
    pass


class Huge:
    def __repr__(self):
        return "y" * 5000


class Broken:
    def __repr__(self):
        raise RuntimeError("no")


def test_stable_repr_sorts_sets_and_keeps_dict_order():
    assert stable_repr({"b", "a", "c"}, 60) == "{'a', 'b', 'c'}"
    assert stable_repr(frozenset({3, 1}), 60) == "frozenset({1, 3})"
    assert stable_repr({"z": 1, "a": {2, 1}}, 60) == "{'z': 1, 'a': {1, 2}}"
    assert stable_repr((1,), 60) == "(1,)" and stable_repr(set(), 60) == "set()"


def test_stable_repr_has_no_addresses_and_is_capped():
    assert stable_repr(Plain(), 60) == f"<{__name__}.Plain>"
    assert "0x" not in stable_repr(test_stable_repr_sorts_sets_and_keeps_dict_order, 60)
    assert stable_repr(list(range(1000)), 20) == "[0, 1, 2, 3, 4, 5, 6…"
    assert stable_repr(Huge(), 10) == "yyyyyyyyyy…"
    assert stable_repr(10**10000, 60) == "<int of 33220 bits>"
    assert stable_repr(Broken(), 60) == "<Broken (repr failed: RuntimeError)>"
    assert stable_repr([[[[[[[[1]]]]]]]], 60) == "[[[[[[...]]]]]]"


def test_strip_addresses():
    assert strip_addresses("<Foo object at 0x7f3a2b>, <function g at 0xABC>") == "<Foo>, <function g>"


def guard_verdict(work, calls, files_to_write=1, namespaced=False) -> tuple[int, dict | None]:
    """Install the guard in a child interpreter, raise `calls` (event, args) in order (or the source of such
    a list): how many passed and the verdict the guard wrote when it refused one (None when all passed)."""
    program = (
        "import sys\nfrom pipeline.traces.runner import install_guard\n"
        f"install_guard({str(work)!r}, ['/usr/lib/python3'], {files_to_write!r}, {namespaced!r}, 1)\n"
        f"for event, args in {calls if isinstance(calls, str) else repr(calls)}:\n    sys.audit(event, *args)\n    print('passed', flush=True)\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30, check=True, cwd=work,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    lines = done.stdout.splitlines(keepends=True)
    passed = sum(line == "passed\n" for line in lines)
    rest = "".join(line for line in lines if line != "passed\n")
    return passed, json.loads(rest) if rest else None


def test_guard_allows_the_sandbox_and_python(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "inner").symlink_to(work)
    allowed = [("open", ("x.txt", "w", 0)), ("open", ("/usr/lib/python3/os.py", "r", 0)), ("open", (3, "r", 0)),
               ("open", ("inner/inner/y", None, os.O_WRONLY)), ("open", ("/dev/null", "r", 0)),
               ("os.listdir", (".",)), ("open", (b"bytes.txt", "r", 0))]
    assert guard_verdict(work, allowed, files_to_write=3) == (len(allowed), None)


@pytest.mark.parametrize("event, args", [
    ("open", ("/usr/lib/python3/os.py", "w", 0)), ("open", ("/etc/passwd", "r", 0)),
    ("open", ("../escape", None, os.O_WRONLY | os.O_CREAT)), ("os.remove", ("/tmp/x",)),
    ("socket.__new__", ()), ("os.system", (b"ls",)), ("import", ("ctypes",)), ("sys.settrace", ()),
    ("open", ("second.txt", "w", 0)), ("open", ("outside/secret", "r", 0)), ("os.symlink", ("/etc", "l")),
])
def test_guard_refuses_the_rest_and_ends_the_process(tmp_path, event, args):
    work = tmp_path / "work"
    work.mkdir()
    (work / "outside").symlink_to(tmp_path)
    passed, verdict = guard_verdict(work, [("open", ("first.txt", "w", 0)), (event, args)])
    assert passed == 1
    assert verdict["status"] == "forbidden" and verdict["detail"].startswith("the sandbox refused: ")


def test_guard_refuses_path_objects_only_without_namespaces(tmp_path):
    calls = "[('open', (__import__('pathlib').PurePosixPath('x'), 'r', 0))]"
    assert guard_verdict(tmp_path, calls, namespaced=True) == (1, None)
    passed, verdict = guard_verdict(tmp_path, calls)
    assert passed == 0 and "path of type PurePosixPath" in verdict["detail"]


def test_the_hook_reads_no_global_a_unit_could_replace():
    """Every name the hook uses is bound in its closure when it is installed: no global or builtin lookup."""
    (hook,) = [c for c in install_guard.__code__.co_consts if getattr(c, "co_name", "") == "audit"]
    loads = [i.argval for i in dis.get_instructions(hook) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")]
    assert loads == []
    assert not [c for c in hook.co_consts if hasattr(c, "co_code")]  # no nested function a unit could rebind
