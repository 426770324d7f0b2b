"""Normalisation, boilerplate lines, decontamination, survivor rules and the [dedup] section."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import ConfigError, parse_build
from pipeline.dedup.boilerplate import boilerplate_threshold, candidate_lines, line_hash, remove_lines
from pipeline.dedup.config import BoilerplateConfig, DecontaminateConfig, DedupConfig
from pipeline.dedup.decontaminate import contaminating_items, eval_ngrams, load_eval_ngrams, remove_spans
from pipeline.dedup.features import (
    CODE,
    NUMERIC,
    PROSE,
    document_shingles,
    exact_keys,
    shingle_kinds,
    shingle_signatures,
)
from pipeline.dedup.minhash import compiled_signatures
from pipeline.dedup.normalize import code_tokens, exact_form, prose_words
from pipeline.dedup.rounds import pick_survivor, size_histogram


def test_prose_normalisation():
    out = prose_words(pa.array(["It's  2024!\n\tNew—line", " ", "Maths 12"]), map_digits=True).to_pylist()
    assert out == ["it s 0000 new line", "", "maths 00"]
    assert prose_words(pa.array(["Maths 12"]), map_digits=False).to_pylist() == ["maths 12"]


def test_code_tokens_keep_case_and_marks():
    assert code_tokens(pa.array(["def F(x_1):\n  return x_1+2"])).to_pylist() == [
        "def F ( x_1 ) : return x_1 + 2"]


def test_exact_form_and_keys():
    assert exact_form(pa.array(["  A  b\n\nc "]), lowercase=True).to_pylist() == ["a b c"]
    keys = exact_keys(pa.array(["Hello  World", "hello world", "X = 1", "x = 1"]),
                      np.array([False, False, True, True]), lowercase_prose=True)
    assert (keys[0] == keys[1]).all() and (keys[2] != keys[3]).any() and keys.shape == (4, 2)


def test_shingle_kinds_by_domain():
    kinds = shingle_kinds(pa.array(["code", "math", None, "trace", "general"]), DedupConfig())
    assert kinds.tolist() == [CODE, NUMERIC, PROSE, CODE, PROSE]


def test_shingles_of_mixed_kinds_are_each_documents_own_in_row_order():
    texts = ["def f(x):\n    return x + 1  # one two three", "Maths 12 and 13 plus 14 gives 39 here",
             "", "Plain prose words, five of them at least, and more.", "x = [1, 2, 3]\nprint(x, sep='')",
             "Another prose line with a few words in it."]
    kinds = np.array([CODE, NUMERIC, PROSE, PROSE, CODE, NUMERIC], np.int8)
    got = document_shingles(pa.array(texts), kinds, DedupConfig())
    assert got.num_docs == len(texts) and (np.diff(got.doc) >= 0).all()
    for row, text in enumerate(texts):
        alone = document_shingles(pa.array([text]), kinds[row: row + 1], DedupConfig())
        assert got.hash64[got.doc == row].tolist() == alone.hash64.tolist()
    assert got.counts()[2] == 0 and got.counts()[[0, 1, 3, 4, 5]].min() > 0
    counts, sigs = shingle_signatures(pa.array(texts), kinds, DedupConfig())
    assert counts.tolist() == got.counts().tolist()
    assert np.array_equal(sigs, compiled_signatures(got.doc, got.hash32, len(texts), 128, DedupConfig().near.seed))


BANNER = "# Licensed under the Apache License, Version 2.0"


def test_candidate_lines_skip_short_and_code_statements():
    texts = pa.array([f"{BANNER}\nimport os, sys, json, re\nx = 1", "A navigation line long enough\nshort"])
    doc, hashes, ok = candidate_lines(texts, np.array([True, False]), BoilerplateConfig())
    assert doc.tolist() == [0, 0, 0, 1, 1]
    assert ok.tolist() == [True, False, False, True, False]
    assert hashes[0] == line_hash(pa.array([BANNER]))[0]


def test_remove_lines_exact_output():
    texts = pa.array([f"{BANNER}\nx = 1\n", "keep me\n  # Licensed under the Apache License, Version 2.0  \nend"])
    banner = np.sort(line_hash(pa.array([BANNER])))
    out, removed = remove_lines(texts, np.array([True, True]), banner, BoilerplateConfig())
    assert out.to_pylist() == ["x = 1\n", "keep me\nend"]
    assert removed.tolist() == [1, 1]
    same, none = remove_lines(texts, np.array([True, True]), np.zeros(0, np.uint64), BoilerplateConfig())
    assert same.to_pylist() == texts.to_pylist() and none.tolist() == [0, 0]


NGRAM13 = DecontaminateConfig(ngram=13, min_item_fraction=0.5)
ANY13 = DecontaminateConfig(ngram=13, min_item_fraction=0.0, min_ngrams=1)
PROBLEM = ("Problem. Compute 78 + 96 times 7 and explain every step of the computation carefully so that a "
           "student can follow it from the first line to the last line of the worked solution.")


def test_decontamination_needs_a_share_of_the_item():
    table = eval_ngrams([PROBLEM, "an unrelated evaluation item with far too few words"], NGRAM13)
    texts = pa.array([f"Intro text. {PROBLEM} Outro.", "a student can follow it from the first line to the last",
                      "nothing in common here at all"])
    assert contaminating_items(texts, table, NGRAM13) == {0: {0}}
    assert 1 not in contaminating_items(texts, table, NGRAM13)
    loose = contaminating_items(pa.array(["so that a student can follow it from the first line to the last line"]),
                                table, ANY13)
    assert loose == {0: {0}}


def test_remove_spans_cuts_only_the_matching_words():
    table = eval_ngrams([PROBLEM], NGRAM13)
    text = f"Keep this opening sentence. {PROBLEM} And keep this ending."
    cleaned, spans = remove_spans(text, table, {0}, NGRAM13)
    assert spans == 1
    assert cleaned == "Keep this opening sentence. . And keep this ending."


def test_load_eval_ngrams_reads_jsonl(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"id": 1, "question": PROBLEM}) + "\n")
    table, sets = load_eval_ngrams(DecontaminateConfig(eval_paths=(str(path),), text_field="question"))
    assert sets[0].items == 1 and sets[0].ngrams == len(table) > 0
    with pytest.raises(ValueError, match="no string field"):
        load_eval_ngrams(DecontaminateConfig(eval_paths=(str(path),)))


def test_survivor_rules():
    members = [{"id": "b", "length": 10, "quality": None}, {"id": "a", "length": 10, "quality": None},
               {"id": "c", "length": 30, "quality": None}, {"id": "d", "length": 5, "quality": 0.9}]
    assert pick_survivor(members, "best") == "d"
    assert pick_survivor(members[:3], "best") == "c"
    central = [dict(m, centrality=c) for m, c in zip(members, (9, 3, 1, 0))]
    assert pick_survivor(central[:3], "best") == "b" and pick_survivor(central[:3], "central") == "b"
    assert pick_survivor(members, "longest") == "c"
    assert pick_survivor(members, "smallest_id") == "a"
    assert pick_survivor(members[:2], "longest") == "a"


def test_size_histogram_buckets():
    assert size_histogram({2: 5, 3: 1, 4: 2, 7: 1, 100: 1}) == {"2": 5, "3-4": 3, "5-8": 1, "65-128": 1}


BUILD = """
[build]
name = "t"
output = "out"
[[sources]]
name = "s"
uri = "in.jsonl"
format = "jsonl"
"""


def test_dedup_section_parses_nested_tables():
    cfg = parse_build(BUILD + """
