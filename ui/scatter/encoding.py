"""The scatter's binary columns and row sets, between the server and the browser.

Columns travel as raw little-endian arrays (``float32`` coordinates and values, ``uint8`` /
``uint16`` / ``uint32`` codes) and masks as bitsets, each fetched once by its content address
(``ui.scatter``). A set of row indices out of ``n`` (the selection a box, lasso or click made
in the browser) comes back as ``{"n": n, "format": ..., "data": base64}``:

- ``"bits"``: a bitset, row ``r`` is bit ``r % 8`` of byte ``r // 8``, least significant bit
  first (``numpy.packbits(..., bitorder="little")``);
- ``"runs"``: the sorted rows as runs of consecutive indices, each run two unsigned LEB128
  varints: its start minus the end of the previous run (the first run: its start), then its
  length.

The encoder takes the shorter of the two. ``ui/scatter/frontend/src/encoding.js`` is the same
format in JavaScript.

A continuous colour travels as ``uint16`` codes (:func:`quantise_values`): a value's place between
the column's minimum and maximum in 65,535 steps, ``VALUE_MISSING`` where it is missing. The
browser draws 256 steps of the colour scale (``code >> 8``), so the codes draw exactly what float32
values would, in half the bytes; the exact values are fetched only to show a hovered point's.
No Streamlit here.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

__all__ = ["ROW_FORMATS", "VALUE_MISSING", "RowEncodingError", "code_dtype", "column_bytes", "decode_rows",
           "encode_rows", "pack_mask", "quantise_values", "rows_to_runs", "runs_to_rows", "unpack_mask"]

ROW_FORMATS = ("bits", "runs")
_VARINT_MAX_BYTES = 5  # rows are below 2**32: at most five 7-bit groups
VALUE_MISSING = 65535  # the uint16 code of a missing (or infinite) value


class RowEncodingError(ValueError):
    """A row set from the browser that does not decode (wrong size, format or bytes)."""


def pack_mask(mask: np.ndarray) -> bytes:
    """A boolean mask of shape (n,) as a bitset of ``ceil(n / 8)`` bytes."""
    return np.packbits(np.asarray(mask, dtype=bool), bitorder="little").tobytes()


def unpack_mask(data: bytes, n: int) -> np.ndarray:
    """The boolean mask of shape (n,) packed by :func:`pack_mask`."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if len(raw) != (n + 7) // 8:
        raise RowEncodingError(f"a bitset of {n:,} rows has {(n + 7) // 8:,} bytes, not {len(raw):,}")
    bits = np.unpackbits(raw, bitorder="little")
    if bits[n:].any():
        raise RowEncodingError(f"the bitset sets bits past its {n:,} rows")
    return bits[:n].astype(bool)


