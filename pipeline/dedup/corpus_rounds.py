"""The exact and near-duplicate rounds over a whole corpus's features in one process: the dedup job's
driver plan (docs/dedup.md, "Plans").

Unlike `local.py` (which computes its own features and never splits or samples), this takes the features
the job's features pass wrote and follows the job's distributed rules to the letter: survivors by the same
orderings, band buckets of more than `near.max_bucket_size` split by the same id hash, clusters of more than
`survivor.max_exact_members` judged on the same sample, the same tallies. So the job writes the same bytes
whichever plan ran. Documents are rows of the features table sorted by id: a row's position is its id's
rank, and "the smallest id" is the smallest position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.dedup.boilerplate import boilerplate_threshold
from pipeline.dedup.clusters import agreement, components, judge_cluster_batch
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.features import binary_matrix, binary_rows
from pipeline.dedup.rounds import EXACT, EXACT_DUPLICATE, NEAR, NEAR_DUPLICATE, survivor_order

SAMPLE_MEMBERS = 20
"""Members listed per sample cluster in the report (the smallest ids), as the distributed tallies list."""
LARGEST_SPLIT_BUCKETS = 10
PAIR_CHUNK = 65_536
"""Candidate pairs scored at once: two (chunk x num_perm) uint32 gathers, 64 MB at 128 permutations."""
NONE = -1
"""A position that is no document (no near-duplicate survivor, not clustered)."""


@dataclass
class CorpusOutcome:
    """Per document (features rows, sorted by id): the exact/near outcome, plus what the report needs."""

    reason: np.ndarray
    """object: EXACT_DUPLICATE, NEAR_DUPLICATE or None (kept)."""
    cluster: np.ndarray
    """int64: position of the cluster's kept document, NONE outside clusters."""
    round: np.ndarray
    """object: EXACT or NEAR for clustered documents, None otherwise."""
    near_report: dict
    """What the near round adds to its report entry (pairs, split buckets, components)."""
    declined: str | None = None
    """Why the outcome cannot equal the distributed plan's (the caller must run that one), else None."""


def sorted_by_id(feats: pa.Table) -> tuple[pa.Table, str | None]:
    """(`feats` sorted by id, None), or (feats, why not) when ids repeat: the distributed rounds join by
    id, so a repeated id has no single outcome to reproduce here."""
    order = pc.sort_indices(feats.column("id"))
    for i, name in enumerate(feats.column_names):  # a column at a time: the table is held once, not twice
        feats = feats.set_column(i, name, feats.column(name).take(order).combine_chunks())
    ids = feats.column("id")
    if len(ids) > 1 and pc.any(pc.equal(ids[1:], ids[:-1])).as_py():
        return feats, "some document ids occur more than once"
    return feats, None


def corpus_rounds(feats: pa.Table, cfg: DedupConfig, verify: float, near_report: dict) -> CorpusOutcome:
    """The exact and near rounds over `feats` (sorted by id, ids distinct: `sorted_by_id`), as the job's
    distributed rounds decide them. `near_report` is the near round's report so far (its settings)."""
    exact_rep, exact_size = exact_survivors(feats, cfg)
    near_report = dict(near_report)
    n = feats.num_rows
    near_rep, near_others = np.full(n, NONE), np.full(n, NONE)
    declined = None
    if cfg.near.enabled:
        alive = np.flatnonzero(exact_rep == np.arange(n))
        declined = near_round(feats, alive, cfg, verify, near_rep, near_others, near_report)
    reason, cluster, round_ = cluster_status(exact_rep, exact_size, near_rep, near_others)
    return CorpusOutcome(reason, cluster, round_, near_report, declined)


# ---------------------------------------------------------------------------------------------- exact


