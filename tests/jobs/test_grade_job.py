"""The grade job on a committed fake `dedup` output: ledger, quality bars, report, determinism.

The upstream is built without Spark and without the dedup job: the sample corpus is ingested with the pure
pipeline functions (what the ingest job's tasks run), named standard-library files and documents made to
fail the filters are added, and the rows are committed as job "dedup" with `pipeline.commit.JobOutput`.
"""

from __future__ import annotations

import json
import sysconfig
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import fsspec
import pyarrow.parquet as pq
import pytest

import jobs.grade as grade_job
from jobs.common import write_parquet_table
from pipeline.commit import JobOutput
from pipeline.config import IngestConfig, SourceConfig, parse_build
from pipeline.documents import DOCUMENT_COLUMNS, documents_table
from pipeline.filters import filter_document, quality_check
from pipeline.grading.config import GradeConfig
from pipeline.grading.domain import decide_domain
from pipeline.grading.grade import GRADED_COLUMNS
from pipeline.grading.ranking import rank_within_domains, spearman
from pipeline.ingest import OK, ingest_file
from pipeline.io.readers import list_source_files
from pipeline.ledger import Ledger

pytestmark = pytest.mark.spark

STDLIB = Path(sysconfig.get_paths()["stdlib"])
PARSERS = ("tokenize.py", "ast.py", "_pydecimal.py", "json/decoder.py", "re/_parser.py")
"""Parsers and compilers: must land in higher tiers than the shims."""
SHIMS = ("concurrent/__init__.py", "xml/__init__.py", "xml/etree/__init__.py", "wsgiref/__init__.py",
         "sre_constants.py", "sre_parse.py", "lib2to3/__init__.py")
"""Re-export `__init__` shims and deprecation shims of the running interpreter's standard library."""
TABLES = ("re/_constants.py", "stat.py")
"""Constant tables (with a few helpers): below the parsers too."""

PROSE = ("The river rises in the hills to the north of the town and runs south through a wide valley. In spring "
         "the water is high, and the farmers who live along its banks move their animals to the upper fields. By "
         "late summer the level falls again, leaving pools where children fish for small trout with their friends.")
LOW_QUALITY = {
    "bad/boilerplate": ("general", PROSE + "\n" + "Subscribe to our newsletter for the latest offers.\n" * 12,
                        "gopher_dup_lines"),
    "bad/lorem": ("general", PROSE + " Lorem ipsum dolor sit amet.", "c4_lorem_ipsum"),
    "bad/minified": ("code", "var a=1;" * 400, "stack_max_line_length"),
}
"""Made to fail, with the exact ledger reason each must get."""


def sample_sources(sample: Path) -> list[SourceConfig]:
    return [
        SourceConfig(name="code", uri=str(sample / "code"), format="files", domain="code", include=("*.py",)),
        SourceConfig(name="docstrings", uri=str(sample / "prose" / "docstrings.jsonl.gz"), format="jsonl", lang="en"),
        SourceConfig(name="docs", uri=str(sample / "prose" / "docs.jsonl"), format="jsonl", lang="en"),
        SourceConfig(name="math", uri=str(sample / "math" / "problems.jsonl.zst"), format="jsonl", domain="math",
                     lang="en"),
    ]


def upstream_rows(sample: Path) -> list[dict]:
    """Documents of the sample corpus, the named stdlib files and the low-quality ones, ids unique."""
    rows: list[dict] = []
    for source in sample_sources(sample):
        for uri in list_source_files(source):
            for batch in ingest_file(source, uri, IngestConfig()):
                rows += [r for r in batch.to_pylist() if r["status"] == OK]
    for name in PARSERS + SHIMS + TABLES:
        rows.append({"id": f"stdlib/{name}", "text": (STDLIB / name).read_text(encoding="utf-8"), "source": "stdlib",
                     "domain": "code", "uri": str(STDLIB / name), "repo": "stdlib", "lang": "python",
                     "meta": [("path", name)]})
    for doc_id, (hint, text, _) in LOW_QUALITY.items():
        rows.append({"id": doc_id, "text": text, "source": "bad", "domain": hint, "uri": f"memory://{doc_id}",
                     "lang": "javascript" if hint == "code" else "en", "meta": []})
    unique: dict[str, dict] = {}
    for row in rows:
        row = {k: row.get(k) for k in DOCUMENT_COLUMNS}
        row["meta"] = dict(row["meta"] or [])
        unique.setdefault(row["id"], row)
    return sorted(unique.values(), key=lambda r: r["id"])


