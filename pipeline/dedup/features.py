"""Per-document dedup features in one pass over a batch: exact key, MinHash signature, LSH band keys and
the hashes of lines that may be boilerplate. What the Spark job shuffles is these, never the text.

Everything is computed over the whole batch at once (compiled kernels over the text buffer, Arrow
kernels, polars' string hash): no Python runs per document. `pipeline.dedup.kernels` says which numpy
functions each kernel replaces; the tests hold the kernels to them.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.dedup.boilerplate import comparable, lines_as_candidates
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.kernels import distinct_per_doc_kernel
from pipeline.dedup.minhash import compiled_band_keys, compiled_signatures
from pipeline.dedup.normalize import collapsed_blanks, normal_forms, plain
from pipeline.dedup.shingles import Shingles, code_shingles, prose_shingles

FEATURE_COLUMNS = [
    pa.field("exact_key", pa.binary()),
    pa.field("shingles", pa.int64()),
    pa.field("signature", pa.binary()),
    pa.field("bands", pa.list_(pa.int64())),
    pa.field("line_hashes", pa.list_(pa.int64())),
    pa.field("id_hash", pa.int64()),
]
"""Appended to the columns the caller passes through (id, source, length, quality)."""
EXACT_SEEDS = (0x243F6A88, 0x85A308D3)
"""Two seeds of polars' string hash: a 128-bit exact key, so that 25 billion documents do not collide."""
ID_SEED = 0x1D5EED
"""Seed of `id_hashes`."""


def id_hashes(ids) -> np.ndarray:
    """A 64-bit hash (int64) of each id: what splits a giant band bucket and samples a giant cluster. Part
    of the features, so that the job's distributed and driver plans split and sample alike (polars' string
    hash, as the exact keys and line hashes: stable within one polars version)."""
    return pl.Series(plain(ids)).hash(ID_SEED).to_numpy().view(np.int64)


