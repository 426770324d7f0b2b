"""Build job: mix the tokenized documents by stage and phase and pack them into training shards.

    python -m jobs.build --config configs/demo.toml
    spark-submit jobs/build.py --config configs/demo.toml

Reads the committed `tokenize` documents and tokenizer (and, for SFT stages, the conversations named by
`sft_uris`). Writes, per phase, `OUTPUT/build/STAGE/PHASE/` with `manifest.json`, `train-NNNNN.arrow`
shards in training order and `eval-00000.arrow` (held-out sequences); `curriculum.json` (the phases in
order) and `report.json` (mixture achieved vs target, padding, cuts) at the top; `_LEDGER.json`.

What runs where (docs/curriculum.md): the driver only sees per-bucket totals and per-bin sums (a few
thousand rows) and plans the mixture with pipeline.mixing. Executors do the rest: bucketing and selection
keys (mapInArrow), cumulative positions (window sums inside fixed key bins, offset by the bins' prefix sums),
copies and their training-order keys (mapInArrow), the cut into shard windows (mapInArrow), and packing
plus writing each shard (applyInArrow grouped by shard, one shard in memory per task). Every order is a
seeded hash or a sort on (key, id), so the shards are byte-identical however Spark partitions the data.
"""

from __future__ import annotations

import functools
import hashlib
import json
import posixpath
import time
from dataclasses import dataclass

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
from pipeline.curriculum import PhaseConfig, StageConfig, curriculum_fingerprint, phase_fingerprint, schedule
from pipeline.documents import DOMAINS
from pipeline.inspect.figures import decile_means, merge_counts, padding_per_sequence
from pipeline.ledger import Ledger
from pipeline.mixing import (
    FRAMING_TOKENS,
    ChatRenderer,
    EvalCut,
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
BUCKETED = pa.schema([
    pa.field("id", pa.string()), pa.field("source", pa.string()), pa.field("domain", pa.string()),
    pa.field("tier", pa.int32()), pa.field("difficulty", pa.float64()), pa.field("cost", pa.int64()),
    pa.field("bucket", pa.string()), pa.field("skey", pa.float64()), pa.field("_bin", pa.int32()),
])
COPIES = pa.schema([
    pa.field("id", pa.string()), pa.field("source", pa.string()), pa.field("domain", pa.string()),
    pa.field("tier", pa.int32()), pa.field("epoch", pa.int32()), pa.field("cost", pa.int64()),
    pa.field("okey", pa.float64()), pa.field("tie", pa.float64()), pa.field("held_out", pa.bool_()),
    pa.field("_bin", pa.int32()),
])
PIECES = pa.schema([
    pa.field("id", pa.string()), pa.field("epoch", pa.int32()), pa.field("shard", pa.int32()),
    pa.field("offset", pa.int64()), pa.field("length", pa.int64()), pa.field("position", pa.int64()),
    pa.field("okey", pa.float64()), pa.field("source_index", pa.int32()), pa.field("domain_index", pa.int32()),
    pa.field("tier", pa.int32()),
])
SHARD_STATS = pa.schema([
    pa.field("shard", pa.int32()), pa.field("path", pa.string()), pa.field("num_sequences", pa.int64()),
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
    ledger = Ledger(job=JOB)
    usage_uris: list[str] = []
    phases, reports = [], {}
    for span in schedule(cfg.stages):
        stage, phase = span.stage, span.phase
        start = time.perf_counter()
        records = None
        if stage.kind == "sft":
            docs, records = _sft_documents(spark, cfg, stage, phase, tok)
        else:
            docs = _pretrain_documents(upstream, stage, phase, tok)
        derived = records is not None or phase.repo_document_tokens > 0
        if derived:  # rendered or concatenated documents are computed once; plain ones re-read from Parquet
            docs = docs.persist()
        try:
            usage_uri = posixpath.join(tmp, "_usage", f"{stage.name}.{phase.name}")
            manifest, figures = _build_phase(cfg, stage, phase, docs, tok, tmp, digest, span.first_step, usage_uri)
            if records is None:
                usage_uris.append(usage_uri)
            else:
                _count_sft(ledger, stage, phase, records, docs.sparkSession.read.parquet(usage_uri))
        finally:
            if derived:
                docs.unpersist()
        phases.append({"stage": stage.name, "phase": phase.name, "kind": stage.kind,
                       "first_step": span.first_step, "steps": span.steps})
        reports[f"{stage.name}/{phase.name}"] = _phase_report(manifest) | figures
        print(f"build: {stage.name}/{phase.name} packed in {time.perf_counter() - start:.1f}s", flush=True)
    _count_upstream(ledger, upstream, [spark.read.parquet(u) for u in usage_uris])
    fs, usage_root = fsspec.core.url_to_fs(posixpath.join(tmp, "_usage"))
    if fs.exists(usage_root):
        fs.rm(usage_root, recursive=True)
    _write_json(posixpath.join(tmp, "curriculum.json"), {
        "fingerprint": curriculum_fingerprint(cfg.stages, cfg.build.seed), "phases": phases,
    })
    _write_json(posixpath.join(tmp, "report.json"), {"phases": reports, "tokenizer_sha256": tok.sha256})
    ledger.extra = {"phases": {k: {"non_padding": v["non_padding"], "cut_fraction": v["cut_fraction"]}
                               for k, v in reports.items()}}
    return ledger


def _build_phase(cfg, stage: StageConfig, phase: PhaseConfig, docs: DataFrame, tok: TokenizerFiles, tmp: str,
                 digest: str, first_step: int, usage_uri: str) -> tuple[dict, dict]:
    """One phase: plan from per-bin sums, select, order, cut into shard windows, pack and write. Returns
    the manifest and the phase's figures for report.json."""
    seed = cfg.build.seed
    # Small rows (no text, no tokens) read four times (plan, held-out cut, positions, usage): computed once.
    bucketed = docs.select(*BUCKETED.names[:6]).mapInArrow(
        _bucketize(phase, seed), from_arrow_schema(BUCKETED)).where(F.col("bucket").isNotNull()).persist()
    try:
        plan, sources, stats, figures = _select_and_pack(
            cfg, stage, phase, docs, bucketed, tok, tmp, usage_uri)
    finally:
        bucketed.unpersist()
    folder = posixpath.join(tmp, stage.name, phase.name)
    manifest = _manifest(cfg, stage, phase, plan, stats, tok, sources, digest, first_step)
    write_manifest(folder, manifest)
    check_listing(folder)
    return manifest, figures


def _select_and_pack(cfg, stage: StageConfig, phase: PhaseConfig, docs: DataFrame, bucketed: DataFrame,
                     tok: TokenizerFiles, tmp: str, usage_uri: str):
    """Plan the phase from per-bin sums of `bucketed`, then select, order, cut, pack and write."""
    seed = cfg.build.seed
    bin_costs, totals, sources_by_bucket = {}, {}, {}
    for row in bucketed.groupBy("bucket", "source", "_bin").agg(F.sum("cost").alias("cost")).collect():
        key = (row["bucket"], row["_bin"])
        bin_costs[key] = bin_costs.get(key, 0) + row["cost"]
        totals[row["bucket"]] = totals.get(row["bucket"], 0) + row["cost"]
        sources_by_bucket.setdefault(row["bucket"], set()).add(row["source"])
    train_offset = _held_out_offsets(bucketed, eval_cuts(bin_costs, eval_limits(stage, phase, totals)))
    supply = {k: totals.get(k, 0) - train_offset.get(k, 0) for k in phase.weights}
    plan = plan_phase(phase, content_tokens(stage, phase), supply, bucket_caps(phase, sources_by_bucket))
    sources = sorted(set().union(*sources_by_bucket.values())) if sources_by_bucket else []
    ranked = _positions(bucketed, ["bucket"], ["skey", "id"], bin_offsets(bin_costs))
    copies = ranked.mapInArrow(
        _copies(plan, train_offset, phase.ordering, seed), from_arrow_schema(COPIES)).persist()
    try:
        stats = _pack_and_write(stage, phase, plan.content_tokens, copies, docs, tok, sources, tmp)
        _write_usage(ranked, copies, docs, usage_uri)
        figures = _phase_figures(phase, copies, stats, train_offset)
    finally:
        copies.unpersist()
    return plan, sources, stats, figures


def _held_out_offsets(bucketed: DataFrame, cuts: dict[str, EvalCut]) -> dict[str, int]:
    """Per bucket, the tokens of its held-out prefix (where training starts): the bins before its cut
    whole, then pipeline.mixing.held_out_prefix's rule as a running sum over the one bin the cut falls in."""
    if not cuts:
        return {}
    in_cut = functools.reduce(lambda a, b: a | b, [(F.col("bucket") == k) & (F.col("_bin") == c.bin)
                                                   for k, c in sorted(cuts.items())])

    def per_bucket(room):
        first, *rest = sorted(cuts)
        return functools.reduce(lambda expr, k: expr.when(F.col("bucket") == k, F.lit(room(cuts[k]))), rest,
                                F.when(F.col("bucket") == first, F.lit(room(cuts[first]))))

    running = F.sum("cost").over(Window.partitionBy("bucket").orderBy("skey", "id")
                                 .rowsBetween(Window.unboundedPreceding, Window.currentRow))
    held = ((F.col("_end") - F.col("cost") < per_bucket(lambda c: c.start_room))
            & (F.col("_end") <= per_bucket(lambda c: c.end_room)))
    inside = dict(bucketed.where(in_cut).select("bucket", "cost", "skey", "id").withColumn("_end", running)
                  .where(held).groupBy("bucket").agg(F.max("_end")).collect())
    return {k: c.before + (inside.get(k) or 0) for k, c in cuts.items()}


DIFFICULTY_SCALE = 100_000


def _phase_figures(phase: PhaseConfig, copies: DataFrame, stats: list[dict], held_out: dict[str, int]) -> dict:
    """What the report draws for a phase, from the persisted copies and the shards' stats rows: documents by
    length (power-of-two bins of token slots, one copy each), sequences by padding, held-out tokens per bucket
    and, for `easy_to_hard`, the mean difficulty per tenth of the phase's training order."""
    train = copies.where(~F.col("held_out"))
    bits = F.length(F.bin("cost")).alias("bits")  # the bit length: the power-of-two bin, in exact integers
    lengths = {1 << (r["bits"] - 1): r["count"] for r in train.where(F.col("epoch") == 0).groupBy(bits).count().collect()}
    figures = {
        "document_lengths": {str(k): v for k, v in sorted(lengths.items())},
        "padding_per_sequence": merge_counts(json.loads(s["padding_hist"]) for s in stats if s["shard"] >= 0),
        "held_out_tokens": dict(sorted(held_out.items())),
    }
    if phase.ordering == "easy_to_hard":  # integer sums (difficulty in 1e-5 steps): the same whatever the order
        scaled = F.col("cost") * F.round(F.col("okey") * DIFFICULTY_SCALE).cast("long")
        sums = train.groupBy("_bin").agg(F.sum("cost").alias("cost"), F.sum(scaled).alias("d")).collect()
        figures["difficulty_by_decile"] = decile_means(
            sorted((r["_bin"], r["cost"], r["d"] / DIFFICULTY_SCALE) for r in sums))
    return figures


def _write_usage(ranked: DataFrame, copies: DataFrame, docs: DataFrame, uri: str) -> None:
    """Which upstream ids the phase matched and used (a repository document stands for its files)."""
    used = copies.select("id").distinct().withColumn("used", F.lit(True))
    (ranked.select("id").join(used, "id", "left").join(docs.select("id", "members"), "id")
     .select(F.explode("members").alias("id"), F.coalesce("used", F.lit(False)).alias("used"))
     .write.mode("overwrite").parquet(uri))


# --- candidate documents ----------------------------------------------------------------------------------

def _pretrain_documents(upstream: DataFrame, stage: StageConfig, phase: PhaseConfig, tok: TokenizerFiles):
    docs = upstream.select(
        "id", "source", "domain", F.col("tier").cast("int").alias("tier"),
        F.col("difficulty").cast("double").alias("difficulty"), "repo", "uri",
        F.col("tokens").cast("array<int>").alias("tokens"), F.col("num_tokens").cast("long").alias("num_tokens"),
    )
    plain = docs
    if phase.repo_document_tokens:
        plain = docs.where(F.col("repo").isNull())
    plain = plain.select(
        "id", "source", "domain", "tier", "difficulty",
        (F.col("num_tokens") + FRAMING_TOKENS).alias("cost"), F.lit(False).alias("framed"),
        F.array("id").alias("members"), "tokens", F.lit(None).cast("binary").alias("loss_mask"),
    )
    if not phase.repo_document_tokens:
        return plain
    repos = docs.where(F.col("repo").isNotNull()).groupBy("repo").applyInArrow(
        _repo_documents(tok.uri, phase.repo_document_tokens), from_arrow_schema(PHASE_DOCS))
    return plain.unionByName(repos)


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

def _bucketize(phase: PhaseConfig, seed: int):
    """mapInArrow: each document's bucket in the phase (or null) and its selection key."""

    def assign(batches):
        bucket_of = functools.lru_cache(maxsize=None)(phase.bucket_of)  # few (domain, tier, source) triples
        for batch in batches:
            cols = batch.to_pydict()
            buckets, keys = [], []
            for doc_id, source, domain, tier, cost in zip(
                cols["id"], cols["source"], cols["domain"], cols["tier"], cols["cost"]
            ):
                buckets.append(bucket_of(domain, tier, source))
                keys.append(selection_key(seed, phase.name, doc_id, cost, phase.length_bias))
            cols["bucket"], cols["skey"] = buckets, keys
            cols["_bin"] = [key_bin(k) for k in keys]
            yield pa.RecordBatch.from_pydict(cols, schema=BUCKETED)

    return assign


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


def _copies(plan, train_offset: dict, ordering: str, seed: int):
    """mapInArrow: ranked documents -> their copies (pipeline.mixing.expand_copies)."""

    def expand(batches):
        for batch in batches:
            cols = batch.to_pydict()
            out = {name: [] for name in COPIES.names}
            for i, doc_id in enumerate(cols["id"]):
                for c in expand_copies(
                    doc_id, cols["bucket"][i], cols["start"][i], cols["cost"][i], cols["difficulty"][i],
                    plan=plan, train_offset=train_offset, ordering=ordering, seed=seed,
                ):
                    for name in ("id", "source", "domain", "tier"):
                        out[name].append(cols[name][i])
                    out["epoch"].append(c.epoch)
                    out["cost"].append(c.cost)
                    out["okey"].append(c.key)
                    out["tie"].append(c.tie)
                    out["held_out"].append(c.held_out)
                    out["_bin"].append(key_bin(c.key))
            yield pa.RecordBatch.from_pydict(out, schema=COPIES)

    return expand


# --- packing ----------------------------------------------------------------------------------------------

def _pack_and_write(stage: StageConfig, phase: PhaseConfig, total: int, copies: DataFrame, docs: DataFrame,
                    tok: TokenizerFiles, sources: list[str], tmp: str) -> list[dict]:
    num_sequences = phase.tokens // stage.seq_len
    train = copies.where(~F.col("held_out"))
    bin_costs = {(r["_bin"],): r["cost"] for r in train.groupBy("_bin").agg(F.sum("cost").alias("cost")).collect()}
    train = _positions(train, [], ["okey", "tie", "id", "epoch"], bin_offsets(bin_costs))
    held = copies.where(F.col("held_out")).withColumn("start", F.lit(-1).cast("long"))
    source_index = {s: i for i, s in enumerate(sources)}
    pieces = train.unionByName(held).mapInArrow(
        _pieces(total, num_sequences, stage.shard_sequences, source_index), from_arrow_schema(PIECES))
    # Only the documents the phase uses cross the shuffle with their tokens (a phase takes a share of the
    # candidates): a semi-join on the broadcast ids of the copies drops the rest where they are read.
    used = F.broadcast(copies.select("id").distinct())
    fat = docs.select("id", "framed", "tokens", "loss_mask").join(used, "id", "left_semi")
    folder = posixpath.join(tmp, stage.name, phase.name)
    ids = TokenizerFiles.special_ids(tok, stage)
    pack = _pack_shard(stage.seq_len, num_sequences, stage.shard_sequences, ids, stage.kind == "sft", folder,
                       {"stage": stage.name, "phase": phase.name})
    rows = pieces.join(fat, "id").groupBy("shard").applyInArrow(pack, from_arrow_schema(SHARD_STATS)).collect()
    return sorted((r.asDict() for r in rows), key=lambda r: r["shard"])


def _pieces(total: int, num_sequences: int, shard_sequences: int, source_index: dict[str, int]):
    """mapInArrow: copies with a global `start` -> their pieces in each shard window (eval: shard -1)."""

    def cut(batches):
        for batch in batches:
            cols = batch.to_pydict()
            out = {name: [] for name in PIECES.names}
            for i, doc_id in enumerate(cols["id"]):
                start, cost = cols["start"][i], cols["cost"][i]
                spans = [(-1, 0, cost)] if start < 0 else split_at_shards(
                    start, cost, total, num_sequences, shard_sequences)
                for shard, offset, length in spans:
                    out["id"].append(doc_id)
                    out["epoch"].append(cols["epoch"][i])
                    out["shard"].append(shard)
                    out["offset"].append(offset)
                    out["length"].append(length)
                    out["position"].append(start + offset if start >= 0 else -1)
                    out["okey"].append(cols["okey"][i])
                    out["source_index"].append(source_index[cols["source"][i]])
                    out["domain_index"].append(DOMAINS.index(cols["domain"][i]))
                    out["tier"].append(cols["tier"][i])
            yield pa.RecordBatch.from_pydict(out, schema=PIECES)

    return cut


def _pack_shard(seq_len: int, num_sequences: int, shard_sequences: int, ids: dict[str, int], loss_mask: bool,
                folder: str, metadata: dict[str, str]):
    """applyInArrow: the pieces of one shard -> packed, written (and re-read, hashed); one stats row out."""
    meta = {"rnj.format_version": str(FORMAT_VERSION), "rnj.seq_len": str(seq_len), **{
        f"rnj.{k}": v for k, v in metadata.items()}}

    def pack(table: pa.Table) -> pa.Table:
        keys = zip(*(table[c].to_pylist() for c in ("position", "okey", "id", "epoch")))
        order = sorted(range(table.num_rows), key=lambda i, k=list(keys): k[i])
        table = table.take(order)
        shard = table["shard"][0].as_py()
        items = _items(table, ids)
        sizes = [len(item.tokens) for item in items]
        if shard >= 0:
            bins = pack_exact(sizes, seq_len, shard_sequences_of(num_sequences, shard_sequences, shard))
            name = f"train-{shard:05d}.arrow"
        else:
            bins = best_fit_decreasing(sizes, seq_len)
            name = "eval-00000.arrow"
        packed = assemble(bins, items, seq_len, ids["pad"], loss_mask, meta)
        sha, size = write_shard(posixpath.join(folder, name), packed.table)
        row = {
            "shard": shard, "path": name, "num_sequences": len(bins), "sha256": sha, "bytes": size,
            "padding": packed.num_padding, "pieces": len(items), "cut": cut_documents(bins, sizes, seq_len),
            "by_domain": json.dumps(packed.tokens_by_domain), "by_tier": json.dumps(packed.tokens_by_tier),
            "by_source": json.dumps(packed.tokens_by_source),
            "padding_hist": json.dumps(padding_per_sequence(bins, seq_len)),
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


def _count_upstream(ledger: Ledger, upstream: DataFrame, usage: list[DataFrame]) -> None:
    """Every upstream document: written if some phase trains or evaluates on it, else dropped with why."""
    docs = upstream.select("id", "source")
    if usage:
        flags = functools.reduce(DataFrame.unionByName, usage).groupBy("id").agg(
            F.lit(True).alias("_matched"), F.max("used").alias("_used"))
        docs = docs.join(flags, "id", "left")
    else:
        docs = docs.withColumn("_matched", F.lit(None).cast("boolean")).withColumn("_used", F.lit(None).cast("boolean"))
    status = (F.when(F.col("_used"), F.lit("written"))
              .when(F.col("_matched"), F.lit("not_sampled")).otherwise(F.lit("not_in_any_mixture")))
    for row in sorted(docs.groupBy("source", status.alias("status")).count().collect(),
                      key=lambda r: (r["source"], r["status"])):
        written = row["status"] == "written"
        ledger.add(row["source"], "written" if written else "dropped", None if written else row["status"], row["count"])


def _count_sft(ledger: Ledger, stage: StageConfig, phase: PhaseConfig, records: DataFrame, usage: DataFrame) -> None:
    """SFT records of one phase, counted under `STAGE/PHASE/SOURCE`."""
    used = usage.where("used").select("id").distinct()
    flagged = records.join(used.withColumn("_used", F.lit(True)), "id", "left")
    status = F.coalesce(F.col("reason"), F.when(F.col("_used"), F.lit("written")).otherwise(F.lit("not_sampled")))
    for row in sorted(flagged.groupBy("source", status.alias("status")).count().collect(),
                      key=lambda r: (r["source"], r["status"])):
        written = row["status"] == "written"
        ledger.add(f"{stage.name}/{phase.name}/{row['source']}", "written" if written else "dropped",
                   None if written else row["status"], row["count"])


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