def commit_fake_dedup(output: str, rows: list[dict], files: int) -> None:
    """Commit `rows` as job "dedup" under `output`, in `files` Parquet files."""
    job = JobOutput(output, "dedup")
    tmp_uri = job.begin()
    tmp = Path(fsspec.core.url_to_fs(tmp_uri)[1])
    (tmp / "documents").mkdir(parents=True)
    for i in range(files):
        part = rows[i::files]
        pq.write_table(documents_table(part), tmp / "documents" / f"part-{i:05d}.parquet")
    ledger = Ledger(job="dedup")
    ledger.add("all", "written", None, len(rows))
    job.commit(tmp_uri, "fake-dedup", ledger)


def commit_laid_out_dedup(spark, output: str, rows: list[dict], files: int) -> None:
    """Commit `rows` as job "dedup" laid out as the jobs write their tables (write_parquet_table: hash of id
    into `files` files, each sorted by id), so that the grade job can map part to part."""
    job = JobOutput(output, "dedup")
    tmp_uri = job.begin()
    write_parquet_table(spark.createDataFrame(documents_table(rows)), f"{tmp_uri}/documents", files)
    ledger = Ledger(job="dedup")
    ledger.add("all", "written", None, len(rows))
    job.commit(tmp_uri, "fake-dedup", ledger)


def build_config(root: Path, extra: str = ""):
    text = f'[build]\nname = "grade-test"\noutput = "{root}/build"\noutput_files = 2\n' \
           '[[sources]]\nname = "unused"\nuri = "unused.jsonl"\nformat = "jsonl"\n' + extra
    return parse_build(text, str(root / "build.toml"))


def run_grade(spark, root: Path, rows: list[dict], files: int, extra: str = "", laid_out: bool = False):
    """Grade `rows` committed as dedup's output in `files` plain files, or (`laid_out`) as the jobs lay out
    their tables, which the grade job maps part to part."""
    cfg = build_config(root, extra)
    if laid_out:
        commit_laid_out_dedup(spark, cfg.build.output, rows, cfg.build.output_files)
    else:
        commit_fake_dedup(cfg.build.output, rows, files)
    result = grade_job.run(spark, cfg)
    out = Path(fsspec.core.url_to_fs(JobOutput(cfg.build.output, "grade").uri)[1])
    return SimpleNamespace(cfg=cfg, result=result, out=out,
                           rows=pq.read_table(out / "documents").to_pylist(),
                           report=json.loads((out / "report.json").read_text()))


@pytest.fixture(scope="module")
def upstream(sample_corpus):
    return upstream_rows(Path(sample_corpus))


@pytest.fixture(scope="module")
def graded(spark, upstream, tmp_path_factory):
    return run_grade(spark, tmp_path_factory.mktemp("grade3"), upstream, files=3)


def test_ledger_accounts_for_every_document_with_exact_reasons(graded, upstream):
    ledger = graded.result.ledger
    ledger.check()
    assert ledger.read == len(upstream) and ledger.written == len(graded.rows)
    assert ledger.by_source["bad"] == {"read": 3, "written": 0}
    cfg = GradeConfig()
    expected = Counter()
    for row in upstream:  # the same verdicts as the pure functions give
        domain = decide_domain(row["text"], row["domain"], row["lang"], row["uri"], cfg.domain).domain
        failed = quality_check(row["text"], domain, cfg.filters).failed
        if failed:
            expected[failed[0]] += 1
    assert ledger.dropped == dict(expected)
    for doc_id, (hint, text, reason) in LOW_QUALITY.items():
        assert filter_document(text, hint, cfg.filters) == (False, reason), doc_id
        assert ledger.dropped[reason] >= 1


def test_columns_ranges_and_balanced_tiers(graded):
    assert tuple(graded.rows[0]) == GRADED_COLUMNS
    assert all(0 < r["difficulty"] < 1 and 0 <= r["tier"] <= 4 and r["quality"]["passed"] for r in graded.rows)
    for domain in {r["domain"] for r in graded.rows}:
        sizes = Counter(r["tier"] for r in graded.rows if r["domain"] == domain)
        total = sum(sizes.values())
        assert all(abs(n - total / 5) <= 1 for n in sizes.values()), (domain, sizes)


