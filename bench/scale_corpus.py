"""The scale benchmark's corpus: N documents of real code and prose from this machine, with planted copies.

    .venv/bin/python -m bench.scale_corpus 100K out/scale/100000/corpus      # (bench/scale.py calls it)

Writes, under OUT:
    code/part-NNNNN.jsonl.zst    windows of the Python files of the standard library and site-packages
    prose/part-NNNNN.jsonl.zst   windows of /usr/share/doc (changelogs, copyright files, READMEs: .gz read
                                 too) and of the Markdown/reST documents shipped with installed packages
    math/part-NNNNN.jsonl.zst    generated problems with worked solutions (pipeline.mathgen)
    units.jsonl                  runnable units of those problems, for the traces job
    planted.parquet              (original, copy, kind, jaccard): every planted exact and near copy
    corpus.json                  the spec, the counts, the bytes and the planted corrupt records by reason

A document is a window of a real file cut at a line end after a length drawn from a log-normal law
(median ~2.2 KB, mean ~3 KB: files shorter than their draw stay whole). When N needs more windows than
the files hold (about 200K windows of ~3 KB on a typical machine), the later documents are spliced from
the halves of two windows cut at other places, so no two documents overlap by more than about a third.
Planted copies: exact copies (same text, another id) and near copies (token edits to a true shingle
Jaccard of about 0.84-0.97, measured with the dedup job's own shingling), of originals with at least 100
tokens; a few corrupt records of every quarantine reason. Deterministic for a machine, N and seed.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import random
import re
import site
import sysconfig
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

GENERATOR_VERSION = 1
"""Bumped when the same spec would give other files (so `--keep` regenerates)."""

CORRUPT_KINDS = ("malformed_json", "invalid_utf8", "missing_text", "text_not_string", "empty", "binary")
"""The quarantine reasons (pipeline.ingest.QUARANTINE_REASONS) a planted corrupt record is built to hit."""

PROSE_NAMES = re.compile(r"^(changelog|news|readme|copyright|authors|thanks|todo|history|faq|bugs)", re.IGNORECASE)
PROSE_SUFFIXES = (".txt", ".md", ".rst")
SKIP_DIRS = {"__pycache__", ".git"}
MAX_FILE_BYTES = 2_000_000
MIN_WINDOW_CHARS = 200
NEAR_MIN_TOKENS = 100
_TOKENS = re.compile(r"(\s+)")


@dataclass(frozen=True)
class CorpusSpec:
    documents: int
    """Input records in all, planted copies and corrupt records included."""
    seed: int = 0
    code_share: float = 0.6
    """Of the real-text originals, the share that is code (the rest is prose)."""
    math_share: float = 0.05
    exact_rate: float = 0.02
    """Planted exact copies, as a share of all records."""
    near_rate: float = 0.03
    """Planted near copies, as a share of all records."""
    corrupt_rate: float = 0.001
    docs_per_file: int = 2000
    max_files_per_source: int = 64
    median_chars: int = 2200
    sigma: float = 0.85
    units: int = 200
    """Runnable units (for the traces job)."""

    def counts(self) -> dict[str, int]:
        n = self.documents
        corrupt = max(len(CORRUPT_KINDS), round(n * self.corrupt_rate))
        math_docs = round(n * self.math_share)
        exact, near = round(n * self.exact_rate), round(n * self.near_rate)
        originals = n - corrupt - math_docs - exact - near
        if originals < 10:
            raise ValueError(f"{n} documents are too few for the planted shares; ask for at least 200")
        code = round(originals * self.code_share)
        return {"code": code, "prose": originals - code, "math": math_docs, "exact": exact, "near": near,
                "corrupt": corrupt}

    def files(self, records: int) -> int:
        return max(1, min(self.max_files_per_source, math.ceil(records / self.docs_per_file)))


@dataclass
class CorpusInfo:
    spec: dict
    generator_version: int
    records: dict[str, int] = field(default_factory=dict)
    """Records written per source (planted copies and corrupt records included)."""
    bytes: dict[str, int] = field(default_factory=dict)
    """UTF-8 bytes of the texts per source."""
    files: dict[str, int] = field(default_factory=dict)
    planted: dict[str, int] = field(default_factory=dict)
    corrupt: dict[str, int] = field(default_factory=dict)
    spliced: int = 0
    """Documents spliced from two windows because the files ran out."""
    units: int = 0

    @property
    def total_records(self) -> int:
        return sum(self.records.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())


# ---------------------------------------------------------------------------------------------- real text


def code_paths() -> list[Path]:
    """Python files of the standard library and the installed packages, one per distinct content."""
    paths = sysconfig.get_paths()
    roots = [paths["stdlib"], paths["purelib"], *site.getsitepackages()]
    return _distinct(_walk(roots, lambda name: name.endswith(".py")))


def prose_paths() -> list[Path]:
    """Text documents of /usr/share/doc (plain or .gz) and the Markdown/reST shipped with packages."""
    def wanted(name: str) -> bool:
        stem = name.removesuffix(".gz")
        return bool(PROSE_NAMES.match(stem)) or os.path.splitext(stem)[1].lower() in PROSE_SUFFIXES

    paths = sysconfig.get_paths()
    return _distinct(_walk(["/usr/share/doc", paths["purelib"], *site.getsitepackages()], wanted))


def _walk(roots, wanted) -> Iterator[Path]:
    seen_roots = set()
    for root in roots:
        root = os.path.realpath(root)
        if root in seen_roots or not os.path.isdir(root):
            continue
        seen_roots.add(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and d != "site-packages")
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if wanted(name) and not path.is_symlink():
                    yield path


def _distinct(paths: Iterator[Path]) -> list[Path]:
    """Paths sorted, one per (size, first 4 KB) so that byte-identical files count once."""
    kept, seen = [], set()
    for path in sorted(set(paths)):
        try:
            size = path.stat().st_size
            if not 0 < size <= MAX_FILE_BYTES:
                continue
            with open(path, "rb") as f:
                head = f.read(4096)
        except OSError:
            continue
        key = (size, hashlib.blake2b(head, digest_size=8).digest())
        if key not in seen:
            seen.add(key)
            kept.append(path)
    return kept


def read_text(path: Path) -> str | None:
    """The file's text (gzip undone), or None for binary or non-UTF-8 files."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        if b"\x00" in data[:8192]:
            return None
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return None


