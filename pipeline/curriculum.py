"""The curriculum as data: `[[stages]]` and their `[[stages.phases]]`, and where a training step falls.

A stage (pretrain, midtrain, sft) fixes the sequence length and the global batch in tokens; a phase fixes a
token budget, a mixture over buckets of documents and an ordering. Steps follow from budgets and batches:
a phase of `tokens` runs `tokens / global_batch_tokens` steps and holds exactly `tokens / seq_len`
sequences, so the build and the trainer agree on every boundary by construction. `lookup(stages, step)` is
the one function both use (style habit 6), and its `Position.lr` is the learning rate of that step: the
WSD schedule is written as phases (warm-up, stable, cosine decay, final constant), so data phases and
learning-rate phases cannot drift apart.

A bucket key selects documents by `DOMAIN[/TIERS[/SOURCE]]`: `code`, `math/3-4`, `general/0,1`,
`*/*/chat` (`*` matches anything; TIERS is `*`, one tier, a range `a-b` or a list `a,b`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

from pipeline.configuration import require
from pipeline.documents import DOMAINS
from pipeline.schedule import LRShape, lr_at

TIERS = (0, 1, 2, 3, 4)
STAGE_KINDS = ("pretrain", "midtrain", "sft")


@dataclass(frozen=True)
class BucketKey:
    """One mixture bucket: documents whose domain, tier and (optionally) source match."""

    key: str
    domains: frozenset[str]
    tiers: frozenset[int]
    sources: frozenset[str] | None

    def matches(self, domain: str | None, tier: int | None, source: str) -> bool:
        return (
            domain in self.domains
            and tier in self.tiers
            and (self.sources is None or source in self.sources)
        )

    def overlaps(self, other: BucketKey) -> bool:
        sources_meet = self.sources is None or other.sources is None or bool(self.sources & other.sources)
        return bool(self.domains & other.domains) and bool(self.tiers & other.tiers) and sources_meet


def parse_bucket(key: str) -> BucketKey:
    """`DOMAIN[/TIERS[/SOURCE]]` into a BucketKey; ValueError that shows the accepted forms otherwise."""
    parts = key.split("/")
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise ValueError(f"bucket {key!r} must look like DOMAIN, DOMAIN/TIERS or DOMAIN/TIERS/SOURCE")
    domain, tiers, source = (parts + ["*", "*"])[:3]
    if domain != "*" and domain not in DOMAINS:
        raise ValueError(f"bucket {key!r}: domain {domain!r} is not '*' or one of {', '.join(DOMAINS)}")
    return BucketKey(
        key=key,
        domains=frozenset(DOMAINS if domain == "*" else (domain,)),
        tiers=_parse_tiers(key, tiers),
        sources=None if source == "*" else frozenset((source,)),
    )


def _parse_tiers(key: str, text: str) -> frozenset[int]:
    if text == "*":
        return frozenset(TIERS)
    try:
        if "-" in text:
            low, high = (int(x) for x in text.split("-"))
            tiers = set(range(low, high + 1))
        else:
            tiers = {int(x) for x in text.split(",")}
    except ValueError:
        raise ValueError(f"bucket {key!r}: tiers {text!r} must be '*', 'N', 'A-B' or 'A,B,...'") from None
    if not tiers or not tiers <= set(TIERS):
        raise ValueError(f"bucket {key!r}: tiers {text!r} must lie in 0..4")
    return frozenset(tiers)


@dataclass(frozen=True, kw_only=True)
class PhaseConfig:
    name: str
    """Name of the phase (stable, decay ...): its shards live in OUTPUT/build/STAGE/PHASE/."""
    tokens: int
    """Token budget: the token slots the trainer consumes in this phase (padding included). A multiple of
    the stage's global_batch_tokens, so the phase is a whole number of steps and of sequences."""
    weights: dict[str, float]
    """Mixture: bucket key (`DOMAIN[/TIERS[/SOURCE]]`) -> weight. Buckets must not overlap; weights are
    normalised; documents that match no bucket are not used in this phase."""
    max_epochs: float = 4.0
    """Upsampling cap: a bucket may repeat its documents at most this many times (fractional allowed)."""
    max_epochs_by_source: dict[str, float] = field(default_factory=dict)
    """Per-source caps; a bucket's cap is the smallest cap of the sources it holds."""
    ordering: Literal["shuffle", "easy_to_hard", "interleave"] = "shuffle"
    """Training order: `shuffle` (seeded random), `easy_to_hard` (by difficulty), `interleave` (each
    bucket spread evenly over the phase, in its selection order)."""
    on_shortfall: Literal["fail", "redistribute"] = "fail"
    """When a bucket cannot fill its share within its cap: fail naming it, or give the rest to the other
    buckets in proportion to their weights."""
    pack_slack: float = 0.005
    """Share of the budget kept free for padding, so the packer can place documents whole. Non-padding
    tokens are exactly (1 - pack_slack) of the budget."""
    eval_sequences: int = 2
    """Held-out sequences for the trainer's per-phase evaluation loss (documents never trained on)."""
    max_eval_fraction: float = 0.1
    """A bucket never gives more than this share of its tokens to the held-out set (whatever
    eval_sequences asks), so a small bucket keeps most of its documents for training."""
    length_bias: float = 0.0
    """Prefer long documents when a bucket is sampled: weight ~ tokens ** length_bias (0 = uniform)."""
    repo_document_tokens: int = 0
    """If > 0, files of one `repo` are concatenated in path order, each under a `# file: PATH` header,
    into documents of at most this many tokens (repository-level documents for long context)."""
    sft_uris: dict[str, str] = field(default_factory=dict)
    """SFT stages only: source name -> JSONL file or glob of conversations (`messages`) or trace SFT forms
    (`prompt`/`response`)."""
    lr_shape: LRShape = "constant"
    """How the learning rate moves from `lr_start` to `lr_end` over the phase: constant, linear or cosine."""
    lr_start: float = 2e-3
    """Learning rate at the phase's first step (after any warm-up); Rnj-1's peak is 2e-3."""
    lr_end: float | None = None
    """Learning rate at the phase's end (None: lr_start)."""
    lr_warmup_steps: int = 0
    """The phase's first steps ramp linearly from 0 to lr_start ((k+1)/warmup at step k) before the shape."""

    def __post_init__(self) -> None:
        require(bool(self.name) and "/" not in self.name, f"phase name {self.name!r} must be non-empty, no '/'")
        require(self.tokens > 0, f"phase {self.name!r}: tokens must be positive")
        require(bool(self.weights), f"phase {self.name!r}: weights must name at least one bucket")
        require(all(w >= 0 for w in self.weights.values()), f"phase {self.name!r}: weights must be >= 0")
        require(sum(self.weights.values()) > 0, f"phase {self.name!r}: weights must not all be zero")
        require(self.max_epochs > 0, f"phase {self.name!r}: max_epochs must be positive")
        require(all(v > 0 for v in self.max_epochs_by_source.values()),
                f"phase {self.name!r}: max_epochs_by_source values must be positive")
        require(0 <= self.pack_slack < 0.5, f"phase {self.name!r}: pack_slack must lie in [0, 0.5)")
        require(self.eval_sequences >= 0, f"phase {self.name!r}: eval_sequences must be >= 0")
        require(0 <= self.max_eval_fraction < 1, f"phase {self.name!r}: max_eval_fraction must lie in [0, 1)")
        require(self.length_bias >= 0, f"phase {self.name!r}: length_bias must be >= 0")
        require(self.repo_document_tokens >= 0, f"phase {self.name!r}: repo_document_tokens must be >= 0")
        require(self.lr_start >= 0 and (self.lr_end is None or self.lr_end >= 0),
                f"phase {self.name!r}: learning rates must be >= 0")
        require(self.lr_warmup_steps >= 0, f"phase {self.name!r}: lr_warmup_steps must be >= 0")
        buckets = []
        for key in self.weights:
            try:
                buckets.append(parse_bucket(key))
            except ValueError as err:
                raise ValueError(f"phase {self.name!r}: {err}") from None
        for i, a in enumerate(buckets):
            for b in buckets[i + 1:]:
                require(not a.overlaps(b), f"phase {self.name!r}: buckets {a.key!r} and {b.key!r} overlap; a "
                        "document may match one bucket only: make them disjoint (e.g. 'code/0-2' and 'code/3-4')")

    def buckets(self) -> tuple[BucketKey, ...]:
        """The buckets in a fixed order (sorted by key)."""
        return tuple(parse_bucket(k) for k in sorted(self.weights))

    def bucket_of(self, domain: str | None, tier: int | None, source: str) -> str | None:
        """The key of the bucket a document falls in, or None when this phase does not use it."""
        for bucket in self.buckets():
            if bucket.matches(domain, tier, source):
                return bucket.key
        return None

    def target_weights(self) -> dict[str, float]:
        total = sum(self.weights.values())
        return {k: self.weights[k] / total for k in sorted(self.weights)}


