"""The build file: one TOML file describes a whole build, parsed here into typed, frozen dataclasses.

Sections: `[build]`, `[[sources]]`, `[ingest]`, `[dedup]`, `[grade]`, `[traces]`, `[tokenizer]`,
`[[stages]]` (with `[[stages.phases]]`) and `[train]`. Each section's dataclass lives beside the code that
uses it; this module composes them and resolves relative URIs against the build file's folder. Jobs and the
trainer read the same file through `load_build`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import tomllib
from dataclasses import dataclass, field
from typing import Literal

import fsspec

from pipeline.configuration import ConfigError, parse_dataclass, require
from pipeline.curriculum import StageConfig, check_stages, resolve_stage_uris
from pipeline.dedup.config import DedupConfig
from pipeline.documents import DOMAINS
from pipeline.grading.config import GradeConfig
from pipeline.traces.config import TracesConfig

__all__ = [
    "BuildConfig",
    "BuildSection",
    "ConfigError",
    "IngestConfig",
    "SourceConfig",
    "TokenizerConfig",
    "TrainConfig",
    "load_build",
    "parse_build",
    "resolve_uri",
]


@dataclass(frozen=True, kw_only=True)
class BuildSection:
    name: str
    """Name of the build; shown in reports and written into every manifest."""
    output: str
    """Root URI of everything the build writes (each job writes a folder under it)."""
    seed: int = 0
    """Seed of every random choice in the build (sampling, shuffles, planted test data)."""
    output_files: int = 4
    """Files per output table. Fixed, not taken from Spark's partitioning, so that the same inputs give
    byte-identical outputs on one core or a hundred executors."""

    def __post_init__(self) -> None:
        require(self.output_files >= 1, "output_files must be at least 1")


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    name: str
    """Short unique name: becomes the `source` column and the prefix of derived ids."""
    uri: str
    """A file, folder or glob on any fsspec filesystem (local, gs://, s3://, memory://)."""
    format: Literal["jsonl", "parquet", "files"]
    """`jsonl` (plain, .gz or .zst), `parquet`, or `files`: a folder of source files, one document each."""
    domain: str | None = None
    """Domain hint (code, math, science, general, trace) that grading may confirm or override."""
    license: str = "unknown"
    """Licence of the source, copied into every document's meta."""
    lang: str | None = None
    """Language of every document when the input does not say (python, en ...)."""
    text_field: str = "text"
    """Field (JSONL) or column (Parquet) holding the text."""
    id_field: str = "id"
    """Field or column holding the input's own id; documents without one get a content-derived id."""
    include: tuple[str, ...] = ()
    """For `files`: file name patterns to read (e.g. "*.py"); empty means every file."""
    meta: dict[str, str] = field(default_factory=dict)
    """Extra key/values copied into every document's meta."""
    optional: bool = False
    """A source that may be missing or empty (a feed that is sometimes absent). Otherwise a source that
    yields no file or no record stops the build, naming the source and its URI."""

    def __post_init__(self) -> None:
        require(bool(self.name) and "/" not in self.name, f"source name {self.name!r} must be non-empty, no '/'")
        require(self.domain is None or self.domain in DOMAINS, f"domain {self.domain!r} is not one of {DOMAINS}")


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    max_doc_bytes: int = 4_000_000
    """Records larger than this (UTF-8 bytes) are quarantined as `oversized`; a 4 MB text is a data dump."""
    max_control_fraction: float = 0.01
    """Text with a larger share of non-text control characters is `binary` (real text has almost none)."""
    quarantine_raw_bytes: int = 4096
    """How many raw bytes of a bad record the quarantine table keeps for inspection."""

    def __post_init__(self) -> None:
        require(self.max_doc_bytes > 0, "max_doc_bytes must be positive")
        require(0 <= self.max_control_fraction <= 1, "max_control_fraction must lie in [0, 1]")


LLAMA3_SPECIAL_TOKENS = (
    "<|begin_of_text|>", "<|end_of_text|>",
    "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>", "<|reserved_special_token_3|>",
    "<|start_header_id|>", "<|end_header_id|>",
    "<|reserved_special_token_4|>", "<|eot_id|>",
)
"""The named special tokens of the released Rnj-1 (Llama-3 layout), in id order from the first special id."""

DEFAULT_TOKENIZER_DOMAIN_WEIGHTS = {"code": 0.35, "math": 0.2, "science": 0.15, "general": 0.25, "trace": 0.05}


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    """`[tokenizer]`: train a byte-level BPE on a stratified sample of the graded documents, or load one.

    docs/tokenizer.md explains the pre-tokenisation, the special-token table and the chat template.
    """

    path: str | None = None
    """An existing tokenizer.json (a released model's) to load instead of training one; a
    tokenizer_config.json beside it is copied too. The training fields below are then unused."""
    vocab_size: int = 128_000
    """Ordinary (BPE) vocabulary size, the 256 byte tokens included; special tokens are placed after it."""
    min_frequency: int = 2
    """A merge must occur at least this often in the sample to be learned."""
    sample_bytes: int = 1_000_000_000
    """UTF-8 bytes of text to train on, drawn from the graded documents stratified by domain."""
    domain_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TOKENIZER_DOMAIN_WEIGHTS))
    """Domain -> share of the sample (renormalised over the domains present). Documents of a domain not
    listed here, or with no domain, are never sampled. A domain smaller than its share is taken whole."""
    heldout_fraction: float = 0.02
    """Share of documents (chosen by a hash of seed and id) never sampled for training; the bytes/token
    report is measured on them."""
    special_tokens: tuple[str, ...] = LLAMA3_SPECIAL_TOKENS
    """Named special tokens in id order from the first special id. Appending is safe; reordering or
    removing changes ids."""
    extra_tokens: tuple[str, ...] | None = None
    """Markers that documents contain and that must stay one token each, placed right after
    `special_tokens`: matched in document text and always decoded (not `special`). None: the trace
    format's markers (`pipeline.traces.format.MARKERS`: `<|source|>`, `<|trace|>` ...); [] for none."""
    num_special_tokens: int = 256
    """Slots after the ordinary vocabulary; those not named above are `<|reserved_special_token_N|>`."""
    special_tokens_placement: Literal["after", "before"] = "after"
    """`after`: ordinary tokens take ids 0..vocab_size-1 and specials follow (Llama-3, Rnj-1);
    `before`: specials take ids 0..num_special_tokens-1 and the ordinary tokens follow."""
    bos_token: str = "<|begin_of_text|>"
    """Beginning of a sequence (id 128000 in the 128K layout)."""
    eos_token: str = "<|eot_id|>"
    """End of a turn and the stop token of generation (id 128009, as the released generation config)."""
    pad_token: str = "<|end_of_text|>"
    """Padding (id 128001, as the released generation config; the Llama-3 name of that id)."""
    add_bos: bool = True
    """The saved tokenizer prepends the bos token when asked for special tokens (the tokenize job never
    adds any: the shard builder places separators)."""
    normalization: Literal["none", "nfc"] = "none"
    """`none`: no normaliser, so decode(encode(x)) == x for any text; the pipeline's text is NFC already
    (ingest) and the training sample is NFC-normalised. `nfc`: NFC inside tokenizer.json too, so
    inference-time input is normalised like the training data, but non-NFC input decodes to its NFC form."""
    system_prompt: str = "You are Rnj-1, a helpful assistant."
    """System line of the chat template when a conversation brings none."""
    batch_documents: int = 512
    """Documents per `encode_batch` call inside a task."""

    def __post_init__(self) -> None:
        require(self.vocab_size >= 512, "vocab_size must be at least 512 (256 byte tokens plus merges)")
        require(self.min_frequency >= 1, "min_frequency must be at least 1")
        require(self.sample_bytes > 0, "sample_bytes must be positive")
        require(all(w >= 0 for w in self.domain_weights.values()) and sum(self.domain_weights.values()) > 0,
                "domain_weights must be non-negative with a positive sum")
        require(0 <= self.heldout_fraction < 1, "heldout_fraction must lie in [0, 1)")
        names = self.special_tokens + self.extra_token_names()
        require(len(set(names)) == len(names), "special_tokens and extra_tokens must not repeat a name")
        require(all(names), "special token names must be non-empty")
        require(len(names) <= self.num_special_tokens,
                f"{len(names)} named special tokens do not fit in num_special_tokens = {self.num_special_tokens}")
        for role in ("bos_token", "eos_token", "pad_token"):
            require(getattr(self, role) in self.special_tokens, f"{role} {getattr(self, role)!r} is not in special_tokens")
        require(self.batch_documents >= 1, "batch_documents must be at least 1")

    def extra_token_names(self) -> tuple[str, ...]:
        """`extra_tokens`, or the trace format's markers when it is None."""
        if self.extra_tokens is not None:
            return self.extra_tokens
        from pipeline.traces.format import MARKERS  # here: the config module stays free of the traces code

        return MARKERS


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    preset: str = "tiny"
    """Model preset from model/config.py's registry (`rnj model info PRESET` shows its size)."""
    model_overrides: dict[str, int | float | str] = field(default_factory=dict)
    """Fields of the preset to change (e.g. n_layers = 4). vocab_size and max_seq_len come from the shards."""
    run_dir: str | None = None
    """Where checkpoints and metrics.jsonl go: a local or mounted path; default OUTPUT/train."""
    micro_batch_size: int = 1
    """Sequences per forward/backward on each rank; the global batch is reached by gradient accumulation."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value."""
    weight_decay: float = 0.1
    """Decoupled weight decay of the hidden matrices (Muon); embeddings and norms are not decayed."""
    muon_momentum: float = 0.95
    """Muon's Nesterov momentum."""
    checkpoint_every: int = 100
    """Steps between checkpoints (one is also written at the end of every stage and kept)."""
    keep_checkpoints: int = 2
    """How many recent checkpoints of a stage to keep (stage-final ones are always kept)."""
    eval_sequences: int = 8
    """Held-out sequences evaluated at the end of every phase (0: no evaluation)."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """How a torchrun job splits the work: "ddp" replicates the model on every rank (models that fit one
    GPU with their gradients and optimizer state); "fsdp" shards parameters, gradients and optimizer state
    over the ranks (FSDP2 `fully_shard` per block, Muon through model/muon_distributed.py). One process
    ignores it."""
    activation_checkpointing: Literal["none", "selective", "full"] = "none"
    """Recompute activations in backward instead of keeping them: "selective" recomputes every other block,
    "full" every block (about one more forward per step; what 32K context needs on one GPU)."""
    compile: bool = False
    """torch.compile each transformer block (fullgraph); worth it on GPUs, slow to start on CPU."""

    def __post_init__(self) -> None:
        require(self.micro_batch_size >= 1, "micro_batch_size must be at least 1")
        require(self.checkpoint_every >= 1, "checkpoint_every must be at least 1")
        require(self.keep_checkpoints >= 1, "keep_checkpoints must be at least 1")
        require(self.grad_clip > 0, "grad_clip must be positive")


@dataclass(frozen=True, kw_only=True)
class BuildConfig:
    build: BuildSection
    sources: tuple[SourceConfig, ...]
    ingest: IngestConfig = IngestConfig()
    dedup: DedupConfig = DedupConfig()
    grade: GradeConfig = GradeConfig()
    traces: TracesConfig = TracesConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    train: TrainConfig = TrainConfig()
    stages: tuple[StageConfig, ...] = ()
    """The curriculum: `[[stages]]` in training order, each with `[[stages.phases]]` (pipeline/curriculum.py)."""
    path: str = ""
    """The file this build was read from (set by the loader, not by the file)."""

    def __post_init__(self) -> None:
        names = [s.name for s in self.sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        require(not duplicates, f"source names must be unique; repeated: {duplicates}")
        check_stages(self.stages)

    def output_uri(self, *parts: str) -> str:
        """URI of a path under the build's output root."""
        return posixpath.join(self.build.output.rstrip("/"), *parts)

    def section_hash(self, *names: str) -> str:
        """Stable hash of some sections: part of a job's input hash, so editing them reruns the job."""
        payload = {name: _jsonable(getattr(self, name)) for name in names}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def resolve_uri(base: str, uri: str) -> str:
    """`uri` as given when it has a scheme or is absolute, else relative to the folder `base`."""
    if "://" in uri or uri.startswith("/"):
        return uri
    if "://" in base:
        return posixpath.join(base, uri)
    return posixpath.normpath(posixpath.join(base, uri))


