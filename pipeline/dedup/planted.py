"""A planted near-duplicate set from real text, with the true Jaccard of every planted pair.

Groups: an original, `copies` near copies (word edits until the true shingle Jaccard to the original
falls in `near_band`, then whitespace, case and punctuation noise that normalisation must undo) and one
far variant (edited down into `far_band`). Distinct documents: texts that share little with any other.
Used by the quality-bar tests and by bench/minhash.py; deterministic for a seed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import pyarrow as pa

from pipeline.dedup.normalize import prose_tokens, prose_words
from pipeline.dedup.shingles import shingle_hashes

_TOKEN = re.compile(r"\S+")


@dataclass
class PlantedSet:
    docs: list[dict]
    """{id, text}: every document (originals, copies, far variants, distinct)."""
    groups: list[list[str]] = field(default_factory=list)
    """Ids of each group's original and near copies: one survivor each is the goal."""
    far: list[str] = field(default_factory=list)
    """Far variants (true Jaccard to their original in `far_band`): must stay unmerged."""
    distinct: list[str] = field(default_factory=list)
    """Unrelated documents: must stay unmerged."""
    pairs: list[tuple[str, str, float]] = field(default_factory=list)
    """(a, b, true Jaccard) of every pair inside a group, plus each far variant with its original."""


_WORD = re.compile(r"[^\W_]+")
_DIGIT = re.compile(r"\d")


def shingle_set(text: str, n: int = 5) -> set[int]:
    """The prose shingle hashes of one text. Normalised with Python's `re` (compiling RE2's Unicode classes
    costs milliseconds a call, and planting calls this thousands of times); `build_planted` only uses
    texts on which it agrees with `prose_words`."""
    return set(shingle_hashes(prose_tokens(pa.array([_python_words(text)])), n).hash64.tolist())


def _python_words(text: str) -> str:
    return _DIGIT.sub("0", " ".join(_WORD.findall(text.lower())))


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def build_planted(texts: list[str], groups: int, copies: int, distinct: int, seed: int = 0,
                  near_band: tuple[float, float] = (0.86, 0.97), far_band: tuple[float, float] = (0.45, 0.7),
                  min_words: int = 120, max_words: int = 300, n: int = 5, reorder: float = 0.0) -> PlantedSet:
    """Plant `groups` groups and `distinct` unrelated documents from `texts` (real prose, each cut to its
    first `max_words` words; texts shorter than `min_words` are skipped). With `reorder` > 0, that share of
    the near copies also has its text cut in three paragraphs and one of them moved, before the word edits
    (skipped where the move alone would take the copy below `near_band`)."""
    rng = random.Random(seed)
    words = [_TOKEN.findall(t) for t in texts]
    cut = [" ".join(w[:max_words]) for w in words if len(w) >= min_words]
    reference = prose_words(pa.array(cut, pa.string())).to_pylist()
    cut = [t for t, r in zip(cut, reference) if _python_words(t) == r]  # where `shingle_set` is exact
    pool = _unrelated(cut[: 3 * (groups + distinct)], n)
    if len(pool) < groups + distinct:
        raise ValueError(f"only {len(pool)} usable texts for {groups} groups and {distinct} distinct documents")
    rng.shuffle(pool)
    vocabulary = sorted({w for t in pool for w in _TOKEN.findall(t.lower()) if w.isalpha()})
    planted = PlantedSet(docs=[])
    for g in range(groups):
        original = pool[g]
        base = shingle_set(original, n)
        members = [(f"planted/g{g:03d}/0", original)]
        for c in range(1, copies + 1):
            start = _reordered(original, base, near_band[0], rng, n) if reorder and rng.random() < reorder else None
            edited = _edit_to(original, base, near_band, vocabulary, rng, n, start=start)
            members.append((f"planted/g{g:03d}/{c}", _noisy(edited, rng)))
        far_id = f"planted/g{g:03d}/far"
        far_text = _edit_to(original, base, far_band, vocabulary, rng, n)
        sets = {i: shingle_set(t, n) for i, t in members}
        ids = [i for i, _ in members]
        for x in range(len(ids)):
            for y in range(x + 1, len(ids)):
                planted.pairs.append((ids[x], ids[y], jaccard(sets[ids[x]], sets[ids[y]])))
        planted.pairs.append((ids[0], far_id, jaccard(base, shingle_set(far_text, n))))
        planted.docs += [{"id": i, "text": t} for i, t in members] + [{"id": far_id, "text": far_text}]
        planted.groups.append(ids)
        planted.far.append(far_id)
    for d in range(distinct):
        doc_id = f"planted/d{d:03d}"
        planted.docs.append({"id": doc_id, "text": pool[groups + d]})
        planted.distinct.append(doc_id)
    return planted


