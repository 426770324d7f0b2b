"""Difficulty graders: exact features on small inputs, and the quality bars on real data."""

from __future__ import annotations

import sysconfig
from pathlib import Path
from typing import ClassVar

import pytest

from pipeline.grading.base import GradeContext, Grader, saturating
from pipeline.grading.config import DifficultyConfig, TraceMarkers
from pipeline.grading.graders import check_weights, grader_for, register_grader
from pipeline.grading.math_grader import notation_level, reasoning_steps
from pipeline.grading.ranking import rank_within_domains, spearman
from pipeline.mathgen import generate_problems

STDLIB = Path(sysconfig.get_paths()["stdlib"])
WEIGHTS = DifficultyConfig()
CONTEXT = GradeContext()


def score(domain: str, text: str, lang: str | None = "python") -> float:
    grader = grader_for(domain)
    return grader.score(grader.features(text, lang, CONTEXT), WEIGHTS.weights_for(grader.name))


def test_python_features_are_exact():
    source = '''"""Module docstring."""
import os, os.path
from . import sibling


def walk(node, depth=0):
    """Recursive, with a comprehension and a boolean operator."""
    if node is None or depth > 10:
        return []
    return [walk(child, depth + 1) for child in node.children if child]


class Tree:
    def items(self):
        for x in range(3):
            yield x

    async def fetch(self):
        await self.items()
'''
    features = grader_for("code").features(source, "python", CONTEXT)
    assert features["functions"] == 3 and features["classes"] == 1
    assert features["recursion"] == 1 and features["generators"] == 1 and features["async"] == 2
    assert features["comprehensions"] == 1 and features["imports"] == 2  # os and the relative "."
    # if (1) + or (1) + comprehension for (1) + its if (1) + for (1): McCabe 1 + 5
    assert features["cyclomatic"] == 6 and features["max_function_complexity"] == 5
    assert features["max_nesting"] == 3  # class > def > for
    assert features["parsed"] == 1 and features["lines"] == 12


def test_other_languages_use_the_token_fallback():
    c_source = "#include <stdio.h>\n#include <stdlib.h>\n\nint main(int argc, char **argv) {\n" \
               "    for (int i = 0; i < argc; i++) {\n        if (argv[i][0] == '-' && argv[i][1]) {\n" \
               "            puts(argv[i]);\n        }\n    }\n    return 0;\n}\n"
    features = grader_for("code").features(c_source, "c", CONTEXT)
    assert features["parsed"] == 0 and features["imports"] == 2 and features["functions"] == 1
    assert features["max_nesting"] == 3 and features["cyclomatic"] == 4  # for, if, && + 1
    broken = grader_for("code").features("def broken(:\n    pass\n", "python", CONTEXT)
    assert broken["parsed"] == 0


def test_stdlib_trivial_modules_land_below_parsers_and_compilers():
    """Tiers over ~80 real standard-library files: shims and tables low, parsers and compilers high."""
    parsers = ["tokenize.py", "ast.py", "_pydecimal.py", "json/decoder.py", "re/_parser.py", "re/_compiler.py"]
    shims = ["concurrent/__init__.py", "xml/__init__.py", "xml/etree/__init__.py", "wsgiref/__init__.py",
             "sre_constants.py", "sre_parse.py", "sre_compile.py", "lib2to3/__init__.py"]
    tables = ["re/_constants.py", "stat.py", "html/entities.py"]
    names = sorted({str(p.relative_to(STDLIB)) for p in sorted(STDLIB.glob("*.py"))[:60]} | set(parsers + shims + tables))
    rows = [("code", score("code", (STDLIB / n).read_text(encoding="utf-8")), n) for n in names]
    tiers = {n: tier for n, (_, tier) in rank_within_domains(rows, 5).items()}
    assert max(tiers[n] for n in shims) == 0
    assert max(tiers[n] for n in tables) <= 1
    assert min(tiers[n] for n in parsers) >= 2
    assert all(tiers[n] == 4 for n in ("tokenize.py", "ast.py", "_pydecimal.py", "re/_parser.py"))


def test_math_difficulty_follows_the_generated_levels():
    problems = generate_problems(240, seed=7)
    scores = [score("math", p.text(), "en") for p in problems]
    assert spearman(scores, [p.level for p in problems]) >= 0.9


