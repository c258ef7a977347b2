"""The event stream: backend events to one WebSocket client, with bounded memory.

Theory of operation
-------------------
Two tasks share a bounded queue. The *reader* takes events from the backend's subscription as fast as
they come and puts them on the queue; the *writer* encodes each as a JSON text frame and sends it. A
client that reads slowly makes sends wait, so the queue fills. A burst from the backend can also fill it
for an instant, so a full queue is given `grace` seconds to drain; if it does not, the client is too slow
and is dropped with close code 1013 ("try again later") rather than buffered without bound: the client
reconnects and re-reads state over the JSON API. `still_allowed` is asked before each event, so a token
revoked or expired during a long-lived stream ends it (close code 1008, policy violation).

The pump knows nothing of aiohttp: it takes `send` and `close` callables, so its rules are tested without
sockets; `app.py` binds them to a `WebSocketResponse`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import orjson

__all__ = ["CLOSE_POLICY", "CLOSE_TRY_LATER", "Outcome", "pump"]

CLOSE_TRY_LATER = 1013
CLOSE_POLICY = 1008
#: Why a pump ended: the backend's events ended, the client went, it was too slow, or lost its rights.
Outcome = Literal["ended", "gone", "slow", "revoked"]

_log = logging.getLogger(__name__)
_DONE = object()


async def pump(
    events: AsyncIterator[dict[str, Any]],
    send: Callable[[str], Awaitable[None]],
    close: Callable[[int, str], Awaitable[None]],
    *,
    still_allowed: Callable[[], bool] = lambda: True,
    max_queued: int = 256,
    grace: float = 2.0,
) -> Outcome:
    """Send every event of `events` through `send` until one side ends (see the module doc).

    `send` raising `ConnectionError` (or any exception) means the client is gone. `events` is closed
    (`aclose`) before returning, whatever the outcome.
    """
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=max_queued)
    writer = asyncio.create_task(_write(queue, send), name="api-stream-writer")
    outcome: Outcome = "ended"
    try:
        async for event in events:
            if writer.done():
                outcome = "gone"
                break
            if not still_allowed():
                outcome = "revoked"
                break
            if not await _offer(queue, event, writer, grace):
                outcome = "gone" if writer.done() else "slow"
                break
        else:
            # The backend ended the stream (the node is stopping): flush what is queued, within `grace`.
            if await _offer(queue, _DONE, writer, grace):
                await asyncio.wait({writer}, timeout=grace)
            if not writer.done():
                outcome = "slow"
            elif writer.result():
                outcome = "gone"
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    if outcome == "slow":
        _log.info("event stream: dropping a client with %d frames queued", queue.qsize())
        await close(CLOSE_TRY_LATER, "client too slow; reconnect and reload state")
    elif outcome == "revoked":
        await close(CLOSE_POLICY, "the token is no longer valid")
    return outcome


async def _offer(
    queue: asyncio.Queue[object], item: object, writer: asyncio.Task[bool], grace: float
) -> bool:
    """Queue `item`, waiting up to `grace` seconds for room; False when there was none or the writer died."""
    try:
        queue.put_nowait(item)
        return True
    except asyncio.QueueFull:
        pass
    put = asyncio.ensure_future(queue.put(item))
    try:
        done, _ = await asyncio.wait({put, writer}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        put.cancel()
        raise
    if put in done:
        return True
    put.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await put
    return False


async def _write(queue: asyncio.Queue[object], send: Callable[[str], Awaitable[None]]) -> bool:
    """Send queued events until `_DONE`; True when the client went (a send failed)."""
    while True:
        event = await queue.get()
        if event is _DONE:
            return False
        try:
            frame = orjson.dumps(event).decode()
        except TypeError:
            _log.exception("event stream: an event is not JSON-able; skipped: %r", event)
            continue
        try:
            await send(frame)
        except Exception:
            return True
