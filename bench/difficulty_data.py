"""Turn public labelled problem sets into the labels JSONL that `rnj grade fit` reads (and bench/difficulty.py).

    python bench/difficulty_data.py --raw /work/data/difficulty/raw --out /work/data/difficulty/labels

`--raw` holds plain copies of the public repositories' files (docs/grading.md says which repository, commit
and folder each comes from and under which licence); nothing fetched is kept in this repository. Writes:

    train/math.jsonl      MATH train (levels 1-5) and every 5th GSM8K train problem as level 0, one source:
                          the scale runs from grade-school word problems to competition level 5. (All of GSM8K
                          train, half the set, taught the model little more than "no LaTeX means easy".)
    train/code.jsonl      Python solutions of Code Jam, Kick Start and Hacker Cup problems (Easy 1, Medium 2,
                          Hard 3, Very Hard 4), one source per contest series
    train/code_codewars.jsonl  Python solutions of Codewars kata, rank 8 kyu .. 2 kyu as 1 .. 7, one source per author
    train/code_kattis.jsonl  Python 3 solutions of Kattis problems, labelled with Kattis points (1.2 .. 5.0);
                          GPL-3.0, so not in the shipped model's fit (add it to your own fits if you wish)
    eval/math_test.jsonl  MATH test (levels 1-5): evaluation only
    eval/gsm8k_math_test.jsonl  GSM8K test (0) and MATH test (1-5): evaluation only
    eval/mmlu_math.jsonl  MMLU test questions: elementary 1, high school 2, college 3 (another source)
    eval/leetcode.jsonl   LeetCode solutions (Easy 1, Medium 2, Hard 3): evaluation only (another source)
    eval/atcoder.jsonl    AtCoder Beginner Contest solutions, problem letter A..F as 1..6 (another source)

Deterministic: files are read in sorted order and every line is written in that order.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

KAMYU_LEVELS = {"easy": 1, "medium": 2, "hard": 3, "very hard": 4}
LEETCODE_LEVELS = {"easy": 1, "medium": 2, "hard": 3}
GSM8K_TRAIN_EVERY = 5
MMLU_LEVELS = {"elementary_mathematics": 1, "high_school_mathematics": 2, "college_mathematics": 3}
_ROW_DIFFICULTY = re.compile(r"\|\s*(Easy|Medium|Hard|Very Hard)\s*\|", re.IGNORECASE)
_KATTIS_ROW = re.compile(r"\|\s*(\d+(?:\.\d+)?)\s*\|\s*\w+\s*\|\s*\[Python 3\]\(\.\./main/([^)]+\.py)\)")
_KYU_FOLDER = re.compile(r"(?:kyu_|py)?([1-8])(?:kyu)?")
_PYTHON_LINK = re.compile(r"\[(?:Python|PyPy)3?\]\((\./[^)]+?\.py3?)\)")


def _record(text: str, level: float, domain: str, source: str, uri: str) -> dict:
    return {"text": text, "level": level, "domain": domain, "source": source, "uri": uri}


def gsm8k(raw: Path, split: str) -> list[dict]:
    rows = []
    for number, line in enumerate((raw / "gsm8k" / f"{split}.jsonl").read_text().splitlines()):
        item = json.loads(line)
        answer = re.sub(r"<<[^>]*>>", "", item["answer"])  # the calculator annotations are not prose
        rows.append((f"gsm8k/{split}#{number}", f"{item['question']}\n\n{answer}"))
    return [{"uri": uri, "text": text, "level": 0} for uri, text in rows]


def competition_math(raw: Path, split: str) -> list[dict]:
    rows = []
    for path in sorted((raw / "MATH" / split).glob("*/*.json"), key=lambda p: (p.parent.name, int(p.stem))):
        item = json.loads(path.read_text())
        level = re.search(r"\d", item.get("level", ""))
        if level is None:  # a handful say "Level ?"
            continue
        rows.append({"uri": f"MATH/{split}/{path.parent.name}/{path.name}", "level": int(level.group()),
                     "text": f"{item['problem']}\n\n{item['solution']}"})
    return rows


def mmlu_math(raw: Path) -> list[dict]:
    rows = []
    for subject, level in MMLU_LEVELS.items():
        with open(raw / "mmlu" / f"{subject}_test.csv", newline="", encoding="utf-8") as f:
            for number, (question, *choices) in enumerate(csv.reader(f)):
                options = "\n".join(f"{letter}. {c}" for letter, c in zip("ABCD", choices[:4]))
                rows.append(_record(f"{question}\n{options}", level, "math", "mmlu-math",
                                    f"mmlu/{subject}#{number}"))
    return rows


def readme_solutions(readme: Path, levels: dict[str, int]) -> list[tuple[Path, int]]:
    """(solution file, level) for every table row of a README that links Python solutions and names a
    difficulty; the first linked solution of a row only (the others are variants of it)."""
    found = []
    for line in readme.read_text(encoding="utf-8").splitlines():
        difficulty, link = _ROW_DIFFICULTY.search(line), _PYTHON_LINK.search(line)
        if difficulty and link:
            path = readme.parent / unquote(link.group(1))
            if path.is_file():
                found.append((path, levels[difficulty.group(1).lower()]))
    return found


def kamyu_contests(raw: Path) -> list[dict]:
    rows = []
    for repo in sorted((raw / "kamyu").iterdir()):
        series = re.sub(r"-\d+$", "", repo.name).replace("Facebook", "Meta").lower()
        for path, level in readme_solutions(repo / "README.md", KAMYU_LEVELS):
            rows.append(_record(path.read_text(encoding="utf-8"), level, "code", f"kamyu-{series}",
                                f"{repo.name}/{path.relative_to(repo)}"))
    return rows


def kattis(raw: Path) -> list[dict]:
    """Python 3 solutions of Kattis problems, labelled with the problem's Kattis points (its difficulty rating,
    1.2 .. 5.0), from the repository README's table: `| [id](url) | title | points | easy/medium | [Python 3](link) |`."""
    rows = []
    for line in (raw / "kattis" / "readme.md").read_text(encoding="utf-8").splitlines():
        row = _KATTIS_ROW.search(line)
        if row and (path := raw / "kattis" / unquote(row.group(2))).is_file():
            rows.append(_record(path.read_text(encoding="utf-8"), float(row.group(1)), "code", "kattis",
                                f"kattis/{path.relative_to(raw / 'kattis')}"))
    return rows


