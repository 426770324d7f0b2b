"""Decontamination's code signal: shape tokens, copies renamed and reformatted, shared docstring paragraphs."""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa

from pipeline.dedup.code_tokens import NAME, STRING, TRIPLE, code_tokens
from pipeline.dedup.config import DecontaminateConfig
from pipeline.dedup.decontaminate import contaminating_items, eval_ngrams, item_prompt, remove_spans
from tests.pipeline.dedup.test_decontaminate import HOST_HEAD, HOST_TAIL, LONG_BODY, LONG_PROMPT

CFG = DecontaminateConfig()
ITEM = LONG_PROMPT + LONG_BODY
EDITED = """def isBalanced_impl(txt: str)->bool:
  '''Check that each bracket in txt is closed in order.'''
  closers={')': '(', ']': '[', '}': '{'}
  pending=[]
  for ch in txt:
    if ch in '([{':
      pending.append(ch)
    elif ch in closers:
      if not pending or pending[-1]!=closers[ch]:
        return False
      pending.pop()
  return not pending
"""


def shapes(text: str) -> list[str]:
    tokens = code_tokens(pa.array([text], pa.string()))
    raw = text.encode()
    marks = {int(NAME): "N", int(STRING): "S", int(TRIPLE): '"""'}
    return [marks.get(int(h)) or _literal(raw[s:e].decode()) for s, e, h in zip(tokens.start, tokens.end, tokens.hashes)]


def _literal(token: str) -> str:
    """A short string as what it is hashed by (its text without quotes), anything else as written."""
    return f"str:{token.lstrip('rbfuRBFU')[1:-1]}" if len(token) > 1 and token[-1] in "'\"" else token


def test_shape_tokens_abstract_names_and_keep_attributes_literals_and_operators():
    assert shapes("total = os.path.join(root, 'a.txt') + f\"{x} y\"  # joined\n") == \
        ["N", "=", "N", ".", "path", ".", "join", "(", "N", ",", "str:a.txt", ")", "+", "S"]
    assert shapes("for item in items:\n    if item is not None: yield item.value\n") == \
        ["for", "N", "in", "N", ":", "if", "N", "is", "not", "None", ":", "yield", "N", ".", "value"]


def test_renaming_and_reformatting_keep_the_body_shape():
    """Names, indentation, quotes and spacing change; the tokens after the docstring are the same."""
    item, edited = shapes(ITEM), shapes(EDITED)
    assert item[item.index('"""', item.index('"""') + 1) + 1:] == edited[edited.index('"""', edited.index('"""') + 1) + 1:]


def test_docstring_is_read_the_same_wherever_a_copy_lies_and_however_it_is_wrapped():
    wrapped = '"""Return the sum, it\'s\nfast."""\n'
    assert shapes('"""Return the sum, it\'s fast."""\n') == shapes(wrapped) == \
        ['"""', "N", "N", "N", ",", "N", "N", "N", ".", '"""']
    inside_a_string = "HELP = '''\n" + ITEM
    assert shapes(inside_a_string)[3:] == shapes(ITEM)


def test_renamed_and_reformatted_copy_is_caught_by_its_shape_alone():
    table = eval_ngrams([ITEM], CFG)
    texts = pa.array([HOST_HEAD + EDITED + HOST_TAIL, HOST_HEAD + HOST_TAIL])
    assert contaminating_items(texts, table, CFG) == {0: {0}}
    words_only = replace(CFG, code_ngram=0)
    assert contaminating_items(texts, eval_ngrams([ITEM], words_only), words_only) == {}


PARAGRAPH = """        Number of worker processes that evaluate the objective in parallel; minus one uses every core.
"""
DOCUMENTED = '''def minimise_population(objective, bounds, workers=1, tolerance=1e-8, seed=None):
    """Find the global minimum of a scalar objective over a box by evolving a population of candidates.

    Parameters
    ----------
    objective : callable
        The function to minimise, called with one candidate vector and returning a float; it must be
        picklable when more than one worker is used, since candidates travel between processes.
    bounds : sequence of pairs
        Lower and upper limit of every coordinate; candidates are clipped back inside after each mutation.
    workers : int, optional
''' + PARAGRAPH + '''    """
    rng = random.Random(seed)
    population = [sample_box(bounds, rng) for _ in range(15 * len(bounds))]
    scores = evaluate_all(objective, population, workers)
    while spread(scores) > tolerance:
        population, scores = next_generation(objective, population, scores, bounds, rng, workers)
    return population[scores.index(min(scores))]
'''
SHARING = '''def grid_search(objective, grid, workers=1):
    """Evaluate the objective at every point of a grid and return the best point.

    Parameters
    ----------
    workers : int, optional
''' + PARAGRAPH + '''    """
    scores = evaluate_all(objective, list(grid), workers)
    return grid[scores.index(min(scores))]
'''


