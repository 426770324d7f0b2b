"""The one-page build report (`rnj report`): every committed job's figures from the files they wrote.

Reads, under a build output OUTPUT (any fsspec URI): each job's `_LEDGER.json` and `_SUCCESS`,
`dedup/report.json`, `grade/report.json`, `tokenize/report.json`, `build/curriculum.json`,
`build/report.json` and each phase's `manifest.json`. Nothing is recomputed and no shard is read, so the
report is quick on any size of build. Training records come from the caller (the CLI reads metrics.jsonl).

Sections: ledgers, dedup, grading, tokenizer, mixture, packing, documents per phase, training. A part that
is missing (a job not run yet, a figure an older job did not record) becomes a note in its section, not an
error. docs/inspect.md says what each panel shows and what to read from it.
"""

from __future__ import annotations

import itertools
import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

import fsspec

from pipeline.inspect import plots
from pipeline.inspect.figures import bin_label
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
    """A training run's metrics.jsonl records."""

    path: str
    records: list[dict]


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
        ("dedup", lambda: _dedup(out, with_plots)),
        ("grading", lambda: _grading(out, with_plots)),
        ("tokenizer", lambda: _tokenizer(out, with_plots)),
        ("mixture and packing", lambda: _phases(out, with_plots)),
        ("training", lambda: [_training(training, with_plots)]),
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

def _dedup(out: _Output, with_plots: bool) -> Section:
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
    ran = [r for r in rows if r[1] is not False and isinstance(r[2], int) and isinstance(r[3], int)]
    if with_plots and ran:
        sizes = {name: r["cluster_sizes"] for name, r in rounds.items() if r.get("cluster_sizes")}
        section.images.append(Image("documents dropped per round and clusters by size", plots.dedup_rounds(
            [r[0] for r in ran], [r[2] - r[3] for r in ran], [r[3] / r[2] if r[2] else 1.0 for r in ran], sizes)))
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
    _difficulty(section, report.get("difficulty"), with_plots)
    return section


