"""Build job: mix the tokenized documents by stage and phase and pack them into training shards.

    python -m jobs.build --config configs/demo.toml
    spark-submit jobs/build.py --config configs/demo.toml

Reads the committed `tokenize` documents and tokenizer (and, for SFT stages, the conversations named by
`sft_uris`). Writes, per phase, `OUTPUT/build/STAGE/PHASE/` with `manifest.json`, `train-NNNNN.arrow`
shards in training order and `eval-00000.arrow` (held-out sequences); `curriculum.json` (the phases in
order) and `report.json` (mixture achieved vs target, padding, cuts) at the top; `_LEDGER.json`.

What runs where (docs/curriculum.md): the driver only sees per-bucket totals and per-bin sums (a few
thousand rows per phase) and plans the mixture with pipeline.mixing. Executors do the rest: bucketing and
selection keys (mapInArrow), cumulative positions (window sums inside fixed key bins, offset by the bins'
prefix sums), copies and their training-order keys (mapInArrow), the cut into shard windows (mapInArrow),
and packing plus writing each shard (applyInArrow grouped by phase and shard, one shard in memory per
task). All phases go through the same Spark jobs (rows carry their phase): the job count does not grow
with the phases. Every order is a seeded hash or a sort on (key, id), so the shards are byte-identical
however Spark partitions the data.
"""

from __future__ import annotations

import functools
import hashlib
import json
import posixpath
import time
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

from jobs.common import JobResult, input_hash, job_main, read_upstream_documents, run_job
from pipeline.commit import JobOutput
from pipeline.config import BuildConfig, ConfigError
from pipeline.curriculum import (
    PhaseConfig,
    PhaseSpan,
    StageConfig,
    curriculum_fingerprint,
    phase_fingerprint,
    schedule,
)
from pipeline.documents import DOMAINS
from pipeline.inspect.figures import decile_means, merge_counts, padding_per_sequence
from pipeline.ledger import Ledger
from pipeline.mixing import (
    FRAMING_TOKENS,
    ChatRenderer,
    EvalCut,
    PhasePlan,
    bin_offsets,
    bucket_caps,
    content_tokens,
    conversation,
    conversation_id,
    eval_cuts,
    eval_limits,
    expand_copies,
    file_header,
    group_repo_files,
    key_bin,
    plan_phase,
    read_sft_file,
    record_labels,
    repo_path,
    selection_key,
)
from pipeline.packing import (
    best_fit_decreasing,
    cut_documents,
    pack_exact,
    shard_sequences_of,
    split_at_shards,
)
from pipeline.shards import FORMAT_VERSION, Item, assemble, check_listing, write_manifest, write_shard

JOB = "build"

PHASE_DOCS = pa.schema([
    pa.field("id", pa.string()), pa.field("source", pa.string()), pa.field("domain", pa.string()),
    pa.field("tier", pa.int32()), pa.field("difficulty", pa.float64()), pa.field("cost", pa.int64()),
    pa.field("framed", pa.bool_()), pa.field("members", pa.list_(pa.string())),
    pa.field("tokens", pa.list_(pa.int32())), pa.field("loss_mask", pa.binary()),
])
"""A phase's candidate documents: `cost` in token slots; `framed` ones (SFT) carry their own bos/eos;
`members` are the upstream ids a document stands for (the files of a repository-level document)."""
SFT_ROWS = pa.schema(list(PHASE_DOCS) + [pa.field("reason", pa.string())])
PHASE = pa.field("_phase", pa.int32())
"""Every phase is built in the same Spark jobs: rows carry the index of their phase in the schedule."""
ORIGIN = pa.field("_origin", pa.int32())
"""Where a candidate's tokens are read from: -1 the upstream table (read once for every phase), else the
index of the phase that derived the document (repository documents, rendered SFT conversations)."""
UPSTREAM = -1
BUCKETED = pa.schema([
    PHASE, ORIGIN, pa.field("id", pa.string()), pa.field("source", pa.string()), pa.field("domain", pa.string()),
    pa.field("tier", pa.int32()), pa.field("difficulty", pa.float64()), pa.field("cost", pa.int64()),
    pa.field("members", pa.list_(pa.string())),
    pa.field("bucket", pa.string()), pa.field("skey", pa.float64()), pa.field("_bin", pa.int32()),
])
COPIES = pa.schema([
    PHASE, ORIGIN, pa.field("id", pa.string()), pa.field("source", pa.string()), pa.field("domain", pa.string()),
    pa.field("tier", pa.int32()), pa.field("epoch", pa.int32()), pa.field("cost", pa.int64()),
    pa.field("okey", pa.float64()), pa.field("tie", pa.float64()), pa.field("held_out", pa.bool_()),
    pa.field("_bin", pa.int32()),
])
PIECES = pa.schema([
    PHASE, ORIGIN, pa.field("id", pa.string()), pa.field("epoch", pa.int32()), pa.field("shard", pa.int32()),
    pa.field("offset", pa.int64()), pa.field("length", pa.int64()), pa.field("position", pa.int64()),
    pa.field("okey", pa.float64()), pa.field("source_index", pa.int32()), pa.field("domain_index", pa.int32()),
    pa.field("tier", pa.int32()),
])
SHARD_STATS = pa.schema([
    PHASE, pa.field("shard", pa.int32()), pa.field("path", pa.string()), pa.field("num_sequences", pa.int64()),
    pa.field("sha256", pa.string()), pa.field("bytes", pa.int64()), pa.field("padding", pa.int64()),
    pa.field("pieces", pa.int64()), pa.field("cut", pa.int64()), pa.field("by_domain", pa.string()),
    pa.field("by_tier", pa.string()), pa.field("by_source", pa.string()), pa.field("padding_hist", pa.string()),
])


