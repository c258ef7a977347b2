"""Every message signed by its sender, checked by every receiver.

Theory of operation
-------------------
A message on the wire is a signed frame around the envelope's JSON::

    b"SW3" | time (8 bytes, big-endian double) | certificate length (2) | signature (64)
           | authenticator count (1) | authenticators (40 each) | sender's offer (96)
           | certificate JSON | envelope JSON

The Ed25519 signature covers the topic, the time, the certificate and the envelope, so a message cannot
be moved to another topic or have its time changed. The offer (`trust/pairing.py`) lets every receiver
pair with the sender, and each authenticator is one reader's key fingerprint and a MAC, under the key the
two share, of what the signature covers: that reader may check the MAC instead of the signature. A sender
that pairs with nobody (signatures off for a measurement) sends the plain signed frame::

    b"SW1" | time (8) | certificate length (2) | signature (64) | certificate JSON | envelope JSON

A message from one member to one other member whose key-exchange offer the sender has checked is a
*paired* frame instead, authenticated by a MAC under a key the two alone share (`trust/pairing.py` says
why and how)::

    b"SW2" | time (8) | certificate length (2) | receiver's key fingerprint (8)
           | certificate JSON | sender's offer (96) | envelope JSON | HMAC-SHA256 (32)

The receiver (`Verifier.open`):

1. checks the certificate against the cluster's authority (once per certificate: verified certificates
   are cached by their bytes) and that it is neither revoked nor expired;
2. checks the signature with the certificate's key, or its own authenticator if the frame has one that
   checks, or, for a paired frame, that it is the receiver named and the MAC under the key it shares
   with the offer's maker (an offer is checked once);
3. decodes the envelope (`codec.decode`: ids, types, sizes) and binds it to the certificate: the
   envelope's sender is the certificate's id (a user's CLI adds `.<nonce>` to tell its connections
   apart), and the principal's kind and role may send this type of message (`roles.may_send`);
4. drops replays: a live (not retained) message whose time is further than `window` from the receiver's
   clock, or whose id this receiver already took from that sender within the window;
5. learns the sender's offer, if the frame carries one.

A node hears its own retained records come back (a coordinator learns from the echo that the broker
stored a commit). It says which frames it expects (`expect_echo`), and a live frame byte for byte equal to
one of them is taken as what it sealed, without a signature check or a decode: it is authentic because
this process made it, and decoding a coordinator's own commits again was a third of its decoding.

Retained messages are the broker's current state (a job's spec, the coordinator's announcement, a
commit batch), so they are old by design and exempt from the time window; the protocol's own state
(epochs, attempt numbers, job ids) makes a stale one harmless, as it does for a coordinator deposed
long ago. What is checked of the sender beyond its identity and role — only the epoch's coordinator
assigns, a result comes from the node its attempt went to, an epoch rises by a bounded step — depends on
protocol state and is checked by the core (`core/node.py`, `core/scheduler.py`, `core/election.py`).
"""

from __future__ import annotations

import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from swarm.codec import decode, peek_sender
from swarm.errors import ProtocolError
from swarm.messages import Cancel, Envelope, SubmitJob
from swarm.trust.credentials import Certificate, Credential
from swarm.trust.pairing import (
    AUTHENTICATOR_BYTES,
    FINGERPRINT_BYTES,
    MAC_BYTES,
    OFFER_BYTES,
    Pairing,
    mac,
)
from swarm.trust.roles import may_send
from swarm.trust.roster import Roster

__all__ = [
    "AUTHENTICATED_MAGIC",
    "MAGIC",
    "PAIRED_MAGIC",
    "UNSIGNED_ENV",
    "AuthError",
    "Signer",
    "Verified",
    "Verifier",
    "signatures_disabled",
]

#: Set to "1" only by the benchmarks, to measure the cost of signatures (see `signatures_disabled`).
UNSIGNED_ENV = "SWARM_BENCH_UNSIGNED"

MAGIC = b"SW1"
PAIRED_MAGIC = b"SW2"
AUTHENTICATED_MAGIC = b"SW3"
_HEAD = struct.Struct(">3sdH64s")
_AUTHENTICATED_HEAD = struct.Struct(">3sdH64sB")
_PAIRED_HEAD = struct.Struct(f">3sdH{FINGERPRINT_BYTES}s")
#: How far a live message's time may be from the receiver's clock, and how long ids are remembered.
DEFAULT_WINDOW_S = 300.0
_MAX_CACHED_CERTS = 4096
#: Own frames awaiting their echo; one that never comes back (lost, or a topic this node does not follow)
#: is forgotten once this many newer ones wait.
_MAX_AWAITED_ECHOES = 4096
#: Messages signed long before they travel: a node's last will is signed when it connects.
_SIGNED_AHEAD = frozenset({"node_gone"})
_MAX_REMEMBERED_IDS = 200_000


