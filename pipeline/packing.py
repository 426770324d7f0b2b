"""Packing documents into fixed-length sequences.

Items are documents already framed (`<bos>` tokens `<eos>`), given as sizes in training order. A bin is a
sequence of `capacity` token slots. Every packer returns, per bin, a list of `(item, offset, length)`
pieces: `length` slots of `item` from `offset`. An item larger than `capacity` is cut into full chunks
(each filling a bin alone) and a last chunk that is packed like any other item: nothing is dropped.

- `best_fit_decreasing`: as many bins as needed; each item, largest first, goes to the fullest bin it fits.
- `pack_exact`: the same into a fixed number of bins; an item that fits no bin is split across the
  largest gaps (only then is a document cut that did not need to be). Used by the build, where a shard
  holds exactly its share of the phase's sequences.
- `first_fit` and `concat_split`: the baselines of bench/pack.py.

Bins come back in training order (by their earliest item) and pieces inside a bin by item, so a
sequence reads its documents in the order the curriculum put them.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

Piece = tuple[int, int, int]
"""(item index, offset inside the item, length)."""


def chunk_items(sizes: Sequence[int], capacity: int) -> tuple[list[list[Piece]], list[Piece]]:
    """Full-capacity chunks (one bin each) and the packable rest (one piece per item, possibly a tail)."""
    full, rest = [], []
    for i, size in enumerate(sizes):
        whole, tail = divmod(size, capacity)
        full.extend([[(i, k * capacity, capacity)] for k in range(whole)])
        if tail:
            rest.append((i, whole * capacity, tail))
    return full, rest


class _Bins:
    """Open bins kept sorted by free space, so "the fullest bin that fits" is one bisection."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.contents: list[list[Piece]] = []
        self.free: list[tuple[int, int]] = []  # (free slots, bin index), sorted

    def open(self, count: int = 1) -> None:
        for _ in range(count):
            self.contents.append([])
            bisect.insort(self.free, (self.capacity, len(self.contents) - 1))

    def place(self, piece: Piece) -> bool:
        at = bisect.bisect_left(self.free, (piece[2], -1))
        if at == len(self.free):
            return False
        space, index = self.free.pop(at)
        self.contents[index].append(piece)
        if space > piece[2]:
            bisect.insort(self.free, (space - piece[2], index))
        return True


def _in_training_order(bins: list[list[Piece]]) -> list[list[Piece]]:
    ordered = [sorted(b) for b in bins if b]
    ordered.sort(key=lambda b: b[0])
    return ordered


def _decreasing(pieces: list[Piece]) -> list[Piece]:
    return sorted(pieces, key=lambda p: (-p[2], p[0]))


def best_fit_decreasing(sizes: Sequence[int], capacity: int) -> list[list[Piece]]:
    """Best-fit decreasing with as many bins as needed (padding fills the rest of each bin)."""
    full, rest = chunk_items(sizes, capacity)
    bins = _Bins(capacity)
    for piece in _decreasing(rest):
        if not bins.place(piece):
            bins.open()
            bins.place(piece)
    return _in_training_order(full + bins.contents)


def pack_exact(sizes: Sequence[int], capacity: int, num_bins: int) -> list[list[Piece]]:
    """Best-fit decreasing into exactly `num_bins` bins (the sizes must fit: sum <= num_bins * capacity).

    Items that fit no bin whole are split over the bins with the most free space, largest first, so the
    fewest documents are cut. Returns exactly `num_bins` bins, some possibly empty (all padding).
    """
    if sum(sizes) > num_bins * capacity:
        raise ValueError(f"{sum(sizes)} tokens do not fit in {num_bins} sequences of {capacity}")
    full, rest = chunk_items(sizes, capacity)
    bins = _Bins(capacity)
    bins.open(num_bins - len(full))
    overflow = [p for p in _decreasing(rest) if not bins.place(p)]
    for item, offset, length in overflow:
        while length:
            space, index = bins.free.pop()  # the bin with the most free space
            take = min(space, length)
            bins.contents[index].append((item, offset, take))
            if space > take:
                bisect.insort(bins.free, (space - take, index))
            offset, length = offset + take, length - take
    packed = _in_training_order(full + bins.contents)
    return packed + [[] for _ in range(num_bins - len(packed))]


def first_fit(sizes: Sequence[int], capacity: int) -> list[list[Piece]]:
    """First fit in arrival order (the common baseline): each item goes to the first bin with room."""
    full, rest = chunk_items(sizes, capacity)
    contents: list[list[Piece]] = []
    free: list[int] = []
    for piece in rest:
        for index, space in enumerate(free):
            if space >= piece[2]:
                contents[index].append(piece)
                free[index] -= piece[2]
                break
        else:
            contents.append([piece])
            free.append(capacity - piece[2])
    return _in_training_order(full + contents)


def concat_split(sizes: Sequence[int], capacity: int) -> list[list[Piece]]:
    """Concatenate everything and cut every `capacity` slots (no padding but the last; many cut documents)."""
    bins: list[list[Piece]] = [[]]
    space = capacity
    for item, size in enumerate(sizes):
        offset = 0
        while offset < size:
            if space == 0:
                bins.append([])
                space = capacity
            take = min(space, size - offset)
            bins[-1].append((item, offset, take))
            offset, space = offset + take, space - take
    return [b for b in bins if b]


def padding_fraction(bins: list[list[Piece]], capacity: int) -> float:
    used = sum(length for b in bins for _, _, length in b)
    return 1 - used / (len(bins) * capacity) if bins else 0.0


def cut_documents(bins: list[list[Piece]], sizes: Sequence[int], capacity: int) -> int:
    """Documents split into more pieces than their length makes necessary (ceil(size / capacity))."""
    pieces: dict[int, int] = {}
    for b in bins:
        for item, _, _ in b:
            pieces[item] = pieces.get(item, 0) + 1
    return sum(1 for item, n in pieces.items() if n > -(-sizes[item] // capacity))


# --- shard windows ----------------------------------------------------------------------------------------

def shard_bounds(total: int, num_sequences: int, shard_sequences: int, shard: int) -> tuple[int, int]:
    """The slots [start, end) of a phase's content that shard `shard` holds: its share of the sequences
    times the content per sequence, in integers (shard s starts at floor(total * s * S / N))."""
    def bound(sequence: int) -> int:
        return total * min(sequence, num_sequences) // num_sequences
    return bound(shard * shard_sequences), bound((shard + 1) * shard_sequences)


def shard_sequences_of(num_sequences: int, shard_sequences: int, shard: int) -> int:
    return min(shard_sequences, num_sequences - shard * shard_sequences)


def num_shards(num_sequences: int, shard_sequences: int) -> int:
    return -(-num_sequences // shard_sequences)


def split_at_shards(
    start: int, length: int, total: int, num_sequences: int, shard_sequences: int,
) -> list[tuple[int, int, int]]:
    """The (shard, offset, length) pieces of the content span [start, start + length)."""
    pieces, offset = [], 0
    while offset < length:
        position = start + offset
        # last sequence q with total * q // N <= position, then its shard
        q = ((position + 1) * num_sequences + total - 1) // total - 1
        shard = q // shard_sequences
        _, end = shard_bounds(total, num_sequences, shard_sequences, shard)
        take = min(end - position, length - offset)
        pieces.append((shard, offset, take))
        offset += take
    return pieces