@dataclass(frozen=True, kw_only=True)
class StageConfig:
    name: str
    """Name of the stage (pretrain, midtrain, sft): its phases live in OUTPUT/build/NAME/."""
    kind: Literal["pretrain", "midtrain", "sft"]
    """`pretrain` and `midtrain` read the tokenized documents; `sft` reads conversations and masks losses."""
    seq_len: int
    """Tokens per sequence (8192 for pretraining and SFT, 32768 for mid-training)."""
    global_batch_tokens: int
    """Tokens per optimizer step over all ranks; a multiple of seq_len."""
    phases: tuple[PhaseConfig, ...]
    """The phases in training order."""
    shard_sequences: int = 1024
    """Sequences per shard file; also the packing window (documents are packed within a shard)."""
    bos_token: str = "<|begin_of_text|>"
    """Token put before every document (looked up by name in tokenizer.json)."""
    eos_token: str = "<|eot_id|>"
    """Token put after every document."""
    pad_token: str = "<|end_of_text|>"
    """Token that fills the unavoidable padding at the end of a sequence (masked out of the loss)."""

    def __post_init__(self) -> None:
        require(bool(self.name) and "/" not in self.name, f"stage name {self.name!r} must be non-empty, no '/'")
        require(self.seq_len > 0, f"stage {self.name!r}: seq_len must be positive")
        require(self.global_batch_tokens > 0 and self.global_batch_tokens % self.seq_len == 0,
                f"stage {self.name!r}: global_batch_tokens ({self.global_batch_tokens}) must be a positive "
                f"multiple of seq_len ({self.seq_len})")
        require(bool(self.phases), f"stage {self.name!r}: needs at least one [[stages.phases]]")
        require(self.shard_sequences > 0, f"stage {self.name!r}: shard_sequences must be positive")
        names = [p.name for p in self.phases]
        require(len(set(names)) == len(names), f"stage {self.name!r}: phase names must be unique: {names}")
        for phase in self.phases:
            require(phase.tokens % self.global_batch_tokens == 0,
                    f"stage {self.name!r}, phase {phase.name!r}: tokens ({phase.tokens}) must be a multiple of "
                    f"global_batch_tokens ({self.global_batch_tokens}) so the phase is a whole number of steps")
            is_sft = self.kind == "sft"
            require(bool(phase.sft_uris) == is_sft,
                    f"stage {self.name!r}, phase {phase.name!r}: sft_uris is required for kind 'sft' "
                    "and not allowed for other kinds")

    @property
    def sequences_per_step(self) -> int:
        return self.global_batch_tokens // self.seq_len

    def phase(self, name: str) -> PhaseConfig:
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise KeyError(f"stage {self.name!r} has no phase {name!r}; it has {[p.name for p in self.phases]}")


