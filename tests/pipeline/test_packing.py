import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.packing import (
    best_fit_decreasing,
    concat_split,
    cut_documents,
    first_fit,
    pack_exact,
    padding_fraction,
    shard_bounds,
    split_at_shards,
)


def covered(bins, sizes):
    """Every slot of every item placed exactly once."""
    seen = {i: [] for i in range(len(sizes))}
    for b in bins:
        for item, offset, length in b:
            seen[item].append((offset, length))
    for item, spans in seen.items():
        spans.sort()
        at = 0
        for offset, length in spans:
            assert offset == at and length > 0
            at += length
        assert at == sizes[item]


def test_best_fit_decreasing_example():
    bins = best_fit_decreasing([6, 5, 4, 3, 2], capacity=10)
    assert bins == [[(0, 0, 6), (2, 0, 4)], [(1, 0, 5), (3, 0, 3), (4, 0, 2)]]
    assert padding_fraction(bins, 10) == 0.0


def test_long_documents_are_chunked_never_dropped():
    bins = best_fit_decreasing([25, 3], capacity=10)
    covered(bins, [25, 3])
    assert [(0, 0, 10)] in bins and [(0, 10, 10)] in bins
    assert cut_documents(bins, [25, 3], 10) == 0  # 3 pieces are what a 25-slot document needs


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=60), st.integers(8, 40))
def test_every_packer_places_every_slot_once(sizes, capacity):
    for packer in (best_fit_decreasing, first_fit, concat_split):
        bins = packer(sizes, capacity)
        covered(bins, sizes)
        assert all(sum(p[2] for p in b) <= capacity for b in bins)
    num_bins = -(-sum(sizes) // capacity) + 1
    exact = pack_exact(sizes, capacity, num_bins)
    assert len(exact) == num_bins
    covered(exact, sizes)
    assert all(sum(p[2] for p in b) <= capacity for b in exact)


def test_pack_exact_fills_a_tight_window_and_cuts_only_what_it_must():
    sizes = [7, 7, 7, 3, 3, 3]  # 30 slots into 3 bins of 10: a perfect fit exists
    bins = pack_exact(sizes, 10, 3)
    assert padding_fraction(bins, 10) == 0 and cut_documents(bins, sizes, 10) == 0
    bins = pack_exact([6, 6, 6], 9, 2)  # 18 slots, 2 bins of 9: one document must be cut
    covered(bins, [6, 6, 6])
    assert cut_documents(bins, [6, 6, 6], 9) == 1


def test_bins_come_in_training_order():
    bins = best_fit_decreasing([2, 9, 3, 8], capacity=10)
    assert [b[0][0] for b in bins] == sorted(b[0][0] for b in bins)


def test_best_fit_beats_the_baselines_on_realistic_lengths():
    rng = random.Random(0)
    sizes = [min(int(rng.lognormvariate(6, 1.2)) + 2, 40_000) for _ in range(3000)]
    bfd = best_fit_decreasing(sizes, 8192)
    assert padding_fraction(bfd, 8192) < 0.01
    assert padding_fraction(bfd, 8192) < padding_fraction(first_fit(sizes, 8192), 8192)
    assert cut_documents(bfd, sizes, 8192) == 0 < cut_documents(concat_split(sizes, 8192), sizes, 8192)


def test_shard_windows_split_the_content_exactly():
    total, n, s = 1000, 10, 3  # 10 sequences in shards of 3, 3, 3, 1
    bounds = [shard_bounds(total, n, s, k) for k in range(4)]
    assert bounds == [(0, 300), (300, 600), (600, 900), (900, 1000)]
    assert split_at_shards(250, 400, total, n, s) == [(0, 0, 50), (1, 50, 300), (2, 350, 50)]
    assert split_at_shards(0, 1000, total, n, s)[-1] == (3, 900, 100)
