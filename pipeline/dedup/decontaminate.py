"""Decontamination: runs of words shared with an evaluation set, robust to renamed names.

What is compared (items and documents alike): lowercase words, digits kept, `_` a separator
(`count_vowel_words` and the prose "count vowel words" are the same three words). Two kinds of word take
no part, so that an edited copy still matches:

- **names**: an item's names are what it binds (function, class, parameter and variable names, found
  with `ast` when the item parses as Python, by pattern in code that does not) and the proper names of
  its prose (capitalised words seen mid-sentence); an edited copy renames exactly these (`sentence` ->
  `text`, `Natalia` -> `Maria`). A word that more items use as a name than as a plain word is set aside
  everywhere; `wrapper`, mostly a plain word, stays.
- **words no item uses**: a renamed copy's new names (`count_vowels_impl` leaves `impl`, `streak_len`
  leaves nothing) and a document's own vocabulary.

What remains is read as n-grams of consecutive remaining words that lie within `SPREAD` x n words of the
original text. An item's n-gram is **evidence** only when it holds at least `min_content_words` content
words (not Python keywords, builtins, common methods, English function words or single characters: the
idioms every program shares) and occurs in fewer than `template_items` items (a generator's stock phrase
is no evidence of any one item). A document contains an item when it holds `min_ngrams` of the item's
evidence n-grams, or `min_item_fraction` of all its n-grams (see `contaminating_items`); a code item found
so needs `code_min_word_fraction` of its evidence n-grams too, or `code_min_prompt_fraction` of those of its
prompt (signature and docstring, `item_prompt`): one shared docstring paragraph is not a copy, a pasted
prompt is.

Code items have a second signal, their **shape** (`code_tokens`: every name one placeholder, keywords,
attributes, literals and operators themselves, layout ignored): a copy that renames and reformats keeps
it token for token. A document also contains a code item when it holds `code_min_ngrams` and
`code_min_fraction` of the item's shape `code_ngram`-grams.

The evaluation sets are small: their tables (sorted uint64 arrays) travel to every task. A batch is
checked with vectorised numpy; only the rare matching documents are handled one by one, when the span (not
the document) is to be removed.
"""

from __future__ import annotations

import ast
import builtins
import itertools
import json
import keyword
import re
import textwrap
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.dedup.code_tokens import code_tokens, ngram_kernel
from pipeline.dedup.config import DecontaminateConfig
from pipeline.dedup.normalize import Tokens, prose_tokens
from pipeline.dedup.shingles import fmix64, token_hashes

SPREAD = 3
"""An n-gram's remaining words must lie within SPREAD x n words of the document (the rest are names and
unknown words): a copy with renamed names qualifies, words scattered over a page do not."""
NAME_SHARE = 0.5
"""A word is set aside as a name when more than this share of the items that hold it use it as a name."""
REGION_PASSES = 3
"""Span removal repeats (at most this often) while the cut text still matches: joining the text around a
cut can make a new match."""

_HORNER = 0x9FB21C651E98DF25
_COUNT_SALT = 0x5851F42D4C957F2D
_IDENTIFIER = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")

_COMMON_WORDS = """
a an the and or but not no nor of to in on at by for from with without into onto over under as is are was
were be been being am do does did done have has had having it its this that these those there here then
than so if else when while where which who whom whose what why how all any each every some such only own
same other another more most less least many much few one two three first last next new old up down out
off again further once very can could will would shall should may might must we you he she they i me my
your his her their our them us him yourself itself also just both either neither between after before
about above below through during until against per via etc eg ie e g
self cls args kwargs init new name main doc file class module value values key keys item items get set
append extend insert remove pop clear copy update add discard join split rsplit strip lstrip rstrip lower
upper replace find rfind index count sort sorted reverse reversed format startswith endswith encode decode
read write open close isinstance issubclass len range enumerate zip map filter min max sum abs int str
float bool list dict tuple none true false return returns raise raises yield lambda def import
"""


@dataclass(frozen=True)
class EvalSet:
    path: str
    items: int
    ngrams: int
    """Evidence n-grams of this file's items."""
    unmatchable: int = 0
    """Items with no n-gram at all (fewer than `ngram` words once names are set aside): nothing finds them."""


