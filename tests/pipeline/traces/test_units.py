"""Unit records, doctest extraction, scripts."""

from __future__ import annotations

import json

import pytest

from pipeline.traces.units import Unit, UnitError, doctest_units, unit_from_record, units_from_jsonl

MODULE = '''"""Helpers.

>>> double(2)
4
"""
import math


def double(x):
    """Twice x.

    >>> double(3)
    6
    >>> double(math.pi) > 6  # doctest: +SKIP
    True
    """
    return 2 * x


class Box:
    """A box.

    >>> Box(2).size
    2
    """

    def __init__(self, size):
        self.size = size

    def grow(self):
        """No examples here."""
'''


def test_function_and_script_records():
    unit = unit_from_record({"id": "u1", "code": "def f(a):\n    return a\n", "entry_point": "f",
                             "inputs": [[1], [2]], "tests": "assert f(1) == 1"}, "file:///t.jsonl#line1")
    assert (unit.kind, unit.inputs, unit.tests, unit.origin) == ("function", ((1,), (2,)), "assert f(1) == 1", "units")
    assert unit_from_record({"id": 7, "code": "print(1)"}).kind == "script"
    assert Unit.from_json(unit.to_json()) == unit


@pytest.mark.parametrize("record, message", [
    ({"code": "x"}, "needs an `id`"),
    ({"id": "a", "code": ""}, "non-empty `code`"),
    ({"id": "a", "code": "x", "entry_point": "not a name"}, "function name"),
    ({"id": "a", "code": "x", "entry_point": "f", "inputs": [1, 2]}, "list of argument lists"),
    ([1], "JSON object"),
])
def test_invalid_records_say_why(record, message):
    with pytest.raises(UnitError, match=message) as err:
        unit_from_record(record)
    assert err.value.reason == "invalid_unit"


def test_jsonl_keeps_every_line_accounted():
    text = json.dumps({"id": "a", "code": "def f():\n    return 1\n", "entry_point": "f"}) + "\n\nnot json\n{}\n"
    items = units_from_jsonl(text, "mem://u.jsonl")
    assert [type(i).__name__ for i in items] == ["Unit", "UnitError", "UnitError"]
    assert items[0].inputs == ((),)


def test_doctests_become_one_unit_per_docstring():
    units = doctest_units("code/m", MODULE, "file:///m.py", "repo", "MIT", "repo/m.py")
    assert [u.id for u in units] == ["doctest/code/m/<module>", "doctest/code/m/double", "doctest/code/m/Box"]
    double = units[1]
    assert double.examples == (("double(3)\n", "6\n"),)  # the +SKIP example is left out
    assert double.display.startswith("# repo/m.py, lines 9-17 (double)\ndef double(x):")
    assert units[2].display.endswith('    """') and "def __init__" not in units[2].display
    assert all(u.code == MODULE and u.license == "MIT" and u.kind == "doctest" for u in units)
    assert len(doctest_units("code/m", MODULE, max_units=1)) == 1


def test_doctests_need_a_standalone_stdlib_module():
    assert doctest_units("d", "import numpy\n\ndef f():\n    '''>>> f()\n    1'''\n    return 1\n") == []
    assert doctest_units("d", "from . import x\n\ndef f():\n    '''>>> f()\n    1'''\n") == []
    assert doctest_units("d", "def f(:\n    '''>>> f()'''\n") == []
    assert doctest_units("d", "x = 1\n") == []


def test_serialised_units_keep_the_key_order_of_their_inputs():
    record = {"id": "o", "code": "def f(d):\n    return list(d)\n", "entry_point": "f",
              "inputs": [[{"zeta": 1, "alpha": {"y": 2, "b": 3}, "mid": [{"k2": 0, "k1": 1}]}]]}
    unit = unit_from_record(record)
    again = Unit.from_json(unit.to_json())
    assert again == unit
    assert json.dumps(again.request()["inputs"]) == json.dumps(record["inputs"])
