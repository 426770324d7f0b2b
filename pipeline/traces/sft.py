"""The two SFT forms of a trace: a question answered with the trace as reasoning, and error spotting.

Both are deterministic for (seed, unit id): the random choices use a generator seeded from their hash.
"""

from __future__ import annotations

import ast
import hashlib
import math
import random
from dataclasses import dataclass

from pipeline.traces.format import RenderedRun, Step, state_text, trace_block

AFTER_PLANT = 3
"""At most this many true steps follow the planted value in the prompt, so it is not always the last."""


@dataclass(frozen=True)
class SftExample:
    kind: str
    """`question` or `spot_error`."""
    prompt: str
    response: str


def rng_for(seed: int, unit_id: str, purpose: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{unit_id}\x00{purpose}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def question(kind: str, source: str, runs: list[RenderedRun], rng: random.Random) -> SftExample | None:
    """"What does `f(3)` return?" (or "which line raises?"), answered by the trace and then the answer."""
    complete = [run for run in runs if not any(s.kind == "truncated" for s in run.steps)]
    if not complete:
        return None
    run = rng.choice(complete)
    code = f"```python\n{source.rstrip()}\n```"
    if run.raises:
        ask = f"Calling `{run.label}` raises an exception. Which line raises it, and what is the exception?"
        where = describe_line(run.raising_line) if run.raising_line else "the call"
        answer = f"{where} raises {run.raises}"
    elif kind == "doctest":
        ask, answer = f"What does `{run.label}` display?", run.value
    elif kind == "script":
        ask = "What does this script print, and how does it end?"
        printed = "".join(ast.literal_eval(s.text.split(" ", 1)[1]) for s in run.steps if s.kind == "output")
        answer = f"it prints {printed!r} and ends with {run.value}"
    else:
        ask, answer = f"What does `{run.label}` return?", run.value
    prompt = f"{code}\n\n{ask} Trace the execution step by step."
    return SftExample("question", prompt, f"{trace_block(run)}\n\nAnswer: {answer}")


def spot_error(source: str, runs: list[RenderedRun], rng: random.Random) -> SftExample | None:
    """A trace with one wrong value planted in a state record; the answer names it and continues correctly."""
    candidates = [(r, i, j) for r, run in enumerate(runs) for i, step in enumerate(run.steps)
                  if step.kind == "state" for j, (_n, value) in enumerate(step.changes) if _plantable(value)]
    candidates = [c for c in candidates if not any(s.kind == "truncated" for s in runs[c[0]].steps)]
    if not candidates:
        return None
    r, i, j = rng.choice(candidates)
    run = runs[r]
    step = run.steps[i]
    name, right = step.changes[j]
    wrong = _wrong_value(right, rng)
    changes = tuple((n, wrong if k == j else v) for k, (n, v) in enumerate(step.changes))
    planted = Step("state", state_text(changes, step.depth), changes, depth=step.depth)
    shown = run.steps[:i] + (planted,) + run.steps[i + 1:i + 1 + rng.randint(0, AFTER_PLANT)]
    before = _line_before(run.steps, i)
    prompt = (
        f"```python\n{source.rstrip()}\n```\n\nThe trace below follows `{run.label}` through this code, but one "
        f"recorded value is wrong. Find the first wrong step and continue the trace correctly.\n\n"
        + "\n".join([f"<|trace|> {run.label}", *(s.text for s in shown)])
    )
    response = (
        f"The first wrong step is the state after {before}: `{name}` is {right}, not {wrong}.\n"
        f"Correct continuation:\n" + "\n".join([*(s.text for s in run.steps[i:]), *run.result])
    )
    return SftExample("spot_error", prompt, response)


def _line_before(steps: tuple[Step, ...], index: int) -> str:
    for step in reversed(steps[:index]):
        if step.kind == "line":
            return describe_line(step.where)
    return "the call"


def describe_line(where: str) -> str:
    """`7 root = isqrt(disc)` -> "line 7 (`root = isqrt(disc)`)"; example lines have no number."""
    number, _, text = where.partition(" ")
    return f"the example line `{text}`" if number in (">>>", "...") else f"line {number} (`{text}`)"


def _plantable(value: str) -> bool:
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return False
    return type(parsed) in (int, float, bool, str) and not value.endswith("…")


def _wrong_value(value: str, rng: random.Random) -> str:
    """A plausible value that differs from `value` (a literal of type int, float, bool or str), always: the
    planted value must never be the right one ("is 2.0, not 2.0")."""
    parsed = ast.literal_eval(value)
    if isinstance(parsed, bool):
        return repr(not parsed)
    if isinstance(parsed, int):
        return repr(parsed + rng.choice([-10, -2, -1, 1, 2, 10]))
    if isinstance(parsed, float):
        candidates = [round(parsed * scale + shift, 6) for scale in (0.5, 2.0) for shift in (-1.0, 1.0)]
        candidates += [parsed + 1.0, parsed - 1.0, parsed * 10.0 + 1.0]
        wrong = [c for c in candidates if c != parsed and repr(c) != value and math.isfinite(c)]
        return repr(rng.choice(wrong))  # x*0.5+1 == x only at x = 2 and x*0.5-1 == x only at x = -2
    if not parsed:
        return repr(rng.choice("abxyz"))
    position = rng.randrange(len(parsed))
    replacement = rng.choice([c for c in "aeixyz0" if c != parsed[position]])
    return repr(parsed[:position] + replacement + parsed[position + 1:])
