"""Train the model on the build's shards, stage by stage: `python -m model.train CONFIG --stage pretrain`.

    python -m model.train configs/demo.toml --all          # every stage in order, resuming where it stopped
    python -m model.train configs/demo.toml --stage sft    # one stage (starts from the previous stage's end)
    python -m model.train configs/demo.toml --dry-run      # the step plan per phase, then exit
    torchrun --nproc-per-node 8 -m model.train CONFIG --stage pretrain
    rnj train CONFIG ...                                   # the same options through the rnj command line

A stage reads its phases' shards in training order. A step consumes `global_batch_tokens / seq_len`
sequences, split over ranks and micro-batches; the loss is averaged per token over the whole global batch.
The learning rate comes from the phase (its shape, start and end), so data phases and learning-rate phases
line up by construction. Checkpoints (model, Muon and AdamW state, position, RNGs) are written atomically
every `checkpoint_every` steps and at the end of each stage; a rerun resumes from the latest complete one,
on the same or another number of ranks (the global batch stays; each rank's gradient accumulation changes).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from model.checkpoint import Checkpointer, seed_rngs
from model.config import ModelConfig, get_preset
from model.data import StageData
from model.distributed import Distributed, clip_grad_norm
from model.info import model_info
from model.metrics import MetricsLog, device_peak_flops, mfu, plot_metrics, read_metrics
from model.optim import OptimizerSettings, build_optimizers, set_learning_rate
from model.progress import Progress
from model.transformer import Transformer
from pipeline.config import BuildConfig, load_build
from pipeline.curriculum import PhaseSpan, Position, StageConfig, lookup, schedule
from pipeline.errors import UserError


def stage_spans(cfg: BuildConfig, stage: StageConfig) -> list[PhaseSpan]:
    """The stage's phases on the global step axis (steps count across all stages)."""
    return [span for span in schedule(cfg.stages) if span.stage.name == stage.name]


def model_config(cfg: BuildConfig, stage: StageConfig, vocab_size: int) -> ModelConfig:
    """The preset at this stage's context: plain RoPE up to the pretraining length, YaRN beyond it."""
    base = get_preset(cfg.train.preset, **dict(cfg.train.model_overrides))
    pretrain_len = min(s.seq_len for s in cfg.stages)
    base = dataclasses.replace(base, vocab_size=vocab_size, max_seq_len=pretrain_len)
    if stage.seq_len > pretrain_len:
        return base.with_yarn(factor=stage.seq_len / pretrain_len)
    return base


