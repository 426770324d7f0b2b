"""Tokenize a documents RecordBatch: append `tokens` and `num_tokens`, in bounded `encode_batch` calls.

`tokens` holds the ids of the text alone (no bos/eos: the shard builder places separators). Its Arrow type
is list<int32>, because Spark SQL has no unsigned integers; every id is below 2**31, so `tokens_as_uint32`
(or numpy's `astype(np.uint32)`) turns it into list<uint32> without changing a value.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tokenizer.files import RnjTokenizer

TOKENS = pa.field("tokens", pa.list_(pa.field("item", pa.int32(), nullable=False)), nullable=False)
NUM_TOKENS = pa.field("num_tokens", pa.int64(), nullable=False)
ADDED = (TOKENS.name, NUM_TOKENS.name)


def tokenized_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` with `tokens` and `num_tokens` appended (replacing any earlier ones)."""
    kept = [f for f in schema if f.name not in ADDED]
    return pa.schema(kept + [TOKENS, NUM_TOKENS])


def tokenize_batch(tok: RnjTokenizer, batch: pa.RecordBatch, batch_documents: int) -> pa.RecordBatch:
    """`batch` plus its tokens; texts are encoded `batch_documents` at a time."""
    texts = batch.column("text").to_pylist()
    chunks = [tok.encode_batch_flat(texts[start:start + batch_documents])
              for start in range(0, len(texts), batch_documents)]
    lengths = np.concatenate([np.diff(offsets) for offsets, _ in chunks]) if chunks else np.zeros(0, np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate([ids for _, ids in chunks]) if chunks else np.zeros(0, np.int32)
    tokens = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), type=TOKENS.type)
    schema = tokenized_schema(batch.schema)
    kept = [batch.column(f.name) for f in schema if f.name not in ADDED]
    return pa.RecordBatch.from_arrays(kept + [tokens, pa.array(lengths)], schema=schema)


def tokens_as_uint32(table: pa.Table) -> pa.Table:
    """`table` with its `tokens` column as list<uint32> (the ids are unchanged)."""
    index = table.schema.get_field_index(TOKENS.name)
    return table.set_column(index, TOKENS.name, table.column(index).cast(pa.list_(pa.uint32())))
