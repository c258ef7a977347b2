"""The service's live events (runs, steps, devices, alerts) fanned out to every stream client, bounded.

Each client of the WebSocket stream (`swarm.api.stream`) gets a queue of its own; a client that falls
`STREAM_QUEUE` events behind is dropped (its queue ends) rather than buffered without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from swarm.api.backend import Json

__all__ = ["STREAM_QUEUE", "EventHub"]

#: The most events a slow stream client may have waiting before it is dropped.
STREAM_QUEUE = 1000


class EventHub:
    """Every stream client's queue."""

    def __init__(self) -> None:
        self._streams: set[asyncio.Queue[Json | None]] = set()

    @property
    def listened(self) -> bool:
        """Whether any client is streaming."""
        return bool(self._streams)

    async def subscribe(self, opened: Callable[[], Awaitable[None]]) -> AsyncIterator[Json]:
        """Events as they happen, after `opened` was awaited; a client that falls `STREAM_QUEUE`
        behind is dropped."""
        queue: asyncio.Queue[Json | None] = asyncio.Queue(STREAM_QUEUE)
        self._streams.add(queue)
        await opened()
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._streams.discard(queue)

    def emit(self, event: Json) -> None:
        """Hand `event` to every client."""
        for queue in list(self._streams):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._streams.discard(queue)
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(None)
