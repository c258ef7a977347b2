"""The roster: every principal the authority issued, the revoked ones and the quotas, signed as one document.

The authority's machine keeps the roster; `swarm invite`, `swarm token ...`, `swarm revoke` and
`swarm quota set` change it and publish it, retained, on `trust/roster`. Every node keeps the newest
copy it has seen (the highest `serial` whose signature checks) in its data dir, because it needs it
when the authority's machine is away: to refuse revoked principals' messages, to build the password
file of a broker it starts, and to enforce quotas when it coordinates.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from swarm.core.quota import Quota
from swarm.trust.credentials import Kind, b64d, b64e, canonical

__all__ = ["Principal", "Roster", "broker_password"]


def broker_password(secret: bytes, principal_id: str) -> str:
    """A principal's broker password: derived from the cluster's broker secret, so any member can write a
    broker's password file from the roster alone, and no principal can derive another's."""
    return hmac.new(secret, b"broker-login:" + principal_id.encode(), hashlib.sha256).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Principal:
    """One issued identity, as the roster lists it."""

    id: str
    kind: Kind
    role: str
    team: str = ""
    name: str = ""
    expires: float | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "id": self.id,
            "kind": self.kind,
            "role": self.role,
            "team": self.team,
            "name": self.name,
            "expires": self.expires,
        }


@dataclass(frozen=True, slots=True)
class Roster:
    """The signed list of principals, revocations and quotas; `serial` only grows."""

    cluster: str
    serial: int = 0
    principals: tuple[Principal, ...] = ()
    revoked: tuple[str, ...] = ()
    quotas: tuple[dict[str, Any], ...] = ()
    signature: bytes = field(default=b"", compare=False)

    def doc(self) -> dict[str, Any]:
        """What the signature covers."""
        return {
            "cluster": self.cluster,
            "serial": self.serial,
            "principals": [p.to_json() for p in self.principals],
            "revoked": list(self.revoked),
            "quotas": list(self.quotas),
        }

    def signed(self, authority: Ed25519PrivateKey) -> Roster:
        """A copy with the authority's signature."""
        return Roster(
            self.cluster,
            self.serial,
            self.principals,
            self.revoked,
            self.quotas,
            authority.sign(canonical(self.doc())),
        )

    def to_bytes(self) -> bytes:
        """The signed roster as JSON bytes."""
        return orjson.dumps({"doc": self.doc(), "sig": b64e(self.signature)})

    @classmethod
    def from_bytes(cls, data: bytes, authority_public: bytes) -> Roster:
        """Parse and check the authority's signature; raises ValueError."""
        try:
            raw = orjson.loads(data)
            doc, sig = raw["doc"], b64d(raw["sig"])
            Ed25519PublicKey.from_public_bytes(authority_public).verify(sig, canonical(doc))
            return cls(
                cluster=str(doc["cluster"]),
                serial=int(doc["serial"]),
                principals=tuple(Principal(**p) for p in doc["principals"]),
                revoked=tuple(str(r) for r in doc["revoked"]),
                quotas=tuple(dict(q) for q in doc.get("quotas", ())),
                signature=sig,
            ).checked()
        except InvalidSignature:
            raise ValueError("the roster is not signed by this cluster's authority") from None
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed roster: {exc}") from None

    def checked(self) -> Roster:
        """This roster, once its quotas are known to be well formed (ValueError otherwise)."""
        self.quota_list()
        return self

    def quota_list(self) -> tuple[Quota, ...]:
        """The quotas as objects (the roster keeps them as JSON)."""
        return tuple(Quota(**q) for q in self.quotas)

    def get(self, principal_id: str) -> Principal | None:
        """The principal with this id, revoked or not."""
        return next((p for p in self.principals if p.id == principal_id), None)

    def active(self, now: float) -> list[Principal]:
        """Every principal neither revoked nor expired at `now`: whom a broker of the cluster lets in."""
        revoked = set(self.revoked)
        return [p for p in self.principals if p.id not in revoked and (p.expires is None or now < p.expires)]
