"""The one-page build report (`rnj report`): every committed job's figures from the files they wrote.

Reads, under a build output OUTPUT (any fsspec URI): each job's `_LEDGER.json` and `_SUCCESS`,
`dedup/report.json`, `grade/report.json`, `tokenize/report.json`, `build/curriculum.json` and each phase's
`manifest.json`. Nothing is recomputed and no shard is read, so the report is quick on any size of build.
Training curves come from the caller (the CLI reads metrics.jsonl and draws them with model.metrics).

Sections: ledgers, dedup, grading, tokenizer, mixture, packing, training. A part that is missing (a job
not run yet) becomes a note in its section, not an error.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

import fsspec

from pipeline.inspect import plots
from pipeline.inspect.tables import Table
from pipeline.shards import ShardError, read_manifest

JOBS = ("ingest", "traces", "dedup", "grade", "tokenize", "build")
MAX_MEMBERS = 6
ROUND_ORDER = ("exact", "near", "boilerplate", "decontaminate")


@dataclass
class Image:
    title: str
    png: bytes


@dataclass
class Section:
    key: str
    title: str
    tables: list[Table] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class TrainingRun:
    """A training run's metrics.jsonl records and, drawn by the caller, its loss and learning-rate plot."""

    path: str
    records: list[dict]
    plot_png: bytes | None = None


@dataclass
class Report:
    uri: str
    sections: list[Section]

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)


class _Output:
    """Reading JSON files of a build output."""

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.root = fsspec.core.url_to_fs(uri)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def json(self, *parts: str) -> dict | None:
        path = self.path(*parts)
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "r") as f:
            return json.load(f)

    def show(self, *parts: str) -> str:
        return self.fs.unstrip_protocol(self.path(*parts))


def build_report(output_uri: str, training: TrainingRun | None = None, with_plots: bool = True,
                 progress: Callable[[str], None] | None = None) -> Report:
    """The report of the build whose output root (OUTPUT, holding ingest/, dedup/ ... build/) is `output_uri`."""
    out = _Output(output_uri)
    if not out.fs.exists(out.root):
        raise ValueError(f"{output_uri} does not exist")
    if not any(out.fs.exists(out.path(job)) for job in JOBS):
        raise ValueError(f"{output_uri} holds none of the jobs' outputs ({', '.join(JOBS)}): point at the build "
                         "output folder ([build] output of the build file)")
    parts = [
        ("ledgers", lambda: _ledgers(out, with_plots)),
        ("dedup", lambda: _dedup(out)),
        ("grading", lambda: _grading(out, with_plots)),
        ("tokenizer", lambda: _tokenizer(out, with_plots)),
        ("mixture and packing", lambda: _phases(out, with_plots)),
        ("training", lambda: [_training(training)]),
    ]
    sections: list[Section] = []
    for name, make in parts:
        if progress:
            progress(name)
        made = make()
        sections += made if isinstance(made, list) else [made]
    return Report(out.show(), sections)


# --- ledgers ----------------------------------------------------------------------------------------------

def _ledgers(out: _Output, with_plots: bool) -> Section:
    section = Section("ledgers", "Ledgers")
    summary, reasons = [], []
    for job in JOBS:
        ledger = out.json(job, "_LEDGER.json")
        success = out.json(job, "_SUCCESS")
        if ledger is None:
            if out.fs.exists(out.path(job)):
                section.notes.append(f"{job}: no _LEDGER.json in {out.show(job)}")
            continue
        dropped, quarantined = ledger.get("dropped", {}), ledger.get("quarantined", {})
        summary.append([job, "yes" if success else "no (not committed)",
                        (success or {}).get("input_hash", "")[:12] or None, ledger["read"], ledger["written"],
                        sum(dropped.values()), sum(quarantined.values())])
        for outcome, table in (("dropped", dropped), ("quarantined", quarantined)):
            for reason, count in sorted(table.items(), key=lambda kv: -kv[1]):
                reasons.append([job, outcome, reason, count, round(count / ledger["read"], 6) if ledger["read"] else 0.0])
    if not summary:
        section.notes.append(f"no job ledgers under {out.show()}")
        return section
    section.tables.append(Table("documents read, kept, dropped and quarantined per job",
                                ["job", "committed", "input hash", "read", "written", "dropped", "quarantined"],
                                summary))
    section.tables.append(Table("dropped and quarantined by reason", ["job", "outcome", "reason", "documents",
                                                                       "share of read"], reasons,
                                [] if reasons else ["no document was dropped or quarantined"]))
    if with_plots:
        jobs = [r[0] for r in summary]
        section.images.append(Image("documents per job", plots.stacked_bars(
            "documents per job", jobs, {"written": [r[4] for r in summary], "dropped": [r[5] for r in summary],
                                        "quarantined": [r[6] for r in summary]}, "documents")))
    return section


# --- dedup ------------------------------------------------------------------------------------------------

