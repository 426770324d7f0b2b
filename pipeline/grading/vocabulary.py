"""Word lists of the domain scorer and the prose grader: short, lower case, written for this project.

Matching is on whole lower-case words, and a word also matches by its stem when it ends in a common
suffix (integrals -> integral, equations -> equation), see `term_hits`.
"""

from __future__ import annotations

import functools
from collections import Counter


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


MATH_TERMS = _word_set("""
algebra algebraic arithmetic asymptote axiom bijection binomial calculus coefficient combinatorics
commutative congruence congruent conjecture convergence corollary cosine countable denominator derivative
determinant differentiable discriminant divisible divisor eigenvalue eigenvector equation exponent factorial
factorization fraction geometry homomorphism hyperbola hypotenuse inequality integral integrate isomorphism
lemma logarithm manifold matrix modulo monotonic numerator orthogonal parabola permutation polynomial prime
probability proof prove quadratic quotient radius rational remainder sine subspace summation surjective
tangent theorem topology trigonometry vector
""")
"""Words that are rarely anything but mathematics (function, variable, integer and graph are left out: they
fill programming documentation)."""

SCIENCE_TERMS = _word_set("""
acceleration acid alkaline amino atom atomic bacteria biology biomass boson carbon catalyst chemical
chemistry chromosome climate crystal electron electromagnetic energy entropy enzyme equilibrium evolution
fission fusion galaxy gene genome geology gravity gravitational hydrogen isotope kinetic laboratory magnetic
metabolism molecule molecular momentum neuron neutron nucleus orbit organism oxygen particle photon physics
planet plasma protein proton quantum radiation relativity species spectrum temperature thermodynamic tissue
velocity voltage wavelength
""")
"""Words that are rarely anything but natural science (element, cell, force and compound are left out)."""

COMPUTING_TERMS = _word_set("""
api argument array asynchronous attribute boolean buffer byte cache callback class compiler concurrency
configuration constructor database decorator dictionary encoding exception executable filesystem generator
hash implementation instance interface interpreter iterator keyword lambda library metadata method module
namespace object parameter parser pointer protocol queue recursion recursive regex runtime schema serialization
socket stack string subclass subprocess syntax thread token tuple unicode
""")

TECHNICAL_TERMS = MATH_TERMS | SCIENCE_TERMS | COMPUTING_TERMS

_SUFFIXES = ("s", "es", "al", "ly", "ic", "ics", "ed")


@functools.lru_cache(maxsize=1 << 17)
def stem_in(word: str, vocabulary: frozenset[str]) -> bool:
    """`word` or the word without one common suffix is in `vocabulary`. (Cached per (word, vocabulary):
    the vocabularies are a few long-lived frozensets, whose hash Python computes once.)"""
    if word in vocabulary:
        return True
    return any(word.endswith(s) and word[: -len(s)] in vocabulary for s in _SUFFIXES)


@functools.lru_cache(maxsize=64)
def extended(vocabulary: frozenset[str], extra: tuple[str, ...]) -> frozenset[str]:
    """`vocabulary` plus `extra` words, built once per distinct pair (so its cached hash is reused)."""
    return vocabulary | frozenset(extra) if extra else vocabulary


@functools.lru_cache(maxsize=64)
def with_suffixes(vocabulary: frozenset[str]) -> frozenset[str]:
    """Every word that `stem_in(word, vocabulary)` accepts: the terms, and each term followed by each suffix
    (a word is accepted exactly when it is a term, or a term plus one suffix). Built once per vocabulary, so
    counting terms is one set intersection instead of a lookup per word."""
    return vocabulary | frozenset(term + suffix for term in vocabulary for suffix in _SUFFIXES)


def term_hits(words: list[str] | Counter[str], vocabulary: frozenset[str]) -> int:
    """How many of `words` (lower case) are vocabulary terms (each distinct word looked up once). Give a
    Counter of the words to look up several vocabularies without counting them again."""
    counts = words if isinstance(words, Counter) else Counter(words)
    return sum(counts[w] for w in with_suffixes(vocabulary).intersection(counts))
