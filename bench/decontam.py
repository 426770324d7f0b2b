"""Decontamination: planted leaks caught and clean documents kept, per leak kind and per setting, one run.

    flock /tmp/rnj-heavy.lock .venv/bin/python -m bench.decontam --split tune      # choose defaults here
    flock /tmp/rnj-heavy.lock .venv/bin/python -m bench.decontam --split heldout   # report these

The evaluation set is made here, never taken from a real benchmark: code items are functions with a
docstring from the local Python installation (the interpreter's tree and /usr/lib/python3/dist-packages) (HumanEval's shape: signature, docstring, solution), prose
items are word problems from a small generator of our own (GSM8K's shape: question, worked answer).
Every source (Python files, /usr/share/doc files) is split in two by a hash of its path: `tune` and
`heldout` draw items, hosts and clean documents from disjoint halves, so defaults chosen on one are
reported on the other.

Leaks are planted into real files (code items into Python files, word problems into /usr/share/doc
texts), one item per document, as: `verbatim`; `prompt_only` (signature and docstring, or the question);
`renamed` (every bound name or person renamed, docstring mentions included); `reformatted` (indentation,
quotes, spacing, rewrapped lines); `edited` (renamed and reformatted); `partial` (a contiguous half).
Clean documents are other real files and word problems from the same generator with another seed
(templated text that shares stock phrases with the items). A clean file that really holds a copy of an
item (a vendored library: half its lines) or quotes 20 consecutive words of one (a docstring paragraph
shared across a library) is not counted as clean, by checks independent of the matcher; the counts are
printed.

A leak is caught when its document is found to contain the planted item; a clean document is kept when
nothing is found. `--baseline-rev` also runs the decontamination code of that git revision (the matcher
before this benchmark existed) on the same documents.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import os
import random
import re
import subprocess
import sys
import sysconfig
import textwrap
import time
import types
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa

from pipeline.dedup.config import DecontaminateConfig
from pipeline.dedup.decontaminate import contaminating_items, eval_ngrams, remove_spans

KINDS = ("verbatim", "prompt_only", "renamed", "reformatted", "edited", "partial")


@dataclass
class Item:
    text: str
    prompt: str
    kind: str
    """`code` or `prose`."""


@dataclass
class Leak:
    text: str
    item: int
    kind: str
    host: str


def half_of(path: str) -> str:
    return "tune" if hashlib.blake2b(path.encode(), digest_size=2).digest()[0] % 2 == 0 else "heldout"


# ---------------------------------------------------------------------------------------------- sources


def python_files(split: str) -> list[Path]:
    # the interpreter's own tree (standard library and its site-packages) and the system's packages: not the
    # project's virtual environment, which other work changes under a running benchmark
    roots = {sysconfig.get_paths()["stdlib"], "/usr/lib/python3/dist-packages"}
    out = []
    for root in sorted(roots):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "test", "tests", "idlelib"))
            out += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py")]
    return [p for p in out if half_of(str(p)) == split]


def doc_files(split: str) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk("/usr/share/doc"):
        dirnames.sort()
        out += [Path(dirpath) / f for f in sorted(filenames)]
    return [p for p in out if half_of(str(p)) == split and not p.is_symlink()]


def read_text(path: Path, limit: int = 20_000) -> str | None:
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return None
    return text[:limit] if len(text) >= 800 and "\x00" not in text else None


def code_items(files: list[Path], count: int, rng: random.Random) -> tuple[list[Item], set[Path]]:
    """Undecorated functions with a signature of at most 3 lines, a docstring of 12+ words and 3-30 lines
    of body, at most one per file and one per function name."""
    items, used, seen = [], set(), set()
    for path in files:
        source = read_text(path, 10**7)
        if source is None:
            continue
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        candidates = []
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef) or not ast.get_docstring(node) or node.decorator_list:
                continue
            if node.body[0].lineno - node.lineno > 3:  # HumanEval's shape: a short signature
                continue
            doc, body = node.body[0], node.body[1:]
            if len(ast.get_docstring(node).split()) < 12 or not body or not 3 <= node.end_lineno - doc.end_lineno <= 30:
                continue
            lines = source.splitlines(keepends=True)
            start = node.lineno - 1
            candidates.append((node.name, textwrap.dedent("".join(lines[start: node.end_lineno])),
                               textwrap.dedent("".join(lines[start: doc.end_lineno]))))
        if candidates:
            name, text, prompt = rng.choice(candidates)
            if name not in seen:  # libraries copy functions between files; an eval set holds each problem once
                seen.add(name)
                items.append(Item(text, prompt, "code"))
                used.add(path)
        if len(items) == count:
            break
    return items, used


NAMES = ["Natalia", "James", "Weng", "Betty", "Julie", "Albert", "Tobias", "Mira", "Carla", "Devon", "Ines",
         "Kofi", "Lena", "Marco", "Priya", "Sven", "Tara", "Umar", "Yara", "Zoe"]
OTHER_NAMES = ["Hannah", "Oscar", "Leila", "Rafael", "Greta", "Emeka", "Sofia", "Bruno", "Aiko", "Pavel"]
OBJECTS = ["apples", "stickers", "marbles", "pencils", "cupcakes", "postcards", "seashells", "comic books"]
PLACES = ["market", "bakery", "school fair", "bookshop", "garden centre", "stadium"]
TEMPLATES = [
    (("{a} has {x} {obj}. {a} buys {y} more {obj} at the {place} and then gives {z} of them to {b}. "
     "How many {obj} does {a} have left?"),
     "{a} has {x} + {y} = {s1} {obj} after the {place}. After giving {z} to {b}, {a} has {s1} - {z} = {r1} {obj}.",
     "{r1}"),
    (("A {place} sells {obj} in boxes of {x}. {a} orders {y} boxes for a party and {b} orders {z} boxes. "
     "How many {obj} do they order in total?"),
     "{a} orders {y} x {x} = {p1} {obj} and {b} orders {z} x {x} = {p2} {obj}, so together {p1} + {p2} = {r2}.",
     "{r2}"),
    (("{a} reads {x} pages of a book about {obj} every day. The book has {bigy} pages. After {z} days, how "
     "many pages does {a} still have to read?"),
     "In {z} days {a} reads {z} x {x} = {p3} pages, so {bigy} - {p3} = {r3} pages are left.", "{r3}"),
    (("{a} earns ${x} an hour at the {place}. Last week {a} worked {y} hours and spent ${z} on {obj}. How "
     "much money does {a} have left from last week's pay?"),
     "{a} earned {x} x {y} = {p4} dollars and spent {z}, so {p4} - {z} = {r4} dollars are left.", "{r4}"),
    (("There are {bigy} {obj} in a basket at the {place}. {a} takes {x} of them and {b} takes twice as many "
     "as {a}. How many {obj} remain in the basket?"),
     "{b} takes 2 x {x} = {p5} {obj}. Together they take {x} + {p5} = {s5}, so {bigy} - {s5} = {r5} remain.",
     "{r5}"),
    (("{a} runs {x} laps around the {place} track each morning and {b} runs {y} laps more than {a}. How many "
     "laps do they run together in {z} days?"),
     "{b} runs {x} + {y} = {s6} laps a day; together {x} + {s6} = {t6} a day, and {t6} x {z} = {r6} in {z} days.",
     "{r6}"),
]


def word_problem(rng: random.Random) -> tuple[str, str, tuple[str, str]]:
    """(question, worked answer, the two names)."""
    question, answer, final = rng.choice(TEMPLATES)
    a, b = rng.sample(NAMES, 2)
    x, y, z = rng.randint(3, 400), rng.randint(3, 400), rng.randint(2, 60)
    bigy = rng.randint(3 * x + 10, 3 * x + 5000)
    v = {"a": a, "b": b, "x": x, "y": y, "z": z, "bigy": bigy, "obj": rng.choice(OBJECTS), "place": rng.choice(PLACES),
             "s1": x + y, "r1": x + y - z, "p1": y * x, "p2": z * x, "r2": (y + z) * x, "p3": z * x, "r3": bigy - z * x,
             "p4": x * y, "r4": x * y - z, "p5": 2 * x, "s5": 3 * x, "r5": bigy - 3 * x, "s6": x + y, "t6": 2 * x + y,
             "r6": (2 * x + y) * z}
    return question.format(**v), f"{answer.format(**v)}\n#### {final.format(**v)}", (a, b)


# ---------------------------------------------------------------------------------------------- edits


GENERIC = ["data", "value", "result", "temp", "acc", "node", "buf", "xs", "obj", "thing", "entry", "out"]


def new_name(name: str, rng: random.Random, taken: set[str]) -> str:
    parts = [p for p in name.split("_") if p]
    schemes = [f"{name}_impl", f"my_{name}", f"{name}2", name[:3] if len(name) > 4 else f"{name}_v",
               (parts[0] + "".join(p.title() for p in parts[1:])) if len(parts) > 1 else f"{name}Val",
               rng.choice(GENERIC)]
    candidate = rng.choice(schemes)
    while candidate in taken or candidate == name or not candidate.isidentifier():
        candidate += "_"
    taken.add(candidate)
    return candidate


def rename_code(text: str, rng: random.Random) -> str:
    """Every name the code binds (function, parameters, locals) renamed, in docstrings too."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg) and node.arg not in ("self", "cls"):
            bound.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
    taken = set(re.findall(r"\w+", text))
    for name in sorted(bound, key=len, reverse=True):
        text = re.sub(rf"(?<![\w.]){re.escape(name)}\b", new_name(name, rng, taken), text)
    return text


