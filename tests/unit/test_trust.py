"""The trust layer without a network: an authority, credentials, tokens, signed frames and their checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm.codec import encode
from swarm.errors import ConfigError
from swarm.messages import Assign, Cancel, Envelope, Heartbeat, NodeGone, SubmitJob, TaskSpec, TasksQuery
from swarm.trust.authority import Authority
from swarm.trust.credentials import Credential
from swarm.trust.roles import allowed, may_send, task_runs_code
from swarm.trust.roster import Roster
from swarm.trust.signing import AuthError, Signer, Verified, Verifier

NOW = 1_000_000.0


@pytest.fixture
def authority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Authority:
    monkeypatch.setenv("SWARM_HOME", str(tmp_path))
    return Authority.open_or_found("home", NOW, lambda: None)


def verifier(authority: Authority, window: float = 300.0) -> Verifier:
    return Verifier("home", authority.public_key, max_bytes=1 << 20, window=window)


def frame(
    cred: Credential,
    topic: str,
    body: object,
    *,
    sender: str | None = None,
    msg: str = "m-1",
    at: float = NOW,
) -> bytes:
    env = Envelope(1, "home", sender or cred.id, 0, msg, body)  # type: ignore[arg-type]
    return Signer(cred).seal(topic, encode(env), at)


def test_a_node_and_a_user_are_checked_and_bound(authority: Authority) -> None:
    node = authority.issue("n-00000001", "node", "member", now=NOW)
    user = authority.issue("u-00000001", "user", "submitter", now=NOW)
    v = verifier(authority)
    got = v.open("node/n-2/in", frame(node, "node/n-2/in", Assign(())), retained=False, now=NOW)
    assert got.certificate.id == "n-00000001" and isinstance(got.envelope.body, Assign)
    query = frame(user, "coord/in", TasksQuery(), sender="u-00000001.abcd")
    assert v.open("coord/in", query, retained=False, now=NOW).envelope.sender == "u-00000001.abcd"
    with pytest.raises(AuthError, match="a user may not send 'assign'"):
        v.open(
            "node/n-2/in",
            frame(
                user,
                "node/n-2/in",
                Assign(
                    (),
                ),
                msg="m-2",
            ),
            retained=False,
            now=NOW,
        )
    with pytest.raises(AuthError, match="claims to come from n-00000009"):
        v.open("x", frame(node, "x", Assign(()), sender="n-00000009", msg="m-3"), retained=False, now=NOW)


def test_a_frame_cannot_be_moved_changed_or_replayed(authority: Authority) -> None:
    node = authority.issue("n-00000001", "node", "member", now=NOW)
    v = verifier(authority)
    good = frame(node, "node/a/in", Assign(()))
    with pytest.raises(AuthError, match="bad signature"):
        v.open("node/b/in", good, retained=False, now=NOW)  # another topic
    tampered = good[:-3] + b"[]}"
    with pytest.raises(AuthError, match="bad signature"):
        v.open("node/a/in", tampered, retained=False, now=NOW)
    v.open("node/a/in", good, retained=False, now=NOW)
    with pytest.raises(AuthError, match="already received"):
        v.open("node/a/in", good, retained=False, now=NOW + 1)
    with pytest.raises(AuthError, match="dated 301 s ago, outside the 300 s window"):
        v.open(
            "node/a/in",
            frame(node, "node/a/in", Assign(()), msg="old", at=NOW - 301),
            retained=False,
            now=NOW,
        )
    with pytest.raises(AuthError, match="dated 400 s ahead of this clock"):
        v.open(
            "node/a/in",
            frame(node, "node/a/in", Assign(()), msg="ahead", at=NOW + 400),
            retained=False,
            now=NOW,
        )
    # The broker's stored records are old by design: a retained copy is taken.
    assert v.open("node/a/in", good, retained=True, now=NOW + 3600).certificate.id == node.id
    # A last will is signed when its node connects, long before it fires.
    will = frame(node, "node/n-00000001/hb", NodeGone("connection lost"), msg="w", at=NOW - 7200)
    assert v.open("node/n-00000001/hb", will, retained=False, now=NOW).certificate.id == node.id


def test_an_own_frame_echoed_back_is_taken_as_sealed_and_only_once(authority: Authority) -> None:
    node = authority.issue("n-00000001", "node", "member", now=NOW)
    v = verifier(authority)
    topic = "job/j1/state"
    sent = frame(node, topic, Assign(()))
    said = Verified(Envelope(1, "home", node.id, 0, "m-1", Assign(())), node.certificate, NOW)
    v.expect_echo(topic, sent, said)
    assert v.open(topic, sent, retained=False, now=NOW) is said  # no second decode
    with pytest.raises(AuthError, match="already received"):
        v.open(topic, sent, retained=False, now=NOW + 1)  # its replay, checked as any frame
    # Only a frame equal to the one sealed is spared the checks; a retained copy is checked as usual.
    v.expect_echo(topic, sent, said)
    with pytest.raises(AuthError, match="bad signature"):
        v.open(topic, sent[:-3] + b"[]}", retained=False, now=NOW)
    assert v.open(topic, sent, retained=True, now=NOW) is not said


def test_another_authority_revoked_and_expired_certificates_are_refused(
    authority: Authority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWARM_HOME", str(tmp_path / "other"))
    stranger = Authority.open_or_found("home", NOW, lambda: None).issue(
        "n-00000001", "node", "member", now=NOW
    )
    v = verifier(authority)
    with pytest.raises(AuthError, match="not signed by this cluster's authority"):
        v.open("t", frame(stranger, "t", Assign(())), retained=False, now=NOW)
    monkeypatch.setenv("SWARM_HOME", str(tmp_path))
    node = authority.issue("n-00000002", "node", "member", now=NOW)
    short = authority.issue("u-00000003", "user", "viewer", now=NOW, expires=NOW + 10)
    v.open("t", frame(node, "t", Assign(())), retained=False, now=NOW)
    assert v.update_roster(authority.revoke("n-00000002"))
    with pytest.raises(AuthError, match="revoked"):
        v.open("t", frame(node, "t", Assign(()), msg="m-2"), retained=False, now=NOW)
    with pytest.raises(AuthError, match="expired"):
        v.open("coord/in", frame(short, "coord/in", TasksQuery(), at=NOW + 20), retained=False, now=NOW + 20)


def test_a_user_submission_must_name_its_signer(authority: Authority) -> None:
    user = authority.issue("u-00000001", "user", "submitter", now=NOW, team="lab")
    v = verifier(authority)
    spec = (TaskSpec("j.t0", "echo", {}),)
    honest = SubmitJob("j", spec, submitted_by=user.id, role="submitter", team="lab")
    v.open("job/j/spec", frame(user, "job/j/spec", honest), retained=False, now=NOW)
    forged = SubmitJob("j", spec, submitted_by=user.id, role="admin", team="lab")
    with pytest.raises(AuthError, match="as signed"):
        v.open("job/j/spec", frame(user, "job/j/spec", forged, msg="m-2"), retained=False, now=NOW)
    with pytest.raises(AuthError, match="as signed"):
        v.open(
            "coord/in",
            frame(user, "coord/in", Cancel("j", by="u-other", role="submitter"), msg="m-3"),
            retained=False,
            now=NOW,
        )


def test_heartbeats_are_a_members_only(authority: Authority) -> None:
    admin = authority.admin_credential()
    assert admin.certificate.role == "admin"
    assert may_send("user", "admin", Heartbeat.TAG) is not None
    assert may_send("node", "member", Heartbeat.TAG) is None
    assert (
        may_send("user", "viewer", "submit_job") is not None
        and may_send("user", "viewer", "tasks_query") is None
    )


def test_tokens_round_trip_and_damage_is_a_clear_error(authority: Authority) -> None:
    user = authority.issue("u-00000001", "user", "operator", now=NOW)
    again = Credential.from_token(user.to_token())
    assert again.id == user.id and again.private_key == user.private_key
    token = user.to_token()
    with pytest.raises(ConfigError, match="damaged or not valid"):
        Credential.from_token(token[:-10] + "AAAAAAAAAA")
    with pytest.raises(ConfigError, match="not a swarm token"):
        Credential.from_token("hello")
    assert not again.broker_secret  # a user's token cannot start a broker of the cluster


def test_the_roster_is_signed_grows_and_refuses_reissuing_a_revoked_id(authority: Authority) -> None:
    authority.issue("n-00000001", "node", "member", now=NOW)
    first = authority.roster()
    second = authority.revoke("n-00000001")
    assert second.serial > first.serial and "n-00000001" in second.revoked
    assert Roster.from_bytes(second.to_bytes(), authority.public_key) == second
    with pytest.raises(ValueError, match="not signed"):
        Roster.from_bytes(
            second.to_bytes().replace(b'"revoked":["n-00000001"]', b'"revoked":[]'), authority.public_key
        )
    with pytest.raises(ConfigError, match="never issued again"):
        authority.issue("n-00000001", "node", "member", now=NOW)
    active = {p.id for p in second.active(NOW)}
    assert "n-00000001" not in active and authority.admin_credential().id in active


def test_roles_and_code() -> None:
    assert allowed("operator", "run_code") and not allowed("submitter", "run_code")
    assert allowed("admin", "cancel_any") and not allowed("viewer", "submit")
    assert task_runs_code("command", {})
    assert task_runs_code("mapreduce.map", {"app": {"name": "x", "source": "def map(): pass"}})
    assert not task_runs_code(
        "mapreduce.map", {"app": {"name": "wordcount", "module": "swarm.mapreduce.apps.wordcount"}}
    )
    assert not task_runs_code("python_eval", {"expression": "1"})
    # A workflow step's task runs its artifact's code: a submitter speaking MQTT directly, past the
    # API's check, is refused by the coordinator too.
    for step_type in ("step.python", "step.shell", "step.jvm"):
        assert task_runs_code(step_type, {"artifact": {"name": "a"}})