def _dedup(out: _Output) -> Section:
    section = Section("dedup", "Dedup rounds and example clusters")
    report = out.json("dedup", "report.json")
    if report is None:
        section.notes.append(f"no {out.show('dedup', 'report.json')}: the dedup job has not run")
        return section
    if report.get("enabled") is False:
        section.notes.append("dedup was disabled in the build file: every document passed through")
    rows, clusters = [], []
    rounds = report.get("rounds", {})
    for name in sorted(rounds, key=lambda n: (ROUND_ORDER.index(n) if n in ROUND_ORDER else len(ROUND_ORDER), n)):
        r = rounds[name]
        sizes = ", ".join(f"{k}: {v}" for k, v in (r.get("cluster_sizes") or {}).items()) or None
        rows.append([name, r.get("enabled"), r.get("in"), r.get("out"), r.get("dropped"), r.get("clusters"), sizes])
        for c in r.get("sample_clusters") or []:
            members = c.get("members", [])
            shown = ", ".join(members[:MAX_MEMBERS]) + (f" (+{len(members) - MAX_MEMBERS})" if len(members) > MAX_MEMBERS
                                                        else "")
            clusters.append([name, c.get("cluster_id"), c.get("size"), c.get("kept"), shown])
    section.tables.append(Table(f"rounds ({report.get('input')} documents in, {report.get('output')} out)",
                                ["round", "enabled", "in", "out", "dropped", "clusters", "cluster sizes"], rows))
    section.tables.append(Table("example clusters (the largest of each round)",
                                ["round", "cluster", "size", "kept", "members"], clusters,
                                [] if clusters else ["no clusters"]))
    lines = (rounds.get("boilerplate") or {}).get("top_lines") or []
    if lines:
        section.tables.append(Table("most frequent boilerplate lines (removed)", ["line", "documents"],
                                    [[entry["line"][:120], entry["documents"]] for entry in lines[:10]]))
    return section


# --- grading ----------------------------------------------------------------------------------------------

def _grading(out: _Output, with_plots: bool) -> Section:
    section = Section("grading", "Grading: documents per domain and tier")
    report = out.json("grade", "report.json")
    if report is None:
        section.notes.append(f"no {out.show('grade', 'report.json')}: the grade job has not run")
        return section
    tiers = report.get("tiers", 5)
    rows, tokens, ranges = [], [], []
    for domain, item in report.get("domains", {}).items():
        by_tier = {t["tier"]: t for t in item.get("tiers", [])}
        rows.append([domain, item["documents"]] + [by_tier.get(t, {}).get("documents", 0) for t in range(tiers)])
        tokens.append([domain, item.get("approx_tokens")] + [by_tier.get(t, {}).get("approx_tokens", 0)
                                                              for t in range(tiers)])
        for t in range(tiers):
            if t in by_tier:
                ranges.append([domain, t, by_tier[t].get("score_min"), by_tier[t].get("score_max"),
                               ", ".join(by_tier[t].get("examples", [])[:3]) or None])
    documents = report.get("documents", {})
    section.notes.append(f"read {documents.get('read')}, written {documents.get('written')}, dropped "
                         + (", ".join(f"{k}={v}" for k, v in documents.get("dropped", {}).items()) or "none"))
    tier_columns = [f"tier {t}" for t in range(tiers)]
    section.tables.append(Table("documents per domain and tier", ["domain", "documents"] + tier_columns, rows))
    section.tables.append(Table(f"tokens per domain and tier ({report.get('tokens', 'approximate')})",
                                ["domain", "tokens"] + tier_columns, tokens))
    section.tables.append(Table("raw score range and example ids per tier",
                                ["domain", "tier", "score min", "score max", "examples"], ranges))
    if with_plots and rows:
        section.images.append(Image("documents per domain, by tier", plots.stacked_bars(
            "documents per domain, by tier", [r[0] for r in rows],
            {f"tier {t}": [r[2 + t] for r in rows] for t in range(tiers)}, "documents")))
    return section


# --- tokenizer --------------------------------------------------------------------------------------------

def _tokenizer(out: _Output, with_plots: bool) -> Section:
    section = Section("tokenizer", "Tokenizer: bytes per token")
    report = out.json("tokenize", "report.json")
    if report is None:
        section.notes.append(f"no {out.show('tokenize', 'report.json')}: the tokenize job has not run")
        return section
    info = report.get("tokenizer", {})
    section.notes.append(f"{info.get('source', '?')} tokenizer, sha256 {str(info.get('sha256'))[:16]}..., "
                         f"{info.get('vocab_size')} ids (bos {info.get('bos_id')}, eos {info.get('eos_id')}, "
                         f"pad {info.get('pad_id')})")
    part = "heldout" if (report.get("heldout") or {}).get("domains") else "all_documents"
    figures = report.get(part) or {"domains": {}, "all": {}}
    rows = [[d, f["documents"], f["bytes"], f["tokens"], f["bytes_per_token"]] for d, f in figures["domains"].items()]
    a = figures.get("all") or {}
    rows.append(["all", a.get("documents"), a.get("bytes"), a.get("tokens"), a.get("bytes_per_token")])
    what = "held-out documents" if part == "heldout" else "all documents"
    section.tables.append(Table(f"bytes per token by domain ({what})",
                                ["domain", "documents", "bytes", "tokens", "bytes/token"], rows))
    if with_plots and figures["domains"]:
        section.images.append(Image("bytes per token by domain", plots.grouped_bars(
            f"bytes per token by domain ({what})", [r[0] for r in rows],
            {"bytes/token": [r[4] or 0 for r in rows]}, "bytes/token")))
    return section