def reformat_code(text: str, rng: random.Random) -> str:
    """Indentation halved, quote style swapped, spacing after commas and around `=` changed, docstring
    lines rewrapped: nothing a word n-gram should notice."""
    out = []
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        indent = (len(line) - len(stripped)) // 2
        if "'" in stripped and '"' not in stripped:
            stripped = stripped.replace("'", '"')
        elif '"' in stripped and "'" not in stripped:
            stripped = stripped.replace('"', "'")
        stripped = stripped.replace(", ", ",").replace(" = ", "=") if rng.random() < 0.5 else stripped
        out.append(" " * indent + stripped)
    text = "\n".join(out) + "\n"
    match = re.search(r"('''|\"\"\")(.*?)\1", text, re.DOTALL)
    if match:
        body = match.group(2)
        paragraphs = [textwrap.fill(" ".join(p.split()), width=rng.randint(40, 70)) for p in body.split("\n\n")]
        text = text[: match.start(2)] + "\n\n".join(paragraphs) + text[match.end(2):]
    return text


def reformat_prose(text: str, rng: random.Random) -> str:
    lines = [textwrap.fill(" ".join(line.split()), width=rng.randint(30, 70)) for line in text.splitlines()]
    return "\n".join(lines).replace(". ", ".  ").replace(", ", " , ")


