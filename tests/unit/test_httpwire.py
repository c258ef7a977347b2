"""The request parsers of the data servers: whatever bytes arrive, only `HttpError` comes out.

They run on every request before anything is authenticated, so the property tests feed them random
bytes and valid heads mutated byte by byte and line by line, then push whatever parses through every
later parser a handler would use (length, range, token, path).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from swarm.runtime.httpwire import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_NAME_CHARS,
    MAX_PATH_PARTS,
    HttpError,
    Request,
    bearer_token,
    content_length,
    is_name,
    is_token,
    parse_head,
    parse_path,
    parse_range,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOKEN = "Zm9yIHRoZSBwYXJzZXIgdGVzdHM"

VALID_HEADS = [
    b"GET /f/in/0 HTTP/1.1\r\nHost: a\r\nRange: bytes=0-99\r\nX-Want-Checksum: no\r\n"
    b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n",
    b"PUT /f/mr-out-3 HTTP/1.1\r\nContent-Length: 1234\r\nX-Checksum: 0a1b2c3d\r\n"
    b"Authorization: Bearer " + TOKEN.encode() + b"\r\nExpect: 100-continue\r\n\r\n",
    b"DELETE /f/mr/job-1/m0-a1 HTTP/1.0\r\nAuthorization: bearer " + TOKEN.encode() + b"\r\n\r\n",
    b"GET /f/mr/job-1/m0-a1/part-0.run?x=1 HTTP/1.1\r\nRange: bytes=-5\r\n\r\n",
]


def _everything(head: bytes, size: int) -> None:
    """Parse `head` and run every later parser on what it holds, as a handler would."""
    request = parse_head(head, "peer")
    assert isinstance(request, Request)
    parse_path(request.target)
    content_length(request)
    bearer_token(request.headers)
    if "range" in request.headers:
        start, length = parse_range(request.headers["range"], size)
        assert 0 <= start < size and 1 <= length <= size - start


def _only_http_errors(head: bytes, size: int = 1000) -> None:
    try:
        _everything(head, size)
    except HttpError as err:
        assert 400 <= err.status < 600
        assert str(err)


@st.composite
def mutated_heads(draw: st.DrawFn) -> bytes:
    """A valid head with a few random edits: bytes replaced, inserted or removed, lines duplicated,
    dropped or swapped, separators and numbers bent."""
    head = bytearray(draw(st.sampled_from(VALID_HEADS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.integers(0, 6))
        at = draw(st.integers(0, max(len(head) - 1, 0)))
        if kind == 0 and head:
            head[at] = draw(st.integers(0, 255))
        elif kind == 1:
            head[at:at] = draw(st.binary(min_size=1, max_size=40))
        elif kind == 2:
            del head[at : at + draw(st.integers(1, 20))]
        elif kind == 3:
            lines = bytes(head).split(b"\r\n")
            line = draw(st.sampled_from(lines))
            lines.insert(draw(st.integers(1, len(lines))), line * draw(st.integers(1, 3)))
            head = bytearray(b"\r\n".join(lines))
        elif kind == 4:
            lines = bytes(head).split(b"\r\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            head = bytearray(b"\r\n".join(lines))
        elif kind == 5:
            number = draw(
                st.sampled_from([b"-1", b"", b"99999999999999999999", b"0x10", b"1e3", b"\xb2", b" 7"])
            )
            for field in (b"0-99", b"1234", b"-5"):
                head = bytearray(bytes(head).replace(field, number, 1))
        else:
            junk = draw(
                st.sampled_from([b"\x00", b"\r", b"\n", b"\t", b":", b" ", b"..", b"%", b"%2e", b"/"])
            )
            head[at:at] = junk
    return bytes(head)


@FUZZ
@given(st.binary(max_size=2000), st.integers(0, 10**12))
@example(b"", 0)
@example(b"\r\n\r\n", 0)
@example(b"GET / HTTP/1.1\r\n\r\n", 0)
def test_random_bytes_raise_only_http_errors(head: bytes, size: int) -> None:
    _only_http_errors(head, size)


@FUZZ
@given(mutated_heads(), st.integers(0, 10**6))
def test_mutated_heads_raise_only_http_errors(head: bytes, size: int) -> None:
    _only_http_errors(head, size)


@FUZZ
@given(st.text(max_size=300), st.integers(0, 10**12))
def test_ranges_and_tokens_of_any_text_raise_only_http_errors(value: str, size: int) -> None:
    try:
        start, length = parse_range(value, size)
        assert 0 <= start < size and 1 <= length <= size - start
    except HttpError:
        pass
    try:
        assert is_token(bearer_token({"authorization": value}))
    except HttpError as err:
        assert err.status == 401
    try:
        assert all(is_name(part) for part in parse_path("/f/" + value))
    except HttpError as err:
        assert err.status == 400


def test_the_valid_heads_parse() -> None:
    for head in VALID_HEADS[:3]:
        request = parse_head(head, "peer")
        assert bearer_token(request.headers) == TOKEN
        assert all(is_name(part) for part in parse_path(request.target))


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /f/x HTTP/1.1 extra\r\n\r\n", 400),
        (b"GET f/x HTTP/1.1\r\n\r\n", 400),
        (b"GET /f/\x7fx HTTP/1.1\r\n\r\n", 400),
        (b"G(T /f/x HTTP/1.1\r\n\r\n", 400),
        (b"GET /f/x HTTP/2\r\n\r\n", 400),
        (b"GET /f/x HTTP/1.1\r\nBad Header: 1\r\n\r\n", 400),
        (b"GET /f/x HTTP/1.1\r\nNoColon\r\n\r\n", 400),
        (b"GET /f/x HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET /f/x HTTP/1.1\r\nX: 1\r\nX: 2\r\n\r\n", 400),
        (
            b"GET /f/x HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n",
            431,
        ),
        (b"GET /f/x HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n", 431),
    ],
)
def test_malformed_heads_are_refused(head: bytes, status: int) -> None:
    with pytest.raises(HttpError) as info:
        parse_head(head, "peer")
    assert info.value.status == status


def test_a_head_at_the_header_limit_parses() -> None:
    fields = b"".join(b"H%d: v\r\n" % i for i in range(MAX_HEADERS))
    assert len(parse_head(b"GET /f/x HTTP/1.1\r\n" + fields + b"\r\n", "peer").headers) == MAX_HEADERS


@pytest.mark.parametrize("raw", ["-1", "", " 1", "1.0", "0x10", "1" * 20, "+5", "²"])
def test_bad_content_lengths_are_refused(raw: str) -> None:
    with pytest.raises(HttpError) as info:
        content_length(Request("PUT", "/f/x", {"content-length": raw}, "peer"))
    assert info.value.status == 400


def test_lengths_missing_or_chunked_are_refused() -> None:
    with pytest.raises(HttpError) as info:
        content_length(Request("PUT", "/f/x", {}, "peer"))
    assert info.value.status == 411
    with pytest.raises(HttpError) as info:
        content_length(
            Request("PUT", "/f/x", {"transfer-encoding": "chunked", "content-length": "5"}, "peer")
        )
    assert info.value.status == 501


@pytest.mark.parametrize(
    ("value", "size", "status"),
    [
        ("bytes=--5", 100, 400),
        ("bytes=-", 100, 400),
        ("bytes=5--1", 100, 400),
        ("bytes=-1-5", 100, 400),
        ("bytes=9-3", 100, 400),
        ("bytes=0-1,3-4", 100, 400),
        ("bytes=100-", 100, 416),
        ("bytes=-0", 100, 416),
        ("bytes=0-0", 0, 416),
        ("bytes=-5", 0, 416),
    ],
)
def test_negative_and_impossible_ranges_are_refused(value: str, size: int, status: int) -> None:
    with pytest.raises(HttpError) as info:
        parse_range(value, size)
    assert info.value.status == status


def test_ranges_clamp_to_the_file() -> None:
    assert parse_range("bytes=10-19", 100) == (10, 10)
    assert parse_range("bytes=90-500", 100) == (90, 10)
    assert parse_range("bytes=-5", 100) == (95, 5)
    assert parse_range("bytes=-500", 100) == (0, 100)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer short",
        "Bearer a b",
        "Bearer " + "x" * 300,
        "Bearer tok+en/with=base64chars",
        f"Bearer\t{TOKEN}",
        f"Token {TOKEN}",
    ],
)
def test_malformed_credentials_are_a_401(value: str) -> None:
    with pytest.raises(HttpError) as info:
        bearer_token({"authorization": value})
    assert info.value.status == 401
    assert "WWW-Authenticate" in info.value.headers
    with pytest.raises(HttpError):
        bearer_token({})


@pytest.mark.parametrize(
    "target",
    [
        "/f/",
        "/f//x",
        "/f/a//b",
        "/f/..",
        "/f/a/../b",
        "/f/%2e%2e/x",
        "/f/.capability",
        "/f/mr/j/.x.upload",
        "/f/a..b",
        "/f/a%00b",
        "/f/a%5cb",
        "/f/a%20b",
        "/f/%ff",
        "/f/" + "a" * (MAX_NAME_CHARS + 1),
        "/f/" + "/".join(["a"] * (MAX_PATH_PARTS + 1)),
    ],
)
def test_paths_outside_the_grammar_are_a_400(target: str) -> None:
    with pytest.raises(HttpError) as info:
        parse_path(target)
    assert info.value.status == 400


def test_paths_inside_the_grammar() -> None:
    assert parse_path("/f/mr/job-1/m0-a1/part-0.run") == ("mr", "job-1", "m0-a1", "part-0.run")
    assert parse_path("/f/in/0?ignored=1") == ("in", "0")
    assert parse_path("/f/mr%2Dout%2D0") == ("mr-out-0",)
    assert parse_path("/f/" + "/".join(["a"] * MAX_PATH_PARTS)) == ("a",) * MAX_PATH_PARTS
    with pytest.raises(HttpError) as info:
        parse_path("/etc/passwd")
    assert info.value.status == 404
