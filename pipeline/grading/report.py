"""`report.json` of the grade job, assembled from the job's aggregate rows, and its rendering as tables.

Layout (every float rounded to 6 decimals; every list and mapping in a fixed order):

    {"job": "grade", "tiers": 5, "tokens": "approximate: UTF-8 bytes / 4",
     "documents": {"read", "written", "dropped": {rule: n}},
     "domains": {DOMAIN: {"documents", "approx_tokens", "decided_by": {decider: n}, "flagged": {rule: n},
                          "tiers": [{"tier", "documents", "approx_tokens", "score_min", "score_max",
                                     "examples": [id, ...]}, ...],
                          "features": {feature: {"min", "p10", "p25", "p50", "p75", "p90", "max"}}}},
     "grading": {"graders": {domain: grader}, "weights": {grader: {feature: w}}, "common_words",
                 "rare_word_per_million", "classifier": null | {...}, "reference_model": null | {...}},
     "difficulty": {"source": "model" | "hand", "model": null | {"uri", "name", "version", "fingerprint"},
                    "sources": {domain: "model" | "hand"},
                    "bins": [edges over 0..1], "histogram": {domain: [documents per bin]},
                    "tiers": {domain: {tier: documents}}}}

`difficulty.source` is "model" when a learned model graded any domain; `sources` says which per domain.
"""

from __future__ import annotations

from pipeline.documents import DOMAINS
from pipeline.grading.config import GradeConfig
from pipeline.grading.graders import WEIGHTED_GRADERS, grader_for
from pipeline.ledger import Ledger

QUANTILES = (("min", 0.0), ("p10", 0.1), ("p25", 0.25), ("p50", 0.5), ("p75", 0.75), ("p90", 0.9), ("max", 1.0))
TOKENS_NOTE = "approximate: UTF-8 bytes / 4"
DIFFICULTY_BINS = tuple(round(i / 20, 2) for i in range(21))
"""Edges of the difficulty histogram: 20 bins of width 0.05 over [0, 1] (the last bin holds 1.0 too)."""


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def build_report(
    cfg: GradeConfig,
    ledger: Ledger,
    tier_rows: list[dict],
    decider_rows: list[dict],
    feature_rows: list[dict],
    example_rows: list[dict],
    flagged_rows: list[dict],
    common_words: int,
    classifier: dict | None = None,
    histogram_rows: list[dict] = (),
    model=None,
) -> dict:
    """The report from aggregate rows:

    tier_rows     {domain, tier, documents, bytes, score_min, score_max}
    decider_rows  {domain, domain_by, documents}
    feature_rows  {domain, feature, quantiles: [7 values in QUANTILES order]}
    example_rows  {domain, tier, id}  (already limited and ordered)
    flagged_rows  {domain, rule, documents}
    histogram_rows {domain, bin, tier, documents}  (bin: index into DIFFICULTY_BINS' intervals)
    model         the DifficultyModel that graded its domains, or None
    """
    domains: dict[str, dict] = {}

    def entry(domain: str) -> dict:
        return domains.setdefault(domain, {"documents": 0, "approx_tokens": 0, "decided_by": {}, "flagged": {},
                                           "tiers": [], "features": {}})

    examples: dict[tuple[str, int], list[str]] = {}
    for row in example_rows:
        examples.setdefault((row["domain"], row["tier"]), []).append(row["id"])
    for row in sorted(tier_rows, key=lambda r: (r["domain"], r["tier"])):
        item = entry(row["domain"])
        tokens = row["bytes"] // 4
        item["documents"] += row["documents"]
        item["approx_tokens"] += tokens
        item["tiers"].append({
            "tier": row["tier"], "documents": row["documents"], "approx_tokens": tokens,
            "score_min": _round(row["score_min"]), "score_max": _round(row["score_max"]),
            "examples": examples.get((row["domain"], row["tier"]), []),
        })
    for row in sorted(decider_rows, key=lambda r: (r["domain"], r["domain_by"])):
        entry(row["domain"])["decided_by"][row["domain_by"]] = row["documents"]
    for row in sorted(flagged_rows, key=lambda r: (r["domain"], r["rule"])):
        entry(row["domain"])["flagged"][row["rule"]] = row["documents"]
    for row in sorted(feature_rows, key=lambda r: (r["domain"], r["feature"])):
        entry(row["domain"])["features"][row["feature"]] = {
            name: _round(value) for (name, _), value in zip(QUANTILES, row["quantiles"])
        }
    difficulty = cfg.difficulty
    return {
        "job": "grade",
        "tiers": difficulty.tiers,
        "tokens": TOKENS_NOTE,
        "documents": {"read": ledger.read, "written": ledger.written, "dropped": dict(sorted(ledger.dropped.items()))},
        "domains": {d: domains[d] for d in sorted(domains, key=_domain_order)},
        "grading": {
            "filters": {"enabled": cfg.enabled and cfg.filters.enabled, "action": cfg.filters.action},
            "graders": {d: grader_for(d).name for d in DOMAINS},
            "weights": {g: dict(sorted(difficulty.weights_for(g).items())) for g in WEIGHTED_GRADERS},
            "common_words": common_words,
            "rare_word_per_million": difficulty.rare_word_per_million,
            "classifier": classifier,
            "reference_model": _reference(cfg),
        },
        "difficulty": difficulty_section(domains, histogram_rows, model),
    }