@dataclass(frozen=True)
class CodeNgrams:
    """The code items' distinct shape n-grams (`code_tokens`), sorted by hash (`hashes[k]` belongs to
    `items[k]`); idioms (n-grams of `template_items` items or more) are left out."""

    hashes: np.ndarray
    items: np.ndarray
    sizes: np.ndarray
    """Shape n-grams of each item (0 for prose items)."""
    lengths: np.ndarray
    """Shape tokens of each item: how far apart two matches of one item may lie in one region."""
    is_code: np.ndarray
    """Per item: is it code (`is_code_item`)?"""

    def __len__(self) -> int:
        return len(self.hashes)


def empty_code_ngrams(items: int = 0, is_code: np.ndarray | None = None) -> CodeNgrams:
    return CodeNgrams(np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(items, np.int64),
                      np.zeros(items, np.int64), np.zeros(items, bool) if is_code is None else is_code)


@dataclass(frozen=True)
class EvalNgrams:
    """Every evaluation item's distinct evidence n-grams, sorted by hash (`hashes[k]` belongs to `items[k]`),
    and the words that n-grams are made of."""

    hashes: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    """What `hashes[k]` is worth as evidence: 1 / the number of items that hold it; 0 for an n-gram that
    is no evidence (too few content words, or a template's)."""
    sizes: np.ndarray
    """Evidence n-grams of each item."""
    all_sizes: np.ndarray
    """All n-grams of each item, evidence or not."""
    lengths: np.ndarray
    """Words of each item (names included): how far apart two matches of one item may lie in one region."""
    words: np.ndarray
    """Sorted hashes of the words n-grams are made of: every word of the items except their names."""
    positions: np.ndarray
    """Where `hashes[k]` first starts in its item, counted in the item's remaining words."""
    sequence: np.ndarray
    """The remaining words of every item, one after the other (item k is `sequence[offsets[k]:offsets[k+1]]`):
    span removal follows a copy beyond its last evidence n-gram while it agrees with the item."""
    offsets: np.ndarray
    edges: np.ndarray
    """Per item, the names before its first remaining word and after its last (`return best`): what a
    copy that runs to the item's end still holds beyond it."""
    prompt_sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Evidence n-grams of each code item that lie within its prompt (`item_prompt`: the signature and
    docstring a prompt-only copy holds); 0 for an item without a docstring and for prose."""
    code: CodeNgrams = field(default_factory=empty_code_ngrams)
    """The second signal: shape n-grams of the code items."""

    def __len__(self) -> int:
        return len(self.hashes) + len(self.code)

    def of_items(self, items) -> np.ndarray:
        return np.unique(self.hashes[np.isin(self.items, list(items))])


def empty_eval_ngrams() -> EvalNgrams:
    none, hashes = np.zeros(0, np.int64), np.zeros(0, np.uint64)
    return EvalNgrams(hashes, none, np.zeros(0), none, none, none, hashes, none, hashes, np.zeros(1, np.int64),
                      np.zeros((0, 2), np.int64), none)


def eval_tokens(texts) -> Tokens:
    """Words as decontamination reads them: lowercase, digits kept, `_` a separator."""
    return prose_tokens(texts, map_digits=False)


# ---------------------------------------------------------------------------------------------- names


_DEF = re.compile(r"\b(?:def|class)\s+([A-Za-z_]\w*)(?:\s*\(([^)]*)\))?")
_FOR = re.compile(r"\bfor\s+([A-Za-z_][\w\s,()]*?)\s+in\b")
_AS = re.compile(r"\bas\s+([A-Za-z_]\w*)")
_LAMBDA = re.compile(r"\blambda\s+([^:]*):")
_ASSIGN = re.compile(r"^[ \t]*([A-Za-z_][\w \t,]*?)[ \t]*(?:[-+*/%&|^@]|//|\*\*|>>|<<)?=(?!=)", re.MULTILINE)
_IDENT = re.compile(r"[A-Za-z_]\w*")
_CODE_LINE = re.compile(r"^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+\w", re.MULTILINE)
_PROPER = re.compile(r"\b[A-Z][a-z]+\b")
_OPENERS = ".!?:;\"'`([{#>*-=|"


def item_names(text: str) -> set[str]:
    """The names an edited copy of this item would rename: what its code binds and its prose's proper names."""
    return _bound_names(text) | _proper_names(text)


