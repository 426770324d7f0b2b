"""The trace text format: source first, then one trace block per call, each ending in its result.

    <|source|>
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

One record per line, each opened by a marker (docs/traces.md describes them all). `<|line|>` gives the line
about to run (its number in the code, then its text without indentation; `>>>`/`...` for doctest examples);
`<|state|>` the variables that changed since the previous record of the same frame, as `name=repr`;
`<|output|>` printed text (as a Python string literal); `<|exception|>` the line and the exception raised;
`<|return|>` a function's value, or `raised NAME` when an exception left it; `<|truncated|>` marks steps
left out by the caps. A record of a frame N calls below the traced call starts with `@N` after its marker
(`<|line|> @2 5 return fact(n - 1) * n`), so recursive frames can be told apart; the traced call's own
frame has no mark. The result is the value (or a doctest's displayed output, or a script's `exit 0`) or
`raises TYPE: MESSAGE` followed by the traceback's lines inside the unit.
"""

from __future__ import annotations

from dataclasses import dataclass

MARKERS = ("<|source|>", "<|trace|>", "<|call|>", "<|line|>", "<|state|>", "<|output|>", "<|exception|>",
           "<|return|>", "<|result|>", "<|truncated|>")
"""Every marker the format uses, for tokenizers that want them as special tokens."""
SOURCE, TRACE, CALL, LINE, STATE, OUTPUT, EXCEPTION, RETURN, RESULT, TRUNCATED = MARKERS


@dataclass(frozen=True)
class Step:
    kind: str
    """call, line, state, output, exception, return or truncated."""
    text: str
    """The rendered record, marker included."""
    changes: tuple[tuple[str, str], ...] = ()
    """For a state step: (name, repr) pairs."""
    where: str = ""
    """For a line step: `N source` (what the line record shows after its marker and depth)."""
    depth: int = 0
    """Call depth of the step's frame below the traced call (0: the call itself)."""


@dataclass(frozen=True)
class RenderedRun:
    label: str
    steps: tuple[Step, ...]
    result: tuple[str, ...]
    """The result record and any traceback lines after it."""
    value: str | None
    """The value, displayed output or exit: the answer when the call did not raise."""
    raises: str | None
    """`TYPE: MESSAGE` when the call raised."""
    raising_line: str | None
    """`N source` of the innermost unit line the exception came from."""


class SourceLines:
    """Source text by (file, line) for the unit's code and its doctest examples."""

    def __init__(self, code: str, examples=()):
        self.files = {"<unit>": code.splitlines()}
        for i, (source, _want) in enumerate(examples):
            self.files[f"<example {i}>"] = source.splitlines()

    def where(self, file: str, number: int) -> str:
        lines = self.files.get(file, [])
        text = lines[number - 1].strip() if 0 < number <= len(lines) else ""
        if file.startswith("<example"):
            return f"{'>>>' if number == 1 else '...'} {text}"
        return f"{number} {text}"


def render_run(run: dict, lines: SourceLines) -> RenderedRun:
    """One traced call from the runner's events."""
    steps = tuple(_step(event, lines) for event in run["events"])
    result = run["result"]
    if "raises" in result:
        frames = [lines.where(file, number) for file, number, _name in result.get("traceback", [])]
        names = [name for _file, _number, name in result.get("traceback", [])]
        tail = tuple(f"  line {where} (in {name})" for where, name in zip(frames, names))
        return RenderedRun(run["label"], steps, (f"{RESULT} raises {result['raises']}",) + tail, None,
                           result["raises"], frames[-1] if frames else None)
    value = result["value"]
    if run["label"].startswith(">>>"):
        value = run.get("output", "").rstrip("\n") or "(nothing displayed)"
    return RenderedRun(run["label"], steps, (f"{RESULT} {value}",), value, None, None)


DEPTH_AT = {"call": 3, "line": 3, "state": 2, "exception": 3, "return": 4}
"""Where each frame event holds its call depth (runner.py)."""


def _step(event: list, lines: SourceLines) -> Step:
    kind = event[0]
    depth = event[DEPTH_AT[kind]] if kind in DEPTH_AT and len(event) > DEPTH_AT[kind] else 0
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
        raise ValueError(f"malformed depth {depth!r}")
    mark = depth_mark(depth)
    if kind == "call":
        args = ", ".join(f"{name}={value}" for name, value in event[2])
        return Step(kind, f"{CALL} {mark}{event[1]}({args})", depth=depth)
    if kind == "line":
        where = lines.where(event[1], event[2])
        return Step(kind, f"{LINE} {mark}{where}", where=where, depth=depth)
    if kind == "state":
        changes = tuple((name, value) for name, value in event[1])
        return Step(kind, state_text(changes, depth), changes=changes, depth=depth)
    if kind == "output":
        return Step(kind, f"{OUTPUT} {event[1]!r}")
    if kind == "exception":
        return Step(kind, f"{EXCEPTION} {mark}{event[1]} {event[2]}", depth=depth)
    if kind == "return":
        shown = f"raised {event[3]}" if event[3] else f"-> {event[2]}"
        return Step(kind, f"{RETURN} {mark}{event[1]} {shown}", depth=depth)
    return Step("truncated", TRUNCATED)


def depth_mark(depth: int) -> str:
    """`@N ` for a frame N calls below the traced call; nothing for the call's own frame."""
    return f"@{depth} " if depth else ""


def state_text(changes, depth: int = 0) -> str:
    return f"{STATE} {depth_mark(depth)}" + ", ".join(f"{name}={value}" for name, value in changes)


def render_document(source: str, runs: list[RenderedRun], max_trace_bytes: int) -> tuple[str, bool]:
    """The document text and whether steps were left out (by the runner's caps or this byte cap)."""
    parts = [SOURCE, source.rstrip("\n")]
    budget = max_trace_bytes
    truncated = False
    for run in runs:
        parts.append(f"{TRACE} {run.label}")
        for step in run.steps:
            if step.kind == "truncated":
                truncated = True
            cost = len(step.text.encode("utf-8")) + 1
            if budget - cost < 0:
                parts.append(TRUNCATED)
                truncated = True
                break
            budget -= cost
            parts.append(step.text)
        parts.extend(run.result)
    return "\n".join(parts) + "\n", truncated


def trace_block(run: RenderedRun, steps: tuple[Step, ...] | None = None) -> str:
    """A run's trace and result without the source (the reasoning part of the SFT forms)."""
    shown = run.steps if steps is None else steps
    return "\n".join([f"{TRACE} {run.label}", *(s.text for s in shown), *run.result])
