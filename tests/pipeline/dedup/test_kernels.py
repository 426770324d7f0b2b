"""The compiled kernels give exactly the outputs of their numpy references (random and real text, Unicode)."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pytest

from pipeline.dedup.boilerplate import comparable, normal_lines, split_lines
from pipeline.dedup.minhash import compiled_signatures, signatures
from pipeline.dedup.normalize import (
    blank_to_space,
    code_tokens_of,
    collapse_spaces,
    collapsed_blanks,
    line_and_exact_forms,
    prose_tokens,
)
from pipeline.dedup.shingles import code_shingles, prose_shingles, shingle_hashes

# ASCII words, digits, marks and every kind of blank; non-ASCII letters, digits, marks (combining and
# standalone) and spaces (NBSP, em space, ideographic space, NEL, line separator), CJK and an emoji.
PIECES = ["the", "Fox", "x_1", "42", "2024", "it's", ",", ".", "(", ")", "+", "#", "//", "_", "-", " ", "  ",
          "\t", "\n", "\r\n", "\x0b", "\x0c", "\n\n", "Ünïcödé", "café", "ÉCOLE", "straße", "東京", "٣",
          "e\u0301", "—", "«", "»", "\u00a0", "\u2003", "\u3000", "\u0085", "\u2028", " \u00a0 ", "😀", "ǅ"]


def random_texts(seed: int, count: int = 60) -> list[str | None]:
    rng = random.Random(seed)
    texts: list[str | None] = []
    for _ in range(count):
        size = rng.choice([0, 1, 2, 4, 6, 30, 200])
        texts.append("".join(rng.choice(PIECES) for _ in range(size)))
    texts[3] = None
    texts[5] = "".join(rng.choice(PIECES[:22]) for _ in range(300))  # one pure-ASCII document
    return texts


def real_texts(sample_corpus, count: int = 40) -> list[str]:
    prose = [json.loads(line)["text"] for line in (sample_corpus / "prose" / "docs.jsonl").read_text().splitlines()]
    code = [p.read_text(errors="replace") for p in sorted((sample_corpus / "code").rglob("*.py"))[:count]]
    return prose[:count] + code


def assert_same_shingles(ours, reference):
    assert ours.num_docs == reference.num_docs
    assert np.array_equal(ours.doc, reference.doc)
    assert np.array_equal(ours.hash64, reference.hash64)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n", [1, 2, 5])
def test_prose_and_code_shingles_equal_numpy_on_random_text(seed, n):
    texts = pa.array(random_texts(seed))
    for map_digits in (True, False):
        assert_same_shingles(prose_shingles(texts, n, map_digits), shingle_hashes(prose_tokens(texts, map_digits), n))
    assert_same_shingles(code_shingles(texts, n), shingle_hashes(code_tokens_of(texts), n))


def test_shingles_equal_numpy_on_ascii_only_and_empty_batches():
    ascii_only = pa.array(["Plain  ASCII, only: a b c d e f g.", "f(x)+1 == y_2", ""])
    for texts in (ascii_only, pa.array([], pa.string()), pa.array(["", None, " \t "])):
        assert_same_shingles(prose_shingles(texts, 5), shingle_hashes(prose_tokens(texts), 5))
        assert_same_shingles(code_shingles(texts, 3), shingle_hashes(code_tokens_of(texts), 3))


def test_shingles_and_signatures_equal_numpy_on_real_text(sample_corpus):
    texts = pa.array(real_texts(sample_corpus))
    for ours, reference in ((prose_shingles(texts, 5), shingle_hashes(prose_tokens(texts), 5)),
                            (code_shingles(texts, 5), shingle_hashes(code_tokens_of(texts), 5))):
        assert len(reference.doc) > 10_000
        assert_same_shingles(ours, reference)
        assert np.array_equal(compiled_signatures(ours.doc, ours.hash32, ours.num_docs, 128, 1),
                              signatures(reference.doc, reference.hash32, reference.num_docs, 128, 1))


@pytest.mark.parametrize("num_perm, seed", [(128, 1), (64, 7), (9, 0)])
def test_signatures_equal_numpy_with_empty_documents(num_perm, seed):
    rng = np.random.default_rng(seed)
    doc = np.sort(rng.choice([0, 2, 3, 7], size=500))  # documents 1, 4-6 and 8-9 have no shingles
    hash32 = rng.integers(0, 1 << 32, size=500, dtype=np.uint64).astype(np.uint32)
    ours = compiled_signatures(doc, hash32, 10, num_perm, seed)
    assert np.array_equal(ours, signatures(doc, hash32, 10, num_perm, seed))
    assert (ours[[1, 4, 8, 9]] == 0xFFFFFFFF).all() and (ours[[0, 2, 3, 7]] != 0xFFFFFFFF).any(axis=1).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("keep_newlines", [False, True])
def test_collapsed_blanks_equal_numpy(seed, keep_newlines):
    texts = pa.array(random_texts(seed)).fill_null("")
    assert collapsed_blanks(texts, keep_newlines).equals(collapse_spaces(blank_to_space(texts, keep_newlines)))


def test_collapsed_blanks_exact_output():
    texts = pa.array(["  a \u00a0 b\t\n c  \n", "x\u3000\u3000y", "", " \u2003 "])
    assert collapsed_blanks(texts, keep_newlines=True).to_pylist() == ["a b\nc\n", "x y", "", ""]
    assert collapsed_blanks(texts, keep_newlines=False).to_pylist() == ["a b c", "x y", "", ""]


def test_collapsed_blanks_equal_numpy_on_real_text(sample_corpus):
    texts = pa.array(real_texts(sample_corpus))
    for keep_newlines in (False, True):
        assert collapsed_blanks(texts, keep_newlines).equals(collapse_spaces(blank_to_space(texts, keep_newlines)))


@pytest.mark.parametrize("seed", [0, 1])
def test_line_and_exact_forms_in_one_pass_equal_each_form(seed):
    texts = pa.array(random_texts(seed)).fill_null("")
    lines, exact = line_and_exact_forms(texts)
    assert lines.equals(collapse_spaces(blank_to_space(texts, keep_newlines=True)))
    assert exact.equals(collapse_spaces(blank_to_space(texts, keep_newlines=False)))


@pytest.mark.parametrize("seed", [0, 1])
def test_normal_lines_equal_collapsing_each_line(seed):
    texts = pa.array(random_texts(seed)).fill_null("")
    code = np.arange(len(texts)) % 2 == 0
    doc, lines = normal_lines(texts, code, lowercase_prose=True)
    ref_doc, ref_lines = split_lines(blank_to_space(comparable(texts, code, True), keep_newlines=True))
    assert np.array_equal(doc, ref_doc)
    assert lines.equals(collapse_spaces(ref_lines))