class AuthError(ProtocolError):
    """A message failed authentication or authorisation; the text says which check.

    `reply_to` is the (sender, message id) to answer, set only when the signature was good and the
    message was refused for what it said, not for who sent it: nobody else is ever answered.
    """

    def __init__(self, message: str, reply_to: tuple[str, str] | None = None) -> None:
        super().__init__(message)
        self.reply_to = reply_to


def signatures_disabled() -> bool:
    """Whether this process runs with Ed25519 signatures off: only `bench/` sets this, to measure what
    signing costs. Every other check (certificates, roles, ids, replays) still runs; a node and its
    peers must agree, since a node with signatures on refuses every unsigned frame."""
    return os.environ.get(UNSIGNED_ENV) == "1"


class Signer:
    """Signs what one principal sends, or pairs it when it goes to one peer whose offer it knows."""

    def __init__(self, credential: Credential, pairing: Pairing | None = None) -> None:
        self.credential = credential
        self._key = credential.key()
        self._cert = orjson.dumps(credential.certificate.to_json())
        self._sign = not signatures_disabled()
        self._pairing = pairing

    def seal(
        self, topic: str, payload: bytes, now: float, to: str | None = None, readers: Iterable[str] = ()
    ) -> bytes:
        """The frame of `payload` (an encoded envelope) for `topic`, sent at `now`: paired when `to`, the
        only receiver of `topic`, is a peer this process is paired with; signed otherwise, with an
        authenticator for each of `readers` it is paired with."""
        pairing = self._pairing
        paired = pairing.send_key(to) if pairing is not None and to is not None else None
        if pairing is not None and paired is not None:
            fingerprint, shared = paired
            head = _PAIRED_HEAD.pack(PAIRED_MAGIC, now, len(self._cert), fingerprint)
            frame = b"".join((head, self._cert, pairing.offer, payload))
            return frame + mac(shared, topic, frame)
        message = _signed_text(topic, struct.pack(">d", now), self._cert, payload)
        signature = self._key.sign(message) if self._sign else bytes(64)
        if pairing is None:
            return b"".join((_HEAD.pack(MAGIC, now, len(self._cert), signature), self._cert, payload))
        entries = pairing.authenticators(readers, message)
        head = _AUTHENTICATED_HEAD.pack(
            AUTHENTICATED_MAGIC, now, len(self._cert), signature, len(entries) // AUTHENTICATOR_BYTES
        )
        return b"".join((head, entries, pairing.offer, self._cert, payload))


@dataclass(frozen=True, slots=True)
class Verified:
    """A message that passed every check: its envelope and who sent it."""

    envelope: Envelope
    certificate: Certificate
    sent_at: float


