"""The HTTP/1.1 subset the data servers speak: request heads, paths, credentials, ranges and answers.

Only what `swarm.runtime.dataserver` needs: one request per connection (every answer says
`Connection: close`, so no connection ever idles between requests), `Content-Length` bodies (no chunked
encoding), one `bytes=` range, a bearer capability token. Anything outside that is refused with a
4xx/5xx that says why, never guessed at.

The parsers here (`parse_head`, `parse_path`, `content_length`, `parse_range`, `bearer_token`) see bytes
from anyone who can connect, before anything is authenticated, so each raises `HttpError` and nothing
else whatever it is fed: a parser that raised anything else would turn a malformed request into a
500 and a logged traceback, or worse, a handler bug. The property tests feed them random and mutated
heads to hold them to that.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = [
    "IO_TIMEOUT_S",
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "MAX_NAME_CHARS",
    "MAX_PATH_PARTS",
    "REASONS",
    "WRITE_BATCH",
    "HttpError",
    "Request",
    "bearer_token",
    "checked_parts",
    "content_length",
    "is_name",
    "is_token",
    "linger",
    "parse_head",
    "parse_path",
    "parse_range",
    "reply_error",
    "status_head",
]

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 64
MAX_TARGET_CHARS = 4096
#: A job id or a file name is at most this long, and a path at most this deep: the names the data
#: plane uses are short (`mr/<job>/m12-a1/part-3.run`), and bounds keep every check cheap.
MAX_NAME_CHARS = 128
MAX_PATH_PARTS = 8
IO_TIMEOUT_S = 60.0
WRITE_BATCH = 1 << 20
LINGER_MAX_BYTES = 64 << 20
LINGER_S = 5.0

REASONS = {
    100: "Continue",
    200: "OK",
    201: "Created",
    204: "No Content",
    206: "Partial Content",
    400: "Bad Request",
    401: "Unauthorized",
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
    503: "Service Unavailable",
}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(r"/[\x21-\x7e]*")  # visible ASCII only: no spaces, controls or 8-bit bytes
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # controls other than tab
_DIGITS = re.compile(r"[0-9]{1,19}")
_RANGE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})")
# No leading dot: temporary upload files and the capability file are dot files, never nameable.
_NAME = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9_.-]{{0,{MAX_NAME_CHARS - 1}}}")
# What `secrets.token_urlsafe` makes, with room for longer ones; the lower bound refuses guessable ones.
_CAPABILITY = re.compile(r"[A-Za-z0-9_-]{16,256}")
_BEARER = re.compile(r"bearer +([^ ]*) *", re.IGNORECASE | re.ASCII)


class HttpError(Exception):
    """Answer the request with `status` and stop handling it."""

    def __init__(
        self, status: int, message: str, *, reason: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason or REASONS.get(status, "Error")
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
    authenticated: bool = False  # it presented a token its path's job accepts

    def answer(self, writer: asyncio.StreamWriter, status: int, headers: dict[str, str]) -> None:
        """Send the status line and headers; from now on an error can only close the connection."""
        self.answered = True
        writer.write(status_head(status, REASONS[status], headers))


def parse_head(head: bytes, peer: str) -> Request:
    """Parse a request line and headers; anything outside the subset we speak is a 400 (a 431 if too big)."""
    if len(head) > MAX_HEAD_BYTES:
        raise HttpError(431, f"request head over {MAX_HEAD_BYTES} bytes")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise HttpError(400, f"malformed request line {lines[0][:80]!r}")
    method, target, version = parts
    if len(target) > MAX_TARGET_CHARS:
        raise HttpError(400, f"request target over {MAX_TARGET_CHARS} characters")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(400, f"unsupported protocol {version[:20]!r}")
    fields = [line for line in lines[1:] if line]
    if len(fields) > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header fields")
    headers: dict[str, str] = {}
    for line in fields:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(400, f"malformed header line {line[:80]!r}")
        if _BAD_VALUE.search(value):
            raise HttpError(400, f"control character in the {name[:40]} header")
        key, value = name.lower(), value.strip(" \t")
        if key in headers and headers[key] != value:
            raise HttpError(400, f"conflicting {name} headers")
        headers[key] = value
    return Request(method, target, headers, peer)


def is_name(text: str) -> bool:
    """Whether `text` may be a job id or one component of a served path: 1 to `MAX_NAME_CHARS` ASCII
    letters, digits, `-`, `_` and `.`, not starting with `.` and never holding `..`."""
    return _NAME.fullmatch(text) is not None and ".." not in text


def is_token(text: str) -> bool:
    """Whether `text` is shaped like a capability token (URL-safe base64 alphabet, 16 to 256 characters)."""
    return _CAPABILITY.fullmatch(text) is not None


def parse_path(target: str) -> tuple[str, ...]:
    """The components of the file a request target names (`/f/<name>/<name>...`, percent-decoded).

    A target outside `/f/` is a 404; a path that is empty, too deep, or has a component outside the
    `is_name` grammar (so `..`, `.`, empty components, absolute paths, NUL, backslashes and dot files are
    all out) is a 400. The query string is ignored.
    """
    path = target.partition("?")[0]
    if not path.startswith("/f/"):
        raise HttpError(404, "only /f/<path> is served")
    try:
        relpath = unquote(path[3:], errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, "path is not UTF-8") from None
    return checked_parts(relpath)


def checked_parts(relpath: str) -> tuple[str, ...]:
    """`relpath` (an optional trailing slash dropped) split into its components, each checked; else a 400."""
    relpath = relpath.removesuffix("/")
    if not relpath:
        raise HttpError(400, "empty path")
    parts = relpath.split("/", MAX_PATH_PARTS)
    if len(parts) > MAX_PATH_PARTS:
        raise HttpError(400, f"path deeper than {MAX_PATH_PARTS} components")
    for part in parts:
        if not is_name(part):
            raise HttpError(
                400,
                f"path component {part[:40]!r} is not a plain name (1-{MAX_NAME_CHARS} letters, digits, "
                "'-', '_', '.'; no leading '.', no '..')",
            )
    return tuple(parts)


def bearer_token(headers: Mapping[str, str]) -> str:
    """The capability token of `Authorization: Bearer <token>`; a 401 when it is missing or malformed."""
    challenge = {"WWW-Authenticate": 'Bearer realm="swarm-data"'}
    raw = headers.get("authorization")
    if raw is None:
        raise HttpError(
            401, "a capability token is required: Authorization: Bearer <token>", headers=challenge
        )
    match = _BEARER.fullmatch(raw)
    if match is None or not is_token(match.group(1)):
        raise HttpError(401, "malformed Authorization header; expected 'Bearer <token>'", headers=challenge)
    return match.group(1)


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
        start, end = int(first), int(last) if last else max(size - 1, int(first))
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


async def linger(
    reader: asyncio.StreamReader, left: int, seconds: float = LINGER_S, max_bytes: int = LINGER_MAX_BYTES
) -> None:
    """Read and drop a refused request's body for a moment, so its client finishes sending and reads our
    answer, instead of getting a connection reset that hides why it was refused."""
    left = min(left, max_bytes)
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(seconds):
            while left > 0:
                block = await reader.read(min(left, WRITE_BATCH))
                if not block:
                    return
                left -= len(block)