def check_stages(stages: tuple[StageConfig, ...]) -> None:
    """Checks across stages (names unique); raises ValueError."""
    names = [s.name for s in stages]
    require(len(set(names)) == len(names), f"stage names must be unique: {names}")


def resolve_stage_uris(stages: tuple[StageConfig, ...], resolve) -> tuple[StageConfig, ...]:
    """`sft_uris` values made absolute with `resolve(uri)` (relative to the build file's folder)."""
    return tuple(
        dataclasses.replace(stage, phases=tuple(
            dataclasses.replace(p, sft_uris={k: resolve(v) for k, v in p.sft_uris.items()}) for p in stage.phases
        ))
        for stage in stages
    )


# --- fingerprints (style habit 5) ------------------------------------------------------------------------

def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _fields(obj, skip: tuple[str, ...] = ()) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name not in skip}


def phase_fingerprint(stage: StageConfig, phase: PhaseConfig, seed: int) -> str:
    """Hash of everything that decides a phase's shards given the same upstream data: the phase's
    parameters, its stage's (without the other phases) and the seed. Written as the manifest's
    `build_hash`; the trainer recomputes it from the build file and refuses shards that differ.

    An SFT phase's inputs count by their names only: where the files lie (`sft_uris`' values, often under
    the build's own output) is not a parameter, so the same data built in two places hashes the same; their
    content is part of the build job's input hash instead."""
    fields = _fields(phase, skip=LR_FIELDS)
    fields["sft_uris"] = sorted(phase.sft_uris)
    return _digest({"stage": _fields(stage, skip=("phases",)), "phase": fields, "seed": seed})