def load_build(path: str) -> BuildConfig:
    """Read and check a build file from any fsspec URI; relative URIs resolve against its folder."""
    try:
        with fsspec.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError as err:
        raise ConfigError(f"build file {path} does not exist") from err
    if "://" not in path:
        path = os.path.abspath(path)
    return parse_build(raw.decode("utf-8"), path)


def parse_build(text: str, path: str) -> BuildConfig:
    """Parse the text of a build file that lives at `path` (used for messages and relative URIs)."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    if "path" in table:
        raise ConfigError(f"{path}: unknown key 'path'")
    config = parse_dataclass(BuildConfig, table, "", path)
    base = posixpath.dirname(path) if "://" in path else _local_dirname(path)
    build = dataclasses.replace(config.build, output=resolve_uri(base, config.build.output))
    sources = tuple(dataclasses.replace(s, uri=resolve_uri(base, s.uri)) for s in config.sources)
    return _resolve_sections(dataclasses.replace(config, build=build, sources=sources, path=path), base)


def _resolve_sections(config: BuildConfig, base: str) -> BuildConfig:
    """Resolve the URIs inside sections (any field named `*uri`, `*path` or `*uris`)."""
    updates = {}
    for name in ("dedup", "grade", "traces", "tokenizer", "train"):
        section = getattr(config, name)
        updates[name] = _resolve_fields(section, base)
    updates["stages"] = resolve_stage_uris(config.stages, lambda uri: resolve_uri(base, uri))
    return dataclasses.replace(config, **updates)


def _resolve_fields(section, base: str):
    changes = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            changes[f.name] = _resolve_fields(value, base)
        elif f.name.endswith(("uri", "path")) and isinstance(value, str):
            changes[f.name] = resolve_uri(base, value)
        elif f.name.endswith(("uris", "paths")) and isinstance(value, tuple):
            changes[f.name] = tuple(resolve_uri(base, v) for v in value)
    return dataclasses.replace(section, **changes) if changes else section


def _local_dirname(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))