def run(spark: SparkSession, cfg: BuildConfig, force: bool = False) -> JobResult:
    if not cfg.stages:
        raise ConfigError(f"{cfg.path}: the build file has no [[stages]]: the build job has nothing to make")
    digest = hashlib.sha256(
        (input_hash(cfg, JOB, ("stages",), upstream=("tokenize",)) + _sft_listing(cfg)).encode()
    ).hexdigest()
    return run_job(cfg, JOB, digest, lambda tmp: _build(spark, cfg, tmp, digest), force=force)


# --- the tokenizer ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenizerFiles:
    uri: str
    """tokenizer.json of the committed tokenize job."""
    config_uri: str
    sha256: str
    vocab_size: int

    @staticmethod
    def committed(cfg: BuildConfig) -> TokenizerFiles:
        folder = JobOutput(cfg.build.output, "tokenize").child("tokenizer")
        uri = posixpath.join(folder, "tokenizer.json")
        with fsspec.open(uri, "rb") as f:
            data = f.read()
        tokenizer = _load_tokenizer(uri)
        return TokenizerFiles(uri, posixpath.join(folder, "tokenizer_config.json"),
                              hashlib.sha256(data).hexdigest(), tokenizer.get_vocab_size(with_added_tokens=True))

    def special_ids(self, stage: StageConfig) -> dict[str, int]:
        tokenizer = _load_tokenizer(self.uri)
        ids = {role: tokenizer.token_to_id(getattr(stage, f"{role}_token")) for role in ("bos", "eos", "pad")}
        missing = [getattr(stage, f"{r}_token") for r, i in ids.items() if i is None]
        if missing:
            raise ConfigError(f"stage {stage.name!r}: tokenizer {self.uri} has no token {missing[0]!r}; set "
                              "bos_token / eos_token / pad_token of the stage to names it has")
        return ids


@functools.lru_cache(maxsize=4)
def _load_tokenizer(uri: str):
    """Loaded once per Python worker (tasks reuse workers), never pickled from the driver."""
    from tokenizers import Tokenizer

    with fsspec.open(uri, "r") as f:
        return Tokenizer.from_str(f.read())


@functools.lru_cache(maxsize=4)
def _renderer(uri: str, config_uri: str, bos: str, eos: str) -> ChatRenderer:
    with fsspec.open(config_uri, "r") as f:
        template = json.load(f).get("chat_template")
    if isinstance(template, list):
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if not template:
        raise ValueError(f"{config_uri} has no chat_template: the sft stage needs one to render conversations")
    return ChatRenderer(_load_tokenizer(uri), template, bos, eos)


# --- the build --------------------------------------------------------------------------------------------

def _build(spark: SparkSession, cfg: BuildConfig, tmp: str, digest: str) -> Ledger:
    tok = TokenizerFiles.committed(cfg)
    upstream = read_upstream_documents(spark, cfg, JOB)
    spans = schedule(cfg.stages)
    start = time.perf_counter()
    candidates = _candidate_documents(spark, cfg, spans, upstream, tok)
    try:
        reports, ledger = _build_phases(cfg, spans, upstream, candidates, tok, tmp, digest)
    finally:
        for frame in candidates.persisted:
            frame.unpersist()
    print(f"build: {len(spans)} phases packed and counted in {time.perf_counter() - start:.1f}s", flush=True)
    phases = [{"stage": s.stage.name, "phase": s.phase.name, "kind": s.stage.kind, "first_step": s.first_step,
               "steps": s.steps} for s in spans]
    _write_json(posixpath.join(tmp, "curriculum.json"), {
        "fingerprint": curriculum_fingerprint(cfg.stages, cfg.build.seed), "phases": phases,
    })
    _write_json(posixpath.join(tmp, "report.json"), {"phases": reports, "tokenizer_sha256": tok.sha256})
    ledger.extra = {"phases": {k: {"non_padding": v["non_padding"], "cut_fraction": v["cut_fraction"]}
                               for k, v in reports.items()}}
    return ledger


@dataclass(frozen=True)
class Candidates:
    """Every phase's candidate documents."""

    rows: DataFrame
    """Without tokens, each row tagged with its phase (`_phase`, the index in the schedule) and `_origin`."""
    tokens: DataFrame
    """(`_origin`, id, framed, tokens, loss_mask): the upstream table once, whichever phases use it."""
    sft_records: dict[int, DataFrame]
    """Per SFT phase, every record (id, source, reason: null for a good one)."""
    persisted: list[DataFrame]
    """Frames persisted here (repository documents, rendered conversations), to unpersist when done."""


def _candidate_documents(spark: SparkSession, cfg, spans: tuple[PhaseSpan, ...], upstream: DataFrame,
                         tok: TokenizerFiles) -> Candidates:
    typed = _typed_upstream(upstream)
    candidates, fat, records, persisted = [], [], {}, []
    for index, span in enumerate(spans):
        phase = span.phase
        frames, derived = [], None
        if span.stage.kind == "sft":
            derived, records[index] = _sft_documents(spark, cfg, span.stage, phase, tok)
        else:
            frames.append(_plain_documents(typed.where(F.col("repo").isNull()) if phase.repo_document_tokens
                                           else typed).withColumn("_origin", F.lit(UPSTREAM)))
            if phase.repo_document_tokens:
                derived = typed.where(F.col("repo").isNotNull()).groupBy("repo").applyInArrow(
                    _repo_documents(tok.uri, phase.repo_document_tokens), from_arrow_schema(PHASE_DOCS))
        if derived is not None:  # rendered or concatenated documents are computed once
            derived = derived.persist()
            persisted.append(derived)
            frames.append(derived.withColumn("_origin", F.lit(index)))
            fat.append(frames[-1])
        candidates += [frame.withColumn("_phase", F.lit(index)) for frame in frames]
    if any(span.stage.kind != "sft" for span in spans):  # some phase reads plain upstream documents
        fat.append(_plain_documents(typed).withColumn("_origin", F.lit(UPSTREAM)))
    fat = [frame.select("_origin", "id", "framed", "tokens", "loss_mask") for frame in fat]
    union = functools.partial(functools.reduce, DataFrame.unionByName)
    return Candidates(union(candidates).drop("tokens", "loss_mask"), union(fat), records, persisted)