def _difficulty(section: Section, difficulty: dict | None, with_plots: bool) -> None:
    """The difficulty score's distribution per domain and its tiers (the grade report's `difficulty`)."""
    if not difficulty:
        section.notes.append("no difficulty distribution in the grade report (its `difficulty` figures come from "
                             "grade jobs that score difficulty with a calibrated model)")
        return
    model = difficulty.get("model") or {}
    source = difficulty.get("source", "?")
    section.notes.append(f"difficulty scores from the {source} model" + (
        f" {model.get('uri')} version {model.get('version')}, fingerprint {str(model.get('fingerprint'))[:12]}..."
        if model else ""))
    edges, histogram = difficulty.get("bins") or [], difficulty.get("histogram") or {}
    rows = []
    for domain, counts in histogram.items():
        total = sum(counts)
        mids = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
        mean = sum(m * c for m, c in zip(mids, counts)) / total if total and len(mids) == len(counts) else None
        tiers = (difficulty.get("tiers") or {}).get(domain, {})
        rows.append([domain, total, round(mean, 4) if mean is not None else None,
                     ", ".join(f"{t}: {n}" for t, n in sorted(tiers.items())) or None])
    section.tables.append(Table("difficulty score per domain", ["domain", "documents", "mean score (from bins)",
                                                                "documents per tier"], rows,
                                [] if rows else ["the grade report's difficulty histogram is empty"]))
    if with_plots and histogram and len(edges) >= 2:
        section.images.append(Image("difficulty score distribution per domain", plots.distribution_lines(
            edges, {d: c for d, c in histogram.items() if len(c) == len(edges) - 1},
            "difficulty score per domain (share of the domain's documents; documents in the legend)",
            "difficulty score (0 easy, 1 hard)")))


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
    documents = Section("documents", "Documents per phase: lengths and difficulty order")
    curriculum = out.json("build", "curriculum.json")
    if curriculum is None:
        note = f"no {out.show('build', 'curriculum.json')}: the build job has not run"
        for section in (mixture, packing, documents):
            section.notes.append(note)
        return [mixture, packing, documents]
    figures = (out.json("build", "report.json") or {}).get("phases", {})
    rows, panels, names = [], [], []
    for p in curriculum["phases"]:
        name = f"{p['stage']}/{p['phase']}"
        try:
            m = read_manifest(out.show("build", p["stage"], p["phase"]))
        except ShardError as err:
            packing.notes.append(f"{name}: {err}")
            continue
        names.append(name)
        held = (figures.get(name) or {}).get("held_out_tokens", {})
        buckets = (m.get("mixture") or {}).get("buckets", {})
        mixture.tables.append(Table(f"{name} ({m.get('kind', '?')}): {len(buckets)} buckets",
                                    ["bucket", "target weight", "achieved weight", "shift", "target tokens", "tokens",
                                     "supply", "held out", "epochs", "max epochs"],
                                    [[k, b.get("target_weight"), b.get("achieved_weight"),
                                      round(b.get("achieved_weight", 0) - b.get("target_weight", 0), 6),
                                      b.get("target_tokens"), b.get("tokens"), b.get("supply_tokens"), held.get(k),
                                      b.get("epochs"), b.get("max_epochs")] for k, b in buckets.items()],
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
        packing.images.append(Image("padding and cut documents per phase", plots.phase_packing(
            [r[0] for r in rows], [round(100 - r[6], 4) if r[6] is not None else 0.0 for r in rows],
            [100 * r[9] if r[9] is not None else 0.0 for r in rows])))
    _fill(packing, names, figures, with_plots)
    _documents(documents, names, figures, with_plots)
    return [mixture, packing, documents]


def _histogram(counts: dict[str, int]) -> tuple[list[str], list[int]]:
    """Power-of-two bins from the lowest to the highest recorded, empty ones included."""
    if not counts:
        return [], []
    edges = sorted(int(k) for k in counts)
    bins, at = [], edges[0]
    while at <= edges[-1]:
        bins.append(at)
        at = 1 if at == 0 else 2 * at
    return [bin_label(b) for b in bins], [counts.get(str(b), 0) for b in bins]


def _missing(names: list[str], figures: dict, key: str) -> list[str]:
    return [n for n in names if key not in (figures.get(n) or {})]


def _fill(section: Section, names: list[str], figures: dict, with_plots: bool) -> None:
    """Sequences by their padding tokens: how full the packer filled each sequence."""
    rows, panels = [], []
    for name in names:
        counts = (figures.get(name) or {}).get("padding_per_sequence")
        if counts is None:
            continue
        total = sum(counts.values())
        seq_len = figures[name].get("seq_len")
        full = counts.get("0", 0)
        worst = max((int(k) for k, v in counts.items() if v), default=0)
        rows.append([name, total, full, round(100 * full / total, 2) if total else None,
                     f"{bin_label(worst)} tokens" + (f" ({100 * worst / seq_len:.2g}% of {seq_len})" if seq_len else "")])
        labels, values = _histogram(counts)
        panels.append((name, labels, values))
    if rows:
        section.tables.append(Table("sequence fill: sequences by padding tokens",
                                    ["phase", "sequences", "full (no padding)", "full %", "most padding (bin)"], rows))
    if with_plots and panels:
        section.images.append(Image("sequences by padding tokens per phase", plots.histogram_panels(
            panels, "padding tokens in the sequence", "sequences",
            "sequence fill: sequences by padding tokens (0 = completely full)")))
    if _missing(names, figures, "padding_per_sequence"):
        section.notes.append("no sequence-fill histogram for " + ", ".join(_missing(names, figures, "padding_per_sequence"))
                             + " (built before the build job recorded it)")


def _documents(section: Section, names: list[str], figures: dict, with_plots: bool) -> None:
    length_rows, panels, order = [], [], {}
    for name in names:
        phase = figures.get(name) or {}
        counts = phase.get("document_lengths")
        if counts is not None:
            total = sum(counts.values())
            labels, values = _histogram(counts)
            mode = labels[values.index(max(values))] if values else None
            length_rows.append([name, total, mode, labels[0] if labels else None, labels[-1] if labels else None])
            panels.append((name, labels, values))
        if phase.get("difficulty_by_decile"):
            order[name] = phase["difficulty_by_decile"]
    if length_rows:
        section.tables.append(Table("documents trained on, by length (token slots, <bos>/<eos> included)",
                                    ["phase", "documents", "most common length", "shortest bin", "longest bin"],
                                    length_rows, ["each document counted once, however many epochs it repeats"]))
    if with_plots and panels:
        section.images.append(Image("document lengths per phase", plots.histogram_panels(
            panels, "token slots (power-of-two bins)", "documents", "documents trained on, by length")))
    if _missing(names, figures, "document_lengths"):
        section.notes.append("no document-length histogram for " + ", ".join(_missing(names, figures, "document_lengths"))
                             + " (built before the build job recorded it; `rnj shards stats PHASE` measures it)")
    if order:
        section.tables.append(Table("mean difficulty per tenth of each easy_to_hard phase (in training order)",
                                    ["phase"] + [f"{10 * i}%" for i in range(1, 11)],
                                    [[name, *values] for name, values in order.items()],
                                    ["token-weighted mean difficulty score of the documents in each tenth"]))
        if with_plots:
            section.images.append(Image("difficulty through each easy_to_hard phase", plots.order_lines(
                order, "mean difficulty through each easy_to_hard phase", "mean difficulty score")))
    else:
        section.notes.append("no easy_to_hard phase with a recorded difficulty order")


# --- training ---------------------------------------------------------------------------------------------

def _training(run: TrainingRun | None, with_plots: bool) -> Section:
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
    if with_plots and records:
        last = records[-1]
        title = (f"training run: {len(records)} steps to step {last['step']}, {len(phases)} phases"
                 + (f", {last['tokens_seen']:,} tokens seen" if last.get("tokens_seen") else ""))
        section.images.append(Image("loss and learning rate", plots.training_curves(records, title)))
    return section
