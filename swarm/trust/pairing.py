"""Pair keys: a message one member sends to one other member is authenticated with a MAC, not a signature.

Why
---
Checking an Ed25519 signature costs about 60-160 µs here, sealing one about 50 µs, and the messages of
the task path are unicast between two members: assignments to a worker's inbox, results and reports to
the coordinator's inbox. Only their receiver has to believe them, so a key shared by the two alone does
the same job for a few µs (HMAC-SHA256), as TLS authenticates its records with a MAC once its handshake
has checked a signature. Everything read by more than one receiver (heartbeats, claims, announcements,
commits, records, anything retained) stays signed, and carries MACs for its few main readers
(Authenticators, below).

How
---
Each node process (and each client connection) makes an X25519 key pair when it starts and signs its
public half with its certificate's key (the *offer*: public key and signature, 96 bytes). Every signed frame
it sends carries the offer (`signing.py`), and a receiver that has checked such a frame (`learn`) shares
with its sender the key HKDF(X25519(own private, peer public)); nobody else can compute it, not the broker,
not a third member. A live frame teaches its sender's current offer; a retained one only where nothing is
known yet, since it may be a record of the peer's earlier life (a live frame is always of the sender's
current life, whatever its clock says).

A paired frame carries its sender's certificate and offer, so the receiver derives the key from the frame
itself (checking the offer's signature once per peer life, then from a cache), and names the first bytes
of the receiver's public key, so that a frame for another receiver, or for an earlier life of this one,
is told apart from a forgery (`NotAddressed`): a member that took over as coordinator may see results
meant for its predecessor. Such a frame is dropped like a lost message, which the protocol already
survives (a worker reports what it holds and what it finished to every new coordinator).

The MAC covers the topic and the whole frame, so nothing in it can be changed or moved to another topic;
what the envelope says (sender, type, time, id) is checked as for a signed frame (`signing.Verifier`).

Authenticators
--------------
A message with several readers (a job's commits, its spec, a heartbeat) stays signed, since any reader,
now or later, must be able to check it. But the readers that matter for speed are few and known to the
sender: the coordinator and its standbys, which follow every heartbeat and the job log, and the user whose
job it is. A signed frame also carries, for each such reader it is paired with, that reader's key
fingerprint and a MAC of what the signature covers (`authenticators`), as PBFT's authenticators do. A
reader that finds its own MAC and checks it (`vouches`) skips the Ed25519 check (about 110 µs here, against
2 µs); any other reader, or one whose MAC is missing or wrong, checks the signature. A sender can thus make
one reader accept what the others refuse only by breaking its own signature, which a paired frame to that
reader allows it anyway.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from swarm.errors import ProtocolError
from swarm.trust.credentials import Certificate, Credential

__all__ = [
    "AUTHENTICATOR_BYTES",
    "FINGERPRINT_BYTES",
    "MAC_BYTES",
    "MAX_AUTHENTICATORS",
    "OFFER_BYTES",
    "NotAddressed",
    "Pairing",
    "mac",
]

#: An offer: the X25519 public key, then the Ed25519 signature of the certificate's key over it.
OFFER_BYTES = 32 + 64
#: How much of the receiver's public key a paired frame names.
FINGERPRINT_BYTES = 8
MAC_BYTES = 32
#: One reader's entry in a signed frame: its key fingerprint, then the MAC.
AUTHENTICATOR_BYTES = FINGERPRINT_BYTES + MAC_BYTES
#: At most this many readers get a MAC in one frame (a count byte holds it; every other reader checks
#: the signature).
MAX_AUTHENTICATORS = 32
_OFFER_LABEL = b"swarm pair offer v1\0"
_KEY_LABEL = b"swarm pair key v1\0"
#: Derived keys kept for receiving (a peer life each); a cluster has far fewer members.
_MAX_KEYS = 4096


class NotAddressed(ProtocolError):
    """A paired frame for another receiver or an earlier life of this one: not a forgery, not for us."""


class Pairing:
    """One process's X25519 key pair, its signed offer, and the keys it shares with its peers."""

    def __init__(self, credential: Credential) -> None:
        self._cluster = credential.cluster
        self._private = X25519PrivateKey.generate()
        public = self._private.public_key().public_bytes_raw()
        self.fingerprint = public[:FINGERPRINT_BYTES]
        #: What this process's signed and paired frames carry.
        self.offer = public + credential.key().sign(self._offer_text(credential.id, public))
        # peer -> (fingerprint of its public key, shared key)
        self._send_keys: dict[str, tuple[bytes, bytes]] = {}
        self._keys: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()

    def learn(self, cert: Certificate, key: Ed25519PublicKey, offer: bytes, *, live: bool) -> None:
        """A peer's offer from a frame of it that passed every check: messages to it are paired (or carry
        its MAC) from now on. A retained frame (not `live`) teaches only a peer not known yet. An offer
        that does not check is ignored (messages to that peer stay signed)."""
        known = self._send_keys.get(cert.id)
        if known is not None and (not live or known[0] == offer[:FINGERPRINT_BYTES]):
            return
        try:
            shared = self.key(cert, key, offer)
        except ProtocolError:
            return
        self._send_keys[cert.id] = (offer[:FINGERPRINT_BYTES], shared)

    def send_key(self, peer: str) -> tuple[bytes, bytes] | None:
        """(fingerprint of the peer's public key, shared key) for a message to `peer`, if paired."""
        return self._send_keys.get(peer)

    def authenticators(self, readers: Iterable[str], message: bytes) -> bytes:
        """For each of `readers` this process is paired with (at most `MAX_AUTHENTICATORS`), its
        fingerprint and the MAC of `message` under the key the two share."""
        entries = []
        for reader in readers:
            known = self._send_keys.get(reader)
            if known is not None:
                entries.append(known[0] + _digest(known[1], message))
                if len(entries) == MAX_AUTHENTICATORS:
                    break
        return b"".join(entries)

    def vouches(
        self, cert: Certificate, key: Ed25519PublicKey, offer: bytes, entries: bytes, message: bytes
    ) -> bool:
        """Whether `entries` (authenticators) hold a good MAC of `message` for this process, from the
        holder of `cert` that made `offer`."""
        for start in range(0, len(entries) - AUTHENTICATOR_BYTES + 1, AUTHENTICATOR_BYTES):
            if entries[start : start + FINGERPRINT_BYTES] == self.fingerprint:
                try:
                    shared = self.key(cert, key, offer)
                except ProtocolError:
                    return False
                tag = entries[start + FINGERPRINT_BYTES : start + AUTHENTICATOR_BYTES]
                return hmac.compare_digest(tag, _digest(shared, message))
        return False

    def forget(self, peers: frozenset[str]) -> None:
        """Revoked principals: no message is paired to or accepted from them any more."""
        for peer in peers & self._send_keys.keys():
            del self._send_keys[peer]
        for entry in [entry for entry in self._keys if entry[0] in peers]:
            del self._keys[entry]

    def check_addressed(self, fingerprint: bytes) -> None:
        """Raise `NotAddressed` unless a frame naming `fingerprint` is for this process."""
        if not hmac.compare_digest(fingerprint, self.fingerprint):
            raise NotAddressed("a paired message for another receiver")

    def key(self, cert: Certificate, key: Ed25519PublicKey, offer: bytes) -> bytes:
        """The key this process shares with the holder of `cert` that made `offer`; `ProtocolError` if the
        offer is not signed by that certificate's key or is not a usable public key."""
        entry = (cert.id, offer)
        shared = self._keys.get(entry)
        if shared is not None:
            return shared
        if len(offer) != OFFER_BYTES:
            raise ProtocolError(f"the pair offer of {cert.id} has {len(offer)} bytes, not {OFFER_BYTES}")
        public, signature = offer[:32], offer[32:]
        try:
            key.verify(signature, self._offer_text(cert.id, public))
            secret = self._private.exchange(X25519PublicKey.from_public_bytes(public))
        except InvalidSignature:
            raise ProtocolError(f"the pair offer of {cert.id} is not signed by its certificate") from None
        except ValueError as exc:  # a low-order point gives an all-zero secret
            raise ProtocolError(f"the pair offer of {cert.id} is unusable: {exc}") from None
        own = self.offer[:32]
        ordered = b"".join(sorted((own, public)))
        shared = HKDF(
            hashes.SHA256(), 32, salt=None, info=_KEY_LABEL + self._cluster.encode() + ordered
        ).derive(secret)
        self._keys[entry] = shared
        if len(self._keys) > _MAX_KEYS:
            self._keys.popitem(last=False)
        return shared

    def _offer_text(self, principal: str, public: bytes) -> bytes:
        return b"".join((_OFFER_LABEL, self._cluster.encode(), b"\0", principal.encode(), b"\0", public))


def mac(key: bytes, topic: str, frame: bytes) -> bytes:
    """The MAC of a paired frame's bytes (all but the MAC itself) on `topic`."""
    return _digest(key, b"".join((topic.encode(), b"\0", frame)))


def _digest(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, hashlib.sha256)
