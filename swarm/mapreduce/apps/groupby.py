"""groupby: aggregate a numeric CSV column per key column.

Parameters (`--param`): `key` and `value` (0-based column numbers, default 0 and 1), `agg` (sum,
count, min, max or mean; default sum), `header` (`1` to skip each file's first line). Fields must not
contain commas or quotes (plain CSV as exported by spreadsheets and logs). Parsing is vectorised:
field boundaries come from the positions of commas and newlines, not from a loop over lines.
"""

from __future__ import annotations

from typing import Any

import numpy as np

AGGREGATES = ("sum", "count", "min", "max", "mean")


def _column(buf: Any, line_starts: Any, line_ends: Any, commas: Any, index: int) -> Any:
    """Bytes of field `index` of every line, as an 'S' array (gathered through a padded index matrix)."""
    seps = np.append(commas, len(buf))  # a sentinel separator past the end: indexes never run off
    last = len(seps) - 1
    first = np.searchsorted(seps, line_starts)
    if index == 0:
        begin = line_starts
    else:
        begin = np.minimum(seps[np.minimum(first + index - 1, last)] + 1, line_ends)
    end = np.maximum(np.minimum(seps[np.minimum(first + index, last)], line_ends), begin)
    width = int((end - begin).max(initial=0)) or 1
    idx = begin[:, None] + np.arange(width)[None, :]
    gathered = np.where(idx < end[:, None], buf[np.minimum(idx, len(buf) - 1)], 0).astype(np.uint8)
    return np.ascontiguousarray(gathered).view(f"S{width}").ravel()


def map_arrays(filename: str, data: bytes, params: dict[str, str]) -> tuple[Any, Any]:
    """(key column, value column as float) for every data line."""
    agg = params.get("agg", "sum")
    if agg not in AGGREGATES:
        raise ValueError(f"groupby: agg must be one of {', '.join(AGGREGATES)}")
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == ord("\n"))
    line_starts = np.concatenate(([0], newlines + 1))
    line_ends = np.concatenate((newlines, [len(buf)]))
    if params.get("header") == "1":
        line_starts, line_ends = line_starts[1:], line_ends[1:]
    keep = line_ends > line_starts
    line_starts, line_ends = line_starts[keep], line_ends[keep]
    if len(line_starts) == 0:
        return np.array([], dtype="S1"), np.array([], dtype=np.float64)
    commas = np.flatnonzero(buf == ord(","))
    keys = _column(buf, line_starts, line_ends, commas, int(params.get("key", "0")))
    raw = _column(buf, line_starts, line_ends, commas, int(params.get("value", "1")))
    values = np.char.strip(raw).astype(np.float64)
    return np.char.strip(keys), values


def reduce_arrays(keys: Any, values: Any, starts: Any, counts: Any, params: dict[str, str]) -> Any:
    """The aggregate per key, with ufunc reductions over the group starts."""
    agg = params.get("agg", "sum")
    if agg == "count":
        return counts.astype(np.int64)
    if agg == "mean":
        return np.add.reduceat(values, starts) / counts
    return {"sum": np.add, "min": np.minimum, "max": np.maximum}[agg].reduceat(values, starts)
