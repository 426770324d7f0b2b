"""Domain tagging: which rule decides, the transparent scorer, the trained linear classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.grading.classifier import files_fingerprint, load_labelled, train_classifier
from pipeline.grading.config import DomainConfig
from pipeline.grading.domain import decide_domain, prose_scores

CFG = DomainConfig()
MATH = (r"Let $f(x) = x^2 - 4x + 3$. The derivative is $f'(x) = 2x - 4$, which vanishes at $x = 2$. "
        r"Since $f''(x) = 2 > 0$ the point is a minimum, and by the quadratic formula the roots are 1 and 3.")
SCIENCE = ("The electron is a charged particle whose momentum and energy obey the laws of quantum physics. "
           "When a photon strikes an atom, an electron can absorb its energy and move to a higher orbit; the "
           "wavelength of the emitted radiation tells us about the structure of the nucleus and the molecule.")
GENERAL = ("The village holds a market every Saturday morning. Farmers bring vegetables, bread and cheese, "
           "and people from the nearby towns come to buy them and to meet their friends over a cup of coffee.")
PYTHON = "import os\n\ndef main():\n    for name in os.listdir('.'):\n        if name.endswith('.py'):\n" \
         "            print(name)\n    return 0\n"


@pytest.mark.parametrize(
    "text, hint, lang, uri, expected",
    [
        ("step 1 call f", "trace", None, "memory://t", ("trace", "source")),
        (GENERAL, None, "python", "memory://a", ("code", "lang")),
        (GENERAL, None, None, "repo/src/lib.rs", ("code", "extension")),
        (GENERAL, "code", None, "memory://x", ("code", "source")),
        (GENERAL, "code", "en", "repo/README.md", ("general", "scorer")),
        (PYTHON, None, None, "data.jsonl#L3", ("code", "content")),
        (MATH, None, "en", "x.jsonl#L1", ("math", "scorer")),
        (MATH, "general", "en", "x.jsonl#L1", ("general", "source")),
        (SCIENCE, None, "en", "x.jsonl#L2", ("science", "scorer")),
        (GENERAL, "math", "en", "x.jsonl#L3", ("math", "source")),
    ],
)
def test_what_decides_the_domain(text, hint, lang, uri, expected):
    decision = decide_domain(text, hint, lang, uri, CFG)
    assert (decision.domain, decision.decided_by) == expected


WORD_PROBLEM = ("Tom has three apples and buys five more at the market. He gives two of them to his sister. "
                "How many apples does he have now?\n\nTom had three apples and bought five, so he had eight. "
                "After giving two to his sister he has six apples left.")


def test_declared_math_is_honoured_unless_configured_otherwise():
    """A grade-school word problem from a source declared `domain = "math"` stays math; the content scorer
    (few math terms, no LaTeX) alone would call it general."""
    assert (decide_domain(WORD_PROBLEM, "math", "en", "gsm.jsonl#L1", CFG).domain,
            decide_domain(WORD_PROBLEM, "math", "en", "gsm.jsonl#L1", CFG).decided_by) == ("math", "source")
    scorer_only = DomainConfig(trusted_hints=("code", "trace"))
    assert decide_domain(WORD_PROBLEM, "math", "en", "gsm.jsonl#L1", scorer_only).domain == "general"
    assert decide_domain(MATH, "general", "en", "x.jsonl#L1", scorer_only).domain == "math"


def test_untrusted_code_hint_and_prose_content():
    decision = decide_domain(GENERAL, "code", None, "memory://x", DomainConfig(trusted_hints=("trace",)))
    assert (decision.domain, decision.decided_by) == ("general", "scorer")


def test_scores_count_latex_and_vocabulary():
    assert prose_scores(MATH, CFG)["math_score"] > 20 > prose_scores(GENERAL, CFG)["math_score"]
    assert prose_scores(SCIENCE, CFG)["science_score"] > 10
    extra = DomainConfig(extra_science_terms=("market", "farmers", "cheese"))
    assert prose_scores(GENERAL, extra)["science_score"] > prose_scores(GENERAL, CFG)["science_score"]


def test_term_counts_accept_exactly_the_stem_rule():
    """`term_hits` counts a word when `stem_in` accepts it: the term, or the term plus one suffix."""
    from pipeline.grading.vocabulary import MATH_TERMS, stem_in, term_hits

    words = ["integral", "integrals", "integrally", "integraled", "integ", "s", "es", "proofs", "proofss",
             "matrix", "matrixes", "matrices", "vectorics", "sine", "sines", "sinees", "", "algebraic", "algebraics"]
    for word in words:
        assert term_hits([word, word], MATH_TERMS) == (2 if stem_in(word, MATH_TERMS) else 0), word
    assert term_hits(words, MATH_TERMS) == sum(stem_in(w, MATH_TERMS) for w in words)


def _labelled(tmp_path):
    rows = []
    words = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]
    for w in words:
        rows.append({"text": f"the {w} root of the polynomial is found with the derivative and a theorem",
                     "label": "math"})
        rows.append({"text": f"the {w} sample of the protein is measured in the cell with an enzyme",
                     "label": "science"})
        rows.append({"text": f"the {w} market of the town is held in the garden with friends and coffee",
                     "label": "general"})
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_classifier_trains_deterministically_and_decides(tmp_path):
    path = _labelled(tmp_path)
    cfg = DomainConfig(classifier_paths=(path,), classifier_buckets=4096, classifier_epochs=100)
    examples = load_labelled(cfg.classifier_paths)
    first, second = train_classifier(examples, cfg), train_classifier(examples, cfg)
    assert np.array_equal(first.weights, second.weights) and first.training_accuracy == 1.0
    assert first.predict("a protein and an enzyme in the cell")[0] == "science"
    decision = decide_domain("we met friends in the garden of the town", None, "en", "x.jsonl", cfg, first)
    assert (decision.domain, decision.decided_by) == ("general", "classifier")
    unsure = DomainConfig(classifier_min_confidence=1.0)
    assert decide_domain(GENERAL, None, "en", "x", unsure, first).decided_by == "scorer"
    assert len(files_fingerprint((path,))) == 64


def test_labelled_files_are_checked(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "label": "poetry"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: label 'poetry'"):
        load_labelled((str(bad),))
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: need a JSON object"):
        load_labelled((str(bad),))
