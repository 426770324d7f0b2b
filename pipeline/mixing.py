"""Mixing: which documents a phase trains on, how often, and in what order — exact in tokens.

Costs are counted in token slots: a document costs `num_tokens + 2` (its `<bos>` and `<eos>`); an SFT
conversation, already framed by the chat template, costs its `num_tokens`. A phase fills
`content_tokens(stage, phase)` slots exactly: the budget less the padding slack.

1. Buckets: each document falls in at most one bucket of the phase (`PhaseConfig.bucket_of`).
2. Held out first: in each bucket, the documents in selection-key order that start within the bucket's
   eval share and end within `max_eval_fraction` of its tokens (`EvalLimit`): the cap always holds.
3. `plan_phase`: each bucket's share of the content, in exact integers (largest remainder), becomes
   `epochs` full passes over its remaining supply plus a `remainder` of tokens; a share beyond the epoch
   cap fails naming the bucket, or is redistributed when the phase says so.
4. `expand_copies`: every document row, given its cumulative `start` in its bucket's selection order,
   becomes its copies (full epochs, then the partial epoch, whose last document is cut to a prefix so the
   share is met exactly) with a training-order key.

The selection key is seeded and content-independent (`unit_hash(seed, phase, id)`), so the choice of
documents does not depend on how Spark partitioned them. Rendering of SFT conversations with the
tokenizer's chat template and repository-level documents also live here.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pipeline.curriculum import PhaseConfig, StageConfig
from pipeline.documents import DOMAINS
from pipeline.errors import UserError

FRAMING_TOKENS = 2
"""`<bos>` and `<eos>` added around every pretraining document."""


class MixtureError(UserError, ValueError):
    """A phase's mixture cannot be met: the message names the phase, the bucket and what to change."""


# --- hashing ----------------------------------------------------------------------------------------------

def unit_hash(*parts) -> float:
    """A deterministic number in [0, 1) from the parts (blake2b; identical on every machine)."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / float(1 << 53)


def selection_key(seed: int, phase: str, doc_id: str, cost: int, length_bias: float) -> float:
    """Position in (0, 1) of a document in its bucket's sampling order (smaller is taken first).

    Weighted sampling without replacement (Efraimidis-Spirakis): with weight w = cost ** length_bias the
    exponential race k = -ln(1 - u) / w ranks long documents earlier when length_bias > 0. Any increasing
    map of k gives the same order; the one used spreads the keys over [0, 1), so that the KEY_BINS bins
    that split the work stay balanced: u itself when length_bias is 0 (uniform), else a logistic curve of
    ln k (with w in the thousands, 1 - exp(-k) would put nearly every document in the first bin).
    """
    u = unit_hash(seed, phase, "select", doc_id)
    if length_bias == 0 or u == 0:
        return u
    log_k = math.log(-math.log1p(-u)) - length_bias * math.log(max(cost, 1))
    return 1.0 / (1.0 + math.exp(-(log_k - LOG_KEY_CENTRE) / LOG_KEY_SCALE))


LOG_KEY_CENTRE = -12.0
LOG_KEY_SCALE = 4.0
"""ln k of long-biased keys spans about [-35, 3] (u from 2**-53, weights up to ~1e13); centre and scale put
that range inside (0.003, 0.98) of the logistic curve."""


# --- exact integer allocation -----------------------------------------------------------------------------

def allocate(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split `total` in proportion to `weights` into integers that sum to `total` (largest remainder;
    ties broken by key, so the result is deterministic)."""
    weight_sum = sum(weights.values())
    if total == 0 or weight_sum == 0:
        return {k: 0 for k in weights}
    exact = {k: total * w / weight_sum for k, w in weights.items()}
    result = {k: math.floor(v) for k, v in exact.items()}
    left = total - sum(result.values())
    for k in sorted(weights, key=lambda k: (-(exact[k] - result[k]), k))[:left]:
        result[k] += 1
    return result


def content_tokens(stage: StageConfig, phase: PhaseConfig) -> int:
    """Token slots the selection fills: the budget less `pack_slack` (kept for padding)."""
    return phase.tokens - math.ceil(phase.tokens * phase.pack_slack)


@dataclass(frozen=True)
class EvalLimit:
    """A bucket's held-out documents, in selection-key order: those that start before `target` tokens and
    end within `cap` tokens. So the split takes about its share of `eval_sequences` (one document may run
    past the target) and never more than the cap."""

    target: int
    cap: int
    """The phase's `max_eval_fraction` of the bucket's tokens."""