def test_a_shared_docstring_paragraph_is_not_a_copy_but_the_prompt_is():
    table = eval_ngrams([DOCUMENTED], CFG)
    prompt = DOCUMENTED[: DOCUMENTED.index('    """\n    rng') + 8] + "    ...\n"
    texts = pa.array([HOST_HEAD + SHARING + HOST_TAIL, HOST_HEAD + prompt + HOST_TAIL])
    assert contaminating_items(texts, table, CFG) == {1: {0}}
    any_share = replace(CFG, code_min_word_fraction=0.0)
    assert contaminating_items(texts, eval_ngrams([DOCUMENTED], any_share), any_share) == {0: {0}, 1: {0}}


def test_span_removal_cuts_a_copy_found_by_its_shape():
    table = eval_ngrams([ITEM], CFG)
    text = HOST_HEAD + EDITED + HOST_TAIL
    found = contaminating_items(pa.array([text]), table, CFG)
    cleaned, regions = remove_spans(text, table, found[0], CFG)
    assert regions >= 1
    any_ngram = replace(CFG, min_ngrams=1, min_item_fraction=0.0, code_min_word_fraction=0.0, code_min_ngrams=1,
                        code_min_fraction=0.0)
    assert contaminating_items(pa.array([cleaned]), table, any_ngram) == {}
    for part in ("closers", "pending", "return not"):
        assert part not in cleaned
    assert cleaned.startswith(HOST_HEAD.rstrip()) and cleaned.rstrip().endswith(HOST_TAIL.strip())


LONG_PROMPT = '''def merge_calendar_slots(slots, minimum_gap):
    """Merge the booked calendar slots that overlap or lie closer than minimum_gap minutes apart, and
    return the merged slots sorted by their starting minute."""
'''
LONG = LONG_PROMPT + '''    # Sorting first means every later slot can only extend or follow the slot being built, so one
    # pass over the list suffices and nothing already merged has to be revisited afterwards.
    ordered = sorted(slots, key=lambda slot: (slot.start, slot.end))
    merged = []
    for slot in ordered:
        # A slot that starts before the current one ends, plus the tolerated gap, belongs to it; the
        # merged end is the later of both ends because a short meeting may sit inside a long one.
        if merged and slot.start <= merged[-1].end + minimum_gap:
            merged[-1] = Slot(merged[-1].start, max(merged[-1].end, slot.end), merged[-1].owner)
        else:
            merged.append(Slot(slot.start, slot.end, slot.owner))
    # Owners are kept from the earliest booking of every merged block, which matches what the shared
    # room planner shows people when they hover over a block in the weekly overview of the building.
    # Empty blocks cannot occur here, yet a defensive filter documents the invariant for later readers
    # and protects the reporting code downstream, which divides by the length of every single block.
    return [block for block in merged if block.end > block.start]
'''


def test_a_prompt_only_copy_of_a_long_function_is_caught_by_its_prompt_share():
    """The pasted signature and docstring are a small share of a long item's evidence but all of its
    prompt's; without the prompt share such a copy falls under `code_min_word_fraction`."""
    table = eval_ngrams([LONG], CFG)
    assert 0 < table.prompt_sizes[0] < CFG.code_min_word_fraction * table.sizes[0]
    texts = pa.array([HOST_HEAD + LONG_PROMPT + "    ...\n" + HOST_TAIL])
    assert contaminating_items(texts, table, CFG) == {0: {0}}
    no_prompt_share = replace(CFG, code_min_prompt_fraction=2.0)
    assert contaminating_items(texts, eval_ngrams([LONG], no_prompt_share), no_prompt_share) == {}


def test_item_prompt_is_the_signature_and_docstring():
    assert item_prompt(LONG) == LONG_PROMPT
    assert item_prompt(ITEM).endswith('    True\n    """\n') and "closing" not in item_prompt(ITEM)
    assert item_prompt("def f(x):\n    return x + 1\n") == ""