def is_code(domains: pa.Array, code_domains: tuple[str, ...]) -> np.ndarray:
    """Which documents are shingled as code (by domain)."""
    mask = pc.is_in(domains, value_set=pa.array(list(code_domains), pa.string()))
    return np.asarray(mask.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def exact_keys(texts: pa.Array, code: np.ndarray, lowercase_prose: bool) -> np.ndarray:
    """(documents, 2) uint64: a 128-bit hash of each text's exact form (whitespace runs collapsed, ends
    trimmed, prose lowercased when asked; code keeps its case)."""
    return exact_keys_of_form(collapsed_blanks(comparable(texts, code, lowercase_prose), keep_newlines=False))


def exact_keys_of_form(form: pa.Array) -> np.ndarray:
    """`exact_keys` of texts already in exact form."""
    series = pl.Series(form)
    return np.stack([series.hash(seed).to_numpy() for seed in EXACT_SEEDS], axis=1).astype(np.uint64, copy=False)


def binary_rows(matrix: np.ndarray) -> pa.Array:
    """A binary value per row of a 2-D array (its bytes), built from one buffer."""
    matrix = np.ascontiguousarray(matrix)
    width = matrix.shape[1] * matrix.itemsize if matrix.ndim == 2 else 0
    offsets = np.arange(0, width * len(matrix) + 1, max(width, 1), dtype=np.int32)[: len(matrix) + 1]
    return pa.Array.from_buffers(pa.binary(), len(matrix), [None, pa.py_buffer(offsets), pa.py_buffer(matrix)])


def binary_matrix(column, dtype, width: int) -> np.ndarray:
    """The inverse of `binary_rows` for values of equal size: (rows, width) of `dtype`, no Python per row."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if len(column) == 0:
        return np.zeros((0, width), dtype=dtype)
    buffers = column.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64 if pa.types.is_large_binary(column.type) else np.int32)
    offsets = offsets[column.offset: column.offset + len(column) + 1]
    itemsize = np.dtype(dtype).itemsize
    data = np.frombuffer(buffers[2], dtype=np.uint8)[offsets[0]: offsets[-1]]
    if not (np.diff(offsets) == width * itemsize).all():
        raise ValueError(f"expected {width} values of {dtype} in every row")
    return data.view(dtype).reshape(len(column), width)


PROSE, NUMERIC, CODE = 0, 1, 2


def shingle_kinds(domains: pa.Array, cfg: DedupConfig) -> np.ndarray:
    """Per document: CODE (tokens), NUMERIC (words, digits kept) or PROSE (words, digits mapped to 0)."""
    kinds = np.full(len(domains), PROSE, dtype=np.int8)
    kinds[is_code(domains, cfg.near.numeric_domains)] = NUMERIC
    kinds[is_code(domains, cfg.near.code_domains)] = CODE
    return kinds


def document_shingles(texts: pa.Array, kinds: np.ndarray, cfg: DedupConfig) -> Shingles:
    """Shingle hashes of every document: prose as words, code as tokens, each with its own n."""
    parts = list(shingles_by_kind(texts, kinds, cfg))
    if len(parts) == 1:
        return parts[0][1]
    if not parts:
        return Shingles(np.zeros(0, np.int64), np.zeros(0, np.uint64), len(texts))
    return _in_row_order(parts, len(texts))


def shingles_by_kind(texts: pa.Array, kinds: np.ndarray, cfg: DedupConfig):
    """(rows, their Shingles) per kind present in the batch (rows in order; all of them when one kind)."""
    makers = {
        PROSE: lambda t: prose_shingles(t, cfg.near.prose_ngram),
        NUMERIC: lambda t: prose_shingles(t, cfg.near.prose_ngram, map_digits=False),
        CODE: lambda t: code_shingles(t, cfg.near.code_ngram),
    }
    present = [kind for kind in makers if (kinds == kind).any()]
    if len(present) == 1:
        yield np.arange(len(texts)), makers[present[0]](texts)
        return
    for kind in present:
        rows = np.flatnonzero(kinds == kind)
        yield rows, makers[kind](texts.take(pa.array(rows)))


def shingle_signatures(texts: pa.Array, kinds: np.ndarray, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """(shingles per document, (documents, num_perm) MinHash signatures) of `document_shingles`, each kind's
    documents signed apart and scattered back to their rows: a signature depends on its document's
    shingles alone, so the shingles need no merging into row order."""
    counts = np.zeros(len(texts), np.int64)
    sigs = np.full((len(texts), cfg.near.num_perm), np.iinfo(np.uint32).max, np.uint32)
    for rows, shingles in shingles_by_kind(texts, kinds, cfg):
        counts[rows] = shingles.counts()
        sigs[rows] = compiled_signatures(shingles.doc, shingles.hash32, len(rows), cfg.near.num_perm, cfg.near.seed)
    return counts, sigs


def _in_row_order(parts: list[tuple[np.ndarray, Shingles]], num_docs: int) -> Shingles:
    """The shingles of disjoint row subsets (global rows, their shingles) merged into row order, each row's
    shingles in their own order: one gather and no sort, since each row's shingles are contiguous in the
    one subset that holds it."""
    counts = np.zeros(num_docs, np.int64)
    source_start = np.zeros(num_docs, np.int64)  # where each row's shingles start in the concatenation
    base = 0
    for rows, part in parts:
        local = part.counts()
        counts[rows] = local
        source_start[rows] = base + np.cumsum(local) - local
        base += len(part.doc)
    target_start = np.cumsum(counts) - counts
    gather = np.repeat(source_start - target_start, counts) + np.arange(base)
    hashes = np.concatenate([part.hash64 for _, part in parts])[gather]
    return Shingles(np.repeat(np.arange(num_docs, dtype=np.int64), counts), hashes, num_docs)


def document_features(batch: pa.RecordBatch, cfg: DedupConfig, bands: int, rows: int,
                      passthrough: tuple[str, ...]) -> pa.RecordBatch:
    """`passthrough` columns of `batch` plus FEATURE_COLUMNS; `batch` needs text and domain too."""
    texts = plain(batch.column("text"))
    kinds = shingle_kinds(batch.column("domain"), cfg)
    code = kinds == CODE
    counts, sigs = shingle_signatures(texts, kinds, cfg)
    keys = compiled_band_keys(sigs, bands, rows)
    eligible = counts >= cfg.near.min_shingles
    band_offsets = np.concatenate([[0], np.cumsum(np.where(eligible, bands, 0))]).astype(np.int32)
    band_values = pa.array(keys[eligible].reshape(-1), pa.int64())
    compared = comparable(texts, code, cfg.exact.lowercase_prose)
    if cfg.boilerplate.enabled:
        forms = normal_forms(compared)  # one pass over the bytes for both forms
        exact_form = forms.exact
        line_doc, line_hash, line_ok = lines_as_candidates(forms, code, cfg.boilerplate)
        line_lists = _distinct_lists(line_doc[line_ok], line_hash[line_ok], len(texts))
    else:
        exact_form = collapsed_blanks(compared, keep_newlines=False)
        line_lists = _distinct_lists(np.zeros(0, np.int64), np.zeros(0, np.uint64), len(texts))
    columns = [batch.column(name) for name in passthrough] + [
        binary_rows(exact_keys_of_form(exact_form)),
        pa.array(counts.astype(np.int64)),
        binary_rows(sigs),
        pa.ListArray.from_arrays(pa.array(band_offsets), band_values),
        line_lists,
        pa.array(id_hashes(batch.column("id")), pa.int64()),
    ]
    names = list(passthrough) + [f.name for f in FEATURE_COLUMNS]
    return pa.RecordBatch.from_arrays(columns, names=names)


def _distinct_lists(doc: np.ndarray, values: np.ndarray, num_docs: int) -> pa.ListArray:
    """A list<int64> per document of its distinct values (ascending); `doc` ascending."""
    doc, signed = distinct_per_doc_kernel(doc.astype(np.int64, copy=False), values.view(np.int64))
    offsets = np.searchsorted(doc, np.arange(num_docs + 1)).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(signed, pa.int64()))