LR_FIELDS = ("lr_shape", "lr_start", "lr_end", "lr_warmup_steps")
"""Training-only fields: changing the learning rate must not rebuild the shards."""


def curriculum_fingerprint(stages: tuple[StageConfig, ...], seed: int) -> str:
    """Hash of the whole curriculum: the stages' own fields and their phases' fingerprints, in order."""
    return _digest([
        {"stage": _fields(s, skip=("phases",)), "phases": [phase_fingerprint(s, p, seed) for p in s.phases]}
        for s in stages
    ])


# --- steps ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PhaseSpan:
    """Where one phase lies on the global step axis."""

    stage: StageConfig
    phase: PhaseConfig
    stage_index: int
    phase_index: int
    first_step: int
    """Global step of the phase's first step (steps count from 0 across all stages)."""
    steps: int
    stage_first_step: int
    """Global step of the first step of the phase's stage."""

    @property
    def end_step(self) -> int:
        return self.first_step + self.steps

    @property
    def num_sequences(self) -> int:
        return self.phase.tokens // self.stage.seq_len


@dataclass(frozen=True)
class Position:
    """What `lookup` says about one global step."""

    span: PhaseSpan
    step: int
    step_in_phase: int
    step_in_stage: int
    fraction: float
    """step_in_phase / steps: 0 at the phase's first step, below 1 at its last."""

    @property
    def stage(self) -> StageConfig:
        return self.span.stage

    @property
    def phase(self) -> PhaseConfig:
        return self.span.phase

    @property
    def lr(self) -> float:
        """The learning rate of this step: the phase's warm-up, then its shape from lr_start to lr_end."""
        phase = self.phase
        if self.step_in_phase < phase.lr_warmup_steps:
            return phase.lr_start * (self.step_in_phase + 1) / phase.lr_warmup_steps
        end = phase.lr_start if phase.lr_end is None else phase.lr_end
        return lr_at(phase.lr_shape, phase.lr_start, end, self.fraction)

    @property
    def first_sequence(self) -> int:
        """Index, within the phase's shards, of the first sequence this step trains on."""
        return self.step_in_phase * self.span.stage.sequences_per_step


def schedule(stages: tuple[StageConfig, ...]) -> tuple[PhaseSpan, ...]:
    """Every phase with its step range, in training order."""
    spans, step = [], 0
    for si, stage in enumerate(stages):
        stage_first = step
        for pi, phase in enumerate(stage.phases):
            steps = phase.tokens // stage.global_batch_tokens
            spans.append(PhaseSpan(stage, phase, si, pi, step, steps, stage_first))
            step += steps
    return tuple(spans)


def total_steps(stages: tuple[StageConfig, ...]) -> int:
    spans = schedule(stages)
    return spans[-1].end_step if spans else 0


def lookup(stages: tuple[StageConfig, ...], step: int) -> Position:
    """The stage, phase and fraction through the phase of a global training step (pure)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    for span in schedule(stages):
        if step < span.end_step:
            within = step - span.first_step
            return Position(span, step, within, step - span.stage_first_step, within / span.steps)
    raise ValueError(f"step {step} is past the end of the curriculum ({total_steps(stages)} steps)")
