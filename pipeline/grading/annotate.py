"""`rnj grade annotate`: label a stratified sample of documents with a teacher model, for `rnj grade fit`.

The teacher is any OpenAI-compatible chat-completions server (vLLM, SGLang and TGI all serve
`POST {endpoint}/chat/completions`). Each document goes out once with the rubric prompt below and comes back
as a JSON answer `{"reasoning_depth": 1-5, "education_level": 1-5}`; the labels file gets
`{"text", "level", "domain", "source", "reasoning_depth", "education_level", "id"}` per document, with
`level` the mean of the two scores and `source` naming the teacher (so levels are rank-normalised per
teacher when fitting).

- Sample: documents are grouped by domain and the `per_domain` with the smallest seeded hash of their id are
  taken from each group (deterministic, independent of input order).
- Concurrency: `concurrency` requests in flight (threads; the work is waiting on the server).
- Retries: a 429, a 5xx, a timeout or a refused connection is retried up to `retries` times with exponential
  back-off (`backoff` x 2^attempt seconds, at most `max_backoff`; a server's Retry-After is honoured).
- Budget: at most `max_requests` HTTP requests in this run, retries included; what is left unlabelled is
  labelled by the next run.
- Cache: every answer is appended to a JSONL cache keyed by the sha256 of (teacher model, prompt version,
  text), so a rerun (after a crash, a budget stop, or with a larger sample) sends only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import UserError

PROMPT_VERSION = "rnj-rubric/1"
RUBRIC = """You rate how demanding a document is for a student who reads it to learn. Rate two things, each \
from 1 to 5.

reasoning_depth: how many connected steps of reasoning the document needs or shows.
  1 = none: facts, lists, boilerplate or a single lookup
  2 = one or two simple steps
  3 = a short chain of steps (a routine exercise, a small program)
  4 = a long chain, or several ideas combined (a multi-step proof, a non-trivial algorithm)
  5 = deep, original reasoning (olympiad problems, research-level arguments, intricate systems code)

education_level: the schooling a reader needs to follow it.
  1 = primary school   2 = middle school   3 = high school   4 = undergraduate   5 = graduate or expert

Answer with one JSON object and nothing else: {"reasoning_depth": N, "education_level": N}"""
SCORES = ("reasoning_depth", "education_level")
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True, kw_only=True)
class AnnotateSettings:
    endpoint: str
    """Base URL of the server, e.g. http://127.0.0.1:8000/v1 (the client posts to {endpoint}/chat/completions)."""
    model: str
    """The teacher model's name on that server."""
    per_domain: int = 200
    """Documents sampled from each domain."""
    concurrency: int = 8
    """Requests in flight at once."""
    max_requests: int = 1000
    """HTTP requests this run may send, retries included."""
    retries: int = 5
    """Retries of one document after a retryable failure."""
    backoff: float = 1.0
    """First retry delay in seconds (doubling each time)."""
    max_backoff: float = 30.0
    """Longest delay between retries."""
    timeout: float = 120.0
    """Seconds to wait for one answer."""
    max_chars: int = 6000
    """Characters of a document sent (its beginning)."""
    api_key: str | None = None
    """Bearer token, when the server wants one."""
    seed: int = 0
    """Seed of the sample."""


@dataclass
class AnnotateStats:
    sampled: int = 0
    cached: int = 0
    labelled: int = 0
    failed: int = 0
    unanswered: int = 0
    """Sampled documents left for a later run (budget spent)."""
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)


def stratified_sample(documents: list[dict], per_domain: int, seed: int) -> list[dict]:
    """Up to `per_domain` documents of each domain: those with the smallest sha256(seed, id)."""
    by_domain: dict[str, list[tuple[str, dict]]] = {}
    for doc in documents:
        key = hashlib.sha256(f"{seed}:{doc['id']}".encode()).hexdigest()
        by_domain.setdefault(doc.get("domain") or "general", []).append((key, doc))
    sample = []
    for domain in sorted(by_domain):
        sample += [doc for _, doc in sorted(by_domain[domain], key=lambda kv: kv[0])[:per_domain]]
    return sample


def cache_key(model: str, text: str) -> str:
    return hashlib.sha256(f"{model}\n{PROMPT_VERSION}\n{text}".encode()).hexdigest()


def parse_answer(content: str) -> dict[str, int]:
    """The two scores from the teacher's reply (the first JSON object in it); ValueError when unusable."""
    match = re.search(r"\{.*?\}", content, re.DOTALL)
    if match is None:
        raise ValueError(f"no JSON object in the answer {content[:80]!r}")
    answer = json.loads(match.group(0))
    scores = {}
    for name in SCORES:
        value = answer.get(name)
        if not isinstance(value, (int, float)) or not 1 <= value <= 5:
            raise ValueError(f"{name} must be a number from 1 to 5, got {value!r}")
        scores[name] = round(value)
    return scores


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit, self.used, self._lock = limit, 0, threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.used >= self.limit:
                return False
            self.used += 1
            return True