def test_spark_ranks_follow_the_pure_rule(graded):
    expected = rank_within_domains(
        [(r["domain"], dict(r["grade_features"])["score"], r["id"]) for r in graded.rows], tiers=5)
    assert {r["id"]: (r["difficulty"], r["tier"]) for r in graded.rows} == expected


def test_math_difficulty_correlates_with_the_generated_level(graded):
    math = [r for r in graded.rows if r["source"] == "math" and "level" in dict(r["meta"])]
    assert len(math) >= 60 and all(r["domain"] == "math" for r in math)
    rho = spearman([r["difficulty"] for r in math], [int(dict(r["meta"])["level"]) for r in math])
    assert rho >= 0.7, rho


def test_stdlib_shims_and_tables_below_parsers(graded):
    tier = {r["id"]: r["tier"] for r in graded.rows}
    parsers = [tier[f"stdlib/{n}"] for n in PARSERS]
    assert max(tier[f"stdlib/{n}"] for n in SHIMS) == 0
    assert max(tier[f"stdlib/{n}"] for n in TABLES) < min(parsers)
    assert min(parsers) >= 2 and tier["stdlib/ast.py"] == tier["stdlib/tokenize.py"] == 4


def test_report_counts_tokens_and_examples(graded):
    report = graded.report
    assert report["documents"]["read"] == graded.result.ledger.read
    for domain, item in report["domains"].items():
        members = [r for r in graded.rows if r["domain"] == domain]
        assert item["documents"] == len(members) == sum(item["decided_by"].values())
        for entry in item["tiers"]:
            in_tier = [r for r in members if r["tier"] == entry["tier"]]
            assert entry["documents"] == len(in_tier)
            assert entry["approx_tokens"] == sum(len(r["text"].encode()) for r in in_tier) // 4
            assert len(entry["examples"]) == min(3, len(in_tier))
            assert set(entry["examples"]) <= {r["id"] for r in in_tier}
        assert set(item["features"]) >= {"score"}
    assert report["domains"]["code"]["decided_by"] == {"lang": report["domains"]["code"]["documents"]}


def test_deterministic_across_input_partitions(spark, graded, upstream, tmp_path):
    single = run_grade(spark, tmp_path, upstream, files=1)
    assert spark.read.parquet(JobOutput(single.cfg.build.output, "dedup").child("documents")).rdd.getNumPartitions() == 1
    assert spark.read.parquet(JobOutput(graded.cfg.build.output, "dedup").child("documents")).rdd.getNumPartitions() == 3
    names = sorted(p.name for p in (graded.out / "documents").iterdir())
    assert names == sorted(p.name for p in (single.out / "documents").iterdir()) == ["part-00000.parquet",
                                                                                      "part-00001.parquet"]
    for name in names:
        assert (graded.out / "documents" / name).read_bytes() == (single.out / "documents" / name).read_bytes()
    assert (graded.out / "report.json").read_bytes() == (single.out / "report.json").read_bytes()
    assert grade_job.run(spark, single.cfg).skipped  # committed with the same inputs: nothing to do


def test_part_to_part_writes_the_bytes_of_the_shuffled_path(spark, graded, upstream, tmp_path, monkeypatch):
    cfg = build_config(tmp_path)
    commit_laid_out_dedup(spark, cfg.build.output, upstream, cfg.build.output_files)
    mapped = []
    grade_parts = grade_job.grade_parts
    monkeypatch.setattr(grade_job, "grade_parts", lambda *args: mapped.append(args) or grade_parts(*args))
    result = grade_job.run(spark, cfg)
    assert mapped, "the laid-out upstream did not take the part-to-part path"
    out = Path(fsspec.core.url_to_fs(result.uri)[1])
    names = sorted(p.name for p in (out / "documents").iterdir())
    assert names == sorted(p.name for p in (graded.out / "documents").iterdir())
    for name in names:
        assert (out / "documents" / name).read_bytes() == (graded.out / "documents" / name).read_bytes(), name
    assert (out / "report.json").read_bytes() == (graded.out / "report.json").read_bytes()
    assert result.ledger.to_json() == graded.result.ledger.to_json()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in graded.out.iterdir())


