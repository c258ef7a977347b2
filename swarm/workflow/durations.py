"""ISO-8601 durations (`PT30M`, `P1DT2H`, `PT0.5S`, `P2W`) as seconds, and back.

Years and months are refused: their length depends on the calendar date they start from, and a timeout
or a retry interval must mean the same number of seconds every time. A fraction is allowed on the last
component only (`PT1.5H`, `PT0.25S`), as ISO 8601 says. Errors are `ValueError`s saying what is wrong;
`swarm.workflow.fields.parse_duration` turns them into errors naming the field.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from functools import lru_cache

__all__ = ["duration_seconds", "format_duration"]

_NUM = r"\d+(?:[.,]\d+)?"
_DURATION = re.compile(
    rf"P(?:(?P<Y>{_NUM})Y)?(?:(?P<MO>{_NUM})M)?(?:(?P<W>{_NUM})W)?(?:(?P<D>{_NUM})D)?"
    rf"(?:T(?:(?P<H>{_NUM})H)?(?:(?P<MI>{_NUM})M)?(?:(?P<S>{_NUM})S)?)?"
)
_SECONDS = {"W": 604800, "D": 86400, "H": 3600, "MI": 60, "S": 1}
_MAX_TEXT = 64
_MAX_DIGITS = 9
#: A hundred years: anything longer is a typo, and keeps every result a finite float.
_MAX_SECONDS = 100 * 366 * 86400


@lru_cache(maxsize=256)
def duration_seconds(text: str) -> float:
    """Seconds in the ISO-8601 duration `text`; ValueError saying why when it is not one."""
    # Cached: a large definition repeats a handful of timeouts thousands of times.
    shown = text if len(text) <= 40 else text[:37] + "..."
    match = _DURATION.fullmatch(text) if len(text) <= _MAX_TEXT else None
    if match is None or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"expected an ISO-8601 duration like PT30M, got {shown!r}")
    if match["Y"] is not None or match["MO"] is not None:
        raise ValueError(
            f"{shown!r}: years and months are not allowed because their length in seconds is not fixed;"
            " use weeks, days, hours, minutes or seconds (e.g. P30D)"
        )
    given = [(key, match[key]) for key in _SECONDS if match[key] is not None]
    if any(("." in value or "," in value) for _, value in given[:-1]):
        raise ValueError(f"{shown!r}: only the last component may have a fraction")
    if given and len(re.split(r"[.,]", given[-1][1] + ".")[1]) > _MAX_DIGITS:
        raise ValueError(f"{shown!r}: at most {_MAX_DIGITS} digits after the decimal point")
    # Summed exactly, so that the float is the one nearest the duration and formatting gives it back.
    exact = sum((Decimal(value.replace(",", ".")) * _SECONDS[key] for key, value in given), Decimal(0))
    total = float(exact)
    if not math.isfinite(total) or total > _MAX_SECONDS:
        raise ValueError(f"{shown!r} is longer than a hundred years")
    return total


def format_duration(seconds: float) -> str:
    """The shortest ISO-8601 text for `seconds` (9900 -> `PT2H45M`, 0.5 -> `PT0.5S`, 0 -> `PT0S`).

    Precision is a nanosecond, as in parsing. A fractional number of seconds is written as seconds alone
    (`PT3600.5S`), so that parsing the text gives back exactly the same float.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {seconds!r}")
    seconds = round(float(seconds), _MAX_DIGITS)
    if not seconds.is_integer():
        # Positional (never 1e-05) shortest text of the float, which parses back to the same float.
        return f"PT{format(Decimal(repr(seconds)), 'f')}S"
    rest = int(seconds)
    days, rest = divmod(rest, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    date = f"{days}D" if days else ""
    time = "".join(f"{value}{unit}" for value, unit in ((hours, "H"), (minutes, "M"), (secs, "S")) if value)
    if not date and not time:
        return "PT0S"
    return f"P{date}" + (f"T{time}" if time else "")