def _build_phases(cfg, spans: tuple[PhaseSpan, ...], upstream: DataFrame, candidates: Candidates,
                  tok: TokenizerFiles, tmp: str, digest: str) -> tuple[dict[str, dict], Ledger]:
    """All phases in the same few Spark jobs (a job per phase cost more than its work at 100K documents):
    plan each phase from one aggregation of per-bin sums, select, order, cut into shard windows, pack and
    write; then each phase's manifest. Returns each phase's line of report.json (in schedule order) and the
    ledger."""
    seed = cfg.build.seed
    phases = [span.phase for span in spans]
    # Small rows (no tokens) read four times (sums, held-out cut, positions, ledger): computed once.
    bucketed = candidates.rows.select(*BUCKETED.names[:9]).mapInArrow(
        _bucketize(phases, seed), from_arrow_schema(BUCKETED)).persist()
    try:
        supplies = _bucket_supplies(bucketed, len(spans))
        train_offsets = _held_out_offsets(bucketed, {
            i: eval_cuts(s.bin_costs, eval_limits(span.stage, span.phase, s.totals))
            for i, (span, s) in enumerate(zip(spans, supplies))})
        plans = [plan_phase(span.phase, content_tokens(span.stage, span.phase), s.training(span.phase, offsets),
                            bucket_caps(span.phase, s.sources))
                 for span, s, offsets in zip(spans, supplies, train_offsets)]
        in_bucket = bin_offsets({(i, *k): c for i, s in enumerate(supplies) for k, c in s.bin_costs.items()})
        ranked = _positions(bucketed, ["_phase", "bucket"], ["skey", "id"], in_bucket)
        copies = ranked.mapInArrow(
            _copies(plans, train_offsets, [p.ordering for p in phases], seed), from_arrow_schema(COPIES)).persist()
        try:
            sums = _train_sums(copies, [i for i, p in enumerate(phases) if p.ordering == "easy_to_hard"], len(spans))
            layouts = [_layout(span, plan, s.source_names, tok, tmp) for span, plan, s in zip(spans, plans, supplies)]
            stats = _pack_and_write(copies, candidates.tokens, sums, layouts)
            ledger = _ledger(spans, upstream, candidates.sft_records, _usage(bucketed, copies))
        finally:
            copies.unpersist()
    finally:
        bucketed.unpersist()
    reports = {}
    for span, plan, supply, offsets, train, shards in zip(spans, plans, supplies, train_offsets, sums, stats):
        stage, phase = span.stage, span.phase
        folder = posixpath.join(tmp, stage.name, phase.name)
        manifest = _manifest(cfg, stage, phase, plan, shards, tok, supply.source_names, digest, span.first_step)
        write_manifest(folder, manifest)
        check_listing(folder)
        reports[f"{stage.name}/{phase.name}"] = _phase_report(manifest) | _phase_figures(phase, train, shards, offsets)
    return reports, ledger


@dataclass
class BucketSupply:
    """A phase's candidates as per-bucket totals (from the one aggregation over every phase)."""

    bin_costs: dict[tuple[str, int], int] = field(default_factory=dict)
    """Token slots per (bucket, key bin of the selection key)."""
    totals: dict[str, int] = field(default_factory=dict)
    sources: dict[str, set[str]] = field(default_factory=dict)
    """The sources each bucket holds."""

    def add(self, bucket: str, source: str, key_bin: int, cost: int) -> None:
        self.bin_costs[(bucket, key_bin)] = self.bin_costs.get((bucket, key_bin), 0) + cost
        self.totals[bucket] = self.totals.get(bucket, 0) + cost
        self.sources.setdefault(bucket, set()).add(source)

    @property
    def source_names(self) -> list[str]:
        return sorted(set().union(*self.sources.values())) if self.sources else []

    def training(self, phase: PhaseConfig, train_offset: dict[str, int]) -> dict[str, int]:
        """Per bucket of the phase, the tokens left for training after its held-out documents."""
        return {k: self.totals.get(k, 0) - train_offset.get(k, 0) for k in phase.weights}


def _bucket_supplies(bucketed: DataFrame, count: int) -> list[BucketSupply]:
    """Per-(phase, bucket, source, key bin) sums of the candidates' slots, in one Spark aggregation."""
    supplies = [BucketSupply() for _ in range(count)]
    for row in bucketed.groupBy("_phase", "bucket", "source", "_bin").agg(F.sum("cost").alias("cost")).collect():
        supplies[row["_phase"]].add(row["bucket"], row["source"], row["_bin"], row["cost"])
    return supplies


def _held_out_offsets(bucketed: DataFrame, cuts: dict[int, dict[str, EvalCut]]) -> list[dict[str, int]]:
    """Per phase and bucket, the tokens of its held-out prefix (where training starts): the bins before its
    cut whole, then pipeline.mixing.held_out_prefix's rule as a running sum over the one bin the cut falls
    in. One Spark job for every phase."""
    flat = sorted(((i, k), c) for i, per_phase in cuts.items() for k, c in per_phase.items())
    inside: dict[tuple[int, str], int] = {}
    if flat:
        def bucket_is(index: int, key: str):
            return (F.col("_phase") == index) & (F.col("bucket") == key)

        in_cut = functools.reduce(lambda a, b: a | b, [bucket_is(*k) & (F.col("_bin") == c.bin) for k, c in flat])

        def per_bucket(room):
            (first, cut), *rest = flat
            return functools.reduce(lambda expr, kc: expr.when(bucket_is(*kc[0]), F.lit(room(kc[1]))), rest,
                                    F.when(bucket_is(*first), F.lit(room(cut))))

        running = F.sum("cost").over(Window.partitionBy("_phase", "bucket").orderBy("skey", "id")
                                     .rowsBetween(Window.unboundedPreceding, Window.currentRow))
        held = ((F.col("_end") - F.col("cost") < per_bucket(lambda c: c.start_room))
                & (F.col("_end") <= per_bucket(lambda c: c.end_room)))
        rows = (bucketed.where(in_cut).select("_phase", "bucket", "cost", "skey", "id").withColumn("_end", running)
                .where(held).groupBy("_phase", "bucket").agg(F.max("_end").alias("_end")).collect())
        inside = {(r["_phase"], r["bucket"]): r["_end"] for r in rows}
    return [{k: c.before + (inside.get((i, k)) or 0) for k, c in cuts[i].items()} for i in range(len(cuts))]


