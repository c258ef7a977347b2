"""Who is calling the HTTP API: bearer tokens checked against the cluster's authority.

A client sends its cluster token (`swarm1:...`, the same string the CLI takes) as
`Authorization: Bearer <token>`; the event stream also takes it as `?token=`, because a browser cannot set
headers on a WebSocket. A token is accepted only when

1. it parses (`Credential.from_token`),
2. its certificate is signed by this cluster's authority and names this cluster,
3. it is a user's token (a node's credential is a member of the protocol, not a user of the API),
4. it has not expired and is not revoked, and
5. its private key matches its certificate: a fixed challenge signed with the key verifies with the
   certificate's public key (so a certificate copied out of a signed message is not a token).

Checking a token costs a decompression and three Ed25519 operations, so results (good and bad) are cached
by the token's SHA-256 for `ttl` seconds in a bounded cache. Revocation and expiry are re-checked on
every call, cached or not: a revoked token stops working at once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from swarm.errors import ConfigError
from swarm.trust.credentials import Credential
from swarm.trust.roles import Permission, allowed

__all__ = ["MAX_TOKEN_CHARS", "ApiUser", "TokenVerifier", "Unauthenticated", "permission_refusal"]

#: Longer bearers are refused unread: a token is a few kilobytes, and parsing decompresses it.
MAX_TOKEN_CHARS = 16_384
_CHALLENGE = b"swarm-api-token-proof:v1"


class Unauthenticated(Exception):
    """The bearer is missing or not a valid token of this cluster; the text says why."""


@dataclass(frozen=True, slots=True)
class ApiUser:
    """The principal behind an API request, as its certificate says."""

    id: str
    kind: str
    role: str
    team: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class _Accepted:
    user: ApiUser
    expires: float | None
    checked_at: float


@dataclass(frozen=True, slots=True)
class _Refused:
    reason: str
    checked_at: float


def permission_refusal(user: ApiUser, permission: Permission) -> str | None:
    """None when `user` has `permission`, else a message naming the permission it lacks."""
    if allowed(user.role, permission):
        return None
    return f"{user.id}: role {user.role!r} lacks the {permission!r} permission this request needs"


class TokenVerifier:
    """Turns bearer tokens into `ApiUser`s for one cluster (see the module doc)."""

    def __init__(
        self,
        authority_public: bytes,
        cluster: str,
        is_revoked: Callable[[str], bool],
        clock: Callable[[], float],
        *,
        ttl: float = 30.0,
        max_entries: int = 1024,
    ) -> None:
        self._authority = authority_public
        self._cluster = cluster
        self._is_revoked = is_revoked
        self._clock = clock
        self._ttl = ttl
        self._max_entries = max_entries
        self._cache: OrderedDict[bytes, _Accepted | _Refused] = OrderedDict()

    def verify(self, bearer: str) -> ApiUser | None:
        """The user `bearer` authenticates, or None."""
        try:
            return self.authenticate(bearer)
        except Unauthenticated:
            return None

    def authenticate(self, bearer: str) -> ApiUser:
        """The user `bearer` authenticates; raise `Unauthenticated` saying why not."""
        if len(bearer) > MAX_TOKEN_CHARS:
            raise Unauthenticated(f"the token is longer than {MAX_TOKEN_CHARS} characters")
        now = self._clock()
        key = hashlib.sha256(bearer.encode("utf-8", "surrogatepass")).digest()
        entry = self._cache.get(key)
        if entry is None or now - entry.checked_at > self._ttl or now < entry.checked_at:
            entry = self._check(bearer, now)
            self._cache[key] = entry
            if len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        if isinstance(entry, _Refused):
            raise Unauthenticated(entry.reason)
        user = entry.user
        if self._is_revoked(user.id):
            raise Unauthenticated(f"token {user.id} has been revoked")
        if entry.expires is not None and now >= entry.expires:
            raise Unauthenticated(f"token {user.id} has expired")
        return user

    def _check(self, bearer: str, now: float) -> _Accepted | _Refused:
        try:
            cred = Credential.from_token(bearer)
        except ConfigError as exc:
            return _Refused(str(exc), now)
        cert = cred.certificate
        try:
            cert.verify(self._authority)
        except ValueError as exc:
            return _Refused(str(exc), now)
        if cert.cluster != self._cluster:
            return _Refused(f"token {cert.id} is for cluster {cert.cluster!r}, not {self._cluster!r}", now)
        if cert.kind != "user":
            return _Refused(f"{cert.id} is a node's credential; the API takes user tokens only", now)
        try:
            Ed25519PublicKey.from_public_bytes(cert.public_key).verify(
                cred.key().sign(_CHALLENGE), _CHALLENGE
            )
        except (InvalidSignature, ValueError):
            return _Refused(f"token {cert.id}: its key does not match its certificate", now)
        user = ApiUser(cert.id, cert.kind, cert.role, cert.team, cert.name)
        return _Accepted(user, cert.expires, now)