class TeacherClient:
    """POSTs one chat-completions request per document, with retries and back-off."""

    def __init__(self, settings: AnnotateSettings, budget: _Budget, sleep: Callable[[float], None] = time.sleep):
        self.settings, self.budget, self.sleep = settings, budget, sleep
        self.url = settings.endpoint.rstrip("/") + "/chat/completions"

    def rate(self, text: str, errors: dict[str, int], lock: threading.Lock) -> dict[str, int] | None:
        """The scores of `text`, or None when the budget ran out first. Raises RuntimeError when every try
        failed or the answer cannot be used."""
        s = self.settings
        body = json.dumps({"model": s.model, "temperature": 0, "max_tokens": 64,
                           "messages": [{"role": "system", "content": RUBRIC},
                                        {"role": "user", "content": text[: s.max_chars]}]}).encode()
        headers = {"Content-Type": "application/json"}
        if s.api_key:
            headers["Authorization"] = f"Bearer {s.api_key}"
        for attempt in range(s.retries + 1):
            if not self.budget.take():
                return None
            delay = min(s.max_backoff, s.backoff * 2 ** attempt)
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=s.timeout) as response:
                    reply = json.loads(response.read())
                return parse_answer(reply["choices"][0]["message"]["content"])
            except urllib.error.HTTPError as err:
                reason = f"http {err.code}"
                if err.code not in RETRY_STATUS:
                    raise RuntimeError(f"{reason}: {err.read()[:200]!r}") from None
                retry_after = err.headers.get("Retry-After") if err.headers else None
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    delay = min(s.max_backoff, float(retry_after))
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                reason = type(err).__name__
            except (ValueError, KeyError, IndexError, TypeError) as err:
                raise RuntimeError(f"unusable answer: {err}") from None
            with lock:
                errors[reason] = errors.get(reason, 0) + 1
            if attempt < s.retries:
                self.sleep(delay)
        raise RuntimeError(f"gave up after {s.retries + 1} tries")


def annotate(documents: list[dict], settings: AnnotateSettings, out_path: str, cache_path: str,
             sleep: Callable[[float], None] = time.sleep) -> AnnotateStats:
    """Label a stratified sample of `documents` ({id, text, domain}) and write the labels file."""
    if settings.concurrency < 1 or settings.max_requests < 0 or settings.per_domain < 1:
        raise UserError("concurrency and per-domain must be at least 1, max-requests at least 0")
    sample = stratified_sample(documents, settings.per_domain, settings.seed)
    cache = _read_cache(cache_path)
    stats = AnnotateStats(sampled=len(sample))
    todo = [d for d in sample if cache_key(settings.model, d["text"]) not in cache]
    stats.cached = len(sample) - len(todo)
    budget, lock = _Budget(settings.max_requests), threading.Lock()
    client = TeacherClient(settings, budget, sleep)
    Path(cache_path).parent.mkdir(parents=True, exist_ok=True)

    def work(doc: dict) -> None:
        try:
            scores = client.rate(doc["text"], stats.errors, lock)
        except RuntimeError as err:
            with lock:
                stats.failed += 1
                stats.errors[str(err)[:60]] = stats.errors.get(str(err)[:60], 0) + 1
            return
        with lock:
            if scores is None:
                stats.unanswered += 1
                return
            key = cache_key(settings.model, doc["text"])
            cache[key] = scores
            with open(cache_path, "a", encoding="utf-8") as f:  # appended at once: a crash loses nothing
                f.write(json.dumps({"key": key, "model": settings.model, "scores": scores}) + "\n")
            stats.labelled += 1

    with ThreadPoolExecutor(max_workers=settings.concurrency) as pool:
        list(pool.map(work, todo))
    stats.requests = budget.used
    _write_labels(out_path, sample, cache, settings.model)
    return stats


def _read_cache(path: str) -> dict[str, dict[str, int]]:
    cache: dict[str, dict[str, int]] = {}
    if Path(path).is_file():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                cache[item["key"]] = item["scores"]
    return cache


def _write_labels(path: str, sample: list[dict], cache: dict, model: str) -> None:
    """The labels of every sampled document that has an answer, in sample order."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for doc in sample:
            scores = cache.get(cache_key(model, doc["text"]))
            if scores is None:
                continue
            level = sum(scores[name] for name in SCORES) / len(SCORES)
            f.write(json.dumps({"id": doc["id"], "text": doc["text"], "level": level,
                                "domain": doc.get("domain") or "general", "source": f"teacher:{model}",
                                **scores}, ensure_ascii=False) + "\n")


def read_documents(uri: str) -> list[dict]:
    """{id, text, domain} of a documents table (a Parquet file or folder, such as a build's grade/documents)
    or of a JSONL file (optionally .gz/.zst) with `text` and optional `id` and `domain`."""
    import fsspec

    if re.search(r"\.jsonl(\.gz|\.zst)?$", uri):
        docs = []
        try:
            with fsspec.open(uri, "rt", encoding="utf-8", compression="infer") as f:
                for number, line in enumerate(f):
                    if line.strip():
                        item = json.loads(line)
                        docs.append({"id": str(item.get("id", number)), "text": item["text"],
                                     "domain": item.get("domain")})
        except FileNotFoundError:
            raise UserError(f"no documents at {uri}: give a documents Parquet folder or a .jsonl file") from None
        return docs
    import pyarrow.dataset as ds

    try:
        table = ds.dataset(uri, format="parquet").to_table(columns=["id", "text", "domain"])
    except (FileNotFoundError, ValueError) as err:
        raise UserError(f"cannot read documents from {uri}: {err}; give a Parquet folder or a .jsonl file") from None
    return table.to_pylist()