def exact_survivors(feats: pa.Table, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """(position of each document's exact survivor, its exact group's size): the minimum per exact key of
    the job's rank struct (quality descending, length descending, id; a missing signal sorts last, NaN
    after it, as Spark orders doubles)."""
    n = feats.num_rows
    if not cfg.exact.enabled:
        return np.arange(n), np.ones(n, np.int64)
    keys = binary_matrix(feats.column("exact_key"), np.uint64, 2)
    _, group, sizes = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    sort_keys = [np.arange(n)]  # the id, last key
    for key in reversed(survivor_order(cfg.survivor.rule)):
        if key.column in ("quality", "length"):
            sort_keys.append(_descending_double(feats.column(key.column)))
    order = np.lexsort((*sort_keys, group))
    first = np.ones(n, dtype=bool)
    first[1:] = group[order][1:] != group[order][:-1]
    winner = np.empty(len(sizes), np.int64)
    winner[group[order][first]] = order[first]
    return winner[group], sizes[group].astype(np.int64)


def _descending_double(column) -> np.ndarray:
    """-value as a double, null as +inf (Spark's `coalesce(-cast(col as double), inf)`); NaN stays NaN."""
    values = np.asarray(pc.fill_null(column.cast(pa.float64()), 0.0).to_numpy(), dtype=np.float64)
    missing = np.asarray(pc.is_null(column).to_numpy(zero_copy_only=False), dtype=bool)
    return np.where(missing, np.inf, -values)


# ---------------------------------------------------------------------------------------------- near


def near_round(feats: pa.Table, alive: np.ndarray, cfg: DedupConfig, verify: float, near_rep: np.ndarray,
               near_others: np.ndarray, report: dict) -> str | None:
    """Fill `near_rep` (the cluster's survivor of each judged member still attached to it) and
    `near_others` (on each survivor: its attached members) for the exact survivors `alive`, and the near
    report's pairs, split buckets and components. Returns why the driver cannot follow the distributed
    plan here (more verified pairs than `near.driver_max_edges`: that plan clusters them otherwise), or None."""
    near = cfg.near
    id_hash = np.asarray(feats.column("id_hash").to_numpy(), dtype=np.int64)
    a, b, giant = candidate_pairs(feats.column("bands"), alive, id_hash, near.max_bucket_size)
    sigs = binary_matrix(feats.column("signature"), np.uint32, near.num_perm)
    jaccard = np.concatenate([agreement(sigs[a[i:i + PAIR_CHUNK]], sigs[b[i:i + PAIR_CHUNK]])
                              for i in range(0, len(a), PAIR_CHUNK)]) if len(a) else np.zeros(0)
    verified = jaccard >= verify
    ids = feats.column("id")
    report["candidate_pairs"] = len(a)
    report["verified_pairs"] = int(verified.sum())
    report["split_buckets"] = {"max_bucket_size": near.max_bucket_size, "largest": [
        {"band": band, "size": size, "root": ids[root].as_py()} for band, size, root, _ in giant]}
    if report["verified_pairs"] > near.driver_max_edges:
        return (f"{report['verified_pairs']} verified pairs exceed near.driver_max_edges "
                f"({near.driver_max_edges}): the distributed plan clusters them in rounds")
    report["components"], report["cc_iterations"] = "driver", 0
    members, roots = component_roots(a[verified], b[verified])
    judge(feats, sigs, members, roots, id_hash, cfg, verify, near_rep, near_others)
    return None


def candidate_pairs(bands: pa.ChunkedArray, alive: np.ndarray, id_hash: np.ndarray,
                    max_bucket_size: int) -> tuple[np.ndarray, np.ndarray, list]:
    """(a, b, largest split buckets): the distinct candidate pairs (positions, b < a) of the job's
    `candidate_pairs`, each member of a band bucket linked to the bucket's smallest id, and in a bucket of
    more than `max_bucket_size` to its sub-bucket's (pmod(id_hash, ceil(size / max_bucket_size))) smallest,
    that one to the bucket's; the split buckets as (band, size, root, key), largest first, at most ten."""
    lists = bands.combine_chunks() if isinstance(bands, pa.ChunkedArray) else bands
    offsets = np.asarray(lists.offsets.to_numpy(), dtype=np.int64)
    values = np.asarray(lists.values.to_numpy(), dtype=np.int64)
    width = np.diff(offsets)[alive]
    docs = alive[width > 0]
    count = int(width.max()) if len(width) else 0
    if len(docs) < 2 or count == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), []
    keys = values[offsets[docs][:, None] + np.arange(count)[None, :]]
    span = alive.max() + 1
    pairs, giant = np.zeros(0, np.int64), []
    for band in range(count):
        left, right = [], []
        _, first, bucket, sizes = np.unique(keys[:, band], return_index=True, return_inverse=True,
                                            return_counts=True)
        size = sizes[bucket]
        root = docs[first][bucket]  # `docs` ascends, so a bucket's first row holds its smallest id
        plain = (size >= 2) & (size <= max_bucket_size) & (docs != root)
        left.append(docs[plain])
        right.append(root[plain])
        big = size > max_bucket_size
        if big.any():
            _split_bucket_pairs(docs[big], bucket[big], size[big], root[big], id_hash, max_bucket_size,
                                left, right)
            for k in np.flatnonzero(sizes > max_bucket_size):
                giant.append((band, int(sizes[k]), int(docs[first[k]]), int(keys[first[k], band])))
        # distinct as we go: copies share most bands, so the bands' pairs mostly repeat
        pairs = np.unique(np.concatenate([pairs, np.concatenate(left) * span + np.concatenate(right)]))
    giant.sort(key=lambda g: (-g[1], g[0], g[3]))
    return pairs // span, pairs % span, giant[:LARGEST_SPLIT_BUCKETS]