def eval_limits(stage: StageConfig, phase: PhaseConfig, totals: dict[str, int]) -> dict[str, EvalLimit]:
    """Per bucket: `eval_sequences` worth of held-out tokens, by weight, within `max_eval_fraction`."""
    want = int(phase.eval_sequences * stage.seq_len * (1 - phase.pack_slack))
    shares = allocate(want, phase.target_weights())
    limits = {}
    for k, share in shares.items():
        cap = int(totals.get(k, 0) * phase.max_eval_fraction)
        limits[k] = EvalLimit(min(share, cap), cap)
    return limits


def bucket_caps(phase: PhaseConfig, sources_by_bucket: dict[str, Iterable[str]]) -> dict[str, float]:
    """A bucket's epoch cap: the smallest cap of the sources it holds (documents repeat uniformly)."""
    caps = {}
    for key in phase.weights:
        sources = list(sources_by_bucket.get(key, ()))
        caps[key] = min([phase.max_epochs_by_source.get(s, phase.max_epochs) for s in sources] or [phase.max_epochs])
    return caps


# --- key bins ---------------------------------------------------------------------------------------------

KEY_BINS = 4096
"""Bins of a [0, 1) ordering key. Cumulative positions are running sums inside a bin (one task each) plus
the bin's offset, computed from per-bin sums (a few thousand numbers) on the driver."""


def key_bin(key: float) -> int:
    return min(int(key * KEY_BINS), KEY_BINS - 1)


def bin_offsets(bin_costs: dict[tuple, int]) -> dict[tuple, int]:
    """(group..., bin) -> cost of everything before that bin in its group (the group is all but the last
    element of the key; () groups everything)."""
    offsets, running = {}, {}
    for key in sorted(bin_costs):
        group = key[:-1]
        offsets[key] = running.get(group, 0)
        running[group] = offsets[key] + bin_costs[key]
    return offsets


@dataclass(frozen=True)
class EvalCut:
    """Where a bucket's held-out prefix ends, from per-bin sums: every bin before `bin` is held out whole
    (`before` tokens); inside `bin`, documents in key order are held out while they start within
    `start_room` and end within `end_room` tokens of the bin's start (`held_out_prefix`)."""

    bin: int
    before: int
    start_room: int
    end_room: int


def eval_cuts(bin_costs: dict[tuple[str, int], int], limits: dict[str, EvalLimit]) -> dict[str, EvalCut]:
    """Per bucket with a positive target: the key bin its target falls in (a target is below the bucket's
    total, so there is one). Only the documents of that bin need to be looked at one by one to place the
    split exactly; the bins before it end within the target, hence within the cap."""
    cuts: dict[str, EvalCut] = {}
    offsets = bin_offsets(bin_costs)
    for (bucket, b), cost in sorted(bin_costs.items()):
        limit = limits.get(bucket)
        if limit is None or limit.target <= 0 or bucket in cuts:
            continue
        before = offsets[(bucket, b)]
        if before + cost > limit.target:
            cuts[bucket] = EvalCut(b, before, limit.target - before, limit.cap - before)
    return cuts


def held_out_prefix(costs_in_key_order: Iterable[int], start_room: int, end_room: int) -> int:
    """Tokens of the documents of a bin (in key order) held out: the prefix of those that start before
    `start_room` and end within `end_room`."""
    used = 0
    for cost in costs_in_key_order:
        if used >= start_room or used + cost > end_room:
            break
        used += cost
    return used


# --- the plan ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BucketPlan:
    key: str
    target_weight: float
    supply: int
    """Tokens (slots) the bucket holds for training, after its held-out documents."""
    cap: float
    share: int
    """Tokens (slots) the phase takes from the bucket: epochs * supply + remainder."""
    epochs: int
    remainder: int

    @property
    def epochs_used(self) -> float:
        return self.share / self.supply if self.supply else 0.0


@dataclass(frozen=True)
class PhasePlan:
    phase: str
    content_tokens: int
    buckets: tuple[BucketPlan, ...]
    redistributed: bool

    def bucket(self, key: str) -> BucketPlan:
        return next(b for b in self.buckets if b.key == key)

    def report(self) -> dict:
        """Target vs achieved weight per bucket (achieved = share of the selected tokens)."""
        targets = allocate(self.content_tokens, {b.key: b.target_weight for b in self.buckets})
        return {
            b.key: {
                "target_weight": round(b.target_weight, 6),
                "achieved_weight": round(b.share / self.content_tokens, 6) if self.content_tokens else 0.0,
                "target_tokens": targets[b.key],
                "tokens": b.share,
                "supply_tokens": b.supply,
                "epochs": round(b.epochs_used, 4),
                "max_epochs": b.cap,
            }
            for b in self.buckets
        }


