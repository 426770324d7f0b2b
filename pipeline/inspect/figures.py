"""Small figures the build records per phase in `build/report.json` for the report to draw (no shard is read
again): histograms in power-of-two bins and the mean difficulty along a phase's training order.

Histograms are `{lower edge as text: count}` with the bins 0, 1, 2-3, 4-7, ... (JSON keys are strings);
`merge_counts` adds the per-shard ones up and `bin_label` names a bin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

DECILES = 10


def power_bin(n: int) -> int:
    """The lower edge of the power-of-two bin holding n (0 for 0; 1; 2 for 2-3; 4 for 4-7 ...)."""
    return 0 if n <= 0 else 1 << (int(n).bit_length() - 1)


def bin_label(lower: int) -> str:
    return str(lower) if lower <= 1 else f"{lower}-{2 * lower - 1}"


def counts_by_bin(values: Iterable[int]) -> dict[str, int]:
    counts: dict[int, int] = {}
    for v in values:
        b = power_bin(v)
        counts[b] = counts.get(b, 0) + 1
    return {str(k): counts[k] for k in sorted(counts)}


def padding_per_sequence(bins: Sequence[Sequence[tuple[int, int, int]]], seq_len: int) -> dict[str, int]:
    """Packed sequences (lists of (item, offset, length) pieces) by their padding tokens, in power-of-two bins."""
    return counts_by_bin(seq_len - sum(length for _, _, length in pieces) for pieces in bins)


def merge_counts(histograms: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[int, int] = {}
    for h in histograms:
        for k, v in h.items():
            total[int(k)] = total.get(int(k), 0) + v
    return {str(k): total[k] for k in sorted(total)}


def decile_means(bins: Sequence[tuple[int, int, float]], parts: int = DECILES) -> list[float | None]:
    """Token-weighted mean of an ordering key per tenth of a phase's training tokens.

    `bins` are (bin, tokens, sum of tokens x key) in training order (the key bins of an `easy_to_hard`
    phase, whose key is the difficulty). A bin that straddles a tenth's edge is split in proportion to its
    tokens, as if its documents were spread evenly through it. None for a tenth with no tokens.
    """
    total = sum(cost for _, cost, _ in bins)
    if total <= 0:
        return [None] * parts
    edges = [total * (i + 1) / parts for i in range(parts)]
    tokens, weighted = [0.0] * parts, [0.0] * parts
    at, part = 0.0, 0
    for _, cost, key_sum in bins:
        if cost <= 0:
            continue
        mean = key_sum / cost
        left = float(cost)
        while left > 0 and part < parts:
            take = min(left, edges[part] - at)
            tokens[part] += take
            weighted[part] += take * mean
            at += take
            left -= take
            if at >= edges[part] - 1e-9 and part < parts - 1:
                part += 1
            elif left > 0 and part == parts - 1:  # rounding leftovers belong to the last tenth
                tokens[part] += left
                weighted[part] += left * mean
                left = 0
    return [round(w / t, 6) if t > 0 else None for w, t in zip(weighted, tokens)]
