"""Certificates, credentials and the token strings that carry them.

Theory of operation
-------------------
A cluster has one authority: an Ed25519 key pair made by the cluster's first node (`authority.py`).
Every principal — a node (kind "node", role "member") or a user (kind "user", role viewer, submitter,
operator or admin) — holds its own Ed25519 key and a `Certificate` the authority signed: its id,
kind, role, team, expiry and public key. Messages carry the certificate and are signed with the
principal's key (`signing.py`), so any receiver that knows the authority's public key can tell who
sent a message and what that sender may do, without asking anyone.

A `Credential` is what a principal keeps: its certificate, its private key, its broker login, and the
cluster's public material (the authority's public key and the broker's TLS CA). A node's credential
also carries what a member needs to start a broker itself (the broker secret and TLS key), because any
member may have to, when the broker's machine is gone.

A token is a credential as one copy-pasteable string: `swarm join --token` (a node) or `--token` /
`$SWARM_TOKEN` (a user of the CLI and the HTTP API). A token is a secret: whoever holds it is that
principal until it is revoked.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from swarm.errors import ConfigError
from swarm.ids import is_id

__all__ = [
    "TOKEN_PREFIX",
    "Certificate",
    "Credential",
    "Kind",
    "b64d",
    "b64e",
    "canonical",
    "public_key_bytes",
]

TOKEN_PREFIX = "swarm1:"
Kind = Literal["node", "user"]


def b64e(data: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64d(text: str) -> bytes:
    """Inverse of `b64e`; raises ValueError on bad input."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"bad base64: {exc}") from None


def canonical(obj: Any) -> bytes:
    """The bytes a signature covers: JSON with sorted keys."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32 bytes of `key`'s public half."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class Certificate:
    """A principal's identity, signed by the cluster's authority."""

    cluster: str
    id: str
    kind: Kind
    role: str
    public_key: bytes
    issued: float
    expires: float | None = None
    team: str = ""
    name: str = ""
    signature: bytes = b""

    def claims(self) -> dict[str, Any]:
        """Everything the signature covers."""
        return {
            "cluster": self.cluster,
            "id": self.id,
            "kind": self.kind,
            "role": self.role,
            "pub": b64e(self.public_key),
            "issued": self.issued,
            "expires": self.expires,
            "team": self.team,
            "name": self.name,
        }

    def to_json(self) -> dict[str, Any]:
        """The certificate as a JSON object (claims plus signature)."""
        return {**self.claims(), "sig": b64e(self.signature)}

    @classmethod
    def from_json(cls, data: Any) -> Certificate:
        """Parse a certificate; raises ValueError naming what is wrong. The signature is not checked."""
        if not isinstance(data, dict):
            raise ValueError("certificate: expected an object")
        try:
            cert = cls(
                cluster=_str(data, "cluster"),
                id=_str(data, "id"),
                kind=data["kind"],
                role=_str(data, "role"),
                public_key=b64d(_str(data, "pub")),
                issued=float(data["issued"]),
                expires=None if data.get("expires") is None else float(data["expires"]),
                team=_str(data, "team"),
                name=_str(data, "name"),
                signature=b64d(_str(data, "sig")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"certificate: missing or malformed field {exc}") from None
        if cert.kind not in ("node", "user") or not is_id(cert.id):
            raise ValueError(f"certificate: bad kind {cert.kind!r} or id {cert.id!r}")
        if len(cert.public_key) != 32 or len(cert.signature) != 64:
            raise ValueError("certificate: bad key or signature length")
        return cert

    def signed_by(self, authority: Ed25519PrivateKey) -> Certificate:
        """This certificate with the authority's signature over its claims."""
        return replace(self, signature=authority.sign(canonical(self.claims())))

    def verify(self, authority_public: bytes) -> None:
        """Raise ValueError unless the authority with this public key signed the certificate."""
        try:
            Ed25519PublicKey.from_public_bytes(authority_public).verify(
                self.signature, canonical(self.claims())
            )
        except InvalidSignature:
            raise ValueError(f"certificate of {self.id} is not signed by this cluster's authority") from None

    def valid_at(self, when: float) -> bool:
        """Whether the certificate has not expired at `when`."""
        return self.expires is None or when < self.expires


@dataclass(frozen=True, slots=True)
class Credential:
    """What a principal holds: its certificate and key, its broker login and the cluster's public material.

    `broker_secret` and the broker TLS key are present only in node credentials (see the module doc).
    """

    certificate: Certificate
    private_key: bytes
    broker_password: str
    authority_public: bytes
    tls_ca_pem: bytes
    broker_url: str = ""
    broker_secret: bytes = b""
    tls_cert_pem: bytes = b""
    tls_key_pem: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The principal's id: its node id, or its token id."""
        return self.certificate.id

    @property
    def cluster(self) -> str:
        """The cluster this credential belongs to."""
        return self.certificate.cluster

    def key(self) -> Ed25519PrivateKey:
        """The private key as an object that signs."""
        return Ed25519PrivateKey.from_private_bytes(self.private_key)

    def to_json(self) -> dict[str, Any]:
        """JSON form, for the 0600 file a principal keeps and for tokens."""
        out: dict[str, Any] = {
            "cert": self.certificate.to_json(),
            "key": b64e(self.private_key),
            "broker_password": self.broker_password,
            "authority": b64e(self.authority_public),
            "tls_ca": self.tls_ca_pem.decode(),
        }
        if self.broker_url:
            out["broker_url"] = self.broker_url
        if self.broker_secret:
            out["broker_secret"] = b64e(self.broker_secret)
            out["tls_cert"] = self.tls_cert_pem.decode()
            out["tls_key"] = self.tls_key_pem.decode()
        if self.extra:
            out["extra"] = self.extra
        return out

    @classmethod
    def from_json(cls, data: Any) -> Credential:
        """Parse and check that the key matches the certificate and the authority signed it."""
        if not isinstance(data, dict):
            raise ValueError("credential: expected an object")
        try:
            cred = cls(
                certificate=Certificate.from_json(data["cert"]),
                private_key=b64d(_str(data, "key")),
                broker_password=_str(data, "broker_password"),
                authority_public=b64d(_str(data, "authority")),
                tls_ca_pem=_str(data, "tls_ca").encode(),
                broker_url=str(data.get("broker_url", "")),
                broker_secret=b64d(str(data.get("broker_secret", ""))),
                tls_cert_pem=str(data.get("tls_cert", "")).encode(),
                tls_key_pem=str(data.get("tls_key", "")).encode(),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"credential: missing or malformed field {exc}") from None
        if len(cred.private_key) != 32:
            raise ValueError("credential: bad private key length")
        if public_key_bytes(cred.key()) != cred.certificate.public_key:
            raise ValueError("credential: the private key does not match the certificate")
        cred.certificate.verify(cred.authority_public)
        return cred

    def to_token(self) -> str:
        """The credential as one string: `swarm1:` + base64 of the compressed JSON."""
        return TOKEN_PREFIX + b64e(zlib.compress(orjson.dumps(self.to_json()), 9))

    @classmethod
    def from_token(cls, token: str) -> Credential:
        """Parse a token; raises ConfigError with a message a user can act on."""
        token = token.strip()
        if not token.startswith(TOKEN_PREFIX):
            raise ConfigError(f"not a swarm token (it should start with {TOKEN_PREFIX!r})")
        try:
            data = orjson.loads(zlib.decompress(b64d(token[len(TOKEN_PREFIX) :]), bufsize=1 << 16))
            return cls.from_json(data)
        except (ValueError, zlib.error, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"the token is damaged or not valid: {exc}") from None


def _str(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(key)
    return value
