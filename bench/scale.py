"""The whole pipeline at scale: generate N documents, run every job in one SparkSession, measure each.

    flock /tmp/rnj-heavy.lock .venv/bin/python -m bench.scale 100K            # the main measurement
    .venv/bin/python -m bench.scale 10K --jobs ingest,dedup --keep               # reuse a generated corpus
    .venv/bin/python -m bench.scale 1M --master 'local[2]' --out /work/data/scale-1m

Generates a corpus of N records (bench/scale_corpus.py: real code and prose of this machine, math, planted
exact and near copies, corrupt records) under OUT/corpus, writes the build file OUT/scale.toml
(output_files sized to N; the stages sized to the tokens the tokenize job produced), runs the jobs with
`force` in one SparkSession with the event log on (OUT/events), then a few training steps of the `tiny`
model on the shards. Prints per job, as a Markdown table and as JSON (OUT/scale.json):

- wall seconds, docs in/out (the ledger's read/written; units for traces), docs/s and MB/s per core
  (cores = the executor cores: N of local[N]), CPU-seconds of the whole process tree and docs per CPU-s;
- peak memory of the driver JVM, of the Python driver and of the Spark Python workers (bench/proctree.py);
- Spark jobs, stages and tasks the job launched and its costliest stages (bench/eventlog.py);
- after dedup, the recall of the planted copies (same cluster as their original);
- after tokenize, its tokens per CPU-second against the raw encoder's on the same texts, in the same run.

Measure under the shared lock; the load average is printed before and after each job. A job selected with
`--jobs` needs its upstream committed by an earlier run in the same OUT (use `--keep`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq

from bench.eventlog import GroupSummary, find_event_log, summarize
from bench.proctree import MemorySampler, tree_cpu_seconds
from bench.scale_corpus import GENERATOR_VERSION, CorpusInfo, CorpusSpec, generate, load_info, parse_count

JOBS = ("ingest", "traces", "dedup", "grade", "tokenize", "build")
SEQ_LEN, GLOBAL_BATCH_TOKENS = 1024, 16_384


# ---------------------------------------------------------------------------------------------- the build file


def shuffle_partitions(documents: int) -> int:
    """~25,000 documents (~70 MB of text) per shuffle partition: the 100K run's 4; at 1M, 4 ran out of heap."""
    return max(4, -(-documents // 25_000))


def output_files(documents: int) -> int:
    """Output files per table: ~6,000 documents (~18 MB of text) each, as the 100K run of the issue used 16."""
    return max(2, min(256, round(documents / 6250)))


def build_file(spec: CorpusSpec, stages: str = "") -> str:
    """The TOML of the benchmark's build (paths relative to OUT, where it is written)."""
    vocab = 4096 if spec.documents >= 5000 else 1024
    return f"""\
# Written by bench/scale.py for {spec.documents:,} documents (seed {spec.seed}); rewritten before the build job
# with stages sized to the tokens the tokenize job produced.
[build]
name = "scale-{spec.documents}"
output = "build"
seed = {spec.seed}
output_files = {output_files(spec.documents)}

[[sources]]
name = "code"
uri = "corpus/code"
format = "jsonl"
domain = "code"
license = "various (PSF, MIT, BSD, Apache-2.0)"

[[sources]]
name = "prose"
uri = "corpus/prose"
format = "jsonl"
license = "various (Debian documentation, package documentation)"

[[sources]]
name = "math"
uri = "corpus/math"
format = "jsonl"
domain = "math"
license = "Apache-2.0 (generated)"

[tokenizer]
vocab_size = {vocab}
sample_bytes = 2_000_000

[traces]
enabled = true
units_uris = ["corpus/units.jsonl"]
doctests = false
workers = 2

[train]
preset = "tiny"
micro_batch_size = 4
checkpoint_every = 1_000_000
eval_sequences = 0
{stages}"""


def stages_toml(tokens: int) -> str:
    """Pretrain (stable + decay), midtrain (repository documents) and SFT (the traces' forms), sized to
    `tokens`, the tokens the tokenize job wrote."""
    def budget(share: float) -> int:
        return max(1, int(tokens * share) // GLOBAL_BATCH_TOKENS) * GLOBAL_BATCH_TOKENS

    return f"""
[[stages]]
name = "pretrain"
kind = "pretrain"
seq_len = {SEQ_LEN}
global_batch_tokens = {GLOBAL_BATCH_TOKENS}
shard_sequences = 1024

[[stages.phases]]
name = "stable"
tokens = {budget(0.40)}
ordering = "shuffle"
on_shortfall = "redistribute"
weights = {{ "code" = 0.50, "general" = 0.22, "science" = 0.12, "math" = 0.12, "trace" = 0.04 }}
lr_shape = "constant"
lr_start = 3e-3
lr_warmup_steps = 2

[[stages.phases]]
name = "decay"
tokens = {budget(0.15)}
ordering = "easy_to_hard"
on_shortfall = "redistribute"
weights = {{ "code/2-4" = 0.45, "general/2-4" = 0.2, "science" = 0.12, "math" = 0.15, "trace" = 0.08 }}
lr_shape = "cosine"
lr_start = 3e-3
lr_end = 3e-4

[[stages]]
name = "midtrain"
kind = "midtrain"
seq_len = {2 * SEQ_LEN}
global_batch_tokens = {GLOBAL_BATCH_TOKENS}
shard_sequences = 512

[[stages.phases]]
name = "long_context"
tokens = {budget(0.08)}
on_shortfall = "redistribute"
length_bias = 1.0
repo_document_tokens = 8_192
weights = {{ "code" = 0.6, "general" = 0.2, "science" = 0.1, "math" = 0.05, "trace" = 0.05 }}
lr_shape = "constant"
lr_start = 1e-3

[[stages]]
name = "sft"
kind = "sft"
seq_len = {SEQ_LEN}
global_batch_tokens = {GLOBAL_BATCH_TOKENS}
shard_sequences = 256

[[stages.phases]]
name = "instruct"
tokens = {4 * GLOBAL_BATCH_TOKENS}
max_epochs = 8.0
pack_slack = 0.01
on_shortfall = "redistribute"
sft_uris = {{ traces = "build/traces/sft" }}
weights = {{ "*/*/traces" = 1.0 }}
lr_shape = "constant"
lr_start = 1e-3
"""


# ---------------------------------------------------------------------------------------------- measuring


def executor_cores(spark) -> int:
    master = spark.sparkContext.master
    if master.startswith("local["):
        inside = master[len("local["):].split(",")[0].rstrip("]")
        return os.cpu_count() or 1 if inside == "*" else int(inside)
    if master == "local":
        return 1
    return spark.sparkContext.defaultParallelism


def text_megabytes(folder: Path) -> float:
    """MB of text in a documents table, from the Parquet footers (uncompressed size of the `text` column)."""
    total = 0
    for path in sorted(folder.glob("*.parquet")):
        meta = pq.ParquetFile(path).metadata
        index = meta.schema.to_arrow_schema().get_field_index("text")
        for g in range(meta.num_row_groups):
            column = meta.row_group(g).column(index)
            total += column.total_uncompressed_size - 4 * meta.row_group(g).num_rows  # less the length prefixes
    return total / 1e6


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_job(spark, cfg, job: str, sampler: MemorySampler, cores: int, megabytes_in: float) -> dict:
    """Run one job (forced) under its own Spark job group and measure it."""
    from jobs.registry import job_module

    spark.sparkContext.setJobGroup(job, f"rnj {job}", False)
    before = load_average()
    sampler.take()
    cpu, start = tree_cpu_seconds(), time.perf_counter()
    result = job_module(job).run(spark, cfg, force=True)
    wall, cpu = time.perf_counter() - start, tree_cpu_seconds() - cpu
    peaks = sampler.take()
    spark.sparkContext.setJobGroup("", "", False)
    ledger = result.ledger
    return {
        "job": job, "docs_in": ledger.read, "docs_out": ledger.written, "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2), "cores": cores, "mb_in": round(megabytes_in, 1),
        "docs_per_s_per_core": round(ledger.read / wall / cores, 1),
        "docs_per_cpu_s": round(ledger.read / cpu, 1) if cpu else None,
        "mb_per_s_per_core": round(megabytes_in / wall / cores, 2),
        "memory_mb": {k: round(v) for k, v in asdict(peaks).items()},
        "load_average_before": before, "load_average_after": load_average(),
        "ledger": {"dropped": ledger.dropped, "quarantined": ledger.quarantined, "extra_keys": sorted(ledger.extra)},
    }


def planted_recall(out: Path, cfg) -> dict:
    """Share of planted copies that dedup put in one cluster with their original (so one of them is left)."""
    from pipeline.commit import JobOutput

    clusters_uri = JobOutput(cfg.build.output, "dedup").child("clusters")
    clusters = pq.read_table(clusters_uri.removeprefix("file://"), columns=["id", "cluster_id"]).to_pydict()
    cluster_of = dict(zip(clusters["id"], clusters["cluster_id"]))
    planted = pq.read_table(out / "corpus" / "planted.parquet").to_pylist()
    threshold = cfg.dedup.near.threshold
    result = {}
    for name, rows in (
        ("exact", [p for p in planted if p["kind"] == "exact"]),
        ("near", [p for p in planted if p["kind"] == "near" and p["jaccard"] >= threshold]),
        ("near_below_threshold", [p for p in planted if p["kind"] == "near" and p["jaccard"] < threshold]),
    ):
        found = sum(1 for p in rows if cluster_of.get(p["original"]) is not None
                    and cluster_of.get(p["original"]) == cluster_of.get(p["copy"]))
        result[name] = {"planted": len(rows), "found": found, "recall": round(found / len(rows), 4) if rows else None}
    return result


def raw_encoder(config: Path, tokens_expected: int) -> dict:
    """Tokens per CPU-second of the raw encoder on the tokenize job's input texts, one thread, file by file
    (only the encode calls are timed), with the tokenizer the job committed. It runs in a subprocess, so
    that its memory is not counted as the driver's in the jobs after it."""
    script = "import json, sys\nfrom bench.scale import raw_encoder_figures\nprint(json.dumps(raw_encoder_figures(sys.argv[1])))"
    command = [sys.executable, "-c", script, str(config)]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if done.returncode != 0:
        raise RuntimeError(f"the raw encoder failed ({done.returncode}):\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["tokens"] != tokens_expected:
        raise AssertionError(f"the raw encoder made {figures['tokens']} tokens, the tokenize job {tokens_expected}")
    return figures


def raw_encoder_figures(config: str) -> dict:
    """raw_encoder's measurement, in the process that runs it (TOKENIZERS_PARALLELISM=false: one thread)."""
    from jobs.common import upstream_jobs
    from pipeline.commit import JobOutput
    from pipeline.config import load_build
    from tokenizer.files import load_committed_tokenizer

    cfg = load_build(config)
    tok = load_committed_tokenizer(cfg).tokenizer
    cpu = {"encode_batch": 0.0, "encode_batch_fast": 0.0}
    tokens = 0
    for job in upstream_jobs(cfg, "tokenize"):
        folder = Path(JobOutput(cfg.build.output, job).child("documents").removeprefix("file://"))
        for path in sorted(folder.glob("*.parquet")):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=4096, columns=["text"]):
                texts = batch.column(0).to_pylist()
                start = time.process_time()
                encoded = tok.encode_batch(texts, add_special_tokens=False)
                tokens += sum(len(e.ids) for e in encoded)
                cpu["encode_batch"] += time.process_time() - start
                start = time.process_time()
                fast = tok.encode_batch_fast(texts, add_special_tokens=False)
                sum(len(e.ids) for e in fast)
                cpu["encode_batch_fast"] += time.process_time() - start
    return {"tokens": tokens, "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
            "tokens_per_cpu_s": {k: round(tokens / v) for k, v in cpu.items() if v}}


def train_steps(config: Path, steps: int) -> dict:
    """`steps` steps of the pretrain stage on the shards, in a subprocess (its own torch and memory)."""
    from model.metrics import read_metrics
    from model.train import run_dir_of
    from pipeline.config import load_build

    cfg = load_build(str(config))
    run_dir = run_dir_of(cfg)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    command = [sys.executable, "-m", "model.train", str(config), "--stage", "pretrain", "--max-steps", str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"training failed ({done.returncode}):\n{done.stderr[-3000:]}")
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    return {"steps": len(records), "wall_s": round(wall, 1), "losses": [round(r["loss"], 4) for r in records],
            "tokens_per_s": [round(r["tokens_per_s"]) for r in records]}


# ---------------------------------------------------------------------------------------------- the run


def prepare_corpus(spec: CorpusSpec, out: Path, keep: bool) -> CorpusInfo:
    corpus = out / "corpus"
    info = load_info(corpus) if keep else None
    if info is not None and info.spec == asdict(spec) and info.generator_version == GENERATOR_VERSION:
        print(f"corpus: reusing {corpus} ({info.total_records:,} records)", flush=True)
        return info
    start = time.perf_counter()
    info = generate(spec, corpus, progress=lambda m: print(m, flush=True))
    print(f"corpus: {info.total_records:,} records, {info.total_bytes / 1e6:.0f} MB of text in "
          f"{time.perf_counter() - start:.0f}s ({info.spliced:,} spliced)", flush=True)
    return info


def start_spark(master: str, events: Path):
    """(session, started here): a new local session has the event log on (PYSPARK_SUBMIT_ARGS is read when
    the JVM starts); a session already running (tests) is used as it is, without event log."""
    from pyspark.sql import SparkSession

    from jobs.spark import get_spark

    if events.exists():
        shutil.rmtree(events)
    events.mkdir(parents=True)
    if SparkSession.getActiveSession() is not None:
        return get_spark(), False
    previous = os.environ.get("PYSPARK_SUBMIT_ARGS")
    os.environ["PYSPARK_SUBMIT_ARGS"] = (
        f"--conf spark.eventLog.enabled=true --conf spark.eventLog.dir=file://{events} pyspark-shell")
    try:
        spark = get_spark(master, app_name="rnj-scale", ui=False)
    finally:
        if previous is None:
            del os.environ["PYSPARK_SUBMIT_ARGS"]
        else:
            os.environ["PYSPARK_SUBMIT_ARGS"] = previous
    spark.sparkContext.setLogLevel("ERROR")
    return spark, True


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("documents", type=parse_count, help="records to generate: 10000, 100K, 1M")
    parser.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated subset of {','.join(JOBS)}")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default out/scale/N)")
    parser.add_argument("--keep", action="store_true", help="reuse the corpus generated earlier in OUT")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-steps", type=int, default=3, help="training steps at the end (0: none)")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw encoder comparison")
    args = parser.parse_args(argv)
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    unknown = sorted(set(jobs) - set(JOBS))
    if unknown:
        parser.error(f"unknown jobs {unknown}; choose from {', '.join(JOBS)}")
    jobs = [j for j in JOBS if j in jobs]
    return measure(args, jobs)


def measure(args: argparse.Namespace, jobs: list[str]) -> dict:
    out = (args.out or Path("out/scale") / str(args.documents)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    spec = CorpusSpec(args.documents, seed=args.seed, units=max(40, min(400, args.documents // 500)))
    info = prepare_corpus(spec, out, args.keep)
    config = out / "scale.toml"
    config.write_text(build_file(spec))

    from pipeline.commit import JobOutput
    from pipeline.config import load_build

    cfg = load_build(str(config))
    os.environ.setdefault("RNJ_SHUFFLE_PARTITIONS", str(shuffle_partitions(args.documents)))
    spark, started = start_spark(args.master, out / "events")
    cores = executor_cores(spark)
    report: dict = {"documents": args.documents, "master": spark.sparkContext.master, "cores": cores,
                    "corpus": asdict(info), "load_average_start": load_average(), "jobs": []}
    print(f"spark: {report['master']}, {cores} executor cores; load average {report['load_average_start']}",
          flush=True)
    with MemorySampler() as sampler:
        sampler.take()
        for job in jobs:
            if job == "build":
                tokens = JobOutput(cfg.build.output, "tokenize").ledger().extra["tokens"]
                config.write_text(build_file(spec, stages_toml(tokens)))
                cfg = load_build(str(config))
            if job == "ingest":
                megabytes = info.total_bytes / 1e6
            elif job == "traces":
                megabytes = 0.0
            else:
                from jobs.common import upstream_jobs

                megabytes = sum(text_megabytes(Path(JobOutput(cfg.build.output, u).child("documents")
                                                    .removeprefix("file://"))) for u in upstream_jobs(cfg, job))
            print(f"{job}: running (load average {load_average()})", flush=True)
            row = run_job(spark, cfg, job, sampler, cores, megabytes)
            report["jobs"].append(row)
            print(f"{job}: {row['docs_in']:,} in, {row['docs_out']:,} out, {row['wall_s']}s wall, "
                  f"{row['cpu_s']} CPU-s, {row['docs_per_s_per_core']:,} docs/s/core", flush=True)
            if job == "dedup":
                row["planted_recall"] = planted_recall(out, cfg)
                print(f"dedup: planted recall {json.dumps(row['planted_recall'])}", flush=True)
            if job == "ingest":
                row["corrupt_planted"] = info.corrupt
            if job == "tokenize" and not args.no_raw:
                tokens = JobOutput(cfg.build.output, "tokenize").ledger().extra["tokens"]
                row["tokens"] = tokens
                row["tokens_per_cpu_s"] = round(tokens / row["cpu_s"])
                row["raw"] = raw_encoder(config, tokens)
                row["overhead_vs_raw"] = {k: round(v / row["tokens_per_cpu_s"] - 1, 3)
                                          for k, v in row["raw"]["tokens_per_cpu_s"].items()}
                print(f"tokenize: {row['tokens_per_cpu_s']:,} tokens/CPU-s; raw {row['raw']['tokens_per_cpu_s']}; "
                      f"overhead {row['overhead_vs_raw']}", flush=True)
    if started:
        spark.stop()  # ends the event log
    log = find_event_log(out / "events")
    groups = summarize(log) if log else {}
    for row in report["jobs"]:
        row["spark"] = _spark_figures(groups.get(row["job"]), row["wall_s"])
    if "build" in jobs and args.train_steps > 0:
        report["train"] = train_steps(config, args.train_steps)
    report["load_average_end"] = load_average()
    (out / "scale.json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    return report


def _spark_figures(group: GroupSummary | None, wall: float) -> dict:
    if group is None:
        return {}
    return {
        "jobs": group.jobs, "stages": group.stages, "tasks": group.tasks,
        "share_in_stages": round(group.stage_wall_s / wall, 3) if wall else None,
        "top_stages": [
            {"name": s.name, "tasks": s.tasks, "wall_s": round(s.wall_s, 2), "run_s": round(s.run_s, 2),
             "jvm_cpu_s": round(s.jvm_cpu_s, 2), "gc_s": round(s.gc_s, 2), "input_mb": round(s.input_mb, 1),
             "shuffle_read_mb": round(s.shuffle_read_mb, 1), "shuffle_write_mb": round(s.shuffle_write_mb, 1),
             "spill_mb": round(s.spill_mb, 1), "python": s.python}
            for s in group.top(4)
        ],
    }


def markdown(report: dict) -> str:
    """The per-job table and the notes under it, ready to paste into BENCHMARKS.md."""
    head = (f"{report['documents']:,} documents, {report['master']} ({report['cores']} cores); load average "
            f"{report['load_average_start']} at the start, {report['load_average_end']} at the end.")
    columns = ("job", "docs in", "docs out", "wall s", "CPU s", "docs/s/core", "docs/CPU-s", "MB/s/core",
               "peak JVM / driver / workers MB", "Spark jobs / stages / tasks")
    lines = [head, "", "| " + " | ".join(columns) + " |", "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for row in report["jobs"]:
        memory, spark = row["memory_mb"], row.get("spark") or {}
        lines.append(
            f"| {row['job']} | {row['docs_in']:,} | {row['docs_out']:,} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | "
            f"{row['docs_per_s_per_core']:,.0f} | {row['docs_per_cpu_s'] or 0:,.0f} | {row['mb_per_s_per_core']:.2f} | "
            f"{memory['jvm_mb']:,} / {memory['driver_python_mb']:,} / {memory['workers_mb']:,} | "
            f"{spark.get('jobs', '?')} / {spark.get('stages', '?')} / {spark.get('tasks', '?')} |")
    lines.append("")
    for row in report["jobs"]:
        if "planted_recall" in row:
            recall = row["planted_recall"]
            lines.append(f"- dedup, planted copies found: exact {_recall(recall['exact'])}, near (true Jaccard >= "
                         f"threshold) {_recall(recall['near'])}, near below the threshold "
                         f"{_recall(recall['near_below_threshold'])}.")
        if "corrupt_planted" in row:
            lines.append(f"- ingest quarantined {row['ledger']['quarantined']}; planted corrupt records "
                         f"{row['corrupt_planted']}.")
        if "raw" in row:
            raw = row["raw"]["tokens_per_cpu_s"]
            lines.append(f"- tokenize: {row['tokens']:,} tokens, {row['tokens_per_cpu_s']:,} tokens per CPU-s end to "
                         f"end; raw `encode_batch` {raw.get('encode_batch', 0):,}, `encode_batch_fast` "
                         f"{raw.get('encode_batch_fast', 0):,} (one thread): the job's overhead "
                         f"{row['overhead_vs_raw']}.")
        if row["job"] == "traces":
            lines.append(f"- traces: {row['docs_in']:,} units in {row['wall_s']:.1f}s: "
                         f"{row['docs_in'] / row['cpu_s'] if row['cpu_s'] else 0:.1f} units per CPU-s.")
    if "train" in report:
        train = report["train"]
        lines.append(f"- train: {train['steps']} steps of the tiny model in {train['wall_s']}s (with start-up), "
                     f"losses {train['losses']}.")
    lines.append("")
    lines.append("Costliest stages per job (summed task time; from the event log):")
    for row in report["jobs"]:
        spark = row.get("spark") or {}
        if not spark:
            continue
        tops = "; ".join(
            f"{s['name']} ({s['tasks']} tasks, {s['wall_s']}s wall, {s['run_s']}s task, {s['jvm_cpu_s']}s JVM CPU"
            + (f", shuffle {s['shuffle_write_mb']} MB" if s["shuffle_write_mb"] else "")
            + (f", spill {s['spill_mb']} MB" if s["spill_mb"] else "") + ")"
            for s in spark["top_stages"])
        lines.append(f"- {row['job']}: {spark['share_in_stages']:.0%} of wall in stages; {tops}")
    return "\n".join(lines)


def _recall(figures: dict) -> str:
    if not figures["planted"]:
        return "none planted"
    return f"{figures['found']:,}/{figures['planted']:,} ({figures['recall']:.2%})"


if __name__ == "__main__":
    run()
