"""The trainer's view of the build's shards: one stage's phases, opened, checked and cut into micro-batches.

Which sequences a step trains on follows from the step alone (`Position.first_sequence` in
pipeline/curriculum.py): step k of a phase reads sequences [k·S, (k+1)·S), S = sequences per step, rank r
of W taking every W-th of them. Resuming at a step therefore continues exactly: nothing is repeated or
skipped, and the checkpoint only needs the step and the shards' build hash to prove it.
"""

from __future__ import annotations

import hashlib
import itertools

import fsspec
import numpy as np
import torch

from model.transformer import IGNORE_INDEX
from pipeline.commit import JobOutput
from pipeline.config import BuildConfig
from pipeline.curriculum import StageConfig, phase_fingerprint
from pipeline.errors import UserError
from pipeline.shards import MANIFEST, Phase, SequenceView, ShardError, open_phase


def phase_uri(cfg: BuildConfig, stage: str, phase: str) -> str:
    return JobOutput(cfg.build.output, "build").child(stage, phase)


def tokenizer_sha256(cfg: BuildConfig) -> str | None:
    """sha256 of the tokenizer.json the build tokenized with (None when the tokenize job has not run)."""
    uri = JobOutput(cfg.build.output, "tokenize").child("tokenizer", "tokenizer.json")
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class StageData:
    """The train and eval splits of every phase of a stage, checked against the build file."""

    def __init__(self, cfg: BuildConfig, stage: StageConfig, verify: str = "full"):
        self.stage = stage
        expect = {"seq_len": stage.seq_len, "stage": stage.name}
        sha = tokenizer_sha256(cfg)
        if sha is not None:
            expect["tokenizer_sha256"] = sha
        self.train: dict[str, Phase] = {}
        self.eval: dict[str, Phase] = {}
        for phase in stage.phases:
            uri = phase_uri(cfg, stage.name, phase.name)
            checks = {**expect, "phase": phase.name, "build_hash": phase_fingerprint(stage, phase, cfg.build.seed)}
            if not _exists(f"{uri}/{MANIFEST}"):
                raise UserError(f"no shards for stage {stage.name!r}, phase {phase.name!r} under {uri}: build them "
                                f"first with `rnj run {cfg.path or 'BUILD_FILE'}`")
            try:
                self.train[phase.name] = open_phase(uri, expect=checks, verify=verify)
                self.eval[phase.name] = open_phase(uri, split="eval", expect=checks, verify=verify)
            except ShardError as err:
                raise _shard_problem(cfg, stage.name, phase.name, uri, err) from err
        sizes = {p.manifest["vocab_size"] for p in self.train.values()}
        if len(sizes) != 1:
            raise ValueError(f"stage {stage.name!r}: phases were built with different vocabularies {sorted(sizes)}")
        self.vocab_size = sizes.pop()

    def num_sequences(self, phase: str) -> int:
        return len(self.train[phase])

    def build_hash(self, phase: str) -> str:
        return self.train[phase].build_hash

    def micro_batches(self, phase: str, first: int, count: int, rank: int, world: int, micro_batch_size: int,
                      device: torch.device) -> list[dict[str, torch.Tensor]]:
        """This rank's share of sequences [first, first + count), in micro-batches of tensors on `device`."""
        if count % world:
            raise ValueError(f"{count} sequences per step cannot be split evenly over {world} ranks")
        mine = list(range(first + rank, first + count, world))
        views = [self.train[phase].sequence(i) for i in mine]
        return [batch_tensors(views[i:i + micro_batch_size], device)
                for i in range(0, len(views), micro_batch_size)]

    def eval_batches(self, phase: str, limit: int, device: torch.device, batch_size: int = 4) -> list[dict]:
        split = self.eval[phase]
        views = [split.sequence(i) for i in range(min(limit, len(split)))]
        return [batch_tensors(views[i:i + batch_size], device) for i in range(0, len(views), batch_size)]


def _exists(uri: str) -> bool:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.exists(path)


def _shard_problem(cfg: BuildConfig, stage: str, phase: str, uri: str, err: ShardError) -> UserError:
    """A UserError for shards that do not match the build file, with the command that fixes it."""
    return UserError(f"the shards of {stage}/{phase} under {uri} do not fit the build file: {err}. Rebuild them "
                     f"with `rnj run {cfg.path or 'BUILD_FILE'} --only build --force`, or train with the build "
                     f"file they were made from")


def batch_tensors(views: list[SequenceView], device: torch.device) -> dict[str, torch.Tensor | int]:
    """tokens, doc_ids and targets (B, T) for packed sequences, and `num_tokens`, the count of targets that
    enter the loss (a host int, so that counting the global batch's tokens needs no device sync).

    A target is the next token of the same document; it is IGNORE_INDEX at a document's last token, in the
    padding, and (SFT) where the next token is outside the loss mask. The padding is a document of its own."""
    T = len(views[0].tokens)
    tokens = np.stack([v.tokens for v in views]).astype(np.int64)
    doc_ids = np.empty((len(views), T), dtype=np.int64)
    targets = np.full((len(views), T), IGNORE_INDEX, dtype=np.int64)
    for row, view in enumerate(views):
        offsets = view.doc_offsets.astype(np.int64)
        bounds = list(offsets) + ([T] if offsets[-1] < T else [])
        for doc, (start, end) in enumerate(itertools.pairwise(bounds)):
            doc_ids[row, start:end] = doc
        for start, end in itertools.pairwise(offsets):  # real documents only, not the padding
            targets[row, start:end - 1] = tokens[row, start + 1:end]
        if view.loss_mask is not None:
            keep_next = np.zeros(T, dtype=bool)
            keep_next[:-1] = view.loss_mask[1:].astype(bool)
            targets[row, ~keep_next] = IGNORE_INDEX
    batch: dict[str, torch.Tensor | int] = {name: torch.from_numpy(array).to(device) for name, array in
                                             (("tokens", tokens), ("doc_ids", doc_ids), ("targets", targets))}
    batch["num_tokens"] = int((targets != IGNORE_INDEX).sum())
    return batch