def test_flag_mode_keeps_failing_documents_and_reports_them(spark, upstream, tmp_path):
    rows = [r for r in upstream if r["source"] in ("bad", "stdlib")]
    flagged = run_grade(spark, tmp_path, rows, files=2, extra='[grade.filters]\naction = "flag"\n')
    ledger = flagged.result.ledger
    assert ledger.dropped == {} and ledger.written == ledger.read == len(rows)
    by_id = {r["id"]: r for r in flagged.rows}
    for doc_id, (_, _, reason) in LOW_QUALITY.items():
        quality = by_id[doc_id]["quality"]
        assert not quality["passed"] and quality["failed"][0] == reason, doc_id
    assert flagged.report["domains"]["general"]["flagged"]["c4_lorem_ipsum"] == 1
    assert flagged.report["domains"]["code"]["flagged"]["stack_max_line_length"] == 1


MODEL = '[grade.difficulty]\nmodel = "builtin:default"\n'


def test_model_tiers_do_not_depend_on_the_rest_of_the_build(spark, upstream, tmp_path):
    """The same math and code documents graded inside two different builds (the second adds other math and
    code) keep their difficulty and tier: the model's cut-offs are fixed, not quantiles of the build."""
    core = [r for r in upstream if r["source"] in ("math", "stdlib")]
    extra = [r for r in upstream if r["source"] == "code"][:60]
    extra += [{**r, "id": f"extra/{r['id']}", "text": r["text"] + "\n\nCheck: substitute back and simplify."}
              for r in core if r["source"] == "math"]
    small = run_grade(spark, tmp_path / "a", core, files=1, extra=MODEL)
    large = run_grade(spark, tmp_path / "b", sorted(core + extra, key=lambda r: r["id"]), files=2, extra=MODEL,
                      laid_out=True)  # part to part: the model's tiers through that path too
    graded = {r["id"]: (r["difficulty"], r["tier"]) for r in small.rows}
    assert len(graded) >= 60 and {r["domain"] for r in small.rows} == {"math", "code"}
    assert {i: v for i, v in ((r["id"], (r["difficulty"], r["tier"])) for r in large.rows) if i in graded} == graded
    math = [r for r in small.rows if r["source"] == "math" and "level" in dict(r["meta"])]
    assert spearman([r["difficulty"] for r in math], [int(dict(r["meta"])["level"]) for r in math]) >= 0.5
    section = small.report["difficulty"]
    assert section["source"] == "model" and section["model"]["uri"] == "builtin:default"
    assert len(section["model"]["fingerprint"]) == 64 and section["sources"] == {"code": "model", "math": "model"}
    assert section["bins"][0] == 0.0 and section["bins"][-1] == 1.0 and len(section["bins"]) == 21
    for domain in ("math", "code"):
        members = [r for r in small.rows if r["domain"] == domain]
        assert sum(section["histogram"][domain]) == len(members)
        assert section["tiers"][domain] == {str(t): n for t, n in sorted(Counter(r["tier"] for r in members).items())}


def test_hand_graders_are_the_fallback_and_the_report_says_so(graded):
    section = graded.report["difficulty"]
    assert section["source"] == "hand" and section["model"] is None
    assert set(section["sources"].values()) == {"hand"}
    assert sum(sum(h) for h in section["histogram"].values()) == len(graded.rows)


def test_until_grade_runs_without_traces_when_they_are_off(tmp_path):
    from jobs.registry import select_jobs

    cfg = build_config(tmp_path, "[traces]\nenabled = false\n")
    assert select_jobs(until="grade", cfg=cfg) == ["ingest", "dedup", "grade"]
    assert select_jobs(until="grade") == ["ingest", "traces", "dedup", "grade"]


def test_a_relative_model_folder_resolves_against_the_build_file(tmp_path):
    cfg = build_config(tmp_path, '[grade.difficulty]\nmodel = "models/mine"\n')
    assert grade_job._with_model_resolved(cfg).grade.difficulty.model == f"{tmp_path}/models/mine"
    builtin = build_config(tmp_path, MODEL)
    assert grade_job._with_model_resolved(builtin).grade.difficulty.model == "builtin:default"
