"""A node's story: what its machines would have logged, as data, each entry naming what caused it.

The core does no I/O, and a log line is I/O on the side: it escaped the effects a step returns, and a
test or the simulator could only read it back through a logging handler. So the machines record story
entries instead, each naming its cause ids (a task, a job, a member, a message, an epoch), and the shell
logs the entries new after each step (`take_new`). `about(*ids)` tells what happened to one of them, as
dask's worker `story` does. The buffer is bounded: a node that runs for months, or a simulator that runs
thousands of nodes, keeps only the newest entries.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import Literal

__all__ = ["STORY_SIZE", "Level", "Story", "StoryEntry"]

#: Entries a node keeps unless told otherwise: the recent past that explains a failure, not a history.
STORY_SIZE = 1000

#: How much an entry matters, named as the logging levels the shell logs it at.
Level = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class StoryEntry:
    """One thing a machine noted at `time`, the ids of what caused it, and the exception of a handler
    that failed."""

    time: float
    level: Level
    message: str
    ids: tuple[str | int, ...]
    exc: BaseException | None = None


class Story:
    """The newest `size` entries of a node, shared by all its machines."""

    def __init__(self, size: int = STORY_SIZE) -> None:
        self._entries: deque[StoryEntry] = deque(maxlen=size)
        self._unread = 0

    def record(
        self, now: float, level: Level, message: str, *ids: str | int, exc: BaseException | None = None
    ) -> None:
        """Note `message`, caused by `ids`, at `now`."""
        self._entries.append(StoryEntry(now, level, message, ids, exc))
        self._unread += 1

    def about(self, *ids: str | int) -> list[StoryEntry]:
        """The entries still kept that name any of `ids`, oldest first."""
        wanted = set(ids)
        return [entry for entry in self._entries if not wanted.isdisjoint(entry.ids)]

    def take_new(self) -> tuple[list[StoryEntry], int]:
        """The entries recorded since the last call, oldest first, and how many more were recorded
        meanwhile but pushed out of the buffer before anyone took them."""
        kept = min(self._unread, len(self._entries))
        lost = self._unread - kept
        self._unread = 0
        # From the newest end: the buffer may hold far more than one step's entries.
        newest = list(islice(reversed(self._entries), kept))
        newest.reverse()
        return newest, lost
