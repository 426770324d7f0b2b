"""Clusters of near-duplicates: components of verified pairs, each cluster's survivor, and its bounds.

A cluster starts as a connected component of the verified candidate pairs. Components chain: A ~ B ~ C
can join A and C at a Jaccard far below the threshold, and with insertion edits the longest member is the
most edited one. So the survivor is chosen deliberately (`survivor_order`): quality where the input has a
signal, then centrality (the member with the highest mean estimated Jaccard to the others: the original
its copies surround), then length, then id. Then the cluster is bounded: a member whose estimated Jaccard
to the survivor is below the verification threshold was only chained in; it leaves the cluster and is
kept (`attached_to_survivor`), so every document dropped as a near-duplicate is itself a verified
near-duplicate of the document kept.

Centrality needs no pairwise comparison: a member's summed agreement with the others over the signature
slots is, slot by slot, the number of members holding the same value there (less itself), so one count of
(cluster, slot, value) per slot gives every member's mean estimated Jaccard in O(members x slots).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.dedup.rounds import survivor_order


def components(left: np.ndarray, right: np.ndarray, nodes: int) -> np.ndarray:
    """Component label of each of `nodes` nodes given undirected edges (left[k], right[k]): the smallest
    node index of its component, whatever the edge order (scipy's connected components, then a minimum)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if nodes == 0:
        return np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(nodes, nodes))
    _, labels = connected_components(graph, directed=False)
    smallest = np.full(labels.max() + 1, nodes, dtype=np.int64)
    np.minimum.at(smallest, labels, np.arange(nodes))
    return smallest[labels]


def centrality(signatures: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per row: over all signature slots, how many other rows of its group hold the same value there.
    Divided by (slots x (group size - 1)) it is the row's mean estimated Jaccard to the rest of its group."""
    rows, slots = signatures.shape
    out = np.zeros(rows, dtype=np.int64)
    if rows == 0:
        return out
    group_key = groups.astype(np.uint64) << np.uint64(32)
    for slot in range(slots):
        _, inverse, counts = np.unique(group_key | signatures[:, slot].astype(np.uint64),
                                       return_inverse=True, return_counts=True)
        out += counts[inverse] - 1
    return out


def survivor_ranks(ids: list[str] | np.ndarray, quality: np.ndarray, central: np.ndarray, length: np.ndarray,
                   rule: str) -> np.ndarray:
    """Row order by `survivor_order(rule)`: the first row of each group in this order survives. Missing
    quality (NaN) sorts after every present value."""
    keys = []
    for key in survivor_order(rule):
        if key.column == "id":
            keys.append(np.unique(np.asarray(ids, dtype=object), return_inverse=True)[1])
        elif key.column == "quality":
            keys.append(np.where(np.isnan(quality), np.inf, -quality))
        elif key.column == "centrality":
            keys.append(-central)
        elif key.column == "length":
            keys.append(-length)
    return np.lexsort(keys[::-1]) if keys else np.arange(len(length))


def choose_survivors(groups: np.ndarray, ids, quality: np.ndarray, central: np.ndarray,
                     length: np.ndarray, rule: str) -> np.ndarray:
    """Per row: the row index of its group's survivor."""
    order = survivor_ranks(ids, quality, central, length, rule)
    order = order[np.argsort(groups[order], kind="stable")]
    firsts = np.ones(len(order), dtype=bool)
    firsts[1:] = groups[order][1:] != groups[order][:-1]
    winner = np.empty(groups.max() + 1 if len(groups) else 0, dtype=np.int64)
    winner[groups[order][firsts]] = order[firsts]
    return winner[groups]


def agreement(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of row-aligned signatures: the share of equal slots."""
    return (left == right).mean(axis=1) if len(left) else np.zeros(0)


def attached_to_survivor(signatures: np.ndarray, survivor: np.ndarray, verify_threshold: float) -> np.ndarray:
    """Per row: does it stay in its cluster (it is the survivor, or close enough to it)?"""
    rows = np.arange(len(survivor))
    return (survivor == rows) | (agreement(signatures, signatures[survivor]) >= verify_threshold)


def judge_cluster_batch(batch: pa.RecordBatch, rule: str, num_perm: int) -> pa.RecordBatch:
    """For one batch of cluster members (root, id, signature, quality, length, any number of clusters):
    (root, id, centrality, survivor, survivor_signature) per member, the survivor chosen per root."""
    from pipeline.dedup.features import binary_matrix, binary_rows

    roots = np.unique(np.asarray(batch.column("root").to_pylist(), dtype=object), return_inverse=True)[1]
    sigs = binary_matrix(batch.column("signature"), np.uint32, num_perm)
    quality = np.asarray(batch.column("quality").to_numpy(zero_copy_only=False), dtype=np.float64)
    length = np.asarray(batch.column("length").to_numpy(zero_copy_only=False), dtype=np.int64)
    ids = batch.column("id")
    central = centrality(sigs, roots)
    winner = choose_survivors(roots, ids.to_pylist(), quality, central, length, rule)
    return pa.RecordBatch.from_arrays(
        [batch.column("root"), ids, pa.array(central, pa.int64()), ids.take(pa.array(winner)),
         binary_rows(sigs[winner])],
        names=["root", "id", "centrality", "survivor", "survivor_signature"])
