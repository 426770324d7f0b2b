"""From raw scores to `difficulty` and `tier`: exact ranks within a domain, ties broken by id.

The job applies this rule corpus-wide with a Spark window (partition by domain, order by score then id); this
module is the same rule in plain Python, for tests and small inputs. With r the 1-based rank among the n
documents of a domain:

    difficulty = (r - 0.5) / n          the mid-rank percentile, in (0, 1)
    tier       = floor((r - 1) * tiers / n)   quantile bins 0 .. tiers-1 of (nearly) equal size

Both depend on the set of (domain, score, id) alone, so they do not change with partitioning.
"""

from __future__ import annotations


def difficulty_of(rank: int, count: int) -> float:
    return (rank - 0.5) / count


def tier_of(rank: int, count: int, tiers: int) -> int:
    return (rank - 1) * tiers // count


def rank_within_domains(rows: list[tuple[str, float, str]], tiers: int) -> dict[str, tuple[float, int]]:
    """(domain, score, id) rows -> id -> (difficulty, tier)."""
    by_domain: dict[str, list[tuple[float, str]]] = {}
    for domain, score, doc_id in rows:
        by_domain.setdefault(domain, []).append((score, doc_id))
    out = {}
    for members in by_domain.values():
        members.sort()
        for rank, (_, doc_id) in enumerate(members, start=1):
            out[doc_id] = (difficulty_of(rank, len(members)), tier_of(rank, len(members), tiers))
    return out


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation with average ranks for ties (0 when either side is constant)."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"need two equally long lists of at least 2 values, got {len(xs)} and {len(ys)}")
    rx, ry = _average_ranks(xs), _average_ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / (vx * vy) ** 0.5 if vx and vy else 0.0


def _average_ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks
