"""Bearer tokens for the HTTP API: real tokens from a real authority, checked by `TokenVerifier`."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from swarm.api.auth import MAX_TOKEN_CHARS, ApiUser, TokenVerifier, Unauthenticated, permission_refusal
from swarm.trust.authority import Authority
from swarm.trust.credentials import TOKEN_PREFIX, Credential, b64e

NOW = 1_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def authority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Authority:
    monkeypatch.setenv("SWARM_HOME", str(tmp_path))
    return Authority.open_or_found("home", NOW, lambda: None)


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Counts the tokens the verifier actually parses (what its cache saves)."""
    seen: list[str] = []
    real = Credential.from_token

    def counting(token: str) -> Credential:
        seen.append(token)
        return real(token)

    monkeypatch.setattr(Credential, "from_token", staticmethod(counting))
    yield seen


def make_verifier(
    authority: Authority, clock: Clock, revoked: set[str] | None = None, **kw: float
) -> TokenVerifier:
    gone = revoked if revoked is not None else set()
    return TokenVerifier(authority.public_key, "home", gone.__contains__, clock, **kw)  # type: ignore[arg-type]


def test_a_user_token_becomes_its_user(authority: Authority) -> None:
    cred = authority.issue("u-alice", "user", "submitter", now=NOW, team="lab", name="Alice")
    user = make_verifier(authority, Clock()).verify(cred.to_token())
    assert user == ApiUser("u-alice", "user", "submitter", "lab", "Alice")


def test_garbage_and_oversized_bearers_are_refused(authority: Authority) -> None:
    v = make_verifier(authority, Clock())
    for bearer in ("", "hello", "swarm1:AAAA", "swarm1:" + "x" * 100):
        assert v.verify(bearer) is None
    with pytest.raises(Unauthenticated, match="not a swarm token"):
        v.authenticate("Basic dXNlcjpwYXNz")
    with pytest.raises(Unauthenticated, match=f"longer than {MAX_TOKEN_CHARS}"):
        v.authenticate("swarm1:" + "A" * MAX_TOKEN_CHARS)


def test_another_clusters_or_authoritys_token_is_refused(
    authority: Authority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWARM_HOME", str(tmp_path / "elsewhere"))
    stranger = Authority.open_or_found("home", NOW, lambda: None)
    other_cluster = Authority.open_or_found("work", NOW, lambda: None)
    v = make_verifier(authority, Clock())
    foreign = stranger.issue("u-eve", "user", "admin", now=NOW).to_token()
    with pytest.raises(Unauthenticated, match="not signed by this cluster's authority"):
        v.authenticate(foreign)
    # Right authority key, wrong cluster name: the certificate names the cluster it was made for.
    w = TokenVerifier(other_cluster.public_key, "home", lambda _: False, Clock())
    with pytest.raises(Unauthenticated, match="for cluster 'work'"):
        w.authenticate(other_cluster.issue("u-bob", "user", "viewer", now=NOW).to_token())


def test_a_token_whose_role_was_edited_is_refused(authority: Authority) -> None:
    cred = authority.issue("u-mallory", "user", "viewer", now=NOW)
    data = cred.to_json()
    data["cert"]["role"] = "admin"
    forged = TOKEN_PREFIX + b64e(zlib.compress(orjson.dumps(data)))
    with pytest.raises(Unauthenticated):
        make_verifier(authority, Clock()).authenticate(forged)


def test_a_node_credential_is_not_a_user(authority: Authority) -> None:
    node = authority.issue("n-00000001", "node", "member", now=NOW)
    with pytest.raises(Unauthenticated, match="node's credential"):
        make_verifier(authority, Clock()).authenticate(node.to_token())


def test_expiry_and_revocation_apply_even_to_cached_tokens(authority: Authority, parses: list[str]) -> None:
    clock, revoked = Clock(), set[str]()
    v = make_verifier(authority, clock, revoked)
    short = authority.issue("u-short", "user", "viewer", now=NOW, expires=NOW + 10).to_token()
    keep = authority.issue("u-keep", "user", "viewer", now=NOW).to_token()
    assert v.verify(short) is not None and v.verify(keep) is not None
    clock.now = NOW + 10
    with pytest.raises(Unauthenticated, match="expired"):
        v.authenticate(short)
    revoked.add("u-keep")
    with pytest.raises(Unauthenticated, match="revoked"):
        v.authenticate(keep)
    assert len(parses) == 2, "both refusals came from the cache's entries, re-checked"


def test_results_are_cached_for_the_ttl_and_the_cache_is_bounded(
    authority: Authority, parses: list[str]
) -> None:
    clock = Clock()
    v = make_verifier(authority, clock, ttl=30.0, max_entries=2)
    a, b, c = (authority.issue(f"u-{n}", "user", "viewer", now=NOW).to_token() for n in "abc")
    for _ in range(3):
        assert v.verify(a) is not None
        assert v.verify("swarm1:bogus") is None
    assert parses == [a, "swarm1:bogus"], "good and bad results are both cached"
    clock.now += 31
    assert v.verify(a) is not None
    assert parses[-1] == a, "re-checked after the ttl"
    v.verify(b)
    v.verify(c)  # the least recently used entries go first: the bogus token, then a
    v.verify(a)
    assert parses[-1] == a and len(parses) == 6


def test_permissions_follow_the_roles() -> None:
    viewer = ApiUser("u-v", "user", "viewer")
    operator = ApiUser("u-o", "user", "operator")
    assert permission_refusal(viewer, "view") is None
    refusal = permission_refusal(viewer, "submit")
    assert refusal is not None and "'submit'" in refusal and "viewer" in refusal
    assert permission_refusal(operator, "run_code") is None
    assert permission_refusal(ApiUser("u-s", "user", "submitter"), "run_code") is not None
