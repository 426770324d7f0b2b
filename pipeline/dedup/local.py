"""The exact and near-duplicate rounds on one process, without Spark: the same pipeline functions and rules
as `jobs/dedup.py`, for benchmarks, tests and corpora that fit in memory.

Its decisions equal the Spark job's while no band bucket exceeds `near.max_bucket_size` and no cluster
exceeds `survivor.max_exact_members` (the job splits or samples those; here everything is exact).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.dedup.clusters import agreement, attached_to_survivor, centrality, choose_survivors, components
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.features import binary_matrix, document_features
from pipeline.dedup.minhash import layout_for_recall
from pipeline.dedup.rounds import EXACT, EXACT_DUPLICATE, NEAR, NEAR_DUPLICATE

OUTCOME_SCHEMA = pa.schema([("id", pa.string()), ("reason", pa.string()), ("cluster_id", pa.string()),
                            ("round", pa.string())])


def bands_and_rows(cfg: DedupConfig) -> tuple[int, int]:
    """The LSH layout: as configured, else derived from the threshold and the recall target."""
    near = cfg.near
    if near.bands is not None and near.rows is not None:
        return near.bands, near.rows
    return layout_for_recall(near.threshold, near.num_perm, near.effective_recall_jaccard, near.target_recall)


def dedup_batch(batch: pa.RecordBatch, cfg: DedupConfig) -> pa.Table:
    """(id, reason, cluster_id, round) for every document of `batch` (columns id, text, domain; length and
    quality optional). `cluster_id` is the id of the cluster's kept document; null outside clusters."""
    bands, rows = bands_and_rows(cfg)
    n = batch.num_rows
    feats = document_features(batch, cfg, bands, rows, ("id",))
    ids = np.asarray(feats.column("id").to_pylist(), dtype=object)
    rank = np.unique(ids, return_inverse=True)[1]
    length = _column(batch, "length", np.int64, default=None)
    if length is None:
        length = np.asarray(pa.compute.utf8_length(batch.column("text")).to_numpy(zero_copy_only=False), np.int64)
    quality = _column(batch, "quality", np.float64, default=np.nan)
    sigs = binary_matrix(feats.column("signature"), np.uint32, cfg.near.num_perm)

    # exact: one survivor per key (all centralities equal)
    if cfg.exact.enabled:
        keys = binary_matrix(feats.column("exact_key"), np.uint64, 2)
        exact_group = np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)
    else:
        exact_group = np.arange(n)
    exact_rep = choose_survivors(exact_group, ids, quality, np.zeros(n, np.int64), length, cfg.survivor.rule)
    alive = np.flatnonzero(exact_rep == np.arange(n))

    near_rep = np.arange(n)  # a document's near-duplicate survivor (itself when none)
    in_cluster = np.zeros(n, dtype=bool)
    if cfg.near.enabled and len(alive) > 1:
        band_lists = feats.column("bands")
        offsets = np.asarray(band_lists.offsets)
        band_values = np.asarray(band_lists.values.to_numpy(zero_copy_only=False))
        members, roots = candidate_pairs(alive, offsets, band_values, bands, rank)
        if len(members) and cfg.near.verify == "signature":
            keep = agreement(sigs[members], sigs[roots]) >= cfg.near.effective_verify_threshold
            members, roots = members[keep], roots[keep]
        position = np.full(n, -1)
        position[alive] = np.arange(len(alive))
        labels = components(position[members], position[roots], len(alive))
        sizes = np.bincount(labels, minlength=len(alive))
        grouped = np.flatnonzero(sizes[labels] > 1)
        docs = alive[grouped]
        groups = labels[grouped]
        central = centrality(sigs[docs], groups)
        winner = docs[choose_survivors(groups, ids[docs], quality[docs], central, length[docs], cfg.survivor.rule)]
        local_winner = np.searchsorted(docs, winner)
        stays = attached_to_survivor(sigs[docs], local_winner, cfg.near.effective_verify_threshold) \
            if cfg.near.verify == "signature" else np.ones(len(docs), dtype=bool)
        near_rep[docs[stays]] = winner[stays]
        in_cluster[docs[stays]] = True
    return _outcomes(ids, exact_rep, near_rep, in_cluster)


def candidate_pairs(alive: np.ndarray, offsets: np.ndarray, values: np.ndarray, bands: int,
                    rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(member, root) document rows: each alive document with bands linked to the smallest id of every band
    bucket it shares (a bucket of n documents gives n - 1 pairs), distinct."""
    has = (offsets[alive + 1] - offsets[alive]) == bands
    docs = alive[has]
    if len(docs) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys = values[(offsets[docs][:, None] + np.arange(bands)[None, :])]
    pairs = []
    for band in range(bands):
        _, bucket = np.unique(keys[:, band], return_inverse=True)
        smallest = np.full(bucket.max() + 1, np.iinfo(np.int64).max)
        np.minimum.at(smallest, bucket, rank[docs])
        root_rank = smallest[bucket]
        linked = root_rank != rank[docs]
        pairs.append(np.stack([rank[docs][linked], root_rank[linked]], axis=1))
    both = np.unique(np.concatenate(pairs), axis=0)
    by_rank = np.empty(len(rank), dtype=np.int64)
    by_rank[rank] = np.arange(len(rank))
    return by_rank[both[:, 0]], by_rank[both[:, 1]]


def _column(batch: pa.RecordBatch, name: str, dtype, default):
    if name not in batch.schema.names:
        return None if default is None else np.full(batch.num_rows, default, dtype=dtype)
    values = batch.column(name).to_numpy(zero_copy_only=False)
    return np.asarray(np.where(values == None, default, values) if default is not None else values,
                      dtype=dtype)


def _outcomes(ids: np.ndarray, exact_rep: np.ndarray, near_rep: np.ndarray, in_cluster: np.ndarray) -> pa.Table:
    n = len(ids)
    rows = np.arange(n)
    final = near_rep[exact_rep]  # an exact copy follows its survivor into the near cluster
    reason = np.where(exact_rep != rows, EXACT_DUPLICATE, np.where(final != rows, NEAR_DUPLICATE, None))
    sizes = np.bincount(final, minlength=n)
    clustered = sizes[final] > 1
    round_of_row = np.where(exact_rep != rows, EXACT, np.where(in_cluster[exact_rep], NEAR, EXACT))
    near_cluster = np.zeros(n, dtype=bool)
    np.logical_or.at(near_cluster, final, in_cluster[exact_rep] & (final != rows))
    round_of_row = np.where((final == rows) & near_cluster, NEAR, round_of_row)
    return pa.table({
        "id": pa.array(ids.tolist(), pa.string()),
        "reason": pa.array(reason.tolist(), pa.string()),
        "cluster_id": pa.array(np.where(clustered, ids[final], None).tolist(), pa.string()),
        "round": pa.array(np.where(clustered, round_of_row, None).tolist(), pa.string()),
    }, schema=OUTCOME_SCHEMA)