def _varints(values: np.ndarray) -> np.ndarray:
    """Unsigned LEB128 bytes of each value, concatenated."""
    values = values.astype(np.uint64)
    lengths = np.ones(len(values), dtype=np.int64)
    for k in range(1, _VARINT_MAX_BYTES):
        lengths += values >= np.uint64(1 << (7 * k))
    offsets = np.cumsum(lengths) - lengths
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    for k in range(_VARINT_MAX_BYTES):
        has = lengths > k
        group = (values[has] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = np.where(lengths[has] > k + 1, 0x80, 0).astype(np.uint64)
        out[offsets[has] + k] = (group | more).astype(np.uint8)
    return out


def _from_varints(data: np.ndarray) -> np.ndarray:
    """The values of concatenated unsigned LEB128 bytes."""
    if len(data) == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.flatnonzero(data < 0x80)
    if len(ends) == 0 or ends[-1] != len(data) - 1:
        raise RowEncodingError("the run-length data is truncated (its last number does not end)")
    starts = np.concatenate([[0], ends[:-1] + 1])
    if (ends - starts).max() >= _VARINT_MAX_BYTES:
        raise RowEncodingError("the run-length data holds a number too large for a row index")
    position = np.arange(len(data)) - np.repeat(starts, ends - starts + 1)
    groups = (data & 0x7F).astype(np.int64) << (7 * position)
    return np.add.reduceat(groups, starts)


def rows_to_runs(rows: np.ndarray) -> bytes:
    """The ``"runs"`` bytes of sorted, distinct row indices."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return b""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = rows[np.concatenate([[0], breaks])]
    lengths = np.diff(np.concatenate([[0], breaks, [len(rows)]]))
    previous_ends = np.concatenate([[0], (starts + lengths)[:-1]])
    pairs = np.column_stack([starts - previous_ends, lengths]).ravel()
    return _varints(pairs).tobytes()


def runs_to_rows(data: bytes, n: int) -> np.ndarray:
    """Sorted row indices (int64) from ``"runs"`` bytes, checked against ``n`` rows."""
    numbers = _from_varints(np.frombuffer(data, dtype=np.uint8))
    if len(numbers) % 2:
        raise RowEncodingError("the run-length data has a run start without its length")
    gaps, lengths = numbers[0::2], numbers[1::2]
    if (lengths < 1).any():
        raise RowEncodingError("the run-length data has an empty run")
    ends = np.cumsum(gaps + lengths)
    if len(ends) and ends[-1] > n:
        raise RowEncodingError(f"the run-length data selects row {int(ends[-1]) - 1:,} of a map of {n:,} rows")
    starts = ends - lengths
    offsets = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(offsets, lengths) + np.repeat(starts, lengths)


def encode_rows(rows: np.ndarray, n: int) -> dict:
    """``{"n", "format", "data"}`` for row indices out of ``n`` (sorted and deduplicated here):
    the shorter of a bitset and run lengths."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) > 1 and not (np.diff(rows) > 0).all():
        rows = np.sort(rows)  # (np.unique hashes: seconds on a million sorted rows)
        rows = rows[np.concatenate([[True], np.diff(rows) != 0])]
    if len(rows) and (rows[0] < 0 or rows[-1] >= n):
        raise RowEncodingError(f"row indices must lie in [0, {n:,})")
    runs = rows_to_runs(rows)
    if len(runs) < (n + 7) // 8:
        return {"n": int(n), "format": "runs", "data": base64.b64encode(runs).decode("ascii")}
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return {"n": int(n), "format": "bits", "data": base64.b64encode(pack_mask(mask)).decode("ascii")}


def decode_rows(encoded: object, *, n: int) -> np.ndarray:
    """Sorted row indices (int64) of an encoded row set for a map of ``n`` rows.

    Raises
    ------
    RowEncodingError
        When it is not such a row set, was made for another number of rows, or its bytes do
        not decode.
    """
    if not isinstance(encoded, dict) or not {"n", "format", "data"} <= set(encoded):
        raise RowEncodingError("a row set needs the keys n, format and data")
    if encoded["n"] != n:
        raise RowEncodingError(f"the row set was made for {encoded['n']} rows; this map has {n:,}")
    if encoded["format"] not in ROW_FORMATS:
        raise RowEncodingError(f"unknown row set format {encoded['format']!r} (known: {', '.join(ROW_FORMATS)})")
    try:
        data = base64.b64decode(str(encoded["data"]), validate=True)
    except binascii.Error as exc:
        raise RowEncodingError(f"the row set's data is not base64: {exc}") from None
    if encoded["format"] == "runs":
        return runs_to_rows(data, n)
    return np.flatnonzero(unpack_mask(data, n)).astype(np.int64)


def code_dtype(categories: int) -> str:
    """The smallest unsigned type for codes ``0 .. categories - 1``."""
    if categories <= 1 << 8:
        return "uint8"
    return "uint16" if categories <= 1 << 16 else "uint32"


def column_bytes(values: np.ndarray, dtype: str) -> bytes:
    """A column as raw little-endian bytes of ``dtype`` (float32, uint8, uint16 or uint32)."""
    return np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def quantise_values(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """uint16 codes of ``values`` on the scale from ``low`` to ``high``: code ``q`` holds the
    values ``v`` with ``q <= (v - low) / (high - low) * 65535 < q + 1`` (0 to 65,534; values
    outside the range are clipped to its ends; all 0 when ``high == low``), ``VALUE_MISSING`` for
    NaN and infinities. ``q >> 8`` is then ``v``'s step of a 256-step colour scale."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    span = float(high) - float(low)
    position = (values - low) * (VALUE_MISSING / span) if span > 0 else np.zeros_like(values)
    codes = np.clip(np.floor(np.where(finite, position, 0.0)), 0, VALUE_MISSING - 1).astype(np.uint16)
    codes[~finite] = VALUE_MISSING
    return codes
