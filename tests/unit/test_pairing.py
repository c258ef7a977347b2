"""Paired frames and authenticators: a MAC under a key two principals alone share, in place of a signature
for unicast messages, beside it for the main readers of a signed one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from swarm.codec import encode
from swarm.devices.profiles import simulated_capabilities
from swarm.messages import Assign, Body, Cancel, Envelope, Heartbeat, Results
from swarm.trust.authority import Authority
from swarm.trust.credentials import Credential
from swarm.trust.pairing import NotAddressed, Pairing
from swarm.trust.signing import AUTHENTICATED_MAGIC, PAIRED_MAGIC, AuthError, Signer, Verifier

NOW = 1_000_000.0
CAPS = simulated_capabilities("h", cores=2, memory_mb=1024, disk_free_gb=1.0)


@dataclass
class Member:
    cred: Credential
    pairing: Pairing
    signer: Signer
    verifier: Verifier
    sent: int = 0

    @property
    def id(self) -> str:
        return self.cred.id

    def seal(self, topic: str, body: Body, to: str | None, *, at: float = NOW) -> bytes:
        self.sent += 1
        env = Envelope(1, "home", self.id, 0, f"{self.id}-{self.sent}", body)
        return self.signer.seal(topic, encode(env), at, to)

    def heartbeat(self, *, at: float = NOW, readers: tuple[str, ...] = ()) -> bytes:
        self.sent += 1
        env = Envelope(
            1, "home", self.id, 0, f"{self.id}-{self.sent}", Heartbeat("n", CAPS, 1, 0, 0.0, 512, 1)
        )
        return self.signer.seal(f"node/{self.id}/hb", encode(env), at, readers=readers)

    def hears(self, other: Member, frame: bytes | None = None) -> None:
        self.verifier.open(f"node/{other.id}/hb", frame or other.heartbeat(), retained=False, now=NOW)


@pytest.fixture
def authority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Authority:
    monkeypatch.setenv("SWARM_HOME", str(tmp_path))
    return Authority.open_or_found("home", NOW, lambda: None)


def member(authority: Authority, node_id: str) -> Member:
    cred = authority.issue(node_id, "node", "member", now=NOW)
    pairing = Pairing(cred)
    verifier = Verifier("home", authority.public_key, max_bytes=1 << 20, pairing=pairing)
    return Member(cred, pairing, Signer(cred, pairing), verifier)


def test_a_message_to_a_peer_whose_offer_was_heard_is_paired_and_checked(authority: Authority) -> None:
    a, b = member(authority, "n-0000000a"), member(authority, "n-0000000b")
    inbox = "node/n-0000000a/in"
    assert b.seal(inbox, Assign(()), a.id)[:3] == AUTHENTICATED_MAGIC  # nothing heard of a yet: signed
    b.hears(a)
    frame = b.seal(inbox, Assign(()), a.id)
    assert frame[:3] == PAIRED_MAGIC
    got = a.verifier.open(inbox, frame, retained=False, now=NOW)  # a never heard b: the frame says enough
    assert got.certificate.id == b.id and isinstance(got.envelope.body, Assign)
    with pytest.raises(AuthError, match="already received"):
        a.verifier.open(inbox, frame, retained=False, now=NOW + 1)
    # Both ways share one key: a answers b paired once it heard b.
    a.hears(b)
    reply = a.seal("coord/in", Results(()), b.id)
    assert reply[:3] == PAIRED_MAGIC
    assert b.verifier.open("coord/in", reply, retained=False, now=NOW).certificate.id == a.id


def test_a_paired_frame_cannot_be_moved_changed_kept_or_forged(authority: Authority) -> None:
    a, b, c = (member(authority, f"n-0000000{x}") for x in "abc")
    b.hears(a)
    inbox = "node/n-0000000a/in"
    frame = b.seal(inbox, Assign(()), a.id)
    with pytest.raises(AuthError, match="bad MAC"):
        a.verifier.open("coord/in", frame, retained=False, now=NOW)
    body_at = frame.index(b'"b":')
    tampered = frame[:body_at] + frame[body_at:].replace(b"[]", b"[ ]", 1)
    with pytest.raises(AuthError, match="bad MAC"):
        a.verifier.open(inbox, tampered, retained=False, now=NOW)
    with pytest.raises(AuthError, match="not a signed swarm message"):
        a.verifier.open(inbox, frame, retained=True, now=NOW)  # never retained: the broker's state is signed
    # Another member reading it is told it is not for it, not that it is forged; a frame for someone
    # else without a valid certificate is a forgery all the same.
    with pytest.raises(NotAddressed):
        c.verifier.open(inbox, frame, retained=False, now=NOW)
    cert_at = frame.index(b'{"cluster"')
    with pytest.raises(AuthError, match=r"certificate refused|not signed by"):
        c.verifier.open(inbox, frame[:cert_at] + b"X" + frame[cert_at + 1 :], retained=False, now=NOW)
    # c, a member, cannot speak for b: it holds b's certificate and offer (both public) but not the key.
    c.hears(a)
    own = c.seal(inbox, Assign(()), a.id)
    forged = _with_sender(own, c, b)
    with pytest.raises(AuthError, match="bad MAC"):
        a.verifier.open(inbox, forged, retained=False, now=NOW)
    # A user's connection (no offer, no pairing) refuses a paired frame with a clear reason.
    client = Verifier("home", authority.public_key, max_bytes=1 << 20)
    with pytest.raises(AuthError, match="pairs with nobody"):
        client.open(inbox, frame, retained=False, now=NOW)


def test_an_offer_is_bound_to_its_maker_and_ends_with_a_revocation(authority: Authority) -> None:
    a, b, c = (member(authority, f"n-0000000{x}") for x in "abc")
    # b's signed frame carrying c's offer pairs nobody: the offer is signed for c's id.
    a.hears(b, b.heartbeat().replace(b.pairing.offer, c.pairing.offer))
    assert a.seal("node/n-0000000b/in", Assign(()), b.id)[:3] == AUTHENTICATED_MAGIC
    a.hears(b)
    assert a.seal("node/n-0000000b/in", Assign(()), b.id)[:3] == PAIRED_MAGIC
    b.hears(a)
    a.verifier.update_roster(authority.revoke(b.id))
    assert a.seal("node/n-0000000b/in", Assign(()), b.id)[:3] == AUTHENTICATED_MAGIC
    with pytest.raises(AuthError, match="revoked"):
        a.verifier.open(
            "node/n-0000000a/in", b.seal("node/n-0000000a/in", Assign(()), a.id), retained=False, now=NOW
        )


def test_a_new_life_of_the_receiver_is_not_addressed_by_frames_for_the_old_one(authority: Authority) -> None:
    a, b = member(authority, "n-0000000a"), member(authority, "n-0000000b")
    b.hears(a)
    frame = b.seal("node/n-0000000a/in", Assign(()), a.id)
    reborn = Pairing(a.cred)
    verifier = Verifier("home", authority.public_key, max_bytes=1 << 20, pairing=reborn)
    with pytest.raises(NotAddressed):
        verifier.open("node/n-0000000a/in", frame, retained=False, now=NOW)


def test_a_reader_with_an_authenticator_checks_its_mac_and_any_other_the_signature(
    authority: Authority,
) -> None:
    a, b, c = (member(authority, f"n-0000000{x}") for x in "abc")
    b.hears(a)
    frame = b.heartbeat(readers=(a.id, c.id))  # b never heard c: c gets no MAC
    assert frame[:3] == AUTHENTICATED_MAGIC and frame[77] == 1
    # A broken signature shows who checked it: a, whose MAC is good, takes the frame without it.
    broken = frame[:13] + bytes(64) + frame[77:]
    assert a.verifier.open(f"node/{b.id}/hb", broken, retained=False, now=NOW).certificate.id == b.id
    with pytest.raises(AuthError, match="bad signature"):
        c.verifier.open(f"node/{b.id}/hb", broken, retained=False, now=NOW)
    assert c.verifier.open(f"node/{b.id}/hb", frame, retained=False, now=NOW).certificate.id == b.id
    # A wrong MAC is no verdict: the signature decides, so a good frame still passes and a bad one not.
    mac_at = 78 + 8
    bad_mac = frame[:mac_at] + bytes(32) + frame[mac_at + 32 :]
    assert a.verifier.open(f"node/{b.id}/hb", bad_mac, retained=True, now=NOW).certificate.id == b.id
    with pytest.raises(AuthError, match="bad signature"):
        a.verifier.open(
            f"node/{b.id}/hb", broken[:mac_at] + bytes(32) + broken[mac_at + 32 :], retained=True, now=NOW
        )
    # Nor does a MAC move to another topic or survive a changed body.
    with pytest.raises(AuthError, match="bad signature"):
        a.verifier.open("node/n-0000000c/hb", broken, retained=True, now=NOW)
    # A head that promises more authenticators than the frame holds is refused, not read past its end.
    with pytest.raises(AuthError, match="too short"):
        a.verifier.open(f"node/{b.id}/hb", frame[:77] + bytes([255]) + frame[78:], retained=True, now=NOW)


def test_a_user_and_a_member_pair_through_their_signed_frames(authority: Authority) -> None:
    coordinator = member(authority, "n-0000000a")
    user = authority.issue("alice", "user", "submitter", now=NOW)
    pairing = Pairing(user)
    signer = Signer(user, pairing)
    verifier = Verifier("home", authority.public_key, max_bytes=1 << 20, pairing=pairing)
    verifier.open(f"node/{coordinator.id}/hb", coordinator.heartbeat(), retained=True, now=NOW)
    env = Envelope(1, "home", "alice.1234", 0, "alice.1234-1", Cancel("job-1", by="alice", role="submitter"))
    frame = signer.seal("coord/in", encode(env), NOW, readers=(coordinator.id,))
    assert frame[77] == 1  # the user heard the coordinator: its frame carries the coordinator's MAC
    broken = frame[:13] + bytes(64) + frame[77:]
    assert coordinator.verifier.open("coord/in", broken, retained=False, now=NOW).certificate.id == "alice"
    # The coordinator learned the user's offer from that frame: what it sends the user carries its MAC.
    answer = coordinator.heartbeat(readers=("alice",))
    assert answer[77] == 1
    got = verifier.open(
        f"node/{coordinator.id}/hb", answer[:13] + bytes(64) + answer[77:], retained=False, now=NOW
    )
    assert got.certificate.id == coordinator.id


def test_a_retained_frame_does_not_undo_the_offer_a_live_one_taught(authority: Authority) -> None:
    a, b = member(authority, "n-0000000a"), member(authority, "n-0000000b")
    earlier = member(authority, "n-0000000b")  # b's previous life, whose retained record is still around
    a.hears(b, b.heartbeat(at=NOW - 60))  # live, and its clock is behind: it is b as it is now all the same
    a.verifier.open(f"node/{b.id}/hb", earlier.heartbeat(at=NOW), retained=True, now=NOW)
    known = a.pairing.send_key(b.id)
    assert known is not None and known[0] == b.pairing.fingerprint
    b.hears(a)
    frame = a.seal("node/n-0000000b/in", Assign(()), b.id)
    assert b.verifier.open("node/n-0000000b/in", frame, retained=False, now=NOW).certificate.id == a.id
    # Where nothing is known yet, a retained record teaches: a node that just joined pairs at once.
    c = member(authority, "n-0000000c")
    c.verifier.open(f"node/{b.id}/hb", b.heartbeat(), retained=True, now=NOW)
    assert c.seal("node/n-0000000b/in", Assign(()), b.id)[:3] == PAIRED_MAGIC


def _with_sender(frame: bytes, holder: Member, claimed: Member) -> bytes:
    """`frame` sealed by `holder`, with the certificate and offer of `claimed` put in place of its own."""
    own = holder.signer._cert + holder.pairing.offer
    other = claimed.signer._cert + claimed.pairing.offer
    assert own in frame
    head = frame[:11] + len(claimed.signer._cert).to_bytes(2, "big") + frame[13:21]
    return head + frame[21:].replace(own, other).replace(holder.id.encode(), claimed.id.encode())
