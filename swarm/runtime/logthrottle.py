"""A warning that may repeat thousands of times a second, logged at most once a second with a count.

A node that falls behind sees its troubles in bulk: a broker that held messages too long makes thousands
of them stale at once, and a connection that stalls refuses every publish behind it. One line per
occurrence buried the logs (68,000 lines in five minutes on one node); one line a second saying how many
more there were keeps what a reader needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = ["ThrottledWarning"]


class ThrottledWarning:
    """Logs the first occurrence and then at most one every `every` seconds; the rest go to debug."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float], every: float = 1.0) -> None:
        self._log = logger
        self._clock = clock
        self._every = every
        self._last = float("-inf")
        self._unlogged = 0

    def warning(self, what: str, more: str = "more since the last line") -> bool:
        """Log `what` at warning level if a line is due (True), else at debug level (False)."""
        self._unlogged += 1
        now = self._clock()
        if now - self._last < self._every:
            self._log.debug("%s", what)
            return False
        since = f" ({self._unlogged - 1} {more})" if self._unlogged > 1 else ""
        self._log.warning("%s%s", what, since)
        self._last, self._unlogged = now, 0
        return True