def difficulty_section(domains: dict, histogram_rows, model) -> dict:
    """The `difficulty` block: who graded, the histogram of difficulty and the tier counts per domain."""
    bins = len(DIFFICULTY_BINS) - 1
    names = sorted({r["domain"] for r in histogram_rows} | set(domains), key=_domain_order)
    histogram = {d: [0] * bins for d in names}
    tiers: dict[str, dict[str, int]] = {d: {} for d in names}
    for row in histogram_rows:
        histogram[row["domain"]][min(max(int(row["bin"]), 0), bins - 1)] += row["documents"]
        counts = tiers[row["domain"]]
        counts[str(row["tier"])] = counts.get(str(row["tier"]), 0) + row["documents"]
    sources = {d: "model" if model is not None and model.covers(d) else "hand" for d in names}
    return {
        "source": "model" if "model" in sources.values() else "hand",
        "model": model.describe() if model is not None else None,
        "sources": sources,
        "bins": list(DIFFICULTY_BINS),
        "histogram": histogram,
        "tiers": {d: dict(sorted(t.items(), key=lambda kv: int(kv[0]))) for d, t in tiers.items()},
    }


def _reference(cfg: GradeConfig) -> dict | None:
    ref = cfg.reference_model
    if not ref.enabled:
        return None
    return {"checkpoint_path": ref.checkpoint_path, "tokenizer_path": ref.tokenizer_path,
            "max_tokens": ref.max_tokens, "weight": ref.weight, "feature": "reference_loss"}


def _domain_order(domain: str) -> tuple[int, str]:
    return (DOMAINS.index(domain) if domain in DOMAINS else len(DOMAINS), domain)


def report_tables(report: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, column names, rows) for printing: tiers by domain, deciders and flags, feature quantiles."""
    tiers = report["tiers"]
    tier_columns = ["domain", "documents", "approx tokens"] + [f"tier {t}" for t in range(tiers)]
    tier_rows, example_rows, feature_rows, decider_rows = [], [], [], []
    for domain, item in report["domains"].items():
        by_tier = {t["tier"]: t for t in item["tiers"]}
        tier_rows.append([domain, str(item["documents"]), f"{item['approx_tokens']:,}"] + [
            f"{by_tier[t]['documents']} ({by_tier[t]['approx_tokens']:,} tok)" if t in by_tier else "-"
            for t in range(tiers)
        ])
        for t in range(tiers):
            if t in by_tier:
                entry = by_tier[t]
                example_rows.append([domain, str(t), f"{entry['score_min']:.3f} .. {entry['score_max']:.3f}",
                                     ", ".join(entry["examples"])])
        decided = ", ".join(f"{k}={v}" for k, v in item["decided_by"].items())
        flagged = ", ".join(f"{k}={v}" for k, v in item["flagged"].items()) or "-"
        decider_rows.append([domain, decided, flagged])
        for feature, q in item["features"].items():
            feature_rows.append([domain, feature] + [f"{q[name]:.3g}" for name, _ in QUANTILES])
    difficulty_rows = []
    section = report.get("difficulty")
    if section:
        for domain, counts in section["tiers"].items():
            difficulty_rows.append([domain, section["sources"].get(domain, "hand"), str(sum(counts.values()))]
                                   + [str(counts.get(str(t), 0)) for t in range(tiers)])
    dropped = report["documents"]["dropped"]
    totals = [[str(report["documents"]["read"]), str(report["documents"]["written"]),
               ", ".join(f"{k}={v}" for k, v in dropped.items()) or "0"]]
    return [
        ("documents", ["read", "written", "dropped by rule"], totals),
        (f"documents and tokens ({report['tokens']}) per domain and tier", tier_columns, tier_rows),
        ("score range and example ids per tier", ["domain", "tier", "raw score", "examples"], example_rows),
        ("domain decided by, quality flags", ["domain", "decided by", "flagged (kept)"], decider_rows),
        ("feature distributions", ["domain", "feature"] + [name for name, _ in QUANTILES], feature_rows),
    ] + ([(_difficulty_title(section), ["domain", "graded by", "documents"] + [f"tier {t}" for t in range(tiers)],
           difficulty_rows)] if section else [])


def _difficulty_title(section: dict) -> str:
    model = section.get("model")
    who = f"model {model['name']} v{model['version']} ({model['uri']})" if model else "hand graders"
    return f"documents per tier and domain (difficulty by {who})"