def plan_phase(phase: PhaseConfig, content: int, supply: dict[str, int], caps: dict[str, float]) -> PhasePlan:
    """Each bucket's exact share of `content` tokens, within its epoch cap (or a MixtureError)."""
    weights = phase.target_weights()
    capacity = {k: int(supply.get(k, 0) * caps[k]) for k in weights}
    shares = allocate(content, weights)
    short = [k for k in sorted(weights) if shares[k] > capacity[k]]
    redistributed = False
    if short and phase.on_shortfall == "fail":
        k = short[0]
        raise MixtureError(
            f"phase {phase.name!r}: bucket {k!r} cannot supply its share of {shares[k]:,} tokens "
            f"(weight {weights[k]:.4f} of {content:,}): it holds {supply.get(k, 0):,} tokens and may repeat them "
            f"at most {caps[k]:g} times ({capacity[k]:,} tokens). Lower its weight, raise max_epochs, add data, "
            f"or set on_shortfall = \"redistribute\""
        )
    if short:
        shares, redistributed = _water_fill(phase, content, weights, capacity), True
    buckets = []
    for k in sorted(weights):
        n = supply.get(k, 0)
        epochs, remainder = divmod(shares[k], n) if n else (0, 0)
        buckets.append(BucketPlan(k, weights[k], n, caps[k], shares[k], epochs, remainder))
    return PhasePlan(phase.name, content, tuple(buckets), redistributed)


def _water_fill(phase: PhaseConfig, content: int, weights: dict[str, float], capacity: dict[str, int]) -> dict:
    """Buckets short of their share give all they can; the rest is shared by the others by weight."""
    if sum(capacity.values()) < content:
        raise MixtureError(
            f"phase {phase.name!r}: needs {content:,} tokens but its buckets can supply only "
            f"{sum(capacity.values()):,} within their epoch caps ({capacity}); add data, lower the phase's "
            "tokens or raise max_epochs"
        )
    fixed: dict[str, int] = {}
    while True:
        open_weights = {k: w for k, w in weights.items() if k not in fixed and w > 0}
        shares = allocate(content - sum(fixed.values()), open_weights)
        over = {k for k, v in shares.items() if v > capacity[k]}
        if not over:
            result = {k: 0 for k in weights} | fixed | shares
            return result
        fixed.update({k: capacity[k] for k in over})


# --- copies -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Copy:
    """One use of a document in a phase: its first `cost` slots, in training order by (key, tie)."""

    doc_id: str
    epoch: int
    cost: int
    key: float
    tie: float
    held_out: bool


def expand_copies(
    doc_id: str, bucket: str, start: int, cost: int, difficulty: float | None, *,
    plan: PhasePlan, train_offset: dict[str, int], ordering: str, seed: int,
) -> list[Copy]:
    """The copies of one document, given its cumulative `start` in its bucket's selection order.

    Documents starting before the bucket's `train_offset` are held out (whole); the others train
    `epochs` times, plus once more, cut to fit, if they start within the partial epoch's `remainder`.
    """
    held_out = train_offset.get(bucket, 0)  # a bucket with no held-out cut has none
    if start < held_out:
        return [Copy(doc_id, 0, cost, unit_hash(seed, plan.phase, "eval", doc_id), 0.0, True)]
    b = plan.bucket(bucket)
    position = start - held_out
    uses = [(e, cost) for e in range(b.epochs)]
    if position < b.remainder:
        uses.append((b.epochs, min(cost, b.remainder - position)))
    copies = []
    for epoch, used in uses:
        tie = unit_hash(seed, plan.phase, "order", doc_id, epoch)
        if ordering == "shuffle":
            key = tie
        elif ordering == "easy_to_hard":
            key = min(max(0.5 if difficulty is None else float(difficulty), 0.0), 1.0 - 1e-12)
        else:  # interleave: the copy's place in its bucket's stream, as a fraction of the bucket's share
            key = min((epoch * b.supply + position + used / 2) / b.share, 1.0 - 1e-12)
        copies.append(Copy(doc_id, epoch, used, key, tie, False))
    return copies


# --- SFT --------------------------------------------------------------------------------------------------

