"""The compiled kernels give exactly the outputs of their numpy references (random and real text, Unicode)."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.dedup.boilerplate import (
    _COMMENT,
    comment_lines,
    comparable,
    line_hash,
    normal_lines,
    split_lines,
    strip_lines,
)
from pipeline.dedup.config import BoilerplateConfig
from pipeline.dedup.features import _distinct_lists
from pipeline.dedup.kernels import insert_spaces_kernel
from pipeline.dedup.minhash import compiled_signatures, signatures
from pipeline.dedup.normalize import (
    _bounds,
    blank_to_space,
    code_bytes,
    code_bytes_by_regex,
    code_classes,
    code_tokens_of,
    collapse_spaces,
    collapsed_blanks,
    line_and_exact_forms,
    normal_forms,
    prose_tokens,
    render,
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


def reference_normal_forms(texts: pa.Array) -> tuple[np.ndarray, pa.Array, pa.Array]:
    """(document of each line, the lines, the exact form) by numpy and Arrow, one step at a time."""
    doc, lines = split_lines(collapse_spaces(blank_to_space(texts, keep_newlines=True)))
    return doc, lines, collapse_spaces(blank_to_space(texts, keep_newlines=False))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_normal_forms_equal_numpy(seed):
    texts = pa.array(random_texts(seed, count=120)).fill_null("")
    forms = normal_forms(texts)
    doc, lines, exact = reference_normal_forms(texts)
    assert np.array_equal(forms.line_doc, doc)
    assert forms.lines.equals(lines)
    assert np.array_equal(forms.line_chars, pc.utf8_length(lines).to_numpy())
    assert forms.exact.equals(exact)


def test_normal_forms_exact_output_and_empty_batches():
    forms = normal_forms(pa.array(["  a \u00a0 b\t\n c  \n", "", "\n\n x\u3000\u3000y ", " \u2003 "]))
    assert forms.lines.to_pylist() == ["a b", "c", "", "", "", "", "x y", ""]
    assert forms.line_doc.tolist() == [0, 0, 0, 1, 2, 2, 2, 3]
    assert forms.exact.to_pylist() == ["a b c", "", "x y", ""]
    none = normal_forms(pa.array([], pa.string()))
    assert len(none.lines) == 0 and len(none.exact) == 0


def test_normal_forms_equal_numpy_on_real_text(sample_corpus):
    texts = pa.array(real_texts(sample_corpus))
    forms = normal_forms(texts)
    doc, lines, exact = reference_normal_forms(texts)
    assert np.array_equal(forms.line_doc, doc) and forms.lines.equals(lines) and forms.exact.equals(exact)


def test_comment_lines_equal_the_regex():
    pieces = ["#", "/", "*", "<", "!", "-", ";", "a", " ", "é"]
    rng = random.Random(0)
    lines = pa.array(["".join(rng.choice(pieces) for _ in range(rng.randint(0, 5))) for _ in range(3000)]
                     + ["<!-", "<!--", "--", "-", "//", "/*", "/", ""])
    rows = np.arange(len(lines))[::2]
    expected = pc.match_substring_regex(lines, _COMMENT).to_numpy(zero_copy_only=False)[rows]
    assert np.array_equal(comment_lines(lines, rows), expected)
    assert expected.any() and not expected.all()


def reference_strip(texts: pa.Array, code: np.ndarray, boilerplate: np.ndarray, cfg: BoilerplateConfig):
    """Lines removed by Arrow: split, drop, join (what `strip_lines`' kernel replaces)."""
    doc, raw = split_lines(texts)
    _, lines = normal_lines(texts, code, True)
    ok = pc.utf8_length(lines).to_numpy() >= cfg.min_line_chars
    in_code = code[doc] & ok
    ok[in_code] = pc.match_substring_regex(lines, _COMMENT).to_numpy(zero_copy_only=False)[in_code]
    remove = ok & np.isin(line_hash(lines), boilerplate)
    keep = ~remove
    offsets = np.concatenate([[0], np.cumsum(np.bincount(doc[keep], minlength=len(texts)))]).astype(np.int32)
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), raw.filter(pa.array(keep))), "\n")
    return joined, np.bincount(doc[remove], minlength=len(texts)), lines, remove


@pytest.mark.parametrize("seed", [0, 1])
def test_strip_lines_equal_split_and_join(seed):
    rng = random.Random(seed)
    banners = ["# Licensed under the Apache License", "Copyright (c) The Authors, all rights", "x = 1"]
    texts = pa.array(["\n".join(rng.choice(banners + [t or ""]) for _ in range(rng.randint(0, 6)))
                      for t in random_texts(seed, count=120)])
    code = np.arange(len(texts)) % 3 == 0
    cfg = BoilerplateConfig(min_line_chars=5)
    _, lines = normal_lines(texts, code, True)
    boilerplate = np.unique(line_hash(pa.array(["# licensed under the apache license", banners[0],
                                                "copyright (c) the authors, all rights", "x = 1"])))
    joined, removed, _, remove = reference_strip(texts, code, boilerplate, cfg)
    wanted = boilerplate[::-1]
    out, got_removed, found = strip_lines(texts, code, boilerplate, wanted, cfg)
    assert removed.sum() > 20 and (removed == 0).sum() > 20
    assert out.equals(joined) and np.array_equal(got_removed, removed)
    hits = np.flatnonzero(remove)
    expected = {}
    for h, line in zip(line_hash(lines).view(np.int64)[hits].tolist(), lines.take(pa.array(hits)).to_pylist()):
        expected[h] = min(line, expected.get(h, line))
    assert found == expected


def test_distinct_lists_equal_sorting_pairs():
    rng = np.random.default_rng(0)
    doc = np.sort(rng.choice([0, 1, 3, 4, 7], size=400))
    values = rng.choice(np.array([5, 1 << 63, 2, (1 << 64) - 1, 9], np.uint64), size=400)
    got = _distinct_lists(doc, values, 9).to_pylist()
    signed = values.view(np.int64)
    assert got == [sorted(set(signed[doc == d].tolist())) for d in range(9)]


def code_token_texts(offsets: np.ndarray, data: np.ndarray) -> list[str]:
    token, glue = code_classes()
    return render(_bounds(offsets, data, token[data], glue[data]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_code_bytes_give_the_tokens_of_the_regex_rewrite(seed):
    texts = pa.array(random_texts(seed, count=120) + ["a\u2014b\u00a0c\u0085d\u2028e\u00b7f«g»", "é—", "—é"])
    ours = code_token_texts(*code_bytes(texts))
    assert ours == code_token_texts(*code_bytes_by_regex(texts))
    assert ours[-3] == "a \u2014 b c \u0085 d e \u00b7 f « g »"


def test_code_bytes_give_the_tokens_of_the_regex_rewrite_on_real_text(sample_corpus):
    texts = pa.array(real_texts(sample_corpus))
    assert code_token_texts(*code_bytes(texts)) == code_token_texts(*code_bytes_by_regex(texts))


def test_insert_spaces_equals_numpy_insert():
    data = np.frombuffer(b"abcdefgh", np.uint8)
    for positions in ([], [0], [8], [0, 3, 3, 8], [1, 2, 2, 5, 7, 8, 8]):
        positions = np.array(positions, np.int64)
        assert np.array_equal(insert_spaces_kernel(data, positions), np.insert(data, positions, np.uint8(32)))
