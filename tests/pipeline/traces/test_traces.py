"""Units through the real sandbox to documents and SFT examples: format, caps, determinism, statuses."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.traces.config import TracesConfig
from pipeline.traces.format import MARKERS, RenderedRun, Step, render_document
from pipeline.traces.generate import _unit_row, trace_rows
from pipeline.traces.sft import question, rng_for, spot_error
from pipeline.traces.units import doctest_units, unit_from_record
from tests.pipeline.traces.sandboxes import best_sandbox

CFG = TracesConfig(enabled=True, workers=4, cpu_seconds=1, wall_seconds=5.0, memory_mb=256)
EVALUATE = "def evaluate(a, b, c):\n    product = b * c\n    return a + product\n"
GOLDEN = """<|source|>
def evaluate(a, b, c):
    product = b * c
    return a + product
<|trace|> evaluate(61, 65, 2)
<|call|> evaluate(a=61, b=65, c=2)
<|line|> 2 product = b * c
<|state|> product=130
<|line|> 3 return a + product
<|return|> evaluate -> 191
<|result|> 191
"""
RAISING = """def outer(x):
    print('checking', x)
    return inner(x)


def inner(x):
    if x < 0:
        raise ValueError('negative')
    return x
"""


@pytest.fixture(scope="module")
def sandbox():
    return best_sandbox(CFG)


def run(records, sandbox, cfg=CFG):
    rows = [_unit_row(unit_from_record(r, "mem://u.jsonl")) for r in records]
    return trace_rows(rows, cfg, sandbox)


def test_golden_document(sandbox):
    (row,) = run([{"id": "e", "code": EVALUATE, "entry_point": "evaluate", "inputs": [[61, 65, 2]]}], sandbox)
    assert row["status"] == "ok"
    assert row["text"] == GOLDEN
    assert (row["id"], row["domain"], row["source"], row["lang"]) == ("trace/e", "trace", "traces", "python")
    assert row["meta"]["steps"] == "2" and row["meta"]["truncated"] == "false"
    assert "rlimits" in row["meta"]["sandbox"]


def test_exceptions_output_and_nested_calls(sandbox):
    (row,) = run([{"id": "r", "code": RAISING, "entry_point": "outer", "inputs": [[2], [-1]]}], sandbox)
    text = row["text"]
    assert "<|output|> 'checking 2\\n'" in text
    assert ("<|call|> @1 inner(x=2)\n<|line|> @1 7 if x < 0:\n<|line|> @1 9 return x\n<|return|> @1 inner -> 2"
            in text)
    assert "<|line|> @1 8 raise ValueError('negative')\n<|exception|> @1 8 ValueError: negative\n" in text
    assert "<|return|> @1 inner raised ValueError" in text and "<|return|> outer raised ValueError" in text
    assert text.endswith("<|result|> raises ValueError: negative\n  line 3 return inner(x) (in outer)\n"
                         "  line 8 raise ValueError('negative') (in inner)\n")


def test_traces_are_deterministic(sandbox):
    code = "def f(words):\n    seen = set(words)\n    counts = {w: len(w) for w in sorted(seen)}\n    return seen, counts\n"
    record = {"id": "d", "code": code, "entry_point": "f", "inputs": [[["pear", "fig", "apple", "fig"]]]}
    first, second = run([record], sandbox), run([record], sandbox)
    assert first[0]["seconds"] > 0 and first[0]["sandbox_mode"] == sandbox.mode
    assert [dict(r, seconds=None) for r in first] == [dict(r, seconds=None) for r in second]
    assert "seen={'apple', 'fig', 'pear'}" in first[0]["text"]


def test_clocks_are_frozen_so_traces_repeat(sandbox):
    code = "import time\ndef f():\n    return time.time(), time.monotonic(), time.localtime(time.time())[:3]\n"
    (row,) = run([{"id": "clock", "code": code, "entry_point": "f"}], sandbox)
    assert row["text"].endswith("<|result|> (946684800.001, 1000.002, (2000, 1, 1))\n")


def test_step_and_byte_caps_mark_truncation_and_keep_the_result(sandbox):
    code = "def spin(n):\n    total = 0\n    for i in range(n):\n        total += i\n    return total\n"
    record = {"id": "s", "code": code, "entry_point": "spin", "inputs": [[100000]]}
    capped = dataclasses.replace(CFG, max_steps=20)
    (row,) = run([record], best_sandbox(capped), capped)
    assert row["text"].count("<|line|>") == 20
    assert "<|truncated|>\n<|result|> 4999950000\n" in row["text"] and row["meta"]["truncated"] == "true"
    (row,) = run([record], sandbox, dataclasses.replace(CFG, max_trace_bytes=300))
    assert len(row["text"]) < 300 + len(code) + 100 and "<|truncated|>" in row["text"]


def test_tests_are_run_and_reported(sandbox):
    good = {"id": "t1", "code": EVALUATE, "entry_point": "evaluate", "inputs": [[1, 2, 3]],
            "tests": "def check(candidate):\n    assert candidate(1, 2, 3) == 7\n"}
    bad = dict(good, id="t2", tests="assert evaluate(0, 0, 0) == 1")
    rows = run([good, bad], sandbox)
    assert [r["meta"]["tests"] for r in rows] == ["passed", "failed: AssertionError"]


def test_scripts_doctests_and_failures(sandbox):
    module = 'def double(x):\n    """Twice.\n\n    >>> double(3)\n    6\n    >>> double(None)\n    Traceback (most recent call last):\n    TypeError: nope\n    """\n    return 2 * x\n'
    rows = run([{"id": "sc", "code": "x = 2\nprint(x * 3)\n"},
                {"id": "syntax", "code": "def f(:\n", "entry_point": "f"},
                {"id": "missing", "code": "x = 1\n", "entry_point": "f"}], sandbox)
    rows += trace_rows([_unit_row(u) for u in doctest_units("code/m", module)], CFG, sandbox)
    script, syntax, missing, doc = rows
    assert script["text"].endswith("<|trace|> script\n<|line|> 1 x = 2\n<|state|> x=2\n<|line|> 2 print(x * 3)\n"
                                   "<|output|> '6\\n'\n<|result|> exit 0\n")
    assert (syntax["status"], missing["status"]) == ("error", "error")
    assert "does not compile" in syntax["detail"] and "entry point 'f'" in missing["detail"]
    assert doc["status"] == "ok" and doc["meta"]["doctest_matches"] == "2/2"
    assert "<|trace|> >>> double(3)\n<|line|> >>> double(3)\n<|call|> @1 double(x=3)" in doc["text"]
    assert "<|result|> 6\n" in doc["text"]
    assert "unsupported operand type(s) for *: 'int' and 'NoneType'" in doc["text"]


def test_sft_forms(sandbox):
    (row,) = run([{"id": "e", "code": EVALUATE, "entry_point": "evaluate", "inputs": [[61, 65, 2]]}], sandbox)
    forms = {e["kind"]: e for e in row["sft"]}
    assert set(forms) == {"question", "spot_error"}
    assert "What does `evaluate(61, 65, 2)` return?" in forms["question"]["prompt"]
    assert forms["question"]["response"].endswith("<|result|> 191\n\nAnswer: 191")
    spot = forms["spot_error"]
    assert "<|state|> product=130" not in spot["prompt"] and "<|state|> product=" in spot["prompt"]
    assert spot["response"].startswith("The first wrong step is the state after line 2 (`product = b * c`): "
                                       "`product` is 130, not ")
    assert spot["response"].endswith("<|state|> product=130\n<|line|> 3 return a + product\n"
                                     "<|return|> evaluate -> 191\n<|result|> 191")
    (again,) = run([{"id": "e", "code": EVALUATE, "entry_point": "evaluate", "inputs": [[61, 65, 2]]}], sandbox)
    assert again["sft"] == row["sft"]


def test_question_about_a_raising_call_names_the_line():
    steps = (Step("line", "<|line|> 8 raise ValueError('negative')", where="8 raise ValueError('negative')"),)
    run_ = RenderedRun("inner(-1)", steps, ("<|result|> raises ValueError: negative",), None,
                       "ValueError: negative", "8 raise ValueError('negative')")
    example = question("function", "code", [run_], rng_for(0, "u", "question"))
    assert example.response.endswith("Answer: line 8 (`raise ValueError('negative')`) raises ValueError: negative")
    assert spot_error("code", [run_], rng_for(0, "u", "spot_error")) is None


def test_markers_are_the_ones_the_text_uses():
    text, _ = render_document("x = 1", [], 100)
    assert MARKERS[0] in text and len(set(MARKERS)) == len(MARKERS) == 10
    assert all(m.startswith("<|") and m.endswith("|>") for m in MARKERS)


def test_a_forged_result_is_an_error_not_a_crash(sandbox):
    forge = "import os\nos.write(3, b'{\"status\": \"ok\", \"runs\": [{\"bogus\": 1}]}')\nos._exit(0)\n"
    (row,) = run([{"id": "forged", "code": forge}], sandbox)
    assert (row["status"], row["detail"]) == ("error", "malformed result: KeyError")


def test_long_results_are_kept_whole_and_only_states_are_cut(sandbox):
    code = "def f(n):\n    xs = list(range(n))\n    return xs\n"
    (row,) = run([{"id": "long", "code": code, "entry_point": "f", "inputs": [[2000]]}], sandbox)
    whole = repr(list(range(2000)))
    assert f"<|result|> {whole}\n" in row["text"]
    state = next(line for line in row["text"].splitlines() if line.startswith("<|state|> xs="))
    assert len(state) < 100 and state.endswith("…")
    (answer,) = [e["response"] for e in row["sft"] if e["kind"] == "question"]
    assert answer.endswith(f"Answer: {whole}")
    capped = dataclasses.replace(CFG, max_result_repr_bytes=1000)
    (row,) = run([{"id": "cut", "code": code, "entry_point": "f", "inputs": [[2000]]}], best_sandbox(capped), capped)
    result = next(line for line in row["text"].splitlines() if line.startswith("<|result|>"))
    assert result == f"<|result|> {whole[:999]}…" or result == f"<|result|> {whole[:1000]}…"
    assert len(result.removeprefix("<|result|> ").encode()) <= 1000 + len("…".encode())


def test_input_dicts_reach_the_code_in_their_own_order(sandbox):
    code = "def f(d):\n    return [k for k in d]\n"
    (row,) = run([{"id": "order", "code": code, "entry_point": "f", "inputs": [[{"b": 1, "a": 2, "c": 3}]]}],
                 sandbox)
    assert "<|result|> ['b', 'a', 'c']\n" in row["text"]


@pytest.mark.parametrize("right", ["1.0", "-1.0", "2.0", "-2.0", "0.0", "-0.0", "0.5", "1e+20", "1.7976931348623157e+308",
                                   "2e-07", "0", "1", "-2", "True", "False", "''", "'a'", "'ab'", "'0'"])
def test_spot_error_never_plants_the_right_value(right):
    import ast

    from pipeline.traces.sft import _wrong_value

    for seed in range(500):
        wrong = _wrong_value(right, rng_for(seed, "unit", "spot_error"))
        assert wrong != right and ast.literal_eval(wrong) != ast.literal_eval(right), (seed, wrong)
    run_ = RenderedRun("f(2)", (Step("line", "<|line|> 2 x = y", where="2 x = y"),
                                Step("state", f"<|state|> x={right}", changes=(("x", right),))),
                       ("<|result|> None",), "None", None, None)
    for seed in range(200):
        example = spot_error("def f(y):\n    x = y\n", [run_], rng_for(seed, "u", "spot_error"))
        assert f"is {right}, not {right}." not in example.response


def test_recursive_frames_carry_their_depth(sandbox):
    code = "def fact(n):\n    if n <= 1:\n        return 1\n    return n * fact(n - 1)\n"
    (row,) = run([{"id": "fact", "code": code, "entry_point": "fact", "inputs": [[3]]}], sandbox)
    records = row["text"].split("<|trace|> fact(3)\n")[1].splitlines()
    assert records == [
        "<|call|> fact(n=3)", "<|line|> 2 if n <= 1:", "<|line|> 4 return n * fact(n - 1)",
        "<|call|> @1 fact(n=2)", "<|line|> @1 2 if n <= 1:", "<|line|> @1 4 return n * fact(n - 1)",
        "<|call|> @2 fact(n=1)", "<|line|> @2 2 if n <= 1:", "<|line|> @2 3 return 1", "<|return|> @2 fact -> 1",
        "<|return|> @1 fact -> 2", "<|return|> fact -> 6", "<|result|> 6"]
    deep = RenderedRun("f(2)", (Step("line", "<|line|> @2 2 x = y", where="2 x = y", depth=2),
                                Step("state", "<|state|> @2 x=5", changes=(("x", "5"),), depth=2)),
                       ("<|result|> None",), "None", None, None)
    example = spot_error("def f(y):\n    x = y\n", [deep], rng_for(0, "u", "spot_error"))
    assert "\n<|state|> @2 x=" in example.prompt and "\n<|state|> @2 x=5" not in example.prompt
