"""The HTTP/1.1 subset the data server speaks: request heads, ranges, status lines and error answers.

Only what `swarm.runtime.dataserver` needs: one request per connection (every answer says
`Connection: close`), `Content-Length` bodies (no chunked encoding), one `bytes=` range. Anything
outside that is refused with a 4xx/5xx that says why, never guessed at.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass

__all__ = [
    "IO_TIMEOUT_S",
    "MAX_HEAD_BYTES",
    "REASONS",
    "WRITE_BATCH",
    "HttpError",
    "Request",
    "content_length",
    "linger",
    "parse_head",
    "parse_range",
    "reply_error",
    "status_head",
]

MAX_HEAD_BYTES = 64 * 1024
IO_TIMEOUT_S = 60.0
WRITE_BATCH = 1 << 20
LINGER_MAX_BYTES = 64 << 20
LINGER_S = 5.0

REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    206: "Partial Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS = re.compile(r"[0-9]{1,19}")
_RANGE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})")


class HttpError(Exception):
    """Answer the request with `status` and stop handling it."""

    def __init__(
        self, status: int, message: str, *, reason: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason or REASONS[status]
        self.headers = headers or {}


@dataclass
class Request:
    """A parsed request head (header names lowercased) and how far answering it has got."""

    method: str
    target: str
    headers: dict[str, str]
    peer: str
    body_left: int = 0  # bytes the client will send that we have not read (for lingering after an error)
    answered: bool = False  # a status line went out: an error now can only close the connection

    def answer(self, writer: asyncio.StreamWriter, status: int, headers: dict[str, str]) -> None:
        """Send the status line and headers; from now on an error can only close the connection."""
        self.answered = True
        writer.write(status_head(status, REASONS[status], headers))


def parse_head(head: bytes, peer: str) -> Request:
    """Parse a request line and headers; anything outside the subset we speak is a 400."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1].startswith("/"):
        raise HttpError(400, f"malformed request line {lines[0][:80]!r}")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(400, f"unsupported protocol {version[:20]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(400, f"malformed header line {line[:80]!r}")
        key, value = name.lower(), value.strip()
        if key in headers and headers[key] != value:
            raise HttpError(400, f"conflicting {name} headers")
        headers[key] = value
    return Request(method, target, headers, peer)


def content_length(request: Request) -> int:
    """The body length the request announces; chunked or missing lengths are refused."""
    if "transfer-encoding" in request.headers:
        raise HttpError(501, "Transfer-Encoding is not supported; send Content-Length")
    raw = request.headers.get("content-length")
    if raw is None:
        raise HttpError(411, "Content-Length required")
    if not _DIGITS.fullmatch(raw):
        raise HttpError(400, f"bad Content-Length {raw[:40]!r}")
    return int(raw)


def parse_range(value: str, size: int) -> tuple[int, int]:
    """One `bytes=` range as (start, length), clamped to the file; several ranges are not supported."""
    match = _RANGE.fullmatch(value.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise HttpError(400, f"unsupported Range {value[:80]!r}: one 'bytes=a-b' range only")
    first, last = match.group(1), match.group(2)
    if first == "":  # suffix: the last n bytes
        start, end = max(0, size - int(last)), size - 1
        if int(last) == 0:
            start = size
    else:
        start, end = int(first), int(last) if last else size - 1
        if end < start:
            raise HttpError(400, f"Range {value[:80]!r} ends before it starts")
    if start >= size:
        raise HttpError(
            416,
            f"range starts at or past the end ({size} bytes)",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, min(end, size - 1) - start + 1


def status_head(status: int, reason: str, headers: dict[str, str]) -> bytes:
    """A response's status line and headers, ending the head."""
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items()), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def reply_error(writer: asyncio.StreamWriter, err: HttpError) -> None:
    """Answer with `err`'s status and its message as a plain-text body; a peer gone meanwhile is fine."""
    body = f"{err}\n".encode()
    headers = err.headers | {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body))}
    with contextlib.suppress(ConnectionError, TimeoutError):
        writer.write(status_head(err.status, err.reason, headers) + body)
        async with asyncio.timeout(IO_TIMEOUT_S):
            await writer.drain()


async def linger(reader: asyncio.StreamReader, left: int) -> None:
    """Read and drop a refused request's body for a moment, so its client finishes sending and reads our
    answer, instead of getting a connection reset that hides why it was refused."""
    left = min(left, LINGER_MAX_BYTES)
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(LINGER_S):
            while left > 0:
                block = await reader.read(min(left, WRITE_BATCH))
                if not block:
                    return
                left -= len(block)