def _split_bucket_pairs(docs, bucket, size, root, id_hash, max_bucket_size, left, right) -> None:
    """The pairs of the members `docs` of buckets too large to link whole: member to sub-bucket root, sub-bucket
    root to bucket root (Spark's ceil of a double quotient, pmod of a long)."""
    shards = np.ceil(size / max_bucket_size).astype(np.int64)
    shard = np.mod(id_hash[docs], shards)
    _, first, sub = np.unique(np.stack([bucket, shard], axis=1), axis=0, return_index=True, return_inverse=True)
    sub_root = docs[first][sub.reshape(-1)]
    to_sub = docs != sub_root
    to_root = sub_root != root
    left += [docs[to_sub], sub_root[to_root]]
    right += [sub_root[to_sub], root[to_root]]


def component_roots(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(member, root) positions of every node of the graph of edges (a, b): root is the smallest of its
    component (the job's `component_table`)."""
    nodes = np.unique(np.concatenate([a, b]))
    labels = components(np.searchsorted(nodes, a), np.searchsorted(nodes, b), len(nodes))
    return nodes, nodes[labels]


def judge(feats: pa.Table, sigs: np.ndarray, members: np.ndarray, roots: np.ndarray, id_hash: np.ndarray,
          cfg: DedupConfig, verify: float, near_rep: np.ndarray, near_others: np.ndarray) -> None:
    """The job's `judge_clusters`: each cluster's survivor chosen among its members (those with
    pmod(id_hash, size) < max_exact_members in a larger one), then every member compared with it."""
    if not len(members):
        return
    cap = cfg.survivor.max_exact_members
    _, root_index, sizes = np.unique(roots, return_inverse=True, return_counts=True)
    size = sizes[root_index]
    sampled = np.flatnonzero((size <= cap) | (np.mod(id_hash[members], size) < cap))
    sampled = sampled[np.argsort(root_index[sampled], kind="stable")]  # each cluster's sample together
    survivor_of_root = np.full(len(sizes), NONE)
    quality, length = feats.column("quality"), feats.column("length")
    for rows in _whole_clusters(root_index[sampled], PAIR_CHUNK):  # the signatures copied a chunk at a time
        chunk = sampled[rows]
        picked = pa.array(members[chunk])
        batch = pa.RecordBatch.from_arrays(
            [pa.array(roots[chunk]), picked, binary_rows(sigs[members[chunk]]),
             quality.take(picked).combine_chunks(), length.take(picked).combine_chunks()],
            names=["root", "id", "signature", "quality", "length"])
        picks = judge_cluster_batch(batch, cfg.survivor.rule, cfg.near.num_perm)
        survivor_of_root[root_index[chunk]] = np.asarray(picks.column("survivor").to_numpy(), dtype=np.int64)
    survivor = survivor_of_root[root_index]
    judged = survivor != NONE  # a cluster whose sample came out empty has no survivor: no member is judged
    members, survivor = members[judged], survivor[judged]
    attached = members == survivor
    for i in range(0, len(members), PAIR_CHUNK):
        part = slice(i, i + PAIR_CHUNK)
        attached[part] |= agreement(sigs[members[part]], sigs[survivor[part]]) >= verify
    near_rep[members[attached]] = survivor[attached]
    near_others[members[members == survivor]] = 0
    counted, counts = np.unique(survivor[attached & (members != survivor)], return_counts=True)
    near_others[counted] = counts


def _whole_clusters(cluster_of_row: np.ndarray, rows: int):
    """Slices of rows (grouped by cluster) of about `rows` rows each (more for a larger cluster) that never
    cut a cluster."""
    n = len(cluster_of_row)
    starts = np.flatnonzero(np.r_[True, cluster_of_row[1:] != cluster_of_row[:-1]]) if n else np.zeros(0, np.int64)
    begin = 0
    while begin < n:
        if begin + rows >= n:
            end = n
        else:
            last = int(starts[np.searchsorted(starts, begin + rows, side="right") - 1])
            after = np.searchsorted(starts, begin, side="right")
            end = last if last > begin else (int(starts[after]) if after < len(starts) else n)
        yield slice(begin, end)
        begin = end


# ---------------------------------------------------------------------------------------------- status


def cluster_status(exact_rep: np.ndarray, exact_size: np.ndarray, near_rep: np.ndarray,
                   near_others: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reason, cluster, round) per document, as the job's `_cluster_status`: a document's cluster is its
    exact survivor's near-duplicate cluster, or its exact group alone."""
    rows = np.arange(len(exact_rep))
    rep = near_rep[exact_rep]
    final = np.where(rep != NONE, rep, exact_rep)
    exact_copy = rows != exact_rep
    moved = final != rows
    near_member = (rep != NONE) & (moved | (np.maximum(near_others[exact_rep], 0) > 0))
    reason = np.where(exact_copy, EXACT_DUPLICATE, np.where(moved, NEAR_DUPLICATE, None)).astype(object)
    clustered = exact_copy | moved | (exact_size > 1) | near_member
    round_ = np.where(exact_copy, EXACT, np.where(near_member, NEAR, EXACT)).astype(object)
    return reason, np.where(clustered, final, NONE), np.where(clustered, round_, None).astype(object)


# ---------------------------------------------------------------------------------------------- tallies


def reason_counts(sources: pa.ChunkedArray, reason: np.ndarray) -> list[tuple[str, str | None, int]]:
    """(source, reason, documents) per pair present."""
    table = pa.table({"source": sources, "reason": pa.array(reason.tolist(), pa.string())})
    counted = table.group_by(["source", "reason"]).aggregate([([], "count_all")])
    return list(zip(counted.column("source").to_pylist(), counted.column("reason").to_pylist(),
                    counted.column("count_all").to_pylist()))


def cluster_sizes(cluster: np.ndarray, round_: np.ndarray, ids: pa.ChunkedArray, sample: int) -> list[dict]:
    """Per (near, size): {near, size, count, first}, `first` holding the max(sample, 1) clusters of that
    size with the smallest ids, each {cluster_id, members: its SAMPLE_MEMBERS smallest member ids} (the
    rows the job's `_tallies` collects)."""
    rows = np.flatnonzero(cluster != NONE)  # ascending: each cluster's members come smallest first
    if not len(rows):
        return []
    heads, index, sizes = np.unique(cluster[rows], return_inverse=True, return_counts=True)
    near = np.zeros(len(heads), dtype=bool)
    np.logical_or.at(near, index, round_[rows] == NEAR)
    by_cluster = rows[np.argsort(index, kind="stable")]  # each cluster's members together, smallest first
    starts = np.concatenate([[0], np.cumsum(sizes)])
    out = []
    for flag, size in sorted({(bool(f), int(s)) for f, s in zip(near, sizes)}):
        chosen = np.flatnonzero((near == flag) & (sizes == size))  # heads ascend: smallest cluster ids first
        first = [{"cluster_id": ids[int(heads[c])].as_py(),
                  "members": ids.take(pa.array(by_cluster[starts[c]: starts[c] + min(sizes[c], SAMPLE_MEMBERS)])).to_pylist()}
                 for c in chosen[:max(sample, 1)]]
        out.append({"near": int(flag), "size": size, "count": len(chosen), "first": first})
    return out


def frequent_lines(line_hashes: pa.ChunkedArray, kept: np.ndarray, cfg: DedupConfig) -> list[dict]:
    """{h, documents} of the candidate lines in more kept documents than the boilerplate threshold."""
    if not cfg.boilerplate.enabled:
        return []
    threshold = boilerplate_threshold(cfg.boilerplate, int(kept.sum()))
    lists = line_hashes.filter(pa.array(kept)).combine_chunks() if len(line_hashes) else line_hashes
    values = np.asarray(pc.list_flatten(lists).to_numpy(), dtype=np.int64) if len(lists) else np.zeros(0, np.int64)
    hashes, counts = np.unique(values, return_counts=True)
    frequent = counts > threshold
    return [{"h": int(h), "documents": int(c)} for h, c in zip(hashes[frequent], counts[frequent])]
