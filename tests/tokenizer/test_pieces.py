"""tokenizer/pieces.py gives the reference encoder's ids exactly, and leaves what it cannot vouch for to it."""

from __future__ import annotations

import pytest
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers

from tests.tokenizer.test_tokenizer import ODD
from tokenizer.files import RnjTokenizer
from tokenizer.pieces import AGREED_BELOW, PieceEncoder
from tokenizer.train import PRETOKENIZE_PATTERN

regex = pytest.importorskip("regex")

# Each character between letters, digits, blanks, newlines and a contraction: every alternative of the
# pattern sees it on either side.
CONTEXTS = ["x{c}1{c} {c}\n{c}{c}'s{c}  ", "{c}", " {c}a", "\r\n{c}\t", "''{c}{c}d'LL{c}"]


def _ids(tok: RnjTokenizer, texts: list[str]) -> list[list[int]]:
    offsets, ids = tok.encode_batch_flat(texts)
    assert offsets.shape == (len(texts) + 1,)
    return [ids[offsets[i]:offsets[i + 1]].tolist() for i in range(len(texts))]


@pytest.mark.parametrize("context", CONTEXTS)
def test_the_two_split_engines_agree_on_every_character_below_the_cutoff(context):
    hugging_face = pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated")
    ours = regex.compile(PRETOKENIZE_PATTERN)
    text = "".join(context.format(c=chr(c)) for c in range(ord(AGREED_BELOW)))
    assert ours.findall(text) == [p for p, _ in hugging_face.pre_tokenize_str(text)]


def test_same_ids_as_the_reference_on_every_domain_and_odd_text(tok, documents):
    assert PieceEncoder.for_tokenizer(tok.tokenizer) is not None, "a trained tokenizer must take the fast path"
    texts = [d["text"] for d in documents] + ODD + ["\u0557" * 3 + " x", "\u0558 is past the cutoff"]
    for start in range(0, len(texts), 97):  # batches mixing fast and reference texts
        chunk = texts[start:start + 97]
        assert _ids(tok, chunk) == tok.encode_batch(chunk)


@pytest.mark.parametrize("texts", [[], [""], ["", " "], ["<|trace|>"], ["日本語"], ["a", "日本語", "", "<|line|> 1"]])
def test_same_ids_on_edge_batches(tok, texts):
    assert _ids(tok, texts) == tok.encode_batch(texts)


def test_other_layouts_take_the_reference(trained, tok):
    changed = Tokenizer.from_str(trained.to_str())
    changed.normalizer = normalizers.NFC()
    assert PieceEncoder.for_tokenizer(changed) is None
    changed = Tokenizer.from_str(trained.to_str())
    changed.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    assert PieceEncoder.for_tokenizer(changed) is None
    other = RnjTokenizer(changed, tok.sha256, tok.bos_id, tok.eos_id, tok.pad_id, tok.special_ids)
    texts = ["def f(x):\n    return x + 1\n", "prose, with words."]
    assert _ids(other, texts) == [e.ids for e in changed.encode_batch(texts, add_special_tokens=False)]
