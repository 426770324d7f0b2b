"""The stage over Arrow batches (what the job's tasks run), the report and the `rnj grade report` command."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

from click.testing import CliRunner

from pipeline.documents import documents_table
from pipeline.grading.base import GradeContext
from pipeline.grading.config import FiltersConfig, GradeConfig
from pipeline.grading.grade import (
    ANALYSED_SCHEMA,
    SCORED_SCHEMA,
    analyse_batch,
    grade_batch,
    vocabulary_counts,
)
from pipeline.grading.report import build_report, report_tables
from pipeline.ledger import Ledger
from rnj.grade_cmd import grade_group

PROSE = ("The river rises in the hills to the north of the town and runs south through a wide valley. In spring "
         "the water is high, and the farmers who live along its banks move their animals to the upper fields. By "
         "late summer the level falls again, leaving pools where children fish for small trout with their friends.")
DOCS = [
    {"id": "a", "text": PROSE, "source": "web", "lang": "en", "uri": "web.jsonl#L1"},
    {"id": "b", "text": PROSE + " Lorem ipsum dolor sit amet.", "source": "web", "lang": "en", "uri": "web.jsonl#L2"},
    {"id": "c", "text": "def f(x):\n    return [y for y in x if y]\n", "source": "code", "domain": "code",
     "uri": "r/f.py", "lang": "python", "meta": {"path": "f.py"}},
    {"id": "d", "text": "Problem. Solve for $x$: $2x + 1 = 5$.\n\nSolution.\n1. Subtract 1: $2x = 4$.\n"
                        "2. Divide by 2: $x = 2$.\n\nAnswer: x = 2\n", "source": "math", "domain": "math",
     "uri": "m.jsonl#L1", "lang": "en"},
]


def batch():
    return documents_table(DOCS).to_batches()[0]


def test_analyse_drops_with_the_rule_or_flags():
    dropped = analyse_batch(batch(), GradeConfig())
    assert dropped.schema == ANALYSED_SCHEMA
    rows = {r["id"]: r for r in dropped.to_pylist()}
    assert [(k, r["domain"], r["domain_by"], r["keep"], r["reason"]) for k, r in sorted(rows.items())] == [
        ("a", "general", "scorer", True, None),
        ("b", "general", "scorer", False, "c4_lorem_ipsum"),
        ("c", "code", "lang", True, None),
        ("d", "math", "source", True, None),
    ]
    assert rows["b"]["quality"]["failed"] == ["c4_lorem_ipsum"] and rows["a"]["quality"]["passed"]
    signals = dict(rows["a"]["quality"]["signals"])
    assert signals["stop_words"] >= 2 and list(signals) == sorted(signals)
    flag = dataclasses.replace(GradeConfig(), filters=FiltersConfig(action="flag"))
    flagged = {r["id"]: r for r in analyse_batch(batch(), flag).to_pylist()}
    assert flagged["b"]["keep"] and flagged["b"]["reason"] is None
    assert not flagged["b"]["quality"]["passed"] and flagged["b"]["quality"]["failed"] == ["c4_lorem_ipsum"]


def test_grade_adds_features_and_score():
    analysed = analyse_batch(batch(), GradeConfig())
    counts = {r["word"]: r["count"] for b in vocabulary_counts([analysed]) for r in b.to_pylist()}
    assert counts["the"] == 2 * PROSE.lower().split().count("the")  # documents a and b are general prose
    folded = Counter()  # step 2 folded into step 1 (as the job runs it): the kept documents' counts
    analyse_batch(batch(), GradeConfig(), vocabulary=folded)
    kept = analysed.filter(analysed.column("keep"))
    assert folded == Counter({r["word"]: r["count"] for b in vocabulary_counts([kept]) for r in b.to_pylist()})
    assert folded["the"] == PROSE.lower().split().count("the")  # b is dropped (lorem ipsum)
    scored = grade_batch(analysed, GradeConfig(), GradeContext(common_words=frozenset(counts)))
    assert scored.schema == SCORED_SCHEMA
    rows = {r["id"]: r for r in scored.to_pylist()}
    assert dict(rows["c"]["grade_features"])["comprehensions"] == 1.0
    assert dict(rows["d"]["grade_features"])["notation_level"] == 2.0
    assert all(0 <= r["score"] <= 1 and dict(r["grade_features"])["score"] == r["score"] for r in rows.values())
    off = grade_batch(analysed, dataclasses.replace(GradeConfig(), enabled=False), GradeContext())
    assert {r["score"] for r in off.to_pylist()} == {0.0}


def _report():
    ledger = Ledger(job="grade")
    ledger.add("web", "written", None, 3)
    ledger.add("web", "dropped", "c4_lorem_ipsum", 1)
    return build_report(
        GradeConfig(), ledger,
        tier_rows=[{"domain": "general", "tier": t, "documents": 1, "bytes": 400 + t, "score_min": 0.1 * t,
                    "score_max": 0.1 * t + 0.05} for t in (0, 2, 4)],
        decider_rows=[{"domain": "general", "domain_by": "scorer", "documents": 3}],
        feature_rows=[{"domain": "general", "feature": "fk_grade", "quantiles": [1, 2, 3, 4, 5, 6, 7]}],
        example_rows=[{"domain": "general", "tier": 0, "id": "a"}, {"domain": "general", "tier": 2, "id": "b"}],
        flagged_rows=[],
        common_words=12,
        histogram_rows=[{"domain": "general", "bin": b, "tier": t, "documents": 1} for b, t in ((1, 0), (9, 2), (19, 4))],
    )


def test_report_layout_and_tables():
    report = _report()
    general = report["domains"]["general"]
    assert report["documents"] == {"read": 4, "written": 3, "dropped": {"c4_lorem_ipsum": 1}}
    assert general["documents"] == 3 and general["approx_tokens"] == 100 + 100 + 101
    assert general["tiers"][0] == {"tier": 0, "documents": 1, "approx_tokens": 100, "score_min": 0.0,
                                   "score_max": 0.05, "examples": ["a"]}
    assert general["features"]["fk_grade"]["p50"] == 4 and general["decided_by"] == {"scorer": 3}
    assert report["grading"]["graders"]["science"] == "prose" and report["grading"]["reference_model"] is None
    titles = [title for title, _, _ in report_tables(report)]
    assert titles[0] == "documents" and "per domain and tier" in titles[1]
    tier_row = report_tables(report)[1][2][0]
    assert tier_row[:3] == ["general", "3", "301"] and tier_row[4] == "-"
    difficulty = report["difficulty"]
    assert difficulty["source"] == "hand" and difficulty["tiers"] == {"general": {"0": 1, "2": 1, "4": 1}}
    assert difficulty["histogram"]["general"][1] == difficulty["histogram"]["general"][19] == 1
    assert report_tables(report)[-1][2] == [["general", "hand", "3", "1", "0", "1", "0", "1"]]


def test_cli_prints_the_report(tmp_path):
    (tmp_path / "grade").mkdir()
    (tmp_path / "grade" / "report.json").write_text(json.dumps(_report()))
    result = CliRunner().invoke(grade_group, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "documents and tokens" in result.output and "c4_lorem_ipsum=1" in result.output
    assert "documents per tier and domain (difficulty by hand graders)" in result.output
    as_json = CliRunner().invoke(grade_group, ["report", str(tmp_path / "grade" / "report.json"), "--json"])
    assert json.loads(as_json.output)["tiers"] == 5
    missing = CliRunner().invoke(grade_group, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code != 0 and "run the grade job first" in str(missing.exception)