def _bound_names(text: str) -> set[str]:
    try:
        tree = ast.parse(textwrap.dedent(text))
    except (SyntaxError, ValueError):
        return _bound_names_by_pattern(text)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.alias) and node.asname:
            names.add(node.asname)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def _bound_names_by_pattern(text: str) -> set[str]:
    """Binders of code that does not parse (a fragment, another language in a Python-like shape); none in
    prose (no line opens a `def` or `class`), where `for each x in` and `as many as` bind nothing."""
    if not _CODE_LINE.search(text):
        return set()
    names = set()
    for match in _DEF.finditer(text):
        names.add(match.group(1))
        for param in (match.group(2) or "").split(","):
            names.update(_IDENT.findall(param.split(":")[0].split("=")[0])[:1])
    for pattern in (_FOR, _AS, _LAMBDA, _ASSIGN):
        for match in pattern.finditer(text):
            names.update(_IDENT.findall(match.group(1)))
    return names


def _proper_names(text: str) -> set[str]:
    """Capitalised words seen at least once mid-sentence (a sentence's first word is capitalised anyway):
    one whose last visible character before it is a letter, digit or comma."""
    names = set()
    for match in _PROPER.finditer(text):
        before = text[max(0, match.start() - 40): match.start()].rstrip()
        if before and before[-1] not in _OPENERS:
            names.add(match.group())
    return names


# ---------------------------------------------------------------------------------------------- tables


def _stop_words() -> list[str]:
    return sorted({*keyword.kwlist, *keyword.softkwlist, *dir(builtins), *_COMMON_WORDS.split()})


def _word_hashes(words) -> np.ndarray:
    """Sorted distinct hashes of the words of some strings (identifiers split as everywhere else)."""
    words = list(words)
    if not words:
        return np.zeros(0, np.uint64)
    return np.unique(token_hashes(eval_tokens(pa.array([" ".join(words)], pa.string()))))


