"""A real sample corpus built from this machine's own Python installation: no downloads.

    OUT/code/REPO/...            Python source of the standard library and installed packages (one
                                 folder per top-level package; vendored copies kept: natural near-duplicates)
    OUT/prose/docstrings.jsonl.gz  docstrings of those modules and of STEM-heavy standard-library modules
    OUT/prose/docs.jsonl         reST/Markdown documents shipped with installed packages
    OUT/math/problems.jsonl.zst  generated problems with worked solutions, `level` 1-5 in meta
    OUT/eval/math_heldout.jsonl  held-out problems (evaluation set for decontamination)
    OUT/eval/code_tasks.jsonl    a few code tasks in the HumanEval shape (evaluation set)
    OUT/units/tasks.jsonl        runnable units {id, code, entry_point, inputs} for the traces job

Deterministic for a machine and seed. A few held-out problems are mixed into the training problems, as
leaks happen in real corpora, so that decontamination has something to find.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import os
import random
import shutil
import site
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from pipeline.mathgen import Problem, generate_problems

STEM_MODULES = ("fractions", "decimal", "_pydecimal", "statistics", "random", "numbers", "cmath", "heapq",
                "bisect", "colorsys", "graphlib", "datetime", "calendar", "ipaddress", "hashlib", "inspect")
MAX_FILE_BYTES = 120_000
FILES_PER_REPO = 40
SKIP_DIRS = {"test", "tests", "idlelib", "tkinter", "turtledemo", "__pycache__", "ensurepip", "lib2to3"}


@dataclass
class SampleStats:
    code_files: int = 0
    code_bytes: int = 0
    docstrings: int = 0
    docs: int = 0
    problems: int = 0
    heldout: int = 0
    units: int = 0
    repos: list[str] = field(default_factory=list)


def build_sample(out: str | Path, max_docs: int = 3000, max_bytes: int = 20_000_000, seed: int = 0) -> SampleStats:
    """Write the sample corpus under `out` (replacing what was there) and say what it holds."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    stats = SampleStats()
    code_docs, code_bytes = int(max_docs * 0.5), int(max_bytes * 0.6)
    chosen = _write_code(out / "code", _python_repos(), code_docs, code_bytes, seed, stats)
    prose_budget = int(max_docs * 0.3)
    _write_docstrings(out / "prose" / "docstrings.jsonl.gz", chosen, prose_budget * 2 // 3, stats)
    _write_docs(out / "prose" / "docs.jsonl", prose_budget // 3, int(max_bytes * 0.2), seed, stats)
    _write_math(out, max(12, int(max_docs * 0.2)), seed, stats)
    return stats


def _python_repos() -> dict[str, list[Path]]:
    """Top-level package or module name -> its .py files, for the stdlib and every site-packages folder."""
    roots = [Path(sysconfig.get_paths()["stdlib"])]
    roots += [Path(p) for p in {sysconfig.get_paths()["purelib"], *site.getsitepackages()} if Path(p).is_dir()]
    repos: dict[str, list[Path]] = {}
    for root in roots:
        for entry in sorted(root.iterdir()):
            if entry.name in SKIP_DIRS or entry.name.startswith((".", "_")) and entry.name != "_pydecimal.py":
                continue
            if entry.name in ("site-packages", "dist-packages", "config-3.11-x86_64-linux-gnu"):
                continue
            if entry.is_dir() and (entry / "__init__.py").exists():
                repos.setdefault(entry.name, _py_files(entry))
            elif entry.suffix == ".py":
                repos.setdefault("stdlib" if root == roots[0] else entry.stem, []).append(entry)
    return {name: files for name, files in repos.items() if files}


def _py_files(package: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(package):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        files += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py")]
    return files


def _write_code(dest: Path, repos: dict[str, list[Path]], max_files: int, max_bytes: int, seed: int,
                stats: SampleStats) -> list[Path]:
    """Copy whole packages (capped per package), STEM and stdlib first, vendored twins kept together."""
    rng = random.Random(seed)
    names = sorted(repos)
    rng.shuffle(names)
    vendored = {n for n in names if any(f"_vendor/{n}/" in str(p) for files in repos.values() for p in files)}
    order = ["stdlib", "pip", *sorted(vendored)] + [n for n in names if n not in vendored]
    chosen: list[Path] = []
    seen: set[str] = set()
    for name in order:
        if name not in repos or name in seen:
            continue
        seen.add(name)
        files = repos[name]
        pick = files if name == "stdlib" else files[:FILES_PER_REPO]
        if name == "pip":
            pick = [p for p in files if "_vendor" in str(p)][:FILES_PER_REPO * 2]
        for path in pick:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES or size == 0:
                continue
            if stats.code_files >= max_files or stats.code_bytes + size > max_bytes:
                return chosen
            target = dest / name / _relative_inside(path, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            chosen.append(path)
            stats.code_files += 1
            stats.code_bytes += size
        stats.repos.append(name)
    return chosen


def _relative_inside(path: Path, repo: str) -> Path:
    parts = path.parts
    if repo in parts:
        return Path(*parts[parts.index(repo) + 1:])
    return Path(path.name)


def _write_docstrings(dest: Path, chosen: list[Path], limit: int, stats: SampleStats) -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    stem = [stdlib / f"{m}.py" for m in STEM_MODULES if (stdlib / f"{m}.py").exists()]
    records = []
    for path in stem + chosen:
        for name, doc in _docstrings(path):
            records.append({"text": doc, "lang": "en", "module": path.stem, "object": name,
                            "path": str(path.relative_to(path.parents[1]))})
            if len(records) >= limit:
                break
        if len(records) >= limit:
            break
    _write_jsonl(dest, records)
    stats.docstrings = len(records)


def _docstrings(path: Path, min_chars: int = 300):
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
    for node in nodes:
        doc = ast.get_docstring(node)
        if doc and len(doc) >= min_chars:
            yield getattr(node, "name", "<module>"), doc


def _write_docs(dest: Path, limit: int, max_bytes: int, seed: int, stats: SampleStats) -> None:
    candidates = []
    for root in {sysconfig.get_paths()["purelib"], *site.getsitepackages()}:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(dirnames)
            for f in sorted(filenames):
                if f.endswith((".rst", ".md")) or f == "METADATA":
                    candidates.append(Path(dirpath) / f)
    random.Random(seed).shuffle(candidates)
    records, total = [], 0
    for path in candidates:
        text = path.read_text(encoding="utf-8", errors="replace")
        if len(text) < 400 or total + len(text) > max_bytes:
            continue
        records.append({"text": text, "lang": "en", "file": path.name, "package": path.parent.name})
        total += len(text)
        if len(records) >= limit:
            break
    _write_jsonl(dest, records)
    stats.docs = len(records)


def _write_math(out: Path, count: int, seed: int, stats: SampleStats) -> None:
    problems = generate_problems(count, seed)
    heldout = generate_problems(max(6, count // 10), seed + 1_000_003)
    leaked = heldout[: max(1, len(heldout) // 20)]
    train = [_problem_record(p, f"math/{seed}/{i}") for i, p in enumerate(problems)]
    train += [_problem_record(p, f"math/leak/{i}") for i, p in enumerate(leaked)]
    _write_jsonl(out / "math" / "problems.jsonl.zst", train)
    _write_jsonl(out / "eval" / "math_heldout.jsonl", [{"id": f"heldout/{i}", "text": p.text()}
                                                      for i, p in enumerate(heldout)])
    _write_jsonl(out / "eval" / "code_tasks.jsonl", _code_tasks())
    units = [{"id": f"unit/{i}", "code": p.code, "entry_point": p.entry_point, "inputs": [list(p.inputs)]}
             for i, p in enumerate(problems)]
    _write_jsonl(out / "units" / "tasks.jsonl", units)
    stats.problems, stats.heldout, stats.units = len(train), len(heldout), len(units)


def _problem_record(problem: Problem, doc_id: str) -> dict:
    return {"id": doc_id, "text": problem.text(), "lang": "en", "level": problem.level, "topic": problem.topic,
            "answer": problem.answer}


def _code_tasks() -> list[dict]:
    """A few HumanEval-shaped tasks written for this sample (prompt + canonical solution)."""
    tasks = [
        ("running_max", "def running_max(numbers: list[int]) -> list[int]:\n"
         "    \"\"\"Return the list of maxima of every prefix of numbers, so running_max([1, 3, 2]) is [1, 3, 3].\"\"\"\n",
         "    best, out = None, []\n    for n in numbers:\n        best = n if best is None else max(best, n)\n"
         "        out.append(best)\n    return out\n"),
        ("count_vowel_words", "def count_vowel_words(sentence: str) -> int:\n"
         "    \"\"\"Count the words of sentence that start with a vowel, ignoring case and punctuation marks.\"\"\"\n",
         "    words = [w.strip('.,;:!?') for w in sentence.split()]\n"
         "    return sum(1 for w in words if w[:1].lower() in 'aeiou')\n"),
        ("digits_product", "def digits_product(n: int) -> int:\n"
         "    \"\"\"Return the product of the odd decimal digits of a positive integer n, or zero if all are even.\"\"\"\n",
         "    odd = [int(d) for d in str(n) if int(d) % 2]\n    product = 1\n    for d in odd:\n"
         "        product *= d\n    return product if odd else 0\n"),
    ]
    return [{"id": f"code_task/{name}", "text": prompt + body, "entry_point": name} for name, prompt, body in tasks]


def _write_jsonl(dest: Path, records: list[dict]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode()
    if dest.suffix == ".gz":
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:  # mtime=0: identical bytes each run
            gz.write(payload)
        payload = buffer.getvalue()
    elif dest.suffix == ".zst":
        payload = zstandard.ZstdCompressor(level=9).compress(payload)
    dest.write_bytes(payload)