[dedup.near]
threshold = 0.7
verify = "none"
[dedup.decontaminate]
eval_paths = ["eval/a.jsonl"]
action = "remove_span"
""", "/builds/x.toml")
    assert cfg.dedup.near.threshold == 0.7 and cfg.dedup.near.verify == "none"
    assert cfg.dedup.decontaminate.eval_paths == ("/builds/eval/a.jsonl",)
    assert cfg.dedup.exact.enabled and cfg.dedup.near.effective_verify_threshold == pytest.approx(0.7 - (0.21 / 128) ** 0.5)


@pytest.mark.parametrize("section,message", [
    ("[dedup.near]\nthreshold = 1.5", "threshold"),
    ("[dedup.near]\nbands = 4", "both near.bands and near.rows"),
    ("[dedup.near]\nbands = 20\nrows = 10", "at most num_perm"),
    ("[dedup.near]\nverify = \"exactly\"", "verify"),
    ("[dedup.boilerplate]\nmax_documents_per_million = 0", "max_documents_per_million"),
    ("[dedup.nearr]\nthreshold = 0.5", "unknown key"),
])
def test_bad_dedup_values_are_rejected(section, message):
    with pytest.raises(ConfigError, match=message):
        parse_build(BUILD + section, "/builds/x.toml")


def test_remove_spans_takes_an_edited_copy_whole():
    table = eval_ngrams([PROBLEM], NGRAM13)
    edited = PROBLEM.replace("explain every step", "explain each and every step")
    text = f"Keep this opening sentence. {edited} And keep this ending."
    found = contaminating_items(pa.array([text]), table, NGRAM13)
    assert found == {0: {0}}
    cleaned, spans = remove_spans(text, table, found[0], NGRAM13)
    assert spans == 1 and "each and every" not in cleaned
    assert cleaned.startswith("Keep this opening sentence.") and cleaned.endswith("And keep this ending.")


def test_underscored_identifiers_match_their_words():
    item = "def count_vowel_words(sentence): return the number of words in the sentence that start with a vowel"
    eight = DecontaminateConfig(ngram=8, min_content_words=1)
    table = eval_ngrams([item], eight)
    prose = "Def count vowel words sentence return the number of words in the sentence that start with a vowel."
    assert contaminating_items(pa.array([prose]), table, eight) == {0: {0}}


def test_boilerplate_threshold_is_a_rate_with_a_floor():
    cfg = BoilerplateConfig()
    assert boilerplate_threshold(cfg, 4_000) == cfg.min_documents == 20
    assert boilerplate_threshold(cfg, 25_000_000_000) == 2_500_000
    assert boilerplate_threshold(BoilerplateConfig(max_documents_per_million=10, min_documents=5), 1_000_000) == 10


def test_lines_compare_with_whitespace_normalised():
    texts = pa.array(["A  navigation\tline long enough\u00a0here \nbody", "a navigation line long enough here"])
    doc, hashes, ok = candidate_lines(texts, np.array([False, False]), BoilerplateConfig())
    assert doc.tolist() == [0, 0, 1] and ok.tolist() == [True, False, True]
    assert hashes[0] == hashes[2]


def test_survivor_is_the_central_member_not_the_longest():
    from pipeline.dedup.clusters import attached_to_survivor, centrality, choose_survivors

    rng = np.random.default_rng(0)
    original = rng.integers(0, 2**32, 128, dtype=np.uint32)
    copies = []
    for k in range(4):  # each copy differs from the original in its own 12 slots: ~0.9 to it, ~0.8 apart
        copy = original.copy()
        copy[k * 12: k * 12 + 12] = rng.integers(0, 2**32, 12, dtype=np.uint32)
        copies.append(copy)
    far = copies[3].copy()  # chained through copy 3 only, ~0.7 to the original
    far[60:90] = rng.integers(0, 2**32, 30, dtype=np.uint32)
    sigs = np.stack([original, *copies, far])
    groups = np.zeros(6, dtype=np.int64)
    lengths = np.array([100, 130, 120, 110, 140, 200])  # the most edited are the longest
    ids = ["o", "c1", "c2", "c3", "c4", "far"]
    central = centrality(sigs, groups)
    winner = choose_survivors(groups, ids, np.full(6, np.nan), central, lengths, "best")
    assert winner.tolist() == [0] * 6
    assert choose_survivors(groups, ids, np.full(6, np.nan), central, lengths, "longest").tolist() == [5] * 6
    assert attached_to_survivor(sigs, winner, 0.765).tolist() == [True] * 5 + [False]
    quality = np.array([np.nan, 0.9, np.nan, np.nan, np.nan, np.nan])
    assert choose_survivors(groups, ids, quality, central, lengths, "best").tolist() == [1] * 6


def test_quality_strings_are_read_as_spark_try_cast_reads_them():
    """What Spark 4.3's try_cast(s AS DOUBLE) gave for these strings (Java's Double.parseDouble after its
    trim, then Spark's own literals); a hexadecimal float is reported as unread (the driver plan then
    hands over to Spark)."""
    import math

    import pyarrow as pa

    from pipeline.dedup.signals import spark_doubles

    inf = math.inf
    spark_gave = {" 1.5 ": 1.5, "+2": 2.0, "1e3": 1000.0, "1d": 1.0, "2F": 2.0, "inf": inf, "Infinity": inf,
                  "-Infinity": -inf, "NaN": "nan", "nan": "nan", "+NaN": "nan", "-nan": None, "1_000": None,
                  "abc": None, "": None, "١٢": None, "\t3\n": 3.0, "1.": 1.0, ".5": 0.5, "-.5e-3": -0.0005,
                  "+inf": inf, "INF": inf, " inf ": inf, "1e400": inf, "4.9e-325": 0.0, "1,5": None, "1 2": None,
                  "e5": None, "\u00a07": None, "-0": -0.0, None: None}
    values, unread = spark_doubles(pa.array(list(spark_gave), pa.string()))
    assert unread == 0
    for text, got in zip(spark_gave, values.to_pylist()):
        want = spark_gave[text]
        assert (math.isnan(got) if want == "nan" else got == want and str(got) == str(want)), (text, got, want)
    assert spark_doubles(pa.array(["0x1p3", "1"]))[1] == 1
