"""How the training sample and the held-out documents are chosen: pure functions of id, seed and sizes.

Every document gets a key u in [0, 1) from sha256("SEED:ID"), so choices do not depend on how Spark
partitions the data. Documents with u < heldout_fraction are held out (never trained on; the bytes/token
report is measured on them). The others are sampled with a per-domain probability p_d, chosen so that
each domain contributes its weighted share of `sample_bytes`: kept when (u - h) / (1 - h) < p_d.
jobs/tokenize.py evaluates the same key as a Spark expression (a test checks that both agree).
"""

from __future__ import annotations

import hashlib

KEY_HEX_DIGITS = 13
"""52 bits of the hash: exact in a double, so Spark and Python compute the same key."""


def sample_key(doc_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).hexdigest()
    return int(digest[:KEY_HEX_DIGITS], 16) / 16**KEY_HEX_DIGITS


def is_heldout(key: float, heldout_fraction: float) -> bool:
    return key < heldout_fraction


def is_sampled(key: float, heldout_fraction: float, probability: float) -> bool:
    return key >= heldout_fraction and (key - heldout_fraction) / (1 - heldout_fraction) < probability


def domain_targets(present: dict[str, int], weights: dict[str, float], sample_bytes: int) -> dict[str, float]:
    """Target bytes per domain: `sample_bytes` split by weight over the weighted domains that have text."""
    weighted = {d: weights[d] for d in sorted(present) if weights.get(d, 0) > 0 and present[d] > 0}
    total = sum(weighted.values())
    return {d: sample_bytes * w / total for d, w in weighted.items()}


def sampling_probabilities(
    domain_bytes: dict[str, int], weights: dict[str, float], sample_bytes: int
) -> dict[str, float]:
    """Domain -> probability of sampling one of its (not held-out) documents; a small domain is taken whole."""
    targets = domain_targets(domain_bytes, weights, sample_bytes)
    return {d: min(1.0, target / domain_bytes[d]) for d, target in targets.items()}