def conversation(record: dict) -> list[dict]:
    """The messages of an SFT record: `messages` (role/content), or the trace SFT form `prompt` and
    `response` (plus an optional `reasoning`, put before the response in the assistant turn)."""
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list")
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError("every message needs a string role and a string content")  # noqa: TRY004
        if not any(m["role"] == "assistant" for m in messages):
            raise ValueError("a conversation needs at least one assistant message")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    if isinstance(record.get("prompt"), str) and isinstance(record.get("response"), str):
        answer = record["response"]
        if isinstance(record.get("reasoning"), str) and record["reasoning"]:
            answer = f"{record['reasoning']}\n\n{answer}"
        return [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": answer}]
    raise ValueError("an SFT record needs `messages` or `prompt` and `response`")


def record_labels(record: dict) -> tuple[str, int, float]:
    """(domain, tier, difficulty) of an SFT record, defaulting to general, 0 and 0.5."""
    domain = record.get("domain") if record.get("domain") in DOMAINS else "general"
    tier = record.get("tier") if isinstance(record.get("tier"), int) and 0 <= record["tier"] <= 4 else 0
    difficulty = record.get("difficulty")
    return domain, tier, float(difficulty) if isinstance(difficulty, (int, float)) else 0.5


def conversation_id(source: str, messages: list[dict]) -> str:
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()
    return f"{source}/{hashlib.sha256(blob).hexdigest()[:16]}"


class ChatRenderer:
    """Renders conversations with the tokenizer's chat template into ids and an assistant-only loss mask.

    For assistant message i, `head` renders messages[:i] with the generation prompt and `full` renders
    messages[:i+1]; the text `full` adds to `head` (the answer and its end-of-turn token) gets mask 1,
    everything between two answers mask 0. Each part is encoded on its own, so the mask lines up with the
    ids exactly (parts meet at special tokens, where byte-level BPE never merges across).
    """

    def __init__(self, tokenizer, template: str, bos_token: str, eos_token: str):
        import jinja2.sandbox

        def raise_exception(message):
            raise ValueError(f"chat template: {message}")

        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        self.template = env.from_string(template)
        self.tokenizer = tokenizer
        self.bos_token, self.eos_token = bos_token, eos_token
        self.bos_id, self.eos_id = tokenizer.token_to_id(bos_token), tokenizer.token_to_id(eos_token)

    def text(self, messages: list[dict], generation_prompt: bool = False) -> str:
        return self.template.render(
            messages=messages, add_generation_prompt=generation_prompt, bos_token=self.bos_token,
            eos_token=self.eos_token, tools=None,
        )

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids if text else []

    def render(self, messages: list[dict]) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        mask: list[int] = []
        done = ""
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            head = self.text(messages[:i], generation_prompt=True)
            full = self.text(messages[: i + 1])
            if not (head.startswith(done) and full.startswith(head)):
                raise ValueError("the chat template is not prefix-stable around assistant turns, so the loss "
                                 "mask cannot be derived from it")
            context, answer = self._ids(head[len(done):]), self._ids(full[len(head):])
            ids += context + answer
            mask += [0] * len(context) + [1] * len(answer)
            done = full
        whole = self.text(messages)
        if not whole.startswith(done):
            raise ValueError("the chat template renders the whole conversation differently from its turns")
        tail = self._ids(whole[len(done):])
        ids += tail
        mask += [0] * len(tail)
        if not ids or ids[0] != self.bos_id:
            ids, mask = [self.bos_id] + ids, [0] + mask
        if ids[-1] != self.eos_id:
            ids, mask = ids + [self.eos_id], mask + [mask[-1]]
        return ids, mask


def _checked(record) -> tuple[dict | None, str | None]:
    if not isinstance(record, dict):
        return None, "malformed_json"
    try:
        conversation(record)
    except ValueError:
        return None, "invalid_conversation"
    return record, None


def read_sft_records(lines: Iterable[bytes | str]) -> Iterator[tuple[dict | None, str | None]]:
    """(record, None) for each good JSON object line, (None, reason) for a bad one; blank lines skipped."""
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            yield None, "malformed_json"
            continue
        yield _checked(record)


def read_sft_file(uri: str) -> Iterator[tuple[dict | None, str | None]]:
    """The records of one SFT input: JSONL (plain, .gz, .zst) or Parquet (the traces job's `sft/` table)."""
    import fsspec

    if uri.endswith(".parquet"):
        import pyarrow.parquet as pq

        with fsspec.open(uri, "rb") as f:
            for record in pq.read_table(f).to_pylist():
                yield _checked(record)
        return
    with fsspec.open(uri, "rb", compression="infer") as f:
        yield from read_sft_records(f)


# --- repository-level documents ---------------------------------------------------------------------------

def repo_path(uri: str, repo: str) -> str:
    """A file's path inside its repository, for the header (`REPO/sub/file.py`); its name when unknown."""
    path = uri.split("#", 1)[0].split("://", 1)[-1]
    marker = f"/{repo}/"
    if marker in path:
        return repo + "/" + path.rsplit(marker, 1)[1]
    return posixpath.basename(path)


def file_header(path: str, first: bool) -> str:
    """The text put before each file of a repository-level document."""
    return f"# file: {path}\n" if first else f"\n# file: {path}\n"


def group_repo_files(paths: list[str], sizes: list[int], limit: int) -> list[list[int]]:
    """Indices of a repository's files, in path order, grouped into documents of at most `limit` tokens
    (sizes include the headers); a file larger than `limit` forms a document alone."""
    order = sorted(range(len(paths)), key=lambda i: paths[i])
    groups, current, used = [], [], 0
    for i in order:
        if current and used + sizes[i] > limit:
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += sizes[i]
    if current:
        groups.append(current)
    return groups