def codewars(raw: Path) -> list[dict]:
    """Python solutions of Codewars kata, labelled with the kata's rank: 8 kyu (easiest) .. 2 kyu as 1 .. 7;
    one source per author (`RAW/codewars/<author>/`, kyu folders named like `kyu_8` or `py8kyu`). Beta, retired
    and incomplete kata have no rank and are left out."""
    rows = []
    for author in sorted(p for p in (raw / "codewars").iterdir() if p.is_dir()):
        for path in sorted(author.rglob("*.py")):
            rank = _KYU_FOLDER.fullmatch(path.relative_to(author).parts[0])
            if rank is None or path.name == "__init__.py":
                continue
            rows.append(_record(path.read_text(encoding="utf-8"), 9 - int(rank.group(1)), "code",
                                f"codewars-{author.name.lower()}", f"codewars/{author.name}/{path.relative_to(author)}"))
    return rows


def leetcode(raw: Path) -> list[dict]:
    return [_record(path.read_text(encoding="utf-8"), level, "code", "leetcode", f"leetcode/{path.name}")
            for path, level in readme_solutions(raw / "leetcode" / "README.md", LEETCODE_LEVELS)]


def atcoder(raw: Path) -> list[dict]:
    rows = []
    for path in sorted((raw / "atcoder" / "ABC").glob("ABC*/[A-F].py")):
        rows.append(_record(path.read_text(encoding="utf-8"), "ABCDEF".index(path.stem) + 1, "code", "atcoder-abc",
                            f"atcoder/{path.parent.name}/{path.name}"))
    return rows


def school_and_competition(raw: Path, split: str, gsm8k_every: int = 1) -> list[dict]:
    source = f"gsm8k+math-{split}"
    return [_record(r["text"], r["level"], "math", source, r["uri"])
            for r in gsm8k(raw, split)[::gsm8k_every] + competition_math(raw, split)]


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)
    levels = Counter(r["level"] for r in rows)
    print(f"{path}: {len(rows)} lines, levels {dict(sorted(levels.items()))}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", required=True, type=Path, help="folder with the copied public files")
    parser.add_argument("--out", required=True, type=Path, help="where to write train/ and eval/")
    args = parser.parse_args(argv)
    write(args.out / "train" / "math.jsonl", school_and_competition(args.raw, "train", GSM8K_TRAIN_EVERY))
    write(args.out / "train" / "code.jsonl", kamyu_contests(args.raw))
    write(args.out / "train" / "code_kattis.jsonl", kattis(args.raw))
    write(args.out / "train" / "code_codewars.jsonl", codewars(args.raw))
    test = competition_math(args.raw, "test")
    write(args.out / "eval" / "math_test.jsonl",
          [_record(r["text"], r["level"], "math", "math-test", r["uri"]) for r in test])
    write(args.out / "eval" / "gsm8k_math_test.jsonl", school_and_competition(args.raw, "test"))
    write(args.out / "eval" / "mmlu_math.jsonl", mmlu_math(args.raw))
    write(args.out / "eval" / "leetcode.jsonl", leetcode(args.raw))
    write(args.out / "eval" / "atcoder.jsonl", atcoder(args.raw))


if __name__ == "__main__":
    main()