@pytest.mark.parametrize(
    "text, level",
    [
        ("Compute 12 + 7 x 3.", 0),
        (r"Simplify $\frac{3}{4} + \frac{1}{6}$.", 1),
        ("Solve for $x$: $3x + 5 = 20$.", 2),
        (r"Evaluate $\int_0^1 x^2 \, dx$.", 3),
        ("Prove that there are infinitely many primes.", 4),
    ],
)
def test_notation_levels(text, level):
    assert notation_level(text) == level


def test_reasoning_steps():
    assert reasoning_steps("Solution.\n1. First.\n2. Second.\n3. Third.\n") == 3
    assert reasoning_steps("We have x = 2. Hence y = 4. The end") == 2


def test_prose_readability_and_rare_words():
    simple = "The cat sat on the mat. The dog ran to the cat. It was a good day. " * 3
    hard = ("Notwithstanding considerable epistemological disagreement, contemporary historiography "
            "increasingly acknowledges the indispensability of interdisciplinary methodological pluralism "
            "in reconstructing socioeconomic transformations.")
    prose = grader_for("general")
    easy, difficult = prose.features(simple, "en", CONTEXT), prose.features(hard, "en", CONTEXT)
    assert easy["fk_grade"] < 3 and difficult["fk_grade"] > 15
    assert easy["rare_word_fraction"] == 0.0  # no corpus counts: not computed
    common = frozenset(["the", "cat", "sat", "on", "mat", "dog", "ran", "to", "it", "was", "a", "good", "day"])
    with_corpus = prose.features(simple + " Zebra.", "en", GradeContext(common_words=common))
    assert with_corpus["rare_word_fraction"] == pytest.approx(1 / 52)  # 17 words x 3 + "zebra"
    assert score("general", hard, "en") > score("general", simple, "en")



@pytest.mark.parametrize("text", [
    "", "call foo() and foo(x) then os.path.join a_b camelCase CamelCase Zebra. x_ _x",
    "naïve_ünï ÉtéX a.b.c (a) ((b)) \u2003snake_case\u3000 os.path\x1cfoo() ..._..",
])
def test_prose_counts_equal_their_definitions(text):
    """The prose grader's counting shortcuts count what their plain definitions count."""
    from collections import Counter

    from pipeline.grading.prose_grader import (
        _IDENTIFIER,
        _rare_word_fraction,
        identifier_count,
        rare_word_fraction,
    )

    assert identifier_count(text) == sum(n for t, n in Counter(text.split()).items() if _IDENTIFIER.match(t))
    vocabulary = text.lower().split()
    for common in (None, frozenset(), frozenset(vocabulary[::2])):
        expected = rare_word_fraction(vocabulary, common)
        assert _rare_word_fraction(Counter(vocabulary), len(vocabulary), common) == expected

TRACE_DOCUMENT = """<|source|>
def outer(x):
    if x > 0:
        return inner(x)
    return 0
def inner(x):
    raise ValueError(x)
<|trace|> outer(3)
<|call|> outer(x=3)
<|line|> 2 if x > 0:
<|line|> 3 return inner(x)
<|call|> inner(x=3)
<|line|> 6 raise ValueError(x)
<|exception|> 6 raise ValueError(x) ValueError: 3
<|return|> inner raised ValueError
<|return|> outer raised ValueError
<|result|> raises ValueError: 3
"""


def test_trace_counts_on_the_traces_format():
    features = grader_for("trace").features(TRACE_DOCUMENT, None, CONTEXT)
    assert features == {"steps": 3.0, "max_call_depth": 2.0, "calls": 2.0, "branches": 1.0, "exceptions": 1.0,
                        "lines": 10.0}


def test_trace_counts_on_a_plain_log_and_custom_markers():
    log = "call main()\nline 2 x = 1\ncall helper(x)\nline 7 if x > 0:\nexception ValueError\nreturn helper\n" \
          "return main\nline 3 print(x)\n"
    features = grader_for("trace").features(log, None, CONTEXT)
    assert features == {"steps": 3.0, "max_call_depth": 2.0, "calls": 2.0, "branches": 1.0, "exceptions": 1.0,
                        "lines": 8.0}
    custom = GradeContext(markers=TraceMarkers(step=r"^STEP", call=r"^ENTER", ret=r"^LEAVE"))
    features = grader_for("trace").features("ENTER f\nSTEP 1\nENTER g\nLEAVE g\nENTER h\nSTEP 2\n", None, custom)
    assert (features["steps"], features["max_call_depth"], features["calls"]) == (2.0, 2.0, 3.0)


