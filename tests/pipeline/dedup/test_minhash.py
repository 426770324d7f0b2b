"""Shingling, hashing and MinHash: identical to datasketch for the same shingles and hash function."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from pipeline.dedup import minhash, shingles
from pipeline.dedup.config import NearConfig
from pipeline.dedup.minhash import (
    band_keys,
    candidate_probability,
    compiled_band_keys,
    layout_for_recall,
    permutations,
    signature_jaccard,
    signatures,
)
from pipeline.dedup.normalize import code_tokens_of, prose_tokens
from pipeline.dedup.shingles import shingle_bytes, shingle_hash32, shingle_hash64, shingle_hashes

TEXTS = [
    "The quick brown fox jumps over the lazy dog. It's 2024, and   the fox is still quick!",
    "",
    None,
    "two words",
    "Ünïcödé wörds — naïve café, ÉCOLE and 東京 text with digits 12345 inside a sentence.",
    "def f(x):\n    return x + 1  # add one\n\nclass A(object):\n    pass\n",
]


def _datasketch(shingle_lists, num_perm=128, seed=1):
    out = []
    for items in shingle_lists:
        m = MinHash(num_perm=num_perm, seed=seed, hashfunc=shingle_hash32)
        m.update_batch(items)
        out.append(m.hashvalues)
    return np.array(out)


def test_permutations_are_datasketchs():
    for num_perm, seed in ((128, 1), (64, 7), (256, 42)):
        a, b = permutations(num_perm, seed)
        ref = MinHash(num_perm=num_perm, seed=seed).permutations
        assert np.array_equal(a, ref[0]) and np.array_equal(b, ref[1])


@pytest.mark.parametrize("tokenise", [prose_tokens, code_tokens_of])
def test_signatures_identical_to_datasketch(tokenise):
    tokens = tokenise(pa.array(TEXTS))
    sh = shingle_hashes(tokens, 5)
    ours = signatures(sh.doc, sh.hash32, sh.num_docs, 128, 1)
    assert np.array_equal(ours, _datasketch(shingle_bytes(tokens, 5)))


def test_signatures_identical_on_real_text(sample_corpus):
    import json

    docs = [json.loads(line)["text"] for line in (sample_corpus / "prose" / "docs.jsonl").read_text().splitlines()]
    tokens = prose_tokens(pa.array(docs[:40]))
    sh = shingle_hashes(tokens, 5)
    ours = signatures(sh.doc, sh.hash32, sh.num_docs, 64, 3)
    assert np.array_equal(ours, _datasketch(shingle_bytes(tokens, 5), num_perm=64, seed=3))


def test_shingles_are_the_space_joined_ngrams():
    tokens = prose_tokens(pa.array(["A b, C d e F!", "one two", "", None]))
    assert shingle_bytes(tokens, 3) == [[b"a b c", b"b c d", b"c d e", b"d e f"], [b"one two"], [], []]


def test_vectorised_hash_equals_scalar_reference():
    tokens = code_tokens_of(pa.array(TEXTS))
    sh = shingle_hashes(tokens, 4)
    flat = [s for doc in shingle_bytes(tokens, 4) for s in doc]
    assert sh.hash64.tolist() == [shingle_hash64(s) for s in flat]
    assert sh.hash32.tolist() == [shingle_hash32(s) for s in flat]


def test_spacing_never_changes_a_shingle():
    spaced = prose_tokens(pa.array(["one two  three\n\nfour, five", "One two three four five"]))
    sh = shingle_hashes(spaced, 5)
    assert sh.hash64[sh.doc == 0].tolist() == sh.hash64[sh.doc == 1].tolist()


def test_chunk_and_block_sizes_do_not_change_results(monkeypatch):
    tokens = prose_tokens(pa.array(TEXTS * 30))
    sh = shingle_hashes(tokens, 5)
    sigs = signatures(sh.doc, sh.hash32, sh.num_docs, 32, 1)
    monkeypatch.setattr(shingles, "MAX_CHUNK_BYTES", 50)
    monkeypatch.setattr(minhash, "ROWS_PER_CHUNK", 7)
    small = shingle_hashes(tokens, 5)
    assert np.array_equal(small.hash64, sh.hash64) and np.array_equal(small.doc, sh.doc)
    assert np.array_equal(signatures(small.doc, small.hash32, small.num_docs, 32, 1), sigs)


def test_empty_document_has_the_empty_signature():
    sh = shingle_hashes(prose_tokens(pa.array(["", "!!!"])), 5)
    sigs = signatures(sh.doc, sh.hash32, 2, 16, 1)
    assert (sigs == minhash.EMPTY).all() and sh.counts().tolist() == [0, 0]


@pytest.mark.parametrize("threshold,recall_at", [(0.8, 0.85), (0.7, 0.75), (0.9, 0.95)])
def test_layout_reaches_the_recall_target_with_datasketchs_maths(threshold, recall_at):
    bands, rows = layout_for_recall(threshold, 128, recall_at, 0.99)
    assert candidate_probability(recall_at, bands, rows) >= 0.99
    # it is one of datasketch's optimal layouts for this threshold, the first that reaches the target
    weights = [w / 100 for w in range(50, 100)]
    layouts = [_optimal_param(threshold, 128, 1 - w, w) for w in weights]
    assert (bands, rows) in layouts
    first = next(lay for lay in layouts if candidate_probability(recall_at, *lay) >= 0.99)
    assert (bands, rows) == first


def test_default_layout_finds_copies_at_085_the_old_one_missed():
    near = NearConfig()
    assert layout_for_recall(near.threshold, near.num_perm, near.effective_recall_jaccard,
                             near.target_recall) == (16, 8)
    assert candidate_probability(0.85, 14, 9) < 0.98
    assert candidate_probability(0.85, 16, 8) >= 0.99


def test_verification_margin_shrinks_with_more_permutations():
    margins = {p: 0.8 - NearConfig(num_perm=p).effective_verify_threshold for p in (64, 128, 256, 512)}
    assert margins[128] == pytest.approx((0.8 * 0.2 / 128) ** 0.5)
    assert margins[64] == pytest.approx(2 * margins[256]) and margins[128] == pytest.approx(2 * margins[512])
    assert NearConfig(verify_standard_errors=2.0).verify_margin == pytest.approx(2 * margins[128])


def test_band_keys_and_jaccard():
    sigs = np.arange(24, dtype=np.uint32).reshape(2, 12)
    same = band_keys(np.vstack([sigs[0], sigs[0]]), 3, 4)
    assert same.dtype == np.int64 and (same[0] == same[1]).all() and len(set(same[0])) == 3
    other = sigs.copy()
    other[1, :4] = other[0, :4]
    keys = band_keys(other, 3, 4)
    assert keys[0, 0] == keys[1, 0] and (keys[0, 1:] != keys[1, 1:]).all()
    assert signature_jaccard(other[:1], other[1:]).tolist() == [4 / 12]


@pytest.mark.parametrize("bands, rows", [(16, 8), (9, 13), (3, 4)])
def test_compiled_band_keys_equal_numpy(bands, rows):
    sigs = np.random.default_rng(bands).integers(0, 1 << 32, size=(50, 128), dtype=np.uint64).astype(np.uint32)
    assert np.array_equal(compiled_band_keys(sigs, bands, rows), band_keys(sigs, bands, rows))
    assert compiled_band_keys(sigs[:0], bands, rows).shape == (0, bands)