DIFFICULTY_SCALE = 100_000


@dataclass
class TrainSums:
    """A phase's training copies as per-bin sums (from one aggregation over every phase)."""

    bin_costs: dict[int, int] = field(default_factory=dict)
    """Token slots per key bin of the training order: where each bin starts in the phase."""
    bin_difficulty: dict[int, int] = field(default_factory=dict)
    """`easy_to_hard` phases: per key bin, the slots times the difficulty in 1e-5 steps (integer sums, the
    same whatever the order)."""
    lengths: dict[int, int] = field(default_factory=dict)
    """Documents (their first copy) per power-of-two bin of token slots."""


def _train_sums(copies: DataFrame, easy_to_hard: list[int], count: int) -> list[TrainSums]:
    """Per phase, the training copies' sums per key bin and per length bin: one Spark aggregation with two
    grouping sets, (phase, key bin) and (phase, length bin)."""
    train = copies.where(~F.col("held_out")).withColumn(
        "_bits", F.length(F.bin("cost")))  # the bit length: the power-of-two bin, in exact integers
    scaled = F.col("cost") * F.round(F.col("okey") * DIFFICULTY_SCALE).cast("long")
    difficulty = F.when(F.col("_phase").isin(easy_to_hard), scaled) if easy_to_hard else F.lit(None)
    rows = train.groupingSets([["_phase", "_bin"], ["_phase", "_bits"]], "_phase", "_bin", "_bits").agg(
        F.sum("cost").alias("cost"), F.sum(difficulty.cast("long")).alias("difficulty"),
        F.sum((F.col("epoch") == 0).cast("long")).alias("first_copies"),
        F.grouping("_bits").alias("by_key_bin"),
    ).collect()
    sums = [TrainSums() for _ in range(count)]
    for row in rows:
        phase = sums[row["_phase"]]
        if row["by_key_bin"]:
            phase.bin_costs[row["_bin"]] = row["cost"]
            if row["difficulty"] is not None:
                phase.bin_difficulty[row["_bin"]] = row["difficulty"]
        elif row["first_copies"]:  # length bins that only repeated copies fall in are not drawn
            phase.lengths[1 << (row["_bits"] - 1)] = row["first_copies"]
    return sums


def _phase_figures(phase: PhaseConfig, train: TrainSums, stats: list[dict], held_out: dict[str, int]) -> dict:
    """What the report draws for a phase: documents by length (power-of-two bins of token slots, one copy
    each), sequences by padding, held-out tokens per bucket and, for `easy_to_hard`, the mean difficulty per
    tenth of the phase's training order."""
    figures = {
        "document_lengths": {str(k): v for k, v in sorted(train.lengths.items())},
        "padding_per_sequence": merge_counts(json.loads(s["padding_hist"]) for s in stats if s["shard"] >= 0),
        "held_out_tokens": dict(sorted(held_out.items())),
    }
    if phase.ordering == "easy_to_hard":
        figures["difficulty_by_decile"] = decile_means(sorted(
            (b, cost, train.bin_difficulty[b] / DIFFICULTY_SCALE) for b, cost in train.bin_costs.items()))
    return figures


def _usage(bucketed: DataFrame, copies: DataFrame) -> DataFrame:
    """Which upstream ids each phase matched and used (a repository document stands for its files)."""
    used = copies.select("_phase", "id").distinct().withColumn("used", F.lit(True))
    return (bucketed.select("_phase", "id", "members").join(used, ["_phase", "id"], "left")
            .select("_phase", F.explode("members").alias("id"), F.coalesce("used", F.lit(False)).alias("used")))


# --- candidate documents ----------------------------------------------------------------------------------

def _typed_upstream(upstream: DataFrame) -> DataFrame:
    return upstream.select(
        "id", "source", "domain", F.col("tier").cast("int").alias("tier"),
        F.col("difficulty").cast("double").alias("difficulty"), "repo", "uri",
        F.col("tokens").cast("array<int>").alias("tokens"), F.col("num_tokens").cast("long").alias("num_tokens"),
    )


def _plain_documents(typed: DataFrame) -> DataFrame:
    """Upstream documents as candidates (PHASE_DOCS' columns): each stands for itself."""
    return typed.select(
        "id", "source", "domain", "tier", "difficulty",
        (F.col("num_tokens") + FRAMING_TOKENS).alias("cost"), F.lit(False).alias("framed"),
        F.array("id").alias("members"), "tokens", F.lit(None).cast("binary").alias("loss_mask"),
    )


