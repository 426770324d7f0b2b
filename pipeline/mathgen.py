"""Math problems with worked solutions at known difficulty levels, generated from a seed.

Levels: 1 arithmetic, 2 fractions, 3 linear equations, 4 quadratic equations and systems, 5 calculus and
number theory. Each problem carries its level, the final answer, and a Python function that computes the
answer (a runnable unit for the traces job).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Problem:
    level: int
    topic: str
    question: str
    solution: str
    answer: str
    code: str
    """A small Python function computing the answer: `entry_point(*inputs)` returns it."""
    entry_point: str
    inputs: tuple

    def text(self) -> str:
        return f"Problem. {self.question}\n\nSolution.\n{self.solution}\n\nAnswer: {self.answer}\n"


def _arithmetic(rng: random.Random) -> Problem:
    a, b, c = rng.randint(12, 99), rng.randint(12, 99), rng.randint(2, 9)
    total = a + b * c
    steps = f"1. Multiplication comes first: {b} \\times {c} = {b * c}.\n2. Then add: {a} + {b * c} = {total}."
    code = "def evaluate(a, b, c):\n    product = b * c\n    return a + product\n"
    return Problem(1, "arithmetic", f"Compute ${a} + {b} \\times {c}$.", steps, str(total), code, "evaluate", (a, b, c))


def _fractions(rng: random.Random) -> Problem:
    p, q = rng.randint(1, 9), rng.randint(2, 12)
    r, s = rng.randint(1, 9), rng.randint(2, 12)
    lcm = q * s // math.gcd(q, s)
    total = Fraction(p, q) + Fraction(r, s)
    steps = (
        f"1. The least common denominator of {q} and {s} is {lcm}.\n"
        f"2. Rewrite: $\\frac{{{p}}}{{{q}}} = \\frac{{{p * lcm // q}}}{{{lcm}}}$ and "
        f"$\\frac{{{r}}}{{{s}}} = \\frac{{{r * lcm // s}}}{{{lcm}}}$.\n"
        f"3. Add the numerators: $\\frac{{{p * lcm // q + r * lcm // s}}}{{{lcm}}}$.\n"
        f"4. Reduce by the greatest common divisor: ${_latex_fraction(total)}$."
    )
    code = (
        "from math import gcd\n\n"
        "def add_fractions(p, q, r, s):\n"
        "    lcm = q * s // gcd(q, s)\n"
        "    numerator = p * (lcm // q) + r * (lcm // s)\n"
        "    common = gcd(numerator, lcm)\n"
        "    return (numerator // common, lcm // common)\n"
    )
    question = f"Simplify $\\frac{{{p}}}{{{q}}} + \\frac{{{r}}}{{{s}}}$."
    answer = f"{total.numerator}/{total.denominator}"
    return Problem(2, "fractions", question, steps, answer, code, "add_fractions", (p, q, r, s))


def _latex_fraction(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def _linear(rng: random.Random) -> Problem:
    a, x, b = rng.randint(2, 12), rng.randint(-15, 15), rng.randint(-40, 40)
    c = a * x + b
    steps = (
        f"1. Subtract {b} from both sides: ${a}x = {c} - ({b}) = {c - b}$.\n"
        f"2. Divide both sides by {a}: $x = \\frac{{{c - b}}}{{{a}}} = {x}$.\n"
        f"3. Check: ${a} \\cdot ({x}) + ({b}) = {c}$, as required."
    )
    code = "def solve_linear(a, b, c):\n    rhs = c - b\n    x = rhs // a\n    assert a * x + b == c\n    return x\n"
    question = f"Solve for $x$: ${a}x + ({b}) = {c}$."
    return Problem(3, "linear equations", question, steps, f"x = {x}", code, "solve_linear", (a, b, c))


def _quadratic(rng: random.Random) -> Problem:
    r1, r2 = sorted(rng.sample(range(-12, 13), 2))
    b, c = -(r1 + r2), r1 * r2
    disc = b * b - 4 * c
    root = math.isqrt(disc)
    steps = (
        f"1. For $x^2 + ({b})x + ({c}) = 0$ the discriminant is $\\Delta = b^2 - 4ac = {b * b} - ({4 * c}) = {disc}$.\n"
        f"2. $\\Delta > 0$ and $\\sqrt{{\\Delta}} = {root}$, so there are two real roots.\n"
        f"3. By the quadratic formula $x = \\frac{{-b \\pm \\sqrt{{\\Delta}}}}{{2a}} = \\frac{{{-b} \\pm {root}}}{{2}}$.\n"
        f"4. Hence $x_1 = {r1}$ and $x_2 = {r2}$.\n"
        f"5. Check with Vieta's formulas: $x_1 + x_2 = {r1 + r2} = -b$ and $x_1 x_2 = {c} = c$."
    )
    code = (
        "from math import isqrt\n\n"
        "def solve_quadratic(b, c):\n"
        "    disc = b * b - 4 * c\n"
        "    if disc < 0:\n"
        "        raise ValueError('no real roots')\n"
        "    root = isqrt(disc)\n"
        "    return sorted([(-b - root) // 2, (-b + root) // 2])\n"
    )
    question = f"Find all real solutions of $x^2 + ({b})x + ({c}) = 0$."
    answer = f"x = {r1} or x = {r2}"
    return Problem(4, "quadratic equations", question, steps, answer, code, "solve_quadratic", (b, c))


def _calculus(rng: random.Random) -> Problem:
    coeffs = [rng.randint(-6, 6) or 1 for _ in range(4)]
    lo, hi = sorted(rng.sample(range(-3, 5), 2))
    antiderivative = [Fraction(c, k + 1) for k, c in enumerate(coeffs)]
    value = sum(a * (Fraction(hi) ** (k + 1) - Fraction(lo) ** (k + 1)) for k, a in enumerate(antiderivative))
    poly = " + ".join(f"({c})x^{{{k}}}" for k, c in enumerate(coeffs))
    prim = " + ".join(f"{_latex_fraction(a)}x^{{{k + 1}}}" for k, a in enumerate(antiderivative))
    steps = (
        f"1. Integrate term by term using $\\int x^n \\, dx = \\frac{{x^{{n+1}}}}{{n+1}}$ for $n \\neq -1$.\n"
        f"2. An antiderivative is $F(x) = {prim}$.\n"
        f"3. By the fundamental theorem of calculus, $\\int_{{{lo}}}^{{{hi}}} f(x)\\,dx = F({hi}) - F({lo})$.\n"
        f"4. Evaluating each power at the bounds and summing gives ${_latex_fraction(value)}$.\n"
        f"5. Since $f$ is a polynomial it is continuous on $[{lo}, {hi}]$, so the theorem applies."
    )
    code = (
        "from fractions import Fraction\n\n"
        "def integrate_polynomial(coeffs, lo, hi):\n"
        "    total = Fraction(0)\n"
        "    for power, c in enumerate(coeffs):\n"
        "        a = Fraction(c, power + 1)\n"
        "        total += a * (Fraction(hi) ** (power + 1) - Fraction(lo) ** (power + 1))\n"
        "    return total\n"
    )
    question = f"Evaluate the definite integral $\\int_{{{lo}}}^{{{hi}}} \\left({poly}\\right) dx$."
    return Problem(5, "calculus", question, steps, str(value), code, "integrate_polynomial", (coeffs, lo, hi))


def _number_theory(rng: random.Random) -> Problem:
    m = rng.choice([p for p in range(11, 200) if all(p % d for d in range(2, int(p**0.5) + 1))])
    a = rng.randint(2, m - 1)
    inverse = pow(a, -1, m)
    steps = (
        f"1. Since ${m}$ is prime and $\\gcd({a}, {m}) = 1$, an inverse of {a} modulo {m} exists (Bezout's identity).\n"
        f"2. Run the extended Euclidean algorithm on $({m}, {a})$ to find integers $s, t$ with $s \\cdot {m} + t \\cdot {a} = 1$.\n"
        f"3. Reducing $t$ modulo {m} gives $t \\equiv {inverse} \\pmod{{{m}}}$.\n"
        f"4. Check: ${a} \\cdot {inverse} = {a * inverse} = {a * inverse // m} \\cdot {m} + 1 \\equiv 1 \\pmod{{{m}}}$.\n"
        f"5. By Fermat's little theorem the same value equals $a^{{p-2}} \\bmod p$, which confirms uniqueness."
    )
    code = (
        "def modular_inverse(a, m):\n"
        "    old_r, r = a, m\n"
        "    old_s, s = 1, 0\n"
        "    while r != 0:\n"
        "        q = old_r // r\n"
        "        old_r, r = r, old_r - q * r\n"
        "        old_s, s = s, old_s - q * s\n"
        "    if old_r != 1:\n"
        "        raise ValueError('not invertible')\n"
        "    return old_s % m\n"
    )
    question = f"Find the multiplicative inverse of ${a}$ modulo ${m}$, i.e. $x$ with ${a}x \\equiv 1 \\pmod{{{m}}}$."
    return Problem(5, "number theory", question, steps, str(inverse), code, "modular_inverse", (a, m))


GENERATORS = (_arithmetic, _fractions, _linear, _quadratic, _calculus, _number_theory)


def generate_problems(count: int, seed: int) -> list[Problem]:
    """`count` problems spread evenly over the generators, deterministic for a seed."""
    rng = random.Random(seed)
    return [GENERATORS[i % len(GENERATORS)](rng) for i in range(count)]
