"""grep: the lines that contain `pattern` (a regular expression, `--param pattern=...`).

Output keys are `file:line-number` (the number zero-padded to 10 digits so that keys sort in file
order), values the lines themselves.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np


def check_params(params: dict[str, str]) -> None:
    """At submit time: a pattern is given and compiles."""
    pattern = params.get("pattern")
    if not pattern:
        raise ValueError("grep needs --param pattern=REGEX")
    try:
        re.compile(pattern.encode())
    except re.error as exc:
        raise ValueError(f"pattern {pattern!r} is not a regular expression: {exc}") from None


def map_arrays(filename: str, data: bytes, params: dict[str, str]) -> tuple[Any, Any]:
    """Matching lines, found by one regex scan; line numbers from newline positions, vectorised."""
    pattern = params.get("pattern")
    if not pattern:
        raise ValueError("grep needs --param pattern=REGEX")
    line_re = re.compile(rb"^.*(?:" + pattern.encode() + rb").*$", re.MULTILINE)
    starts, lines = [], []
    for match in line_re.finditer(data):
        starts.append(match.start())
        lines.append(match.group(0).rstrip(b"\r"))
    if not lines:
        return np.array([], dtype="S1"), np.array([], dtype="S1")
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    numbers = np.searchsorted(newlines, np.array(starts)) + 1 + int(params.get("_first_line", "0"))
    prefix = filename.encode() + b":"
    padded = np.char.zfill(numbers.astype(np.bytes_), 10).astype(np.bytes_)
    keys = np.strings.add(prefix, padded)
    return keys, np.array(lines, dtype=np.bytes_)


def reduce_arrays(keys: Any, values: Any, starts: Any, counts: Any, params: dict[str, str]) -> Any:
    """A line number is unique: the line itself."""
    return values[starts]