class Verifier:
    """Checks incoming frames against one cluster's authority and roster (see the module doc)."""

    def __init__(
        self,
        cluster: str,
        authority_public: bytes,
        *,
        max_bytes: int,
        window: float = DEFAULT_WINDOW_S,
        pairing: Pairing | None = None,
    ) -> None:
        self.cluster = cluster
        self._pairing = pairing
        self._authority = authority_public
        self._max_bytes = max_bytes
        self._window = window
        self._certs: OrderedDict[bytes, tuple[Certificate, Ed25519PublicKey]] = OrderedDict()
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._echoes: OrderedDict[str, tuple[bytes, Verified]] = OrderedDict()
        self._revoked: frozenset[str] = frozenset()
        self._check_signatures = not signatures_disabled()
        self.roster_serial = -1

    def update_roster(self, roster: Roster) -> bool:
        """Take a newer roster's revocations; False (nothing changes) for an older or equal serial."""
        if roster.serial <= self.roster_serial or roster.cluster != self.cluster:
            return False
        self.roster_serial = roster.serial
        self._revoked = frozenset(roster.revoked)
        for raw in [raw for raw, (cert, _) in self._certs.items() if cert.id in self._revoked]:
            del self._certs[raw]
        if self._pairing is not None:
            self._pairing.forget(self._revoked)
        return True

    def is_revoked(self, principal_id: str) -> bool:
        """Whether the roster this verifier holds revokes `principal_id`."""
        return principal_id in self._revoked

    def expect_echo(self, topic: str, frame: bytes, sent: Verified) -> None:
        """`frame`, which this process sealed saying `sent`, will come back on `topic` (see the module
        docstring); a newer frame for the same topic replaces it."""
        self._echoes[topic] = (frame, sent)
        self._echoes.move_to_end(topic)
        if len(self._echoes) > _MAX_AWAITED_ECHOES:
            self._echoes.popitem(last=False)

    def open(self, topic: str, frame: bytes, *, retained: bool, now: float) -> Verified:
        """Check a frame and return its envelope; raise `AuthError` or `ProtocolError` saying why not."""
        echo = None if retained else self._echoes.get(topic)
        if echo is not None and echo[0] == frame:
            del self._echoes[topic]
            sent = echo[1]
            self._seen[(sent.envelope.sender, sent.envelope.msg_id)] = sent.sent_at  # a replay is refused
            return sent
        if len(frame) > self._max_bytes:
            raise ProtocolError(f"message of {len(frame)} bytes exceeds the limit of {self._max_bytes}")
        offer = b""
        if frame[:3] == PAIRED_MAGIC and not retained:
            cert, key, sent_at, payload = self._open_paired(topic, frame)
        elif len(frame) >= _AUTHENTICATED_HEAD.size and frame[:3] == AUTHENTICATED_MAGIC:
            cert, key, sent_at, payload, offer = self._open_authenticated(topic, frame)
        elif len(frame) >= _HEAD.size and frame[:3] == MAGIC:
            cert, key, sent_at, payload = self._open_signed(topic, frame)
        else:
            raise AuthError("not a signed swarm message")
        if not cert.valid_at(sent_at if retained else now):
            raise AuthError(f"the certificate of {cert.id} has expired")
        try:
            env = decode(payload, cluster=self.cluster, max_bytes=self._max_bytes)
            self._bind(env, cert)
            if not retained and type(env.body).TAG not in _SIGNED_AHEAD:
                self._check_fresh(env, sent_at, now)
        except ProtocolError as exc:
            who = peek_sender(payload)
            bound = who is not None and _speaks_for(cert, who[0])
            raise AuthError(str(exc), reply_to=who if bound else None) from None
        if offer and self._pairing is not None:
            self._pairing.learn(cert, key, offer, live=not retained)
        return Verified(env, cert, sent_at)

    def _open_signed(self, topic: str, frame: bytes) -> tuple[Certificate, Ed25519PublicKey, float, bytes]:
        _, sent_at, cert_len, signature = _HEAD.unpack_from(frame)
        cert_end = _HEAD.size + cert_len
        raw_cert, payload = frame[_HEAD.size : cert_end], frame[cert_end:]
        cert, key = self._certificate(raw_cert)
        self._check_signature(cert, key, signature, _signed_text(topic, frame[3:11], raw_cert, payload))
        return cert, key, sent_at, payload

    def _open_authenticated(
        self, topic: str, frame: bytes
    ) -> tuple[Certificate, Ed25519PublicKey, float, bytes, bytes]:
        _, sent_at, cert_len, signature, count = _AUTHENTICATED_HEAD.unpack_from(frame)
        entries_end = _AUTHENTICATED_HEAD.size + count * AUTHENTICATOR_BYTES
        offer_end = entries_end + OFFER_BYTES
        cert_end = offer_end + cert_len
        if cert_end > len(frame):
            raise AuthError("a signed message too short to hold what its head says")
        raw_cert, payload = frame[offer_end:cert_end], frame[cert_end:]
        cert, key = self._certificate(raw_cert)
        offer = frame[entries_end:offer_end]
        message = _signed_text(topic, frame[3:11], raw_cert, payload)
        entries = frame[_AUTHENTICATED_HEAD.size : entries_end]
        if self._pairing is None or not self._pairing.vouches(cert, key, offer, entries, message):
            self._check_signature(cert, key, signature, message)
        return cert, key, sent_at, payload, offer

    def _check_signature(
        self, cert: Certificate, key: Ed25519PublicKey, signature: bytes, message: bytes
    ) -> None:
        try:
            if self._check_signatures:
                key.verify(signature, message)
        except InvalidSignature:
            raise AuthError(f"bad signature on a message claiming to come from {cert.id}") from None

    def _open_paired(self, topic: str, frame: bytes) -> tuple[Certificate, Ed25519PublicKey, float, bytes]:
        if self._pairing is None:
            raise AuthError("a paired message reached a receiver that pairs with nobody")
        if len(frame) < _PAIRED_HEAD.size + OFFER_BYTES + MAC_BYTES:
            raise AuthError("a paired message too short to hold its offer and MAC")
        _, sent_at, cert_len, fingerprint = _PAIRED_HEAD.unpack_from(frame)
        cert_end = _PAIRED_HEAD.size + cert_len
        offer_end = cert_end + OFFER_BYTES
        if offer_end + MAC_BYTES > len(frame):
            raise AuthError("a paired message too short to hold its offer and MAC")
        cert, key = self._certificate(frame[_PAIRED_HEAD.size : cert_end])
        if cert.kind != "node":
            raise AuthError(f"{cert.id} is not a member and cannot send paired messages")
        # Only a member's frame for someone else is let go quietly; one without a valid certificate was
        # refused above, as a forgery.
        self._pairing.check_addressed(fingerprint)
        try:
            shared = self._pairing.key(cert, key, frame[cert_end:offer_end])
        except ProtocolError as exc:
            raise AuthError(str(exc)) from None
        body_end = len(frame) - MAC_BYTES
        if not hmac.compare_digest(mac(shared, topic, frame[:body_end]), frame[body_end:]):
            raise AuthError(f"bad MAC on a message claiming to come from {cert.id}")
        return cert, key, sent_at, frame[offer_end:body_end]

    def _certificate(self, raw: bytes) -> tuple[Certificate, Ed25519PublicKey]:
        cached = self._certs.get(raw)
        if cached is not None:
            return cached
        try:
            cert = Certificate.from_json(orjson.loads(raw))
            cert.verify(self._authority)
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise AuthError(f"certificate refused: {exc}") from None
        if cert.cluster != self.cluster:
            raise AuthError(f"certificate of {cert.id} is for cluster {cert.cluster!r}")
        if cert.id in self._revoked:
            raise AuthError(f"{cert.id} has been revoked")
        entry = (cert, Ed25519PublicKey.from_public_bytes(cert.public_key))
        self._certs[raw] = entry
        if len(self._certs) > _MAX_CACHED_CERTS:
            self._certs.popitem(last=False)
        return entry

    @staticmethod
    def _bind(env: Envelope, cert: Certificate) -> None:
        sender, body = env.sender, env.body
        if not _speaks_for(cert, sender):
            raise AuthError(f"{cert.id} signed a message that claims to come from {sender}")
        refusal = may_send(cert.kind, cert.role, type(body).TAG)
        if refusal is not None:
            raise AuthError(f"{cert.id}: {refusal}")
        # What a user's submission or cancel says of its sender is what the coordinator decides on. A
        # member may relay a user's spec (a coordinator republishes specs a new broker lost).
        if cert.kind == "node":
            return
        if isinstance(body, SubmitJob) and (body.submitted_by, body.role, body.team) != (
            cert.id,
            cert.role,
            cert.team,
        ):
            raise AuthError(f"{cert.id}: a submission must name its submitter, role and team as signed")
        if isinstance(body, Cancel) and (body.by, body.role) != (cert.id, cert.role):
            raise AuthError(f"{cert.id}: a cancel must name its sender and role as signed")

    def _check_fresh(self, env: Envelope, sent_at: float, now: float) -> None:
        if abs(now - sent_at) > self._window:
            age = now - sent_at
            when = f"{age:.0f} s ago" if age > 0 else f"{-age:.0f} s ahead of this clock"
            raise AuthError(
                f"message {env.msg_id} from {env.sender} is dated {when}, outside the {self._window:.0f} s"
                " window (a replay, a clock far off, or a broker that held it that long)"
            )
        key = (env.sender, env.msg_id)
        if key in self._seen:
            raise AuthError(f"message {env.msg_id} from {env.sender} was already received (a replay)")
        self._seen[key] = sent_at
        horizon = now - self._window
        while self._seen and (
            len(self._seen) > _MAX_REMEMBERED_IDS or next(iter(self._seen.values())) < horizon
        ):
            self._seen.popitem(last=False)


def _signed_text(topic: str, stamp: bytes, cert: bytes, payload: bytes) -> bytes:
    """What a signature (and an authenticator's MAC) covers."""
    return b"".join((topic.encode(), b"\0", stamp, cert, payload))


def _speaks_for(cert: Certificate, sender: str) -> bool:
    """Whether a message from `sender` may be signed with `cert`: its own id, or one of a user's
    connections (`<id>.<nonce>`)."""
    return sender == cert.id or (cert.kind == "user" and sender.startswith(cert.id + "."))