class Trainer:
    """One stage of training on one process (or one rank of a torchrun job)."""

    def __init__(self, cfg: BuildConfig, stage: StageConfig, run_dir: Path, dist: Distributed,
                 peak_tflops: float | None = None):
        self.cfg, self.stage, self.run_dir, self.dist = cfg, stage, run_dir, dist
        self.spans = stage_spans(cfg, stage)
        self.first_step, self.end_step = self.spans[0].first_step, self.spans[-1].end_step
        if stage.sequences_per_step % dist.world_size:
            fits = [w for w in range(1, stage.sequences_per_step + 1) if stage.sequences_per_step % w == 0]
            raise UserError(f"stage {stage.name!r} trains {stage.sequences_per_step} sequences per step, which "
                            f"{dist.world_size} ranks cannot share evenly: run on one of {fits} ranks (or change "
                            f"the stage's global_batch_tokens)")
        self.data = StageData(cfg, stage)
        for span in self.spans:
            built = self.data.num_sequences(span.phase.name)
            if built != span.num_sequences:
                raise UserError(f"phase {stage.name}/{span.phase.name}: the shards hold {built} sequences, the "
                                f"build file's budget needs {span.num_sequences}: rebuild the shards with "
                                f"`rnj run {cfg.path or 'BUILD_FILE'} --only build --force`")
        self.model_cfg = model_config(cfg, stage, self.data.vocab_size)
        torch.manual_seed(cfg.build.seed)
        # Built on the CPU from the seed, so every rank and every world size starts from the same weights;
        # `wrap` moves it to the device (FSDP2: block by block, keeping only each rank's shard).
        self.model = Transformer(self.model_cfg)
        self.train_model = dist.wrap(self.model, cfg.train)
        # After wrapping: FSDP2 replaced the parameters by DTensor shards (and Muon by DistributedMuon).
        self.optimizers = build_optimizers(self.model, OptimizerSettings(
            weight_decay=cfg.train.weight_decay, muon_momentum=cfg.train.muon_momentum))
        self.checkpoints = Checkpointer(run_dir / "checkpoints", keep=cfg.train.keep_checkpoints)
        self.metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=dist.rank == 0)
        self.step = self.first_step
        self.tokens_seen = 0
        self.resumed_from_world_size: int | None = None
        self.steps_run = 0
        """Steps the last `run` trained."""
        # MFU counts attention over the full context (torchtitan's convention; see model/info.py).
        per_token = model_info(self.model_cfg, seq_lens=(stage.seq_len,)).flops_per_token[stage.seq_len]
        self.flops_per_token, self.peak = per_token, device_peak_flops(dist.device, peak_tflops)

    def start(self) -> str:
        """Resume from the run's latest checkpoint inside this stage, else start from the previous stage's
        final checkpoint (weights, optimizer state and RNGs carry over: one continuous run), else from scratch."""
        latest = self.checkpoints.latest()
        latest_step = int(latest.name.split("-")[1]) if latest else 0
        if latest_step >= self.end_step:
            self.step = self.end_step
            return f"{self.stage.name} is already trained (the run's latest checkpoint is {latest})"
        if latest is not None and latest_step > self.first_step:
            self._restore(latest)
            return f"resumed {self.stage.name} at step {self.step} from {latest}{self._resharded()}"
        if self.first_step == 0:
            return f"started {self.stage.name} from scratch ({self.model_cfg.name}, {self.model.num_params():,} params)"
        final = self.checkpoints.folder / f"step-{self.first_step:09d}"
        if not (final / "COMPLETE").exists():
            raise UserError(f"stage {self.stage.name!r} starts from the end of the previous stage (step "
                            f"{self.first_step}), which has no checkpoint in {self.checkpoints.folder}: train the "
                            f"earlier stages first (`rnj train {self.cfg.path or 'BUILD_FILE'} --all`)")
        self._restore(final)
        return f"started {self.stage.name} from the end of the previous stage ({final}){self._resharded()}"

    def _restore(self, path: Path) -> None:
        state = self.checkpoints.load(path, self.model, self.optimizers)
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        phase = state["data"]["phase"]
        if self.step > self.first_step and state["data"]["build_hash"] != self.data.build_hash(phase):
            raise UserError(f"checkpoint {path} was trained on other shards of phase {phase!r} (build hash "
                            f"changed): the data was rebuilt; start a new run_dir or rebuild the old shards")
        saved_world = Checkpointer.world_size_of(path)
        if saved_world != self.dist.world_size:
            # Per-rank RNG streams cannot be carried onto another number of ranks: each rank's stream restarts
            # from (seed, step, rank), so a rerun on the same ranks from here is still reproducible.
            self.resumed_from_world_size = saved_world
            seed_rngs(_derived_seed(self.cfg.build.seed, self.step, self.dist.rank))
        if self.dist.rank == 0:
            _truncate_metrics(self.metrics.path, self.step)

    def _resharded(self) -> str:
        if self.resumed_from_world_size is None:
            return ""
        return (f" (written by {self.resumed_from_world_size} ranks, resharded onto {self.dist.world_size}; the "
                f"global batch stays {self.stage.sequences_per_step} sequences)")

    @property
    def micro_batches_per_step(self) -> int:
        """Gradient-accumulation steps of each rank: the global batch is fixed, so fewer ranks take more."""
        per_rank = self.stage.sequences_per_step // self.dist.world_size
        return -(-per_rank // self.cfg.train.micro_batch_size)

    @property
    def done(self) -> bool:
        return self.step >= self.end_step

    def run(self, max_steps: int | None = None, progress: bool = True, log_interval_s: float = 30.0) -> None:
        """Train to the end of the stage (or `max_steps` more steps), checkpointing as configured; a run
        stopped by `max_steps` checkpoints where it stops, so that the next run continues from there."""
        end = self.end_step if max_steps is None else min(self.end_step, self.step + max_steps)
        first = self.step
        bar = Progress(self.end_step - self.first_step, self.step - self.first_step, self.stage.name,
                       enabled=progress and self.dist.rank == 0, interval_s=log_interval_s)
        self.metrics.elapsed()
        position = None
        while self.step < end:
            position = lookup(self.cfg.stages, self.step)
            record = self._train_step(position)
            self.step += 1
            if self.step == position.span.end_step and self.cfg.train.eval_sequences:
                record["eval_loss"] = self.evaluate(position.phase.name)
            self.metrics.write(record)
            bar.update(record)
            if self.step == self.end_step:
                self.checkpoints.save(self.step, self.model, self.optimizers, self._state(position),
                                      keep_forever=True)
            elif self.step % self.cfg.train.checkpoint_every == 0 or self.step == end:
                self.checkpoints.save(self.step, self.model, self.optimizers, self._state(position))
        self.steps_run = self.step - first
        bar.close()

    def _train_step(self, position: Position) -> dict:
        phase = position.phase
        lr = position.lr
        rates = set_learning_rate(self.optimizers, lr)
        per_step = self.stage.sequences_per_step
        micro_batches = self.data.micro_batches(phase.name, position.first_sequence, per_step, self.dist.rank,
                                                self.dist.world_size, self.cfg.train.micro_batch_size,
                                                self.dist.device)
        # The loss is a mean over every counted token of the global batch, across micro-batches and ranks.
        # Token counts come from the host (batch_tensors); the loss sum stays on the device (float64, the
        # precision the logged loss always had) and is read once per step, so no micro-batch waits on the host.
        total_tokens = self.dist.all_reduce_sum(sum(mb["num_tokens"] for mb in micro_batches))
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.dist.device)
        for i, mb in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            with (contextlib.nullcontext() if last else self.dist.no_sync(self.train_model)), self.dist.autocast():
                out = self.train_model(mb["tokens"], mb["doc_ids"], targets=mb["targets"])
                loss = out.loss_sum * self.dist.loss_scale / max(total_tokens, 1)
            loss.backward()
            loss_sum += out.loss_sum.detach()
        grad_norm = clip_grad_norm(list(self.model.parameters()), self.cfg.train.grad_clip)
        for optimizer in self.optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        loss = self.dist.all_reduce_sum(loss_sum) / max(total_tokens, 1)  # the step's one wait for the device
        seconds = self.metrics.elapsed()
        step_tokens = per_step * self.stage.seq_len
        self.tokens_seen += step_tokens
        return {
            "step": self.step + 1, "stage": self.stage.name, "phase": phase.name,
            "sequences": [position.first_sequence, position.first_sequence + per_step],
            "loss": loss, "lr": lr, "lrs": rates,
            "grad_norm": float(grad_norm), "tokens_seen": self.tokens_seen, "loss_tokens": total_tokens,
            "tokens_per_s": step_tokens / seconds,
            "mfu": mfu(step_tokens / seconds, self.flops_per_token, self.peak, self.dist.world_size),
        }

    @torch.no_grad()
    def evaluate(self, phase: str) -> float | None:
        """Mean token loss on the sequences the build held out for this phase."""
        batches = self.data.eval_batches(phase, self.cfg.train.eval_sequences, self.dist.device)
        if not batches:
            return None
        self.model.eval()
        loss_sum, tokens = 0.0, 0
        for mb in batches:
            with self.dist.autocast():
                out = self.model(mb["tokens"], mb["doc_ids"], targets=mb["targets"])
            loss_sum, tokens = loss_sum + out.loss_sum.item(), tokens + int(out.num_tokens)
        self.model.train()
        return loss_sum / max(tokens, 1)

    def _state(self, position: Position) -> dict:
        return {"step": self.step, "tokens_seen": self.tokens_seen, "stage": self.stage.name,
                "data": {"phase": position.phase.name, "build_hash": self.data.build_hash(position.phase.name),
                         "next_sequence": position.first_sequence + self.stage.sequences_per_step}}


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records a killed run wrote after its last checkpoint; the resumed run writes them again."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def _derived_seed(seed: int, step: int, rank: int) -> int:
    digest = hashlib.sha256(f"{seed}/{step}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


def run_dir_of(cfg: BuildConfig) -> Path:
    path = cfg.train.run_dir or cfg.output_uri("train")
    if "://" in path and not path.startswith("file://"):
        raise UserError(f"[train] run_dir {path} must be a local or mounted path: mount gs:// buckets with gcsfuse "
                        f"and give the mount point")
    return Path(path.removeprefix("file://"))


def print_plan(cfg: BuildConfig, stages: list[StageConfig]) -> None:
    """The step plan of each stage: phases, step ranges, learning rates and sequences."""
    for stage in stages:
        print(f"stage {stage.name} ({stage.kind}): seq_len {stage.seq_len}, {stage.sequences_per_step} sequences "
              f"({stage.global_batch_tokens:,} tokens) per step")
        for span in stage_spans(cfg, stage):
            phase = span.phase
            end = phase.lr_start if phase.lr_end is None else phase.lr_end
            warmup = f" after {phase.lr_warmup_steps} warm-up steps" if phase.lr_warmup_steps else ""
            print(f"  {phase.name:<12} steps {span.first_step:>7} .. {span.end_step:<7} lr {phase.lr_shape} "
                  f"{phase.lr_start:g} -> {end:g}{warmup}  ({span.num_sequences:,} sequences, "
                  f"{phase.tokens:,} tokens)")


def build_parser() -> argparse.ArgumentParser:
    """`python -m model.train`'s arguments (`rnj train` offers the same options; a test keeps them equal)."""
    parser = argparse.ArgumentParser(prog="model.train", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="build file (TOML)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--stage", help="train this stage only (it starts from the end of the previous stage)")
    which.add_argument("--all", action="store_true", help="train every stage in order, resuming where it stopped")
    parser.add_argument("--dry-run", action="store_true", help="print the step plan per phase and exit")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop after this many steps in all (checkpointed: a rerun continues)")
    parser.add_argument("--plot", metavar="PNG", help="draw the run's loss and lr curves to PNG and exit")
    parser.add_argument("--log-interval", type=float, default=30.0, metavar="SECONDS",
                        help="without a terminal (a log file, a pod), one progress line per this many seconds")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's peak for MFU (default: its dense bf16 data-sheet figure, by exact name)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """The torchrun entry point. A UserError ends it with its message and exit code 2, as `rnj` does: in a
    pod's log one line saying what to fix beats a traceback."""
    args = build_parser().parse_args(argv)
    try:
        train_command(args.config, stage=args.stage, all_stages=args.all, dry_run=args.dry_run,
                      max_steps=args.max_steps, plot=args.plot, log_interval_s=args.log_interval,
                      peak_tflops=args.peak_tflops)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def train_command(config: str, *, stage: str | None = None, all_stages: bool = False, dry_run: bool = False,
                  max_steps: int | None = None, plot: str | None = None, log_interval_s: float = 30.0,
                  peak_tflops: float | None = None) -> None:
    """What `python -m model.train` and `rnj train` do; problems a user can fix raise UserError."""
    if max_steps is not None and max_steps < 1:
        raise UserError(f"--max-steps must be at least 1 (got {max_steps})")
    cfg = load_build(config)
    if not cfg.stages:
        raise UserError(f"{config} has no [[stages]]: nothing to train; add stages (see configs/demo.toml)")
    if plot:
        metrics = run_dir_of(cfg) / "metrics.jsonl"
        if not metrics.exists():
            raise UserError(f"no training metrics at {metrics}: train first (`rnj train {config} --all`)")
        print(plot_metrics(metrics, plot))
        return
    names = [s.name for s in cfg.stages]
    if stage and stage not in names:
        raise UserError(f"unknown stage {stage!r}; the build's stages are {names}")
    stages = [s for s in cfg.stages if all_stages or not stage or s.name == stage]
    if dry_run:
        print_plan(cfg, stages)
        return
    with Distributed.setup() as dist:
        left = max_steps
        for one in stages:
            trainer = train_stage(cfg, one, dist, left, log_interval_s=log_interval_s, peak_tflops=peak_tflops)
            if left is not None:
                left -= trainer.steps_run
                if left <= 0:
                    break


def train_stage(cfg: BuildConfig, stage: StageConfig, dist: Distributed, max_steps: int | None = None, *,
                log_interval_s: float = 30.0, peak_tflops: float | None = None) -> Trainer:
    trainer = Trainer(cfg, stage, run_dir_of(cfg), dist, peak_tflops=peak_tflops)
    message = trainer.start()
    if dist.rank == 0:
        print(message, file=sys.stderr)
        if not trainer.done:
            print(f"{stage.name}: {dist.world_size} rank(s) on {dist.device.type}; "
                  f"{trainer.micro_batches_per_step} micro-batch(es) of {cfg.train.micro_batch_size} per rank "
                  f"per step; MFU against {trainer.peak or 'no peak (unknown device: pass --peak-tflops)'}",
                  file=sys.stderr)
    start = time.perf_counter()
    trainer.run(max_steps, log_interval_s=log_interval_s)
    if dist.rank == 0 and trainer.steps_run:
        losses = [r["loss"] for r in read_metrics(trainer.metrics.path) if r.get("stage") == stage.name]
        if losses:
            print(f"{stage.name}: step {trainer.step} of {trainer.first_step}..{trainer.end_step}, loss "
                  f"{losses[0]:.3f} -> {losses[-1]:.3f} ({time.perf_counter() - start:.0f}s)", file=sys.stderr)
    return trainer


if __name__ == "__main__":
    main()
