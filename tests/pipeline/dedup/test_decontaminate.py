"""Decontamination against edited copies: renamed names, prompt-only leaks, common idioms, span removal."""

from __future__ import annotations

import pyarrow as pa

from pipeline.dedup.config import DecontaminateConfig
from pipeline.dedup.decontaminate import contaminating_items, eval_ngrams, item_names, remove_spans

PROMPT = '''def longest_vowel_run(sentence: str) -> int:
    """Return the length of the longest run of consecutive vowels in sentence, ignoring case.

    Letters other than a, e, i, o and u end a run, and an empty sentence has no run at all, so
    its longest run is zero. Spaces and punctuation marks also end a run.
    >>> longest_vowel_run("Beautiful queueing")
    5
    """
'''
BODY = '''    best = current = 0
    for letter in sentence.lower():
        current = current + 1 if letter in "aeiou" else 0
        best = max(best, current)
    return best
'''
ITEM = PROMPT + BODY
OTHER = '''def median_of_three(a: float, b: float, c: float) -> float:
    """Return the median of three numbers without sorting them, using comparisons only."""
    return max(min(a, b), min(max(a, b), c))
'''
HOST_HEAD = '''import os
import sys


def read_settings(path):
    """Load the settings file at path and return its non-empty, non-comment lines."""
    with open(path) as handle:
        return [line.strip() for line in handle if line.strip() and not line.startswith("#")]


'''
HOST_TAIL = '''

def main():
    settings = read_settings(sys.argv[1])
    print(os.linesep.join(settings))
'''
RENAMED = '''def longestVowelRun_impl(text: str) -> int:
    """Return the length of the longest run of consecutive vowels in text, ignoring case.

    Letters other than a, e, i, o and u end a run, and an empty text has no run at all, so its
    longest run is zero. Spaces and punctuation marks also end a run.
    >>> longestVowelRun_impl("Beautiful queueing")
    5
    """
    record = streak_len = 0
    for ch in text.lower():
        streak_len = streak_len + 1 if ch in 'aeiou' else 0
        record = max(record, streak_len)
    return record
'''
CFG = DecontaminateConfig()


def test_item_names_are_what_the_code_binds_and_the_prose_names():
    assert item_names(ITEM) == {"longest_vowel_run", "sentence", "best", "current", "letter"}
    assert item_names("Natalia sold clips to 48 friends. How many clips did Natalia sell, and did Ann help?") \
        == {"Natalia", "Ann"}


def test_renamed_identifier_leak_is_caught():
    table = eval_ngrams([ITEM, OTHER], CFG)
    texts = pa.array([HOST_HEAD + RENAMED + HOST_TAIL, HOST_HEAD + HOST_TAIL])
    assert contaminating_items(texts, table, CFG) == {0: {0}}


LONG_PROMPT = '''def balanced_brackets(expression: str) -> bool:
    """Tell whether every bracket of expression, round, square or curly, is closed in the right order.
    >>> balanced_brackets("{[()()]}")
    True
    """
'''
LONG_BODY = '''    closing = {")": "(", "]": "[", "}": "{"}
    stack = []
    for symbol in expression:
        if symbol in "([{":
            stack.append(symbol)
        elif symbol in closing:
            if not stack or stack[-1] != closing[symbol]:
                return False
            stack.pop()
    return not stack
'''


def test_prompt_only_leak_is_caught():
    """The prompt of an item whose solution is longer than its prompt: under half of the item's n-grams."""
    table = eval_ngrams([LONG_PROMPT + LONG_BODY, OTHER], CFG)
    texts = pa.array([HOST_HEAD + LONG_PROMPT + "    raise NotImplementedError\n" + HOST_TAIL])
    assert contaminating_items(texts, table, CFG) == {0: {0}}


IDIOM_ITEM = '''class Inventory:
    def heaviest_crate_weight(self):
        """Weight of the heaviest crate still on the shelves, skipping empty slots."""
        heaviest = 0
        for i in range(len(self.items)):
            if self.items[i] is None:
                continue
            heaviest = max(heaviest, self.items[i].weight)
        return heaviest
'''
IDIOM_CLEAN = '''class Playlist:
    def first_playable(self):
        """The first track that has an audio file attached."""
        for i in range(len(self.items)):
            if self.items[i] is None:
                continue
            if self.items[i].has_audio():
                return self.items[i]
        return None
'''


def test_clean_code_sharing_only_common_idioms_is_not_flagged():
    most_sensitive = DecontaminateConfig(min_ngrams=1, min_item_fraction=0.0)
    table = eval_ngrams([IDIOM_ITEM], most_sensitive)
    assert contaminating_items(pa.array([IDIOM_CLEAN]), table, most_sensitive) == {}
    assert contaminating_items(pa.array([IDIOM_ITEM]), table, most_sensitive) == {0: {0}}


def test_span_removal_leaves_no_matching_ngram_and_no_renamed_part():
    table = eval_ngrams([ITEM, OTHER], CFG)
    text = HOST_HEAD + RENAMED + HOST_TAIL
    found = contaminating_items(pa.array([text]), table, CFG)
    cleaned, regions = remove_spans(text, table, found[0], CFG)
    assert regions >= 1
    any_ngram = DecontaminateConfig(min_ngrams=1, min_item_fraction=0.0)
    assert contaminating_items(pa.array([cleaned]), table, any_ngram) == {}
    for part in ("longestVowelRun", "_impl", "streak_len", "record", "aeiou", "vowels"):
        assert part not in cleaned
    assert cleaned.startswith(HOST_HEAD.rstrip()) and cleaned.rstrip().endswith(HOST_TAIL.strip())


def test_an_item_held_three_times_is_no_template():
    table = eval_ngrams([ITEM, ITEM, ITEM, OTHER], CFG)
    assert table.sizes[0] > 0
    assert contaminating_items(pa.array([HOST_HEAD + ITEM + HOST_TAIL]), table, CFG) == {0: {0, 1, 2}}