def partial(text: str, rng: random.Random, code: bool) -> str:
    """A contiguous half: of the lines of code, of the words of prose."""
    units = text.splitlines(keepends=True) if code else text.split(" ")
    half = max(1, len(units) // 2)
    start = rng.randint(0, len(units) - half)
    return ("" if code else " ").join(units[start: start + half])


def edit(item: Item, kind: str, rng: random.Random, names: tuple[str, str] | None) -> str:
    code = item.kind == "code"
    if kind == "verbatim":
        return item.text
    if kind == "prompt_only":
        return item.prompt + ("    ...\n" if code else "")
    if kind == "partial":
        return partial(item.text, rng, code)
    text = item.text
    if kind in ("renamed", "edited"):
        if code:
            text = rename_code(text, rng)
        else:
            for name, other in zip(names, rng.sample(OTHER_NAMES, 2)):
                text = re.sub(rf"\b{name}\b", other, text)
    if kind in ("reformatted", "edited"):
        text = reformat_code(text, rng) if code else reformat_prose(text, rng)
    return text


def plant(host: str, leak: str, rng: random.Random, code: bool) -> str:
    lines = host.splitlines(keepends=True)
    if code:  # before a top-level statement
        spots = [i for i, line in enumerate(lines) if line[:1].strip()]
    else:  # at a paragraph break
        spots = [i for i, line in enumerate(lines) if not line.strip()]
    at = rng.choice(spots) if spots else len(lines)
    return "".join(lines[:at]) + "\n" + leak.rstrip("\n") + "\n\n" + "".join(lines[at:])


# ---------------------------------------------------------------------------------------------- corpus


@dataclass
class Corpus:
    items: list[Item]
    leaks: list[Leak]
    clean: list[tuple[str, str]]
    """(kind: code, prose or templated; text)."""
    real_copies: int
    quoting: int
    """Clean files that quote a passage of QUOTE_WORDS words of an item (a shared docstring paragraph)."""


def build(split: str, seed: int, code_count: int, prose_count: int, leaks_per_kind: int, clean_code: int,
          clean_prose: int, clean_templated: int) -> Corpus:
    rng = random.Random(seed)
    files = python_files(split)
    rng.shuffle(files)
    items, used = code_items(files, code_count, rng)
    problems = [word_problem(rng) for _ in range(prose_count)]
    items += [Item(f"{q}\n{a}", q, "prose") for q, a, _ in problems]
    names = [None] * len(items[: len(items) - prose_count]) + [n for _, _, n in problems]
    code_hosts = [t for p in files if p not in used for t in [read_text(p)] if t]
    prose_hosts = [t for p in doc_files(split) for t in [read_text(p)] if t]
    rng.shuffle(prose_hosts)
    leaks = []
    code_ids = [i for i, it in enumerate(items) if it.kind == "code"]
    prose_ids = [i for i, it in enumerate(items) if it.kind == "prose"]
    for kind in KINDS:
        for ids, hosts, code in ((code_ids, code_hosts, True), (prose_ids, prose_hosts, False)):
            for i in rng.sample(ids, min(leaks_per_kind, len(ids))):
                host = hosts.pop()
                leaks.append(Leak(plant(host, edit(items[i], kind, rng, names[i]), rng, code), i, kind,
                                  "code" if code else "prose"))
    clean = [("code", t) for t in code_hosts[:clean_code]] + [("prose", t) for t in prose_hosts[:clean_prose]]
    clean_rng = random.Random(seed + 7919)
    clean += [("templated", "{}\n{}".format(*word_problem(clean_rng)[:2])) for _ in range(clean_templated)]
    seen = {it.text for it in items}
    clean = [(k, t) for k, t in clean if t not in seen]
    kept = [(k, t) for k, t in clean if not holds_copy(t, items)]
    passages = item_passages(items)
    unquoted = [(k, t) for k, t in kept if not quotes(t, passages)]
    return Corpus(items, leaks, unquoted, len(clean) - len(kept), len(kept) - len(unquoted))


QUOTE_WORDS = 20
_PLAIN_WORD = re.compile(r"[a-z0-9]+")


def item_passages(items: list[Item]) -> set[tuple[str, ...]]:
    out = set()
    for item in items:
        words = _PLAIN_WORD.findall(item.text.lower())
        out.update(tuple(words[i: i + QUOTE_WORDS]) for i in range(len(words) - QUOTE_WORDS + 1))
    return out


def quotes(text: str, passages: set) -> bool:
    """Ground truth, independent of the matcher: the text holds QUOTE_WORDS consecutive words of an item
    verbatim (more than GPT-3's 13-gram contamination unit)."""
    words = _PLAIN_WORD.findall(text.lower())
    return any(tuple(words[i: i + QUOTE_WORDS]) in passages for i in range(len(words) - QUOTE_WORDS + 1))


def holds_copy(text: str, items: list[Item]) -> bool:
    """Ground truth, independent of the matcher: half of some item's distinct lines of 12+ characters, or
    of its prompt's, are lines of the text (a vendored copy, or a signature copied between model files)."""
    lines = {line.strip() for line in text.splitlines()}
    for item in items:
        for part in (item.text, item.prompt):
            own = {line.strip() for line in part.splitlines() if len(line.strip()) >= 12}
            if len(own) >= 3 and sum(line in lines for line in own) >= len(own) / 2:
                return True
    return False


# ---------------------------------------------------------------------------------------------- measuring


def measure(corpus: Corpus, find) -> dict:
    """{(host, kind): caught share, ('clean', kind): kept share}."""
    out = {}
    flagged = find([t for _, t in corpus.clean])
    for kind in ("code", "prose", "templated"):
        docs = [i for i, (k, _) in enumerate(corpus.clean) if k == kind]
        if docs:
            out[("clean", kind)] = (sum(i not in flagged for i in docs), len(docs))
    found = find([leak.text for leak in corpus.leaks])
    for host in ("code", "prose"):
        for kind in KINDS:
            docs = [i for i, leak in enumerate(corpus.leaks) if leak.host == host and leak.kind == kind]
            if docs:
                out[(host, kind)] = (sum(corpus.leaks[i].item in found.get(i, ()) for i in docs), len(docs))
    return out


def finder(texts_of_items: list[str], cfg: DecontaminateConfig):
    table = eval_ngrams(texts_of_items, cfg)

    def find(texts: list[str]) -> dict:
        return contaminating_items(pa.array(texts, pa.string()), table, cfg)

    return find, table


def baseline_finder(rev: str, texts_of_items: list[str]):
    """The decontamination module of git revision `rev`, loaded beside ours (word 13-grams, share 0.5)."""
    source = subprocess.run(["git", "show", f"{rev}:pipeline/dedup/decontaminate.py"], capture_output=True,
                            text=True, check=True).stdout
    module = types.ModuleType("decontaminate_baseline")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:decontaminate.py", "exec"), module.__dict__)  # noqa: S102 (our own history)
    table = module.eval_ngrams(texts_of_items, 13)

    def find(texts: list[str]) -> dict:
        return module.contaminating_items(pa.array(texts, pa.string()), table, 13, 0.5)

    return find


def span_check(corpus: Corpus, cfg: DecontaminateConfig) -> tuple[int, int, int, float]:
    """(leaks caught, of them cut clean, of them dropped for want of text, share of host lines kept)."""
    find, table = finder([it.text for it in corpus.items], cfg)
    found = find([leak.text for leak in corpus.leaks])
    strict = replace(cfg, min_ngrams=1, min_item_fraction=0.0, code_min_word_fraction=0.0, code_min_ngrams=1,
                     code_min_fraction=0.0)
    caught = clean = none = 0
    host_kept = []
    for i, items in found.items():
        leak = corpus.leaks[i]
        if leak.item not in items:
            continue
        caught += 1
        cleaned, _ = remove_spans(leak.text, table, items, cfg)
        if cleaned is None:
            none += 1
            continue
        residue = contaminating_items(pa.array([cleaned]), table, strict).get(0, set())
        clean += not (residue & items)
        item_lines = {line.strip() for line in corpus.items[leak.item].text.splitlines()}
        host_lines = [line for line in leak.text.splitlines() if line.strip() and line.strip() not in item_lines]
        left = set(cleaned.splitlines())
        host_kept.append(sum(line in left for line in host_lines) / max(1, len(host_lines)))
    return caught, clean, none, sum(host_kept) / max(1, len(host_kept))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("tune", "heldout"), default="heldout")
    parser.add_argument("--seed", type=int, default=None, help="default: 1 for tune, 2 for heldout")
    parser.add_argument("--code-items", type=int, default=400)
    parser.add_argument("--prose-items", type=int, default=200)
    parser.add_argument("--leaks", type=int, default=40, help="leaks per kind and host")
    parser.add_argument("--clean-code", type=int, default=2500)
    parser.add_argument("--clean-prose", type=int, default=1500)
    parser.add_argument("--clean-templated", type=int, default=500)
    parser.add_argument("--baseline-rev", default="88eb67d")
    parser.add_argument("--grid", action="store_true", help="also try the settings around the defaults")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else (1 if args.split == "tune" else 2)
    t0 = time.perf_counter()
    corpus = build(args.split, seed, args.code_items, args.prose_items, args.leaks, args.clean_code,
                   args.clean_prose, args.clean_templated)
    item_texts = [it.text for it in corpus.items]
    print(f"split {args.split}, seed {seed}: {sum(it.kind == 'code' for it in corpus.items)} code items, "
          f"{sum(it.kind == 'prose' for it in corpus.items)} word problems, {len(corpus.leaks)} leaks, "
          f"{len(corpus.clean)} clean documents ({corpus.real_copies} files holding a copy of an item and "
          f"{corpus.quoting} quoting {QUOTE_WORDS} words of one left out); built in {time.perf_counter() - t0:.0f} s",
          flush=True)
    default = DecontaminateConfig()
    settings = [("default", default),
                ("no prompt share (code_min_prompt_fraction off)", replace(default, code_min_prompt_fraction=2.0)),
                ("previous defaults (words only, no share for code items)",
                 replace(default, code_ngram=0, code_min_word_fraction=0.0))]
    if args.grid:
        settings += [("words only (code_ngram=0)", replace(default, code_ngram=0))]
        settings += [(f"word share {w}", replace(default, code_min_word_fraction=w)) for w in (0.1, 0.2)]
        settings += [(f"prompt share {p}", replace(default, code_min_prompt_fraction=p)) for p in (0.3, 0.7, 0.9)]
        settings += [(f"word share 0.2, prompt share {p}", replace(default, code_min_word_fraction=0.2,
                                                                    code_min_prompt_fraction=p)) for p in (0.5,)]
        settings += [(f"shape {n}-grams, share {f}", replace(default, code_ngram=n, code_min_fraction=f))
                     for n in (16, 24, 32) for f in (0.3, 0.35, 0.4)]
    rows = []
    if args.baseline_rev:
        try:
            rows.append((f"before ({args.baseline_rev}: 13-grams, 0.5)",
                         measure(corpus, baseline_finder(args.baseline_rev, item_texts))))
        except (subprocess.CalledProcessError, FileNotFoundError) as err:
            print(f"baseline skipped: {err}", file=sys.stderr)
    for name, cfg in settings:
        t = time.perf_counter()
        rows.append((name, measure(corpus, finder(item_texts, cfg)[0])))
        print(f"  {name}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    print_rows(rows)
    caught, clean, none, host = span_check(corpus, default)
    print(f"\nremove_span at the defaults: {clean}/{caught} caught leaks cut with no n-gram of the item left, "
          f"{none} dropped (unmappable text), {host:.1%} of the host's own lines kept")


def print_rows(rows) -> None:
    keys = [("clean", k) for k in ("code", "prose", "templated")] + [(h, k) for h in ("code", "prose") for k in KINDS]
    header = ["setting", "caught all", "kept all"] + [f"{h}:{k}" for h, k in keys]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, result in rows:
        leaks = [result[k] for k in keys if k[0] != "clean" and k in result]
        clean = [result[k] for k in keys if k[0] == "clean" and k in result]
        caught = sum(a for a, _ in leaks) / sum(b for _, b in leaks)
        kept = sum(a for a, _ in clean) / sum(b for _, b in clean)
        cells = [f"{result[k][0]}/{result[k][1]}" if k in result else "-" for k in keys]
        print(f"| {name} | {caught:.2%} | {kept:.3%} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
