"""The in-sandbox runner's pure parts: stable reprs and the guard's path rules (no subprocess)."""

from __future__ import annotations

import os

import pytest

from pipeline.traces.runner import Forbidden, Guard, stable_repr, strip_addresses


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


def test_guard_allows_the_sandbox_and_python_and_refuses_the_rest(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    guard = Guard(str(work), ["/usr/lib/python3"], files_to_write=1)
    guard.hook("open", ("x.txt", "w", 0))
    guard.hook("open", ("/usr/lib/python3/os.py", "r", 0))
    guard.hook("open", (3, "r", 0))
    for event, args in [("open", ("/usr/lib/python3/os.py", "w", 0)), ("open", ("/etc/passwd", "r", 0)),
                        ("open", ("../escape", None, os.O_WRONLY | os.O_CREAT)), ("os.remove", ("/tmp/x",)),
                        ("socket.__new__", ()), ("os.system", (b"ls",)), ("import", ("ctypes",)),
                        ("sys.settrace", ()), ("open", ("second.txt", "w", 0))]:
        with pytest.raises(Forbidden):
            guard.hook(event, args)
    assert len(guard.violations) == 9