def _repo_documents(tokenizer_uri: str, limit: int):
    """applyInArrow: the files of one repository -> documents of concatenated files under path headers."""

    def make(table: pa.Table) -> pa.Table:
        tokenizer = _load_tokenizer(tokenizer_uri)
        # Rows arrive in whatever order the shuffle gave; sorted by id, files with the same path (vendored
        # copies) keep one order whatever the partitioning (group_repo_files' sort by path is stable).
        table = table.take(pc.sort_indices(table, [("id", "ascending")]))
        rows = table.drop_columns(["tokens"]).to_pylist()  # the token lists stay numpy: never Python ints
        file_tokens = table["tokens"].combine_chunks()
        flat = file_tokens.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        bounds = file_tokens.offsets.to_numpy()
        repo = rows[0]["repo"]
        paths = [repo_path(r["uri"] or r["id"], repo) for r in rows]
        distinct = sorted(set(paths))
        encoded = tokenizer.encode_batch_fast(
            [file_header(path, first) for path in distinct for first in (True, False)], add_special_tokens=False)
        headers = {path: {first: np.asarray(encoded[2 * k + (not first)].ids, dtype=np.int32) for first in (True, False)}
                   for k, path in enumerate(distinct)}
        sizes = [len(headers[path][False]) + r["num_tokens"] for r, path in zip(rows, paths)]
        out, token_parts = [], []
        for k, group in enumerate(group_repo_files(paths, sizes, limit)):
            parts = [part for n, i in enumerate(group)
                     for part in (headers[paths[i]][n == 0], flat[bounds[i]:bounds[i + 1]])]
            token_parts.append(np.concatenate(parts))
            weights = {i: rows[i]["num_tokens"] or 1 for i in group}
            total = sum(weights.values())
            by_domain: dict[str, int] = {}
            by_source: dict[str, int] = {}
            for i in group:
                by_domain[rows[i]["domain"]] = by_domain.get(rows[i]["domain"], 0) + weights[i]
                by_source[rows[i]["source"]] = by_source.get(rows[i]["source"], 0) + weights[i]
            out.append({
                "id": f"repo:{repo}/{k}",
                "source": min(by_source, key=lambda s: (-by_source[s], s)),
                "domain": min(by_domain, key=lambda d: (-by_domain[d], d or "")),
                "tier": round(sum((rows[i]["tier"] or 0) * weights[i] for i in group) / total),
                "difficulty": sum((rows[i]["difficulty"] or 0.5) * weights[i] for i in group) / total,
                "cost": len(token_parts[-1]) + FRAMING_TOKENS, "framed": False,
                "members": sorted(rows[i]["id"] for i in group), "tokens": None, "loss_mask": None,
            })
        made = pa.Table.from_pylist(out, schema=PHASE_DOCS)
        return made.set_column(PHASE_DOCS.get_field_index("tokens"), PHASE_DOCS.field("tokens"),
                               _list_column(token_parts, PHASE_DOCS.field("tokens").type))

    return make


def _list_column(parts: list[np.ndarray], list_type: pa.DataType) -> pa.Array:
    """One list per numpy array, built from offsets and the arrays joined: no Python int per value."""
    offsets = np.zeros(len(parts) + 1, dtype=np.int32)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    values = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=list_type.value_type), type=list_type)


def _sft_documents(spark: SparkSession, cfg, stage: StageConfig, phase: PhaseConfig, tok: TokenizerFiles):
    """SFT conversations rendered with the chat template; (good documents, every record with its reason).
    Inputs are JSONL or Parquet files (a folder such as the traces job's `sft/` table works too)."""
    tasks = [(name, uri) for name, pattern in sorted(phase.sft_uris.items()) for uri in _list_files(pattern)]
    if not tasks:
        raise ConfigError(f"stage {stage.name!r}, phase {phase.name!r}: sft_uris match no files: {phase.sft_uris}")
    files = spark.createDataFrame(tasks, "source string, uri string").repartition(
        max(1, min(len(tasks), spark.sparkContext.defaultParallelism * 4)))
    rows = files.mapInArrow(
        _render_sft(tok.uri, tok.config_uri, stage.bos_token, stage.eos_token), from_arrow_schema(SFT_ROWS))
    rows = rows.withColumn("copy", F.row_number().over(Window.partitionBy("id").orderBy("source", "domain", "tier")))
    rows = rows.withColumn("reason", F.when(F.col("reason").isNull() & (F.col("copy") > 1),
                                            F.lit("duplicate_conversation")).otherwise(F.col("reason"))).persist()
    docs = rows.where(F.col("reason").isNull()).select(*PHASE_DOCS.names)
    return docs, rows.select("id", "source", "reason")


def _render_sft(tokenizer_uri: str, config_uri: str, bos: str, eos: str):
    """mapInArrow: (source, uri) rows in, one row per JSONL record out (bad ones with a reason)."""

    def render(batches):
        renderer = _renderer(tokenizer_uri, config_uri, bos, eos)
        for batch in batches:
            for source, uri in zip(batch.column("source").to_pylist(), batch.column("uri").to_pylist()):
                out = []
                for line_no, (record, reason) in enumerate(read_sft_file(uri)):
                    if record is None:
                        out.append({"id": f"{source}/bad/{uri}#{line_no}", "source": source, "reason": reason})
                        continue
                    messages = conversation(record)
                    ids, mask = renderer.render(messages)
                    domain, tier, difficulty = record_labels(record)
                    out.append({
                        "id": conversation_id(source, messages), "source": source, "domain": domain,
                        "tier": tier, "difficulty": difficulty, "cost": len(ids), "framed": True,
                        "members": [], "tokens": ids, "loss_mask": bytes(mask), "reason": None,
                    })
                for r in out:
                    r["members"] = [r["id"]]
                if out:
                    yield pa.RecordBatch.from_pylist(out, schema=SFT_ROWS)

    return render


def _list_files(pattern: str) -> list[str]:
    fs, path = fsspec.core.url_to_fs(pattern)
    if any(ch in path for ch in "*?["):
        paths = fs.glob(path)
    elif fs.isdir(path):
        paths = fs.find(path)
    else:
        paths = [path] if fs.exists(path) else []
    return sorted(fs.unstrip_protocol(p) for p in paths if not posixpath.basename(p).startswith((".", "_")))