def windows(text: str, rng: random.Random, median: float, sigma: float) -> Iterator[str]:
    """Consecutive pieces of `text`, each cut at the first line end after a log-normal length."""
    position, size = 0, len(text)
    while position < size:
        target = int(min(200_000, max(256, rng.lognormvariate(math.log(median), sigma))))
        end = position + target
        if end >= size - MIN_WINDOW_CHARS:
            end = size
        else:
            line_end = text.find("\n", end)
            end = size if line_end < 0 else line_end + 1
        piece = text[position:end]
        position = end
        if len(piece.strip()) >= MIN_WINDOW_CHARS:
            yield piece


@dataclass
class Window:
    text: str
    repo: str | None
    path: str


def window_stream(paths: list[Path], repo_of, rng: random.Random, spec: CorpusSpec) -> Iterator[Window]:
    """Windows of the files in a seeded order; once they run out, spliced halves of re-cut windows."""
    order = list(paths)
    rng.shuffle(order)
    for path in order:
        text = read_text(path)
        if text:
            for piece in windows(text, rng, spec.median_chars, spec.sigma):
                yield Window(piece, repo_of(path), str(path))
    cycle = 0
    while True:  # more documents than the files hold: splice halves of windows cut elsewhere
        cycle += 1
        pending: Window | None = None
        rng.shuffle(order)
        for path in order:
            text = read_text(path)
            if not text:
                continue
            shift = rng.randrange(1, max(2, spec.median_chars))
            for piece in windows(text[shift:], rng, spec.median_chars, spec.sigma):
                if pending is None:
                    pending = Window(piece, repo_of(path), str(path))
                    continue
                first, second = _half(pending.text, front=True), _half(piece, front=False)
                yield Window(first + second, pending.repo, f"{pending.path}+{path}#splice{cycle}")
                pending = None


