"""Benchmark: units traced per second per core, the way one Spark task of the traces job runs them.

    .venv/bin/python bench/traces.py [--units N] [--workers W] [--modes bubblewrap,none] [--python PATH]

Units are the sample's math functions (pipeline.mathgen, the same as OUT/units/tasks.jsonl), traced and
rendered with their SFT forms by pipeline.traces.generate.trace_rows, W sandboxes at a time, once per sandbox
mode. Reported per mode:
  units/s          wall clock, W sandboxes at once;
  units/s/core     units per CPU second: this process, its reaped children (bwrap, or the interpreter
                   without it) and, under bubblewrap, the CPU each sandboxed interpreter reports for itself
                   (bwrap reaps it, so it escapes RUSAGE_CHILDREN): what one busy core achieves, whatever
                   else loads the machine;
  startup_cpu_ms   CPU of starting a bare interpreter (`python -S -c pass`; not measurable under bwrap),
                   most of a small unit's cost.
Mode `none` as root needs an interpreter uid 65534 can reach (`--python /usr/bin/python3`): the unit then
runs on that interpreter, whose start-up cost differs from the worker's own.
"""

from __future__ import annotations

import sys

if sys.path and sys.path[0] and __file__.startswith(sys.path[0]):
    sys.path.pop(0)  # bench/ heads sys.path when run as a script; its tokenize.py would shadow the stdlib's

import argparse
import json
import os
import resource
import subprocess
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.errors import UserError
from pipeline.mathgen import generate_problems
from pipeline.traces.config import TracesConfig
from pipeline.traces.generate import _unit_row, trace_rows
from pipeline.traces.sandbox import ENVIRONMENT, Sandbox
from pipeline.traces.units import unit_from_record


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def unit_rows(count: int) -> list[dict]:
    problems = generate_problems(count, seed=0)
    records = [{"id": f"unit/{i}", "code": p.code, "entry_point": p.entry_point, "inputs": [list(p.inputs)]}
               for i, p in enumerate(problems)]
    return [_unit_row(unit_from_record(r)) for r in records]


def startup_cpu_ms(sandbox: Sandbox, repeat: int = 20) -> float:
    command = (sandbox.bwrap or []) + [sandbox.python, "-S", "-c", "pass"]
    before = cpu_seconds()
    for _ in range(repeat):
        subprocess.run(command, env=ENVIRONMENT, check=True, cwd="/tmp")
    return (cpu_seconds() - before) / repeat * 1000


class Metered(Sandbox):
    """A Sandbox that adds up the CPU its sandboxed interpreters report."""

    reported = 0.0

    def run(self, request):
        result = super().run(request)
        if self.bwrap:
            self.reported += result.cpu_seconds
        return result


def measure(mode: str, rows: list[dict], workers: int, python: str | None = None) -> dict:
    cfg = TracesConfig(enabled=True, sandbox=mode, workers=workers)
    sandbox = Metered(cfg, python=python if mode == "none" else None)
    trace_rows(rows[:workers * 2], cfg, sandbox)  # warm-up: page cache, probe
    sandbox.reported = 0.0
    cpu, wall = cpu_seconds(), time.perf_counter()
    out = trace_rows(rows, cfg, sandbox)
    cpu, wall = cpu_seconds() - cpu + sandbox.reported, time.perf_counter() - wall
    ok = sum(r["status"] == "ok" for r in out)
    return {"mode": mode, "layers": "+".join(sandbox.layers), "python": sandbox.python, "units": len(rows), "ok": ok, "workers": workers,
            "units_per_s": round(len(rows) / wall, 1), "units_per_s_per_core": round(len(rows) / cpu, 1),
            "cpu_ms_per_unit": round(cpu / len(rows) * 1000, 1),
            "startup_cpu_ms": round(startup_cpu_ms(sandbox), 1) if not sandbox.bwrap else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=300)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--modes", default="bubblewrap,none")
    parser.add_argument("--python", default=None, help="interpreter for mode none (default: this one)")
    args = parser.parse_args(argv)
    rows = unit_rows(args.units)
    print(f"{args.units} units, {args.workers} sandboxes at once, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    for mode in args.modes.split(","):
        try:
            print(json.dumps(measure(mode, rows, args.workers, args.python)))
        except UserError as err:  # the sandbox asked for cannot run here
            print(json.dumps({"mode": mode, "skipped": str(err)}))


if __name__ == "__main__":
    main()