def _sft_listing(cfg: BuildConfig) -> str:
    """Names and content hashes of the SFT inputs: part of the input hash (they are not a committed job).
    Contents, not modification times, so that the same files give the same hash on every machine."""
    entries = []
    for stage in cfg.stages:
        for phase in stage.phases:
            for pattern in phase.sft_uris.values():
                for uri in _list_files(pattern):
                    digest = hashlib.sha256()
                    with fsspec.open(uri, "rb") as f:
                        for block in iter(lambda: f.read(1 << 22), b""):
                            digest.update(block)
                    entries.append(f"{uri}\t{digest.hexdigest()}")
    return "\n".join(sorted(entries))


# --- selection --------------------------------------------------------------------------------------------

def _bucketize(phases: list[PhaseConfig], seed: int):
    """mapInArrow: each candidate's bucket in its phase and its selection key; candidates that no bucket of
    their phase takes are left out."""

    def assign(batches):
        # few (domain, tier, source) triples per phase
        bucket_of = [functools.lru_cache(maxsize=None)(phase.bucket_of) for phase in phases]
        for batch in batches:
            kept, buckets, keys = [], [], []
            for i, (index, doc_id, source, domain, tier, cost) in enumerate(zip(*(
                    batch.column(name).to_pylist() for name in ("_phase", "id", "source", "domain", "tier", "cost")))):
                bucket = bucket_of[index](domain, tier, source)
                if bucket is not None:
                    kept.append(i)
                    buckets.append(bucket)
                    keys.append(selection_key(seed, phases[index].name, doc_id, cost, phases[index].length_bias))
            yield _with_columns(batch, kept, BUCKETED, [buckets, keys, [key_bin(k) for k in keys]])

    return assign


def _with_columns(batch: pa.RecordBatch, rows: list[int], schema: pa.Schema, added: list[list]) -> pa.RecordBatch:
    """`rows` of `batch` (an index may repeat) in `schema`: its leading columns taken from `batch` as they
    are (no Python objects), the last ones from `added`."""
    taken = batch.take(pa.array(rows, pa.int64()))
    kept = len(schema) - len(added)
    return pa.RecordBatch.from_arrays(
        [taken.column(f.name).cast(f.type) for f in list(schema)[:kept]]
        + [pa.array(values, f.type) for values, f in zip(added, list(schema)[kept:])], schema=schema)


def _positions(df: DataFrame, group: list[str], order: list[str], offsets: dict[tuple, int]) -> DataFrame:
    """Adds `start`: the sum of `cost` over the rows before this one in `order`, within `group`.

    Rows carry `_bin`, the bin of their [0, 1) ordering key; `offsets` gives each (group..., bin) the cost
    of the bins before it (from per-bin sums). Each (group, bin) is sorted inside one task, which adds its
    running sum: no task holds a whole group, no window or join is needed.
    """
    schema = to_arrow_schema(df.schema).append(pa.field("start", pa.int64()))
    return (
        df.repartition(*group, "_bin").sortWithinPartitions(*group, "_bin", *order)
        .mapInArrow(_running_sum(offsets, group, schema), from_arrow_schema(schema))
    )


def _running_sum(offsets: dict[tuple, int], group: list[str], schema: pa.Schema):
    def run(batches):
        current, total = None, 0
        for batch in batches:
            keys = zip(*(batch.column(c).to_pylist() for c in [*group, "_bin"]))
            starts = []
            for key, cost in zip(keys, batch.column("cost").to_pylist()):
                if key != current:
                    current, total = key, offsets[key]
                starts.append(total)
                total += cost
            yield pa.RecordBatch.from_arrays([*batch.columns, pa.array(starts, pa.int64())], schema=schema)

    return run


def _copies(plans: list[PhasePlan], train_offsets: list[dict[str, int]], orderings: list[str], seed: int):
    """mapInArrow: ranked documents -> their copies in their phase (pipeline.mixing.expand_copies)."""

    def expand(batches):
        for batch in batches:
            rows, added = [], {name: [] for name in COPIES.names[6:]}
            for i, (phase, doc_id, bucket, start, cost, difficulty) in enumerate(zip(*(
                    batch.column(name).to_pylist()
                    for name in ("_phase", "id", "bucket", "start", "cost", "difficulty")))):
                for c in expand_copies(doc_id, bucket, start, cost, difficulty, plan=plans[phase],
                                       train_offset=train_offsets[phase], ordering=orderings[phase], seed=seed):
                    rows.append(i)
                    added["epoch"].append(c.epoch)
                    added["cost"].append(c.cost)
                    added["okey"].append(c.key)
                    added["tie"].append(c.tie)
                    added["held_out"].append(c.held_out)
                    added["_bin"].append(key_bin(c.key))
            yield _with_columns(batch, rows, COPIES, list(added.values()))

    return expand


# --- packing ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PhaseLayout:
    """What the executors need to cut one phase's copies into shard windows and to pack its shards."""

    content_tokens: int
    num_sequences: int
    seq_len: int
    shard_sequences: int
    source_index: dict[str, int]
    special_ids: dict[str, int]
    loss_mask: bool
    folder: str
    metadata: dict[str, str]


def _layout(span: PhaseSpan, plan: PhasePlan, sources: list[str], tok: TokenizerFiles, tmp: str) -> PhaseLayout:
    stage, phase = span.stage, span.phase
    return PhaseLayout(
        content_tokens=plan.content_tokens, num_sequences=phase.tokens // stage.seq_len, seq_len=stage.seq_len,
        shard_sequences=stage.shard_sequences, source_index={s: i for i, s in enumerate(sources)},
        special_ids=TokenizerFiles.special_ids(tok, stage), loss_mask=stage.kind == "sft",
        folder=posixpath.join(tmp, stage.name, phase.name), metadata={"stage": stage.name, "phase": phase.name},
    )