def test_registry_and_weights():
    with pytest.raises(ValueError, match="no difficulty grader for domain 'poetry'"):
        grader_for("poetry")
    assert check_weights(DifficultyConfig()) is None
    bad = DifficultyConfig(code_weights={"cyclomatic": 1.0, "beauty": 2.0})
    assert "code_weights names unknown features ['beauty']" in check_weights(bad)

    class Wordy(Grader):
        name = "prose"
        normalisers: ClassVar = {"words": saturating(10)}

        def features(self, text, lang, context):
            return {"words": float(len(text.split()))}

    original = grader_for("science")
    register_grader("science", Wordy())
    try:
        assert grader_for("science").score({"words": 10.0}, {"words": 1.0}) == 0.5
    finally:
        register_grader("science", original)


def test_code_patterns_match_what_their_backtracking_forms_match():
    """The code grader's possessive patterns find exactly what the plain ones find, and its keyword counts
    are the counts of the plain keyword patterns."""
    import random
    import re
    from collections import Counter

    from pipeline.grading import code_grader

    plain = {
        "_COMMENT": re.compile(r"^\s*(?://|#(?!\s*(?:include|import|define|if|pragma)\b)|/\*|\*|--|;|%)"),
        "_DEFINITION": re.compile(r"\b(?:def|function|fn|func|sub|procedure|fun)\s+\w+|"
                                  r"^\s*(?:[\w<>\[\]*&:,]+\s+)+\**\w+\s*\([^;]*\)\s*\{?\s*$", re.MULTILINE),
        "_IMPORT": re.compile(r"^\s*(?:#\s*include\s*[<\"]([^>\"]+)|import\s+([\w.]+)|use\s+([\w:]+)|"
                              r".*\brequire\s*\(\s*['\"]([^'\"]+))", re.MULTILINE),
    }
    branch = re.compile(r"\b(?:if|elif|elsif|for|foreach|while|case|catch|except|when|guard|unless)\b|&&|\|\|")
    pieces = [" ", "  ", "\t", "\n", "def ", "int ", "x", "foo", "(", ")", ";", "{", "}", "*", "<T>", "//", "#",
              "# include <a.h>", "import os", "use std::io", "require('m')", "import", "use", "require", "#", "if", "for", "&&", "|", "yield",
              "async", "class ", "classes", "enum", "impl", "struct ", ":", ",", "-", "%", "\"", "'", "é",
              "--", ";", "/*", "\u2003", "\x1c", "\r"]
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 16)))
        for name, pattern in plain.items():
            assert getattr(code_grader, name).findall(text) == pattern.findall(text), (name, text)
        runs = Counter(re.findall(r"\w+", text))
        assert code_grader._word_runs(text) == runs, text
        assert sum(runs[w] for w in code_grader._BRANCH_WORDS) + text.count("&&") + text.count("||") == \
            len(branch.findall(text)), text
        assert runs["yield"] == len(re.findall(r"\byield\b", text)), text
        features = code_grader.token_features(text)
        code = [line for line in text.split("\n") if line.strip() and not plain["_COMMENT"].match(line)]
        assert code_grader._code_lines(text) == code, text
        body = "\n".join(code)
        assert features["imports"] == len({next(g for g in m if g) for m in plain["_IMPORT"].findall(body)}), text
        assert features["classes"] == len(re.findall(r"\b(?:class|struct|interface|trait|impl|enum)\s+\w+", body))
        assert features["cyclomatic"] == 1 + len(branch.findall(body)), text


def test_notation_level_of_ascii_text_is_the_case_insensitive_one():
    """The lower-case search of ASCII text finds the rung the case-insensitive patterns find."""
    import random
    import re

    from pipeline.grading.math_grader import NOTATION_LEVELS

    assert not any(re.search(r"\\[A-Z]", p.pattern.replace("\\\\", "")) for _, p in NOTATION_LEVELS)

    def reference(text):
        return next((level for level, pattern in NOTATION_LEVELS if pattern.search(text)), 0)

    pieces = ["Proof", "LEMMA", "\\Forall", "\\DELTA", "\\sqrt", "Solve", "X^2", "3X + 1", "x = 2", "1/2", "50%",
              "Matrix", "\\INT", "eigenVALUES", "Ratio", " ", "\n", "a", "B", "7", "\\", "-", "+", "="]
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        assert notation_level(text) == reference(text), text
