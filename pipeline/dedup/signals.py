"""The survivor rule's quality signal, read from Arrow exactly as the Spark job reads it: a column named
`quality_field`, else that key of `meta`, as Spark's `try_cast(... AS DOUBLE)` gives it (null where the
value is no number). The job's driver plan reads the documents with pyarrow and must agree to the bit."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_JAVA_BLANKS = "".join(chr(c) for c in range(0x21))
"""What Java's String.trim strips from both ends (every char up to U+0020), as Double.parseDouble does."""
_DECIMAL = re.compile(r"[+-]?(?:NaN|Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fFdD]?)")
"""Java's Double.parseDouble grammar, hexadecimal floats aside."""
_SPECIAL = {"inf": np.inf, "+inf": np.inf, "infinity": np.inf, "+infinity": np.inf,
            "-inf": -np.inf, "-infinity": -np.inf, "nan": np.nan}
"""Spark's own literals, tried when Java's parser fails (Cast.processFloatingPointSpecialLiterals)."""
_HEX = re.compile(r"[+-]?0[xX]")


def quality_signal(batch: pa.RecordBatch, field: str) -> tuple[pa.Array, int]:
    """(the quality signal of each document as float64, values this module cannot read as Spark would:
    hexadecimal floats, or a column of another type than numbers, booleans and strings)."""
    if field in batch.schema.names:
        return spark_doubles(batch.column(field))
    if "meta" not in batch.schema.names:
        return pa.nulls(batch.num_rows, pa.float64()), 0
    return spark_doubles(pc.map_lookup(batch.column("meta"), pa.scalar(field, pa.string()), "first"))


def spark_doubles(values: pa.Array) -> tuple[pa.Array, int]:
    """`try_cast(values AS DOUBLE)` as Spark computes it, and how many values it could not reproduce."""
    kind = values.type
    if pa.types.is_null(kind):
        return pa.nulls(len(values), pa.float64()), 0
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return values.cast(pa.float64()), 0
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return pa.nulls(len(values), pa.float64()), len(values) - values.null_count
    parsed, unread = [], 0
    for text in values.to_pylist():
        value, readable = _java_double(text)
        parsed.append(value)
        unread += not readable
    return pa.array(parsed, pa.float64()), unread


def _java_double(text: str | None) -> tuple[float | None, bool]:
    """(value or None, whether Spark's reading is reproduced)."""
    if text is None:
        return None, True
    trimmed = text.strip(_JAVA_BLANKS)
    if _DECIMAL.fullmatch(trimmed):
        number = trimmed.rstrip("fFdD")
        return float(number) if "N" not in number and "I" not in number else float(number.lower()), True
    if _HEX.match(trimmed):
        return None, False
    special = _SPECIAL.get(text.strip().lower())
    return (float(special) if special is not None else None), True