def _pack_and_write(copies: DataFrame, fat: DataFrame, sums: list[TrainSums],
                    layouts: list[PhaseLayout]) -> list[list[dict]]:
    """Every phase's shards in one Spark job; per phase, the shards' stats rows in shard order (eval: -1)."""
    train = copies.where(~F.col("held_out"))
    in_phase = bin_offsets({(i, b): c for i, s in enumerate(sums) for b, c in s.bin_costs.items()})
    train = _positions(train, ["_phase"], ["okey", "tie", "id", "epoch"], in_phase)
    held = copies.where(F.col("held_out")).withColumn("start", F.lit(-1).cast("long"))
    pieces = train.unionByName(held).mapInArrow(_pieces(layouts), from_arrow_schema(PIECES))
    # Only the documents some phase uses cross the shuffle with their tokens (a phase takes a share of the
    # candidates): a semi-join on the broadcast ids of the copies drops the rest where they are read.
    used = F.broadcast(copies.select("id").distinct())
    rows = pieces.join(fat.join(used, "id", "left_semi"), ["_origin", "id"]).groupBy("_phase", "shard").applyInArrow(
        _pack_shard(layouts), from_arrow_schema(SHARD_STATS)).collect()
    stats: list[list[dict]] = [[] for _ in layouts]
    for row in sorted((r.asDict() for r in rows), key=lambda r: (r["_phase"], r["shard"])):
        stats[row["_phase"]].append(row)
    return stats


def _pieces(layouts: list[PhaseLayout]):
    """mapInArrow: copies with a global `start` -> their pieces in each shard window (eval: shard -1)."""

    def cut(batches):
        for batch in batches:
            cols = batch.to_pydict()
            out = {name: [] for name in PIECES.names}
            for i, doc_id in enumerate(cols["id"]):
                phase = cols["_phase"][i]
                layout = layouts[phase]
                start, cost = cols["start"][i], cols["cost"][i]
                spans = [(-1, 0, cost)] if start < 0 else split_at_shards(
                    start, cost, layout.content_tokens, layout.num_sequences, layout.shard_sequences)
                for shard, offset, length in spans:
                    out["_phase"].append(phase)
                    out["_origin"].append(cols["_origin"][i])
                    out["id"].append(doc_id)
                    out["epoch"].append(cols["epoch"][i])
                    out["shard"].append(shard)
                    out["offset"].append(offset)
                    out["length"].append(length)
                    out["position"].append(start + offset if start >= 0 else -1)
                    out["okey"].append(cols["okey"][i])
                    out["source_index"].append(layout.source_index[cols["source"][i]])
                    out["domain_index"].append(DOMAINS.index(cols["domain"][i]))
                    out["tier"].append(cols["tier"][i])
            yield pa.RecordBatch.from_pydict(out, schema=PIECES)

    return cut


def _pack_shard(layouts: list[PhaseLayout]):
    """applyInArrow: the pieces of one shard of one phase -> packed, written (and re-read, hashed); one stats
    row out."""

    def pack(table: pa.Table) -> pa.Table:
        phase = table["_phase"][0].as_py()
        layout = layouts[phase]
        meta = {"rnj.format_version": str(FORMAT_VERSION), "rnj.seq_len": str(layout.seq_len), **{
            f"rnj.{k}": v for k, v in layout.metadata.items()}}
        keys = zip(*(table[c].to_pylist() for c in ("position", "okey", "id", "epoch")))
        order = sorted(range(table.num_rows), key=lambda i, k=list(keys): k[i])
        table = table.take(order)
        shard = table["shard"][0].as_py()
        ids = layout.special_ids
        items = _items(table, ids)
        sizes = [len(item.tokens) for item in items]
        if shard >= 0:
            bins = pack_exact(sizes, layout.seq_len,
                              shard_sequences_of(layout.num_sequences, layout.shard_sequences, shard))
            name = f"train-{shard:05d}.arrow"
        else:
            bins = best_fit_decreasing(sizes, layout.seq_len)
            name = "eval-00000.arrow"
        packed = assemble(bins, items, layout.seq_len, ids["pad"], layout.loss_mask, meta)
        sha, size = write_shard(posixpath.join(layout.folder, name), packed.table)
        row = {
            "_phase": phase, "shard": shard, "path": name, "num_sequences": len(bins), "sha256": sha, "bytes": size,
            "padding": packed.num_padding, "pieces": len(items), "cut": cut_documents(bins, sizes, layout.seq_len),
            "by_domain": json.dumps(packed.tokens_by_domain), "by_tier": json.dumps(packed.tokens_by_tier),
            "by_source": json.dumps(packed.tokens_by_source),
            "padding_hist": json.dumps(padding_per_sequence(bins, layout.seq_len)),
        }
        return pa.Table.from_pylist([row], schema=SHARD_STATS)

    return pack


def _items(table: pa.Table, ids: dict[str, int]) -> list[Item]:
    """Each piece's token slots: the document framed with bos/eos (unless already framed), then cut."""
    tokens = table["tokens"].combine_chunks()
    flat = tokens.values.to_numpy(zero_copy_only=False).astype(np.uint32)
    bounds = tokens.offsets.to_numpy()
    cols = {c: table[c].to_pylist() for c in (
        "loss_mask", "framed", "offset", "length", "id", "source_index", "domain_index", "tier")}
    bos, eos = np.array([ids["bos"]], np.uint32), np.array([ids["eos"]], np.uint32)
    items = []
    for i in range(table.num_rows):
        doc = flat[bounds[i]:bounds[i + 1]]
        mask = cols["loss_mask"][i]
        mask = np.frombuffer(mask, dtype=np.uint8) if mask is not None else None
        if not cols["framed"][i]:
            doc = np.concatenate([bos, doc, eos])
        offset, length = cols["offset"][i], cols["length"][i]
        items.append(Item(
            doc[offset:offset + length], None if mask is None else mask[offset:offset + length],
            cols["id"][i], cols["source_index"][i], cols["domain_index"][i], cols["tier"][i],
        ))
    return items


# --- manifest, report, ledger -----------------------------------------------------------------------------

