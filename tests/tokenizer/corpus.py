"""Test documents with domains, drawn from the session's sample corpus, and a fake committed `grade` job.

The tokenize job reads the committed `grade` output; tests commit this table as that job (through
pipeline.commit.JobOutput) so that they do not depend on the grading code.
"""

from __future__ import annotations

import gzip
import io
import json
import unicodedata
from pathlib import Path

import pyarrow.parquet as pq
import zstandard

from pipeline.commit import JobOutput
from pipeline.documents import derived_id, documents_table
from pipeline.ledger import Ledger
from pipeline.traces.format import CALL, LINE, RESULT, RETURN, SOURCE, TRACE

SCIENCE_MODULES = {"fractions", "decimal", "_pydecimal", "statistics", "random", "numbers", "cmath", "colorsys"}
UNUSUAL = [
    "naïve café — “quotes” … ½ ≤ ∑ x² ≠ ∞",
    "日本語のテキスト、中文文本，한국어 텍스트",
    "emoji 🙂👩‍💻🏳️‍🌈 and skin tones 👍🏽",
    "عربي שלום ελληνικά кириллица ไทย देवनागरी",
    "zero\u200bwidth\u200cjoiners\u200d and a BOM \ufeff and NBSP\u00a0here",
    "math 𝔽 𝕏 ℝ ∀ε>0 ∃δ: |x−y|<δ ⇒ |f(x)−f(y)|<ε",
    "\ttabs\t\tand    spaces   \n\n\n   trailing   \n",
]


def sample_documents(sample: Path, max_code_files: int = 120) -> list[dict]:
    """Documents of every domain (code, math, science, general, trace), NFC as ingest writes them."""
    docs = []
    for path in sorted((sample / "code").rglob("*.py"))[:max_code_files]:
        text = path.read_text("utf-8", errors="replace")
        docs.append({"source": "code", "domain": "code", "text": text, "uri": str(path), "lang": "python"})
    with gzip.open(sample / "prose" / "docstrings.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            domain = "science" if record["module"] in SCIENCE_MODULES else "general"
            docs.append({"source": "docstrings", "domain": domain, "text": record["text"], "lang": "en"})
    with open(sample / "prose" / "docs.jsonl", encoding="utf-8") as f:
        docs += [{"source": "docs", "domain": "general", "text": json.loads(line)["text"]} for line in f]
    reader = zstandard.ZstdDecompressor().stream_reader((sample / "math" / "problems.jsonl.zst").open("rb"))
    docs += [{"source": "math", "domain": "math", "text": json.loads(line)["text"]}
             for line in io.TextIOWrapper(reader, encoding="utf-8")]
    with open(sample / "units" / "tasks.jsonl", encoding="utf-8") as f:
        docs += [{"source": "traces", "domain": "trace", "text": trace_text(json.loads(line))} for line in f]
    docs += [{"source": "unusual", "domain": "general", "text": text} for text in UNUSUAL]
    docs.append({"source": "unusual", "domain": None, "text": "a document without a domain: 3.14159"})
    for doc in docs:
        doc["text"] = unicodedata.normalize("NFC", doc["text"].replace("\r\n", "\n"))
        doc["id"] = derived_id(doc["source"], doc["text"])
    unique = {doc["id"]: doc for doc in docs}
    return [unique[k] for k in sorted(unique)]


def trace_text(unit: dict) -> str:
    """A trace-like rendering of a runnable unit in the markers of pipeline/traces/format.py."""
    args = ", ".join(map(repr, unit["inputs"][0])) if unit["inputs"] else ""
    name = unit["entry_point"]
    lines = [SOURCE, unit["code"].rstrip("\n"), f"{TRACE} {name}({args})", f"{CALL} {name}({args})"]
    for number, line in enumerate(unit["code"].splitlines(), start=1):
        if line.strip() and not line.startswith(("def ", "from ", "import ")):
            lines.append(f"{LINE} {number} {line.strip()}")
    lines += [f"{RETURN} {name} -> ?", f"{RESULT} ?"]
    return "\n".join(lines) + "\n"


def commit_fake_grade(output_root: str, docs: list[dict], files: int = 2) -> None:
    """Write `docs` as the committed output of job `grade` under `output_root`."""
    output = JobOutput(output_root, "grade")
    tmp = output.begin()
    folder = Path(tmp.removeprefix("file://")) / "documents"
    folder.mkdir(parents=True)
    table = documents_table(docs)
    for i in range(files):
        pq.write_table(table.slice(i * len(docs) // files, (i + 1) * len(docs) // files - i * len(docs) // files),
                       folder / f"part-{i:05d}.parquet")
    ledger = Ledger(job="grade")
    for source in sorted({d["source"] for d in docs}):
        ledger.add(source, "written", None, sum(d["source"] == source for d in docs))
    output.commit(tmp, "fake-grade-" + str(len(docs)), ledger)