def _is_in(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if not len(sorted_set) or not len(values):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


@dataclass(frozen=True)
class _Windows:
    """n-grams of remaining words: `doc`, the token index of the `first` and `last` word, the `hash`, and
    how many `content` words each holds."""

    doc: np.ndarray
    first: np.ndarray
    last: np.ndarray
    hash: np.ndarray
    content: np.ndarray

    def take(self, mask) -> _Windows:
        return _Windows(self.doc[mask], self.first[mask], self.last[mask], self.hash[mask], self.content[mask])


def _windows(tokens: Tokens, hashes: np.ndarray, keep: np.ndarray, content: np.ndarray, n: int,
             max_spread: int) -> _Windows:
    """Every n consecutive kept words of one document lying within `max_spread` words of the text."""
    kept = np.flatnonzero(keep)
    if len(kept) < n:
        none = np.zeros(0, np.int64)
        return _Windows(none, none, none, np.zeros(0, np.uint64), none)
    h, doc = hashes[kept], tokens.doc[kept]
    width = len(kept) - n + 1
    with np.errstate(over="ignore"):
        acc = h[:width].copy()
        for j in range(1, n):
            acc *= np.uint64(_HORNER)
            acc += h[j: j + width]
        acc ^= np.uint64(n) * np.uint64(_COUNT_SALT)
    first, last = kept[:width], kept[n - 1:]
    running = np.concatenate([[0], np.cumsum(content[kept])])
    windows = _Windows(doc[:width], first, last, fmix64(acc), running[n:] - running[:width])
    return windows.take((doc[:width] == doc[n - 1:]) & (last - first < max_spread))


def eval_ngrams(texts: list[str], cfg: DecontaminateConfig) -> EvalNgrams:
    """The n-gram table of some evaluation texts (item k is texts[k])."""
    if not texts:
        return empty_eval_ngrams()
    tokens = eval_tokens(pa.array(texts, pa.string()))
    hashes = token_hashes(tokens)
    stop = _word_hashes(_stop_words())
    own = _own_names(tokens, hashes, [item_names(t) for t in texts])
    names = np.setdiff1d(_mostly_names(tokens, hashes, own), stop)
    words = np.setdiff1d(np.unique(hashes), names)
    keep = _is_in(hashes, words)
    kept_per_item = np.bincount(tokens.doc[keep], minlength=len(texts))
    offsets = np.concatenate([[0], np.cumsum(kept_per_item)])
    copies = _copies(hashes[keep], offsets)
    common = _common_words(hashes, copies[tokens.doc], cfg, len(np.unique(copies)))
    content = keep & ~_is_in(hashes, stop) & ~_is_in(hashes, common) & (tokens.end - tokens.start > 1)
    windows = _windows(tokens, hashes, keep, content, cfg.ngram, max_spread=np.iinfo(np.int64).max)
    position = (np.cumsum(keep) - 1)[windows.first] - offsets[windows.doc]
    keys = np.stack([windows.hash, windows.doc.astype(np.uint64)], axis=1)
    pairs, first = np.unique(keys, axis=0, return_index=True)
    telling = np.unique(keys[windows.content >= cfg.min_content_words], axis=0)
    evidence = np.isin(_as_records(pairs), _as_records(telling))
    spread = np.ones(len(pairs), dtype=np.int64)
    if evidence.any():
        held = _items_holding(pairs[evidence], copies)
        spread[evidence] = held[np.searchsorted(np.unique(pairs[evidence][:, 0]), pairs[evidence][:, 0])]
    evidence &= spread < cfg.template_items
    items = pairs[:, 1].astype(np.int64)
    in_prompt = evidence & (position[first] + cfg.ngram <= _prompt_words(texts, words)[items])
    return EvalNgrams(pairs[:, 0].copy(), items, np.where(evidence, 1.0 / spread, 0.0),
                      np.bincount(items[evidence], minlength=len(texts)), np.bincount(items, minlength=len(texts)),
                      tokens.counts(), words, position[first], hashes[keep], offsets, _edge_names(tokens, keep),
                      np.bincount(items[in_prompt], minlength=len(texts)), code_ngrams(texts, copies, cfg))


def item_prompt(text: str) -> str:
    """A code item's prompt: its lines up to the end of the docstring of its first function or class
    (HumanEval's prompt: signature and docstring); "" for an item that does not parse or has no docstring."""
    try:
        tree = ast.parse(textwrap.dedent(text))
    except (SyntaxError, ValueError):
        return ""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and ast.get_docstring(node):
            return "".join(text.splitlines(keepends=True)[: node.body[0].end_lineno])
    return ""


def _prompt_words(texts: list[str], words: np.ndarray) -> np.ndarray:
    """Per item, how many of its remaining words (those in `words`) its prompt holds (0 for prose)."""
    prompts = [item_prompt(text) if is_code_item(text) else "" for text in texts]
    tokens = eval_tokens(pa.array(prompts, pa.string()))
    return np.bincount(tokens.doc[_is_in(token_hashes(tokens), words)], minlength=len(texts))


def is_code_item(text: str) -> bool:
    """Items with a `def` or `class` line get shape n-grams; prose read as shape tokens is placeholders."""
    return bool(_CODE_LINE.search(text))


def code_ngrams(texts: list[str], copies: np.ndarray, cfg: DecontaminateConfig) -> CodeNgrams:
    """The shape n-gram table of the code items among `texts` (item k is texts[k]; `copies[k]` the first item
    with the same words)."""
    is_code = np.array([is_code_item(text) for text in texts], bool)
    code = np.flatnonzero(is_code).tolist()
    if cfg.code_ngram == 0 or not code:
        return empty_code_ngrams(len(texts), is_code)
    tokens = code_tokens(pa.array([texts[k] for k in code], pa.string()))
    first, hashes = ngram_kernel(tokens.doc, tokens.hashes, cfg.code_ngram)
    items = np.asarray(code, np.int64)[tokens.doc[first]]
    pairs = np.unique(np.stack([hashes, items.astype(np.uint64)], axis=1), axis=0)
    held = _items_holding(pairs, copies)
    idiom = held[np.searchsorted(np.unique(pairs[:, 0]), pairs[:, 0])] >= cfg.template_items
    pairs = pairs[~idiom]
    items = pairs[:, 1].astype(np.int64)
    lengths = np.zeros(len(texts), np.int64)
    lengths[code] = np.bincount(tokens.doc, minlength=len(code))
    return CodeNgrams(pairs[:, 0].copy(), items, np.bincount(items, minlength=len(texts)), lengths, is_code)


def _edge_names(tokens: Tokens, keep: np.ndarray) -> np.ndarray:
    """(items, 2): tokens of each item before its first kept word and after its last."""
    counts = tokens.counts()
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    index = np.arange(len(keep))
    local = index[keep] - starts[tokens.doc[keep]]
    last = np.full(len(counts), -1)
    np.maximum.at(last, tokens.doc[keep], local)
    first = np.full(len(counts), np.iinfo(np.int64).max)
    np.minimum.at(first, tokens.doc[keep], local)
    none_kept = last < 0
    leading = np.where(none_kept, counts, first)
    trailing = np.where(none_kept, 0, counts - 1 - last)
    return np.stack([leading, trailing], axis=1)


def _own_names(tokens: Tokens, hashes: np.ndarray, names: list[set[str]]) -> np.ndarray:
    """Per token: is it (part of) a name its own item binds?"""
    named = [_word_hashes(n) for n in names]
    if not sum(len(n) for n in named):
        return np.zeros(len(hashes), dtype=bool)
    item_of_name = np.repeat(np.arange(len(named)), [len(n) for n in named]).astype(np.uint64)
    name_keys = np.stack([np.concatenate(named), item_of_name], axis=1)
    token_keys = np.stack([hashes, tokens.doc.astype(np.uint64)], axis=1)
    return np.isin(_as_records(token_keys), _as_records(name_keys))


def _as_records(pairs: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pairs).view([("a", np.uint64), ("b", np.uint64)]).ravel()


def _mostly_names(tokens: Tokens, hashes: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Sorted hashes of the words that more items use as (part of) a name than otherwise: `numbers`, `s`,
    `Natalia`, but not `wrapper` or `image` when most items that hold them use them as plain words (in a
    docstring, as an attribute) rather than as names a copy would rename."""
    pairs, first = np.unique(np.stack([hashes, tokens.doc.astype(np.uint64)], axis=1), axis=0, return_index=True)
    words, index = np.unique(pairs[:, 0], return_inverse=True)
    name_uses = np.bincount(index.ravel(), weights=own[first], minlength=len(words))
    plain_uses = np.bincount(index.ravel(), weights=~own[first], minlength=len(words))
    return words[name_uses > NAME_SHARE * (name_uses + plain_uses)]


def _copies(sequence: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per item, the first item with the same remaining words: an evaluation set that holds one problem
    twice (or two sets that share it) must not make its phrases look like a template's."""
    first: dict[bytes, int] = {}
    return np.array([first.setdefault(sequence[lo:hi].tobytes(), k)
                     for k, (lo, hi) in enumerate(itertools.pairwise(offsets))], dtype=np.int64)


def _items_holding(pairs: np.ndarray, copies: np.ndarray) -> np.ndarray:
    """Per distinct hash of (hash, item) `pairs` (sorted), how many distinct items (copies counted once)
    hold it."""
    distinct = np.unique(np.stack([pairs[:, 0], copies[pairs[:, 1].astype(np.int64)].astype(np.uint64)], axis=1),
                         axis=0)
    _, spread = np.unique(distinct[:, 0], return_counts=True)
    return spread


def _common_words(hashes: np.ndarray, copy_of_token: np.ndarray, cfg: DecontaminateConfig, items: int) -> np.ndarray:
    """Sorted hashes of the words found in `common_word_share` of the (distinct) items, and in
    `template_items` at least: a generator's template words, a code set's usual vocabulary."""
    pairs = np.unique(np.stack([hashes, copy_of_token.astype(np.uint64)], axis=1), axis=0)
    words, spread = np.unique(pairs[:, 0], return_counts=True)
    return words[spread >= max(cfg.template_items, np.ceil(cfg.common_word_share * items))]


def load_eval_ngrams(cfg: DecontaminateConfig) -> tuple[EvalNgrams, list[EvalSet]]:
    """(the n-gram table of every evaluation item of every file, what each file contributed)."""
    texts, sets = [], []
    for path in cfg.eval_paths:
        items = _read_texts(path, cfg.text_field)
        texts += items
        alone = eval_ngrams(items, cfg)
        sets.append(EvalSet(path, len(items), int((alone.weights > 0).sum()), int((alone.all_sizes == 0).sum())))
    return (eval_ngrams(texts, cfg) if texts else empty_eval_ngrams()), sets


def _read_texts(path: str, field: str) -> list[str]:
    try:
        with fsspec.open(path, "rt", compression="infer", encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError as err:
        raise ValueError(f"evaluation set {path} does not exist: fix [dedup.decontaminate] eval_paths") from err
    texts = [r.get(field) for r in records if isinstance(r, dict)]
    if not any(isinstance(t, str) for t in texts):
        raise ValueError(f"evaluation set {path} has no string field {field!r}: set [dedup.decontaminate] text_field")
    return [t for t in texts if isinstance(t, str)]


# ---------------------------------------------------------------------------------------------- matching


def _document_windows(texts, table: EvalNgrams, n: int) -> tuple[Tokens, np.ndarray, _Windows]:
    tokens = eval_tokens(texts)
    hashes = token_hashes(tokens)
    keep = _is_in(hashes, table.words)
    windows = _windows(tokens, hashes, keep, np.zeros(len(hashes), np.int64), n, SPREAD * n)
    return tokens, keep, windows.take(_is_in(windows.hash, table.hashes))


def contaminating_items(texts: pa.Array, table: EvalNgrams, cfg: DecontaminateConfig) -> dict[int, set[int]]:
    """{document: evaluation items it contains}: an item counts when the document holds `min_ngrams` of the
    item's evidence n-grams (all of them if it has fewer; an n-gram that k items share counts 1/k), or
    `min_item_fraction` (when above 0) of all its n-grams and `min_ngrams` at least, evidence or not (a
    copy of an item made of a template and small numbers). A code item needs `code_min_word_fraction` of
    its evidence n-grams too (or `code_min_prompt_fraction` of its prompt's), or else is found by its shape (`code_min_ngrams` and `code_min_fraction` of
    its shape n-grams): a renamed and reformatted copy."""
    if len(table) == 0 or len(texts) == 0:
        return {}
    found: dict[int, set[int]] = {}
    for doc, item in itertools.chain(_word_matches(texts, table, cfg), _code_matches(texts, table.code, cfg)):
        found.setdefault(doc, set()).add(item)
    return found


def _word_matches(texts: pa.Array, table: EvalNgrams, cfg: DecontaminateConfig) -> list[list[int]]:
    """[document, item] pairs found by word n-grams."""
    _, _, windows = _document_windows(texts, table, cfg.ngram)
    if not len(windows.hash):
        return []
    lo = np.searchsorted(table.hashes, windows.hash, side="left")
    hi = np.searchsorted(table.hashes, windows.hash, side="right")
    repeat = hi - lo
    doc_of = np.repeat(windows.doc, repeat)
    row = np.repeat(lo - np.cumsum(repeat) + repeat, repeat) + np.arange(repeat.sum())
    hits = np.unique(np.stack([doc_of, row], axis=1), axis=0)  # each n-gram of an item once per document
    doc_of, row = hits[:, 0], hits[:, 1]
    pairs, group = np.unique(np.stack([doc_of, table.items[row]], axis=1), axis=0, return_inverse=True)
    evidence = np.bincount(group.ravel(), weights=table.weights[row], minlength=len(pairs))
    matched = np.bincount(group.ravel(), minlength=len(pairs))
    items = pairs[:, 1]
    needed = np.maximum(np.minimum(table.sizes[items], cfg.min_ngrams), 1)
    if len(table.code.is_code):  # code items also need a share of their evidence, or of their prompt's
        prompt = table.prompt_sizes[items]
        share = np.minimum(cfg.code_min_word_fraction * table.sizes[items],
                           np.where(prompt > 0, cfg.code_min_prompt_fraction * prompt, np.inf))
        needed = np.maximum(needed, np.where(table.code.is_code[items], share, 0))
    whole = (cfg.min_item_fraction > 0) & (
        matched >= np.maximum(np.ceil(cfg.min_item_fraction * table.all_sizes[items]), cfg.min_ngrams))
    return pairs[((evidence >= needed - 1e-9) & (table.sizes[items] > 0)) | whole].tolist()


def _hits(windows: np.ndarray, table_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(window index, table row) of every window hash found in a sorted table (a hash may have many rows)."""
    lo = np.searchsorted(table_hashes, windows, side="left")
    hi = np.searchsorted(table_hashes, windows, side="right")
    repeat = hi - lo
    window = np.repeat(np.arange(len(windows)), repeat)
    row = np.repeat(lo - np.cumsum(repeat) + repeat, repeat) + np.arange(repeat.sum())
    return window, row


def _code_windows(texts, code: CodeNgrams, n: int):
    """(shape tokens of the texts, first token of each window that is in the table, its hash)."""
    tokens = code_tokens(texts)
    first, hashes = ngram_kernel(tokens.doc, tokens.hashes, n)
    known = _is_in(hashes, code.hashes)
    return tokens, first[known], hashes[known]


def _code_matches(texts: pa.Array, code: CodeNgrams, cfg: DecontaminateConfig) -> list[list[int]]:
    """[document, item] pairs found by shape n-grams: `code_min_ngrams` of the item's, and
    `code_min_fraction` of them."""
    if not len(code) or cfg.code_ngram == 0:
        return []
    tokens, first, hashes = _code_windows(texts, code, cfg.code_ngram)
    window, row = _hits(hashes, code.hashes)
    if not len(row):
        return []
    hits = np.unique(np.stack([tokens.doc[first[window]], code.items[row], row], axis=1), axis=0)
    pairs, matched = np.unique(hits[:, :2], axis=0, return_counts=True)
    sizes = code.sizes[pairs[:, 1]]
    needed = np.maximum(cfg.code_min_ngrams, np.ceil(cfg.code_min_fraction * sizes))
    return pairs[matched >= needed].tolist()


# ---------------------------------------------------------------------------------------------- span removal


def remove_spans(text: str, table: EvalNgrams, items, cfg: DecontaminateConfig) -> tuple[str | None, int]:
    """(text with the region of each contaminating item cut out, regions cut); (None, 0) where lowercasing
    changes the text's byte length (an exotic character), so that positions cannot be mapped back: the
    caller drops the document.

    A region runs from an item's first matching n-gram to the end of its last (gaps and renamed names
    included), then on over the names and unknown words next to it on the same line and to the ends of
    the identifiers it touches, so that `count_vowels_impl` goes whole; matches further apart than the item
    is long are separate regions. Every matching n-gram of the items goes, not only enough of them."""
    if len(pc.utf8_lower(pa.array([text]))[0].as_py().encode()) != len(text.encode()):
        return None, 0
    total = 0
    for _ in range(REGION_PASSES):
        text, cut = _cut_regions(text, table, items, cfg)
        total += cut
        if not cut:
            break
    return text, total


def _cut_regions(text: str, table: EvalNgrams, items, cfg: DecontaminateConfig) -> tuple[str, int]:
    raw = text.encode()
    ranges = _word_regions(raw, text, table, items, cfg.ngram) + _code_regions(text, table.code, items, cfg.code_ngram)
    if not ranges:
        return text, 0
    ranges.sort()
    merged = [list(ranges[0])]
    for lo, hi in ranges[1:]:
        if lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    pieces, cursor = [], 0
    for lo, hi in merged:
        pieces.append(raw[cursor:lo])
        cursor = hi
    pieces.append(raw[cursor:])
    return b"".join(pieces).decode("utf-8", errors="replace"), len(merged)


def _word_regions(raw: bytes, text: str, table: EvalNgrams, items, n: int) -> list[tuple[int, int]]:
    """Byte ranges of the word-n-gram regions of each item (see `remove_spans`)."""
    tokens, keep, windows = _document_windows(pa.array([text], pa.string()), table, n)
    hashes = token_hashes(tokens)
    ranges = []
    for item in sorted(items):
        rows = np.flatnonzero(table.items == item)
        telling = rows[table.weights[rows] > 0]
        if np.isin(windows.hash, table.hashes[telling]).any():
            rows = telling  # a stock phrase of the item elsewhere in the text is not the copy
        at = np.searchsorted(table.hashes[rows], windows.hash)
        at = np.minimum(at, len(rows) - 1)
        hit = table.hashes[rows][at] == windows.hash
        order = np.argsort(windows.first[hit], kind="stable")
        first, last = windows.first[hit][order], windows.last[hit][order]
        where = table.positions[rows][at[hit]][order]
        words = table.sequence[table.offsets[item]: table.offsets[item + 1]]
        reach = np.maximum.accumulate(last) if len(last) else last
        lo = 0
        for k in range(1, len(first) + 1):
            if k == len(first) or first[k] - reach[k - 1] > table.lengths[item]:
                end = int(np.argmax(last[lo:k])) + lo
                start = _follow(hashes, keep, int(first[lo]), words[: where[lo]][::-1], -1, n)
                stop = _follow(hashes, keep, int(last[end]), words[where[end] + n:], +1, n)
                ranges.append(_region_bytes(raw, tokens, keep, start, stop, table.edges[item]))
                lo = k
    return ranges


def _code_regions(text: str, code: CodeNgrams, items, n: int) -> list[tuple[int, int]]:
    """Byte ranges from an item's first matching shape n-gram to the end of its last; matches further
    apart than the item is long are separate regions."""
    if not len(code) or n == 0:
        return []
    tokens, first, hashes = _code_windows(pa.array([text], pa.string()), code, n)
    window, row = _hits(hashes, code.hashes)
    ranges = []
    for item in sorted(items):
        starts = np.unique(first[window[code.items[row] == item]])
        if not len(starts):
            continue
        reach = np.maximum.accumulate(starts + n - 1)
        breaks = np.flatnonzero(starts[1:] - reach[:-1] > code.lengths[item]) + 1
        for lo, hi in itertools.pairwise([0, *breaks.tolist(), len(starts)]):
            ranges.append((int(tokens.start[starts[lo]]), int(tokens.end[reach[hi - 1]])))
    return ranges


def _follow(hashes: np.ndarray, keep: np.ndarray, token: int, words: np.ndarray, step: int,
            gap: int) -> tuple[int, bool]:
    """(the last token, going from `token` in direction `step`, up to which the document's remaining words
    go on agreeing with `words` (the item's words beyond a match, in that direction) with at most `gap`
    names or unknown words between two of them; whether all of `words` agreed)."""
    at = token
    for word in words.tolist():
        nxt = at + step
        while 0 <= nxt < len(keep) and not keep[nxt] and abs(nxt - at) <= gap:
            nxt += step
        if not 0 <= nxt < len(keep) or not keep[nxt] or int(hashes[nxt]) != word:
            return at, False
        at = nxt
    return at, True


def _region_bytes(raw: bytes, tokens: Tokens, keep: np.ndarray, start: tuple[int, bool], stop: tuple[int, bool],
                  edges: np.ndarray) -> tuple[int, int]:
    """The bytes of tokens start..stop; where the copy reaches the item's first (last) word, grown over as
    many dropped words before (after) it on the same line as the item has names there, then to the ends
    of the identifiers at either edge."""
    (first, at_head), (last, at_tail) = start, stop
    for _ in range(int(edges[0]) * at_head * 2):  # a renamed name may be more words than the original
        if first == 0 or keep[first - 1] or b"\n" in raw[tokens.end[first - 1]: tokens.start[first]]:
            break
        first -= 1
    for _ in range(int(edges[1]) * at_tail * 2):
        if last + 1 == len(keep) or keep[last + 1] or b"\n" in raw[tokens.end[last]: tokens.start[last + 1]]:
            break
        last += 1
    lo, hi = int(tokens.start[first]), int(tokens.end[last])
    while lo > 0 and raw[lo - 1] in _IDENTIFIER:
        lo -= 1
    while hi < len(raw) and raw[hi] in _IDENTIFIER:
        hi += 1
    return lo, hi