def _half(text: str, front: bool) -> str:
    cut = text.find("\n", len(text) // 2)
    cut = len(text) // 2 if cut < 0 else cut + 1
    return text[:cut] if front else text[cut:]


def repo_of_code(path: Path) -> str:
    """The top-level package (or `stdlib`) a Python file belongs to."""
    parts = path.parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            index = parts.index(marker)
            top = parts[index + 1] if len(parts) > index + 1 else path.stem
            return top.removesuffix(".py")
    return "stdlib"


# ---------------------------------------------------------------------------------------------- planting


def near_copy(text: str, rng: random.Random) -> str:
    """`text` with token edits (substitute, delete, repeat a token of the text itself) aimed at a true
    5-shingle Jaccard drawn in [0.84, 0.97]; whitespace between tokens is kept."""
    parts = _TOKENS.split(text)
    words = [i for i in range(0, len(parts), 2) if parts[i]]
    target = rng.uniform(0.84, 0.97)
    edits = max(1, round(len(words) * (1 - target) / (5 * (1 + target))))
    for i in rng.sample(words, min(edits, len(words))):
        op = rng.random()
        if op < 0.6:
            parts[i] = parts[rng.choice(words)]
        elif op < 0.8:
            parts[i] = ""
        else:
            parts[i] = parts[i] + " " + parts[rng.choice(words)]
    return "".join(parts)


def corrupt_line(kind: str, record_id: str) -> bytes:
    """One JSONL line that ingest must quarantine with reason `kind`."""
    if kind == "malformed_json":
        return json.dumps({"id": record_id, "text": "a record cut short " * 4}).encode()[:-9]
    if kind == "invalid_utf8":
        return b'{"id": "' + record_id.encode() + b'", "text": "bad \xff\xfe bytes in a record"}'
    if kind == "missing_text":
        return json.dumps({"id": record_id, "body": "the text sits under another key"}).encode()
    if kind == "text_not_string":
        return json.dumps({"id": record_id, "text": {"nested": [1, 2, 3]}}).encode()
    if kind == "empty":
        return json.dumps({"id": record_id, "text": " \n\t "}).encode()
    if kind == "binary":
        return json.dumps({"id": record_id, "text": "".join(chr(i % 8) for i in range(400))}).encode()
    raise ValueError(f"unknown corrupt kind {kind!r}")


def true_jaccards(pairs: list[tuple[str, str, str | None]]) -> list[float]:
    """Jaccard of the shingle sets of each (original, copy, domain) pair, as the dedup job shingles them."""
    from pipeline.dedup.config import DedupConfig
    from pipeline.dedup.features import document_shingles, shingle_kinds

    if not pairs:
        return []
    cfg = DedupConfig()
    texts = pa.array([t for a, b, _ in pairs for t in (a, b)], pa.string())
    domains = pa.array([d for _, _, d in pairs for _ in range(2)], pa.string())
    shingles = document_shingles(texts, shingle_kinds(domains, cfg), cfg)
    sets: list[set] = [set() for _ in range(len(texts))]
    for doc, value in zip(shingles.doc.tolist(), shingles.hash64.tolist()):
        sets[doc].add(value)
    out = []
    for i in range(len(pairs)):
        a, b = sets[2 * i], sets[2 * i + 1]
        out.append(len(a & b) / len(a | b) if a or b else 1.0)
    return out


# ---------------------------------------------------------------------------------------------- writing


class SourceWriter:
    """Records of one source spread at random over its `files` zstd JSONL files (one frame each)."""

    def __init__(self, folder: Path, files: int, rng: random.Random):
        folder.mkdir(parents=True, exist_ok=True)
        self.rng = rng
        self.handles = [open(folder / f"part-{i:05d}.jsonl.zst", "wb") for i in range(files)]  # noqa: SIM115 -- closed by close()
        # One compressor per file: a compressor holds one stream's state.
        self.streams = [zstandard.ZstdCompressor(level=3).stream_writer(h, closefd=False) for h in self.handles]
        self.records = 0
        self.bytes = 0

    def write(self, record: dict) -> None:
        self.write_line(json.dumps(record, ensure_ascii=False).encode())
        self.bytes += len(record["text"].encode())

    def write_line(self, line: bytes) -> None:
        self.streams[self.rng.randrange(len(self.streams))].write(line + b"\n")
        self.records += 1

    def close(self) -> None:
        for stream, handle in zip(self.streams, self.handles):
            stream.flush(zstandard.FLUSH_FRAME)
            handle.close()


def generate(spec: CorpusSpec, out: Path, progress=print) -> CorpusInfo:
    """Write the corpus under `out` (its previous content replaced) and return what it holds."""
    import shutil

    from pipeline.mathgen import generate_problems

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    counts = spec.counts()
    rng = random.Random(spec.seed)
    info = CorpusInfo(spec=asdict(spec), generator_version=GENERATOR_VERSION)
    copies_per_source = {"code": 0, "prose": 0}
    real = counts["code"] + counts["prose"]
    for name in copies_per_source:  # copies go to the source of their original, in proportion
        share = counts[name] / real
        copies_per_source[name] = round((counts["exact"] + counts["near"] + counts["corrupt"]) * share)
    writers = {name: SourceWriter(out / name, spec.files(counts[name] + copies_per_source[name]),
                                  random.Random(rng.random())) for name in ("code", "prose")}
    planted: list[dict] = []
    pending_near: list[tuple[str, str, str, str, str | None]] = []  # original id, copy id, texts, domain
    copy_budget = {"exact": counts["exact"], "near": counts["near"]}
    corrupt_budget = counts["corrupt"]
    copy_chance = (counts["exact"] + counts["near"]) / real
    corrupt_chance = corrupt_budget / real
    originals_left = real

    def flush_near() -> None:
        similarities = true_jaccards([(a, b, domain) for _, _, a, b, domain in pending_near])
        for (orig_id, copy_id, *_), similarity in zip(pending_near, similarities):
            planted.append({"original": orig_id, "copy": copy_id, "kind": "near", "jaccard": round(similarity, 4)})
        pending_near.clear()

    for name, paths, repo_of, domain, lang in (
        ("code", code_paths(), repo_of_code, "code", "python"),
        ("prose", prose_paths(), lambda p: None, None, "en"),
    ):
        progress(f"corpus: {name} from {len(paths)} files")
        writer = writers[name]
        stream = window_stream(paths, repo_of, random.Random(rng.random()), spec)
        for index in range(counts[name]):
            window = next(stream)
            if "#splice" in window.path:
                info.spliced += 1
            doc_id = f"{name}/{index:08d}"
            record = {"id": doc_id, "text": window.text, "lang": lang, "path": window.path}
            if window.repo:
                record["repo"] = window.repo
            writer.write(record)
            originals_left -= 1
            tokens = window.text.count(" ") + window.text.count("\n")
            wanted = copy_budget["exact"] + copy_budget["near"]
            forced = wanted >= originals_left  # the last originals take what is left, whatever their length
            if wanted and (forced or rng.random() < copy_chance and tokens >= NEAR_MIN_TOKENS):
                kind = "exact" if rng.random() * wanted < copy_budget["exact"] else "near"
                copy_budget[kind] -= 1
                copy_id = f"{name}/{index:08d}/{kind}"
                text = window.text if kind == "exact" else near_copy(window.text, rng)
                writer.write({**record, "id": copy_id, "text": text})
                if kind == "exact":
                    planted.append({"original": doc_id, "copy": copy_id, "kind": "exact", "jaccard": 1.0})
                else:
                    pending_near.append((doc_id, copy_id, window.text, text, domain))
                    if len(pending_near) >= 512:
                        flush_near()
            if corrupt_budget and (rng.random() < corrupt_chance or corrupt_budget >= originals_left):
                kind = CORRUPT_KINDS[corrupt_budget % len(CORRUPT_KINDS)]
                writer.write_line(corrupt_line(kind, f"{name}/corrupt/{corrupt_budget:06d}"))
                info.corrupt[kind] = info.corrupt.get(kind, 0) + 1
                corrupt_budget -= 1
    flush_near()
    for name, writer in writers.items():
        writer.close()
        info.records[name], info.bytes[name], info.files[name] = writer.records, writer.bytes, len(writer.handles)
    problems = generate_problems(counts["math"] + spec.units, spec.seed)
    math_writer = SourceWriter(out / "math", spec.files(counts["math"]), random.Random(rng.random()))
    for i, problem in enumerate(problems[: counts["math"]]):
        math_writer.write({"id": f"math/{i:08d}", "text": problem.text(), "lang": "en", "level": problem.level,
                           "topic": problem.topic})
    math_writer.close()
    info.records["math"], info.bytes["math"], info.files["math"] = (
        math_writer.records, math_writer.bytes, len(math_writer.handles))
    units = problems[counts["math"]:]
    with open(out / "units.jsonl", "w") as f:
        for i, p in enumerate(units):
            f.write(json.dumps({"id": f"unit/{i}", "code": p.code, "entry_point": p.entry_point,
                                "inputs": [list(p.inputs)]}) + "\n")
    info.units = len(units)
    table = pa.Table.from_pylist(planted, schema=pa.schema([
        ("original", pa.string()), ("copy", pa.string()), ("kind", pa.string()), ("jaccard", pa.float64())]))
    pq.write_table(table, out / "planted.parquet")
    info.planted = dict(Counter(p["kind"] for p in planted))
    (out / "corpus.json").write_text(json.dumps(asdict(info), indent=2) + "\n")
    return info


def load_info(out: Path) -> CorpusInfo | None:
    """What an earlier `generate` wrote under `out`, or None when there is nothing (complete) there."""
    path = out / "corpus.json"
    if not path.exists():
        return None
    return CorpusInfo(**json.loads(path.read_text()))


def parse_count(text: str) -> int:
    """`100000`, `100K`, `1M`, `1_000_000` -> an int."""
    value = text.strip().upper().replace("_", "").replace(",", "")
    scale = {"K": 1_000, "M": 1_000_000}.get(value[-1:], 1)
    return int(float(value[:-1] if scale > 1 else value) * scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("documents", type=parse_count)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    info = generate(CorpusSpec(args.documents, seed=args.seed), args.out)
    print(json.dumps(asdict(info), indent=2))


if __name__ == "__main__":
    main()