def _manifest(cfg, stage: StageConfig, phase: PhaseConfig, plan, stats: list[dict], tok: TokenizerFiles,
              sources: list[str], digest: str, first_step: int) -> dict:
    train = [s for s in stats if s["shard"] >= 0]
    held = [s for s in stats if s["shard"] < 0]
    num_sequences = phase.tokens // stage.seq_len
    assert sum(s["num_sequences"] for s in train) == num_sequences, "the shards must hold the whole phase"

    def total(field: str, names) -> dict[str, int]:
        sums: dict[str, int] = {}
        for s in train:
            for k, v in json.loads(s[field]).items():
                name = names(int(k))
                sums[name] = sums.get(name, 0) + v
        return dict(sorted(sums.items()))

    def entry(s: dict) -> dict:
        return {"path": s["path"], "num_sequences": s["num_sequences"], "sha256": s["sha256"], "bytes": s["bytes"]}

    padding = sum(s["padding"] for s in train)
    pieces = sum(s["pieces"] for s in train)
    return {
        "format_version": FORMAT_VERSION, "stage": stage.name, "phase": phase.name, "kind": stage.kind,
        "seq_len": stage.seq_len, "vocab_size": tok.vocab_size, "tokenizer_sha256": tok.sha256,
        "build_hash": phase_fingerprint(stage, phase, cfg.build.seed), "input_hash": digest,
        "seed": cfg.build.seed, "num_sequences": num_sequences, "num_tokens": num_sequences * stage.seq_len,
        "num_padding_tokens": padding, "loss_mask": stage.kind == "sft",
        "special_tokens": TokenizerFiles.special_ids(tok, stage),
        "global_batch_tokens": stage.global_batch_tokens, "sequences_per_step": stage.sequences_per_step,
        "steps": phase.tokens // stage.global_batch_tokens, "first_step": first_step,
        "tokens_by_domain": total("by_domain", lambda i: DOMAINS[i]),
        "tokens_by_tier": total("by_tier", str),
        "tokens_by_source": total("by_source", lambda i: sources[i]),
        "sources": sources, "domains": list(DOMAINS),
        "mixture": {"content_tokens": plan.content_tokens, "redistributed": plan.redistributed,
                    "buckets": plan.report()},
        "packing": {"pieces": pieces, "cut": sum(s["cut"] for s in train),
                    "non_padding": 1 - padding / (num_sequences * stage.seq_len)},
        "shards": [entry(s) for s in train],
        "eval": {"num_sequences": sum(s["num_sequences"] for s in held),
                 "num_padding_tokens": sum(s["padding"] for s in held), "shards": [entry(s) for s in held]},
    }


def _phase_report(manifest: dict) -> dict:
    """The phase's line in report.json: figures only, no timings, so the report is byte-identical too."""
    packing = manifest["packing"]
    return {
        "num_sequences": manifest["num_sequences"], "non_padding": round(packing["non_padding"], 6),
        "cut_fraction": round(packing["cut"] / max(packing["pieces"], 1), 6), "cut": packing["cut"],
        "pieces": packing["pieces"], "padding_tokens": manifest["num_padding_tokens"], "seq_len": manifest["seq_len"],
        "eval_sequences": manifest["eval"]["num_sequences"], "mixture": manifest["mixture"],
        "tokens_by_domain": manifest["tokens_by_domain"],
    }


def _ledger(spans: tuple[PhaseSpan, ...], upstream: DataFrame, sft_records: dict[int, DataFrame],
            usage: DataFrame) -> Ledger:
    """The ledger, in one Spark aggregation: every upstream document over the phases that read upstream
    documents (written if some phase trains or evaluates on it, else dropped with why), and each SFT
    phase's records under `STAGE/PHASE/SOURCE`."""
    reading_upstream = [i for i in range(len(spans)) if i not in sft_records]
    counted = [_upstream_status(
        upstream, usage.where(F.col("_phase").isin(reading_upstream)) if reading_upstream else None)]
    for index, records in sorted(sft_records.items()):
        prefix = f"{spans[index].stage.name}/{spans[index].phase.name}/"
        used = usage.where((F.col("_phase") == index) & F.col("used")).select("id").distinct()
        flagged = records.join(used.withColumn("_used", F.lit(True)), "id", "left")
        status = F.coalesce(F.col("reason"), F.when(F.col("_used"), F.lit("written")).otherwise(F.lit("not_sampled")))
        counted.append(flagged.select(F.concat(F.lit(prefix), F.col("source")).alias("source"), status.alias("status")))
    ledger = Ledger(job=JOB)
    rows = functools.reduce(DataFrame.unionByName, counted).groupBy("source", "status").count().collect()
    for row in sorted(rows, key=lambda r: (r["source"], r["status"])):
        written = row["status"] == "written"
        ledger.add(row["source"], "written" if written else "dropped", None if written else row["status"], row["count"])
    return ledger


def _upstream_status(upstream: DataFrame, usage: DataFrame | None) -> DataFrame:
    """(source, status) of every upstream document: `written`, `not_sampled` or `not_in_any_mixture`."""
    docs = upstream.select("id", "source")
    if usage is not None:
        flags = usage.groupBy("id").agg(F.lit(True).alias("_matched"), F.max("used").alias("_used"))
        docs = docs.join(flags, "id", "left")
    else:
        docs = docs.withColumn("_matched", F.lit(None).cast("boolean")).withColumn("_used", F.lit(None).cast("boolean"))
    status = (F.when(F.col("_used"), F.lit("written"))
              .when(F.col("_matched"), F.lit("not_sampled")).otherwise(F.lit("not_in_any_mixture")))
    return docs.select("source", status.alias("status"))


def _write_json(uri: str, payload: dict) -> None:
    with fsspec.open(uri, "w") as f:
        f.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> None:
    job_main(JOB, __doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    # As a script (spark-submit jobs/build.py) this file is `__main__`; run the importable module instead,
    # so that functions shipped to executors are pickled by reference to `jobs.build`, which they can import.
    from jobs.build import main as module_main

    module_main()
