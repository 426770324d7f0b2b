"""`[grade]` in a build file: nested tables, defaults, and errors that name the key."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, parse_build
from pipeline.grading.config import GOPHER_DUP_NGRAM_MAX, MATH_DUP_NGRAM_MAX, GradeConfig

HEAD = '[build]\nname = "t"\noutput = "out"\n[[sources]]\nname = "s"\nuri = "s.jsonl"\nformat = "jsonl"\n'


def build(grade: str):
    return parse_build(HEAD + grade, "/work/b/build.toml")


def test_defaults_follow_the_published_rules():
    cfg = GradeConfig()
    assert cfg.filters.prose.min_words == 50 and cfg.filters.prose.min_stop_words == 2  # Gopher
    assert cfg.filters.prose.min_line_punct_fraction == 0.12  # FineWeb
    assert cfg.filters.code.max_line_length == 1000 and cfg.filters.code.min_alnum_fraction == 0.25  # The Stack
    assert cfg.filters.prose.max_dup_ngram_fraction == GOPHER_DUP_NGRAM_MAX
    # worked math repeats its own phrases and can be a few words long: math-aware bounds
    assert cfg.filters.math.min_words == 2 and cfg.filters.math.max_dup_ngram_fraction == MATH_DUP_NGRAM_MAX
    assert cfg.difficulty.model == "" and "math" in cfg.domain.trusted_hints
    assert cfg.difficulty.tiers == 5 and cfg.filters.action == "drop"


def test_nested_tables_parse_and_paths_resolve():
    cfg = build("""
[grade.filters]
action = "flag"
disabled_rules = ["gopher_stop_words"]
[grade.filters.prose]
min_words = 20
max_top_ngram_fraction = {"2" = 0.3}
[grade.domain]
classifier_paths = ["labels/domain.jsonl"]
[grade.difficulty]
tiers = 4
math_weights = {notation_level = 1.0, steps = 1.0}
[grade.difficulty.trace_markers]
step = "^>>> "
""").grade
    assert cfg.filters.action == "flag" and cfg.filters.prose.min_words == 20
    assert cfg.filters.prose.max_top_ngram_fraction == {"2": 0.3}
    assert cfg.domain.classifier_paths == ("/work/b/labels/domain.jsonl",)
    assert cfg.difficulty.tiers == 4 and cfg.difficulty.math_weights == {"notation_level": 1.0, "steps": 1.0}
    assert cfg.difficulty.trace_markers.step == "^>>> "


@pytest.mark.parametrize(
    "grade, message",
    [
        ('[grade.filters]\naction = "delete"', "'grade.filters.action' must be one of ['drop', 'flag']"),
        ("[grade.filters.prose]\nmin_wrds = 3", "unknown key 'grade.filters.prose.min_wrds'"),
        ("[grade.difficulty]\ntiers = 1", "tiers must lie in [2, 100]"),
        ("[grade.difficulty]\ncode_weights = {beauty = 1.0}", "code_weights names unknown features ['beauty']"),
        ('[grade.difficulty.trace_markers]\ncall = "("', "trace_markers.call is not a valid regular expression"),
        ('[grade.filters.prose]\nmax_dup_ngram_fraction = {"x" = 0.1}', "n-gram tables map a positive integer"),
    ],
)
def test_errors_name_the_problem(grade, message):
    with pytest.raises(ConfigError) as err:
        build(grade)
    assert message in str(err.value)