# --- mixture and packing ----------------------------------------------------------------------------------

def _phases(out: _Output, with_plots: bool) -> list[Section]:
    mixture = Section("mixture", "Mixture per phase: target vs achieved")
    packing = Section("packing", "Packing efficiency")
    curriculum = out.json("build", "curriculum.json")
    if curriculum is None:
        note = f"no {out.show('build', 'curriculum.json')}: the build job has not run"
        mixture.notes.append(note)
        packing.notes.append(note)
        return [mixture, packing]
    rows, panels = [], []
    for p in curriculum["phases"]:
        name = f"{p['stage']}/{p['phase']}"
        try:
            m = read_manifest(out.show("build", p["stage"], p["phase"]))
        except ShardError as err:
            packing.notes.append(f"{name}: {err}")
            continue
        buckets = (m.get("mixture") or {}).get("buckets", {})
        mixture.tables.append(Table(f"{name} ({m.get('kind', '?')}): {len(buckets)} buckets",
                                    ["bucket", "target weight", "achieved weight", "shift", "target tokens", "tokens",
                                     "supply", "epochs", "max epochs"],
                                    [[k, b.get("target_weight"), b.get("achieved_weight"),
                                      round(b.get("achieved_weight", 0) - b.get("target_weight", 0), 6),
                                      b.get("target_tokens"), b.get("tokens"), b.get("supply_tokens"), b.get("epochs"),
                                      b.get("max_epochs")] for k, b in buckets.items()],
                                    ["mixture redistributed (a bucket fell short)"]
                                    if (m.get("mixture") or {}).get("redistributed") else []))
        if buckets:
            panels.append((name, list(buckets), {"target": [b.get("target_weight") for b in buckets.values()],
                                                 "achieved": [b.get("achieved_weight") for b in buckets.values()]}))
        pack = m.get("packing") or {}
        slots, padding = m["num_tokens"], m["num_padding_tokens"]
        pieces = pack.get("pieces")
        rows.append([name, m.get("kind"), m["seq_len"], m["num_sequences"], len(m["shards"]), padding,
                     round(100 * (1 - padding / slots), 4) if slots else None, pieces, pack.get("cut"),
                     round(pack["cut"] / pieces, 6) if pieces else None, m.get("eval", {}).get("num_sequences"),
                     m.get("steps")])
    packing.tables.append(Table("phases in training order",
                                ["phase", "kind", "seq_len", "sequences", "shards", "padding tokens", "non-padding %",
                                 "pieces", "cut", "cut share", "eval sequences", "steps"], rows,
                                ["cut = documents split more than their length needs (docs/curriculum.md)"]))
    if with_plots and panels:
        mixture.images.append(Image("target vs achieved weight per bucket", plots.mixture_panels(panels)))
    if with_plots and rows:
        packing.images.append(Image("non-padding share per phase", plots.grouped_bars(
            "non-padding tokens per phase (%)", [r[0] for r in rows], {"non-padding %": [r[6] for r in rows]}, "%")))
    return [mixture, packing]


# --- training ---------------------------------------------------------------------------------------------

def _training(run: TrainingRun | None) -> Section:
    section = Section("training", "Training curves")
    if run is None:
        section.notes.append("no training run named (rnj report BUILD --run RUN_DIR; default OUTPUT/train)")
        return section
    records = [r for r in run.records if "loss" in r]
    section.notes.append(f"{len(records)} steps from {run.path}")
    phases: dict[tuple, list[dict]] = {}
    for r in records:
        phases.setdefault((r.get("stage"), r.get("phase")), []).append(r)
    rows = []
    for (stage, phase), rs in phases.items():
        evals = [r["eval_loss"] for r in rs if r.get("eval_loss") is not None]
        rows.append([f"{stage}/{phase}", rs[0]["step"], rs[-1]["step"], round(rs[0]["loss"], 4),
                     round(rs[-1]["loss"], 4), round(min(r["loss"] for r in rs), 4),
                     round(evals[-1], 4) if evals else None, rs[-1].get("tokens_seen")])
    section.tables.append(Table("loss per phase", ["phase", "first step", "last step", "first loss", "last loss",
                                                   "min loss", "held-out loss", "tokens seen"], rows))
    if run.plot_png:
        section.images.append(Image("loss and learning rate", run.plot_png))
    return section