def _unrelated(texts: list[str], n: int, limit: float = 0.3) -> list[str]:
    """Texts (first come first kept) sharing at most `limit` of their shingles with any kept before."""
    seen: dict[int, int] = {}
    kept: list[str] = []
    for text in dict.fromkeys(texts):
        shingles = shingle_set(text, n)
        overlap: dict[int, int] = {}
        for s in shingles:
            if s in seen:
                overlap[seen[s]] = overlap.get(seen[s], 0) + 1
        if any(count > limit * len(shingles) for count in overlap.values()):
            continue
        for s in shingles:
            seen.setdefault(s, len(kept))
        kept.append(text)
    return kept


def _edit_to(text: str, base: set, band: tuple[float, float], vocabulary: list[str], rng: random.Random,
             n: int, start: str | None = None) -> str:
    """Substitute, delete or insert one random word at a time, from `start` (default `text`), until the true
    Jaccard to `text` reaches a target drawn from `band` (one edit moves it by less than the band is wide,
    for documents this long)."""
    low, high = band
    target = rng.uniform(low, high)
    current, current_similarity = _TOKEN.findall(text), 1.0
    if start is not None:
        current, current_similarity = _TOKEN.findall(start), jaccard(base, shingle_set(start, n))
    # One edit removes about n shingles of S: jump most of the way at once, then walk one edit at a time.
    size = len(base)
    jump = int(0.7 * size * max(current_similarity - target, 0.0) / (n * (1 + target)))
    for _ in range(jump):
        current = _edit_once(current, vocabulary, rng, n)
    if jump:
        current_similarity = jaccard(base, shingle_set(" ".join(current), n))
    while True:
        trial = _edit_once(current, vocabulary, rng, n)
        similarity = jaccard(base, shingle_set(" ".join(trial), n))
        if similarity < low <= current_similarity <= high:
            return " ".join(current)
        if similarity <= target:
            return " ".join(trial)
        current, current_similarity = trial, similarity


def _reordered(text: str, base: set, low: float, rng: random.Random, n: int) -> str | None:
    """`text` cut in three paragraphs with the last moved first, or None where that alone falls below `low`."""
    words = _TOKEN.findall(text)
    first = rng.randrange(len(words) // 4, len(words) // 2)
    second = rng.randrange(first + len(words) // 4, len(words) - len(words) // 8)
    paragraphs = [words[:first], words[first:second], words[second:]]
    moved = "\n\n".join(" ".join(p) for p in [paragraphs[2], paragraphs[0], paragraphs[1]])
    return moved if jaccard(base, shingle_set(moved, n)) >= low else None


def _edit_once(words: list[str], vocabulary: list[str], rng: random.Random, n: int) -> list[str]:
    """A copy of `words` with one word substituted, deleted or inserted at a random place."""
    words = list(words)
    i = rng.randrange(len(words))
    op = rng.random()
    if op < 0.6:
        words[i] = rng.choice(vocabulary)
    elif op < 0.8 and len(words) > n + 1:
        del words[i]
    else:
        words.insert(i, rng.choice(vocabulary))
    return words


def _noisy(text: str, rng: random.Random) -> str:
    """Whitespace, case and punctuation noise: invisible after normalisation, fatal to naive shingles."""
    words = text.split(" ")
    out = []
    for w in words:
        r = rng.random()
        if r < 0.05:
            w = w.upper()
        elif r < 0.1:
            w = w + ","
        out.append(w)
    return rng.choice(["  ", " ", "\n"]).join(out) if rng.random() < 0.5 else "  ".join(out)
