"""Forgeries against real nodes through a real broker: each is refused, and nothing happens beyond a log
line and a counter.

The forger holds valid broker credentials (the test broker's one login may publish anywhere under
`swarm/`), and in turn: no key at all, a key of its own making, a user token, and the key of a real
member that is not the coordinator. What must not happen: a task runs, a result is committed, the epoch
moves, a file outside the data dir is touched, a node dies.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from swarm.codec import encode
from swarm.ids import new_job_id
from swarm.messages import (
    Assign,
    Assignment,
    Claim,
    Envelope,
    JobState,
    Results,
    SubmitJob,
    TaskResult,
    TaskSpec,
)
from swarm.runtime.client import SwarmClient
from swarm.runtime.mqtt import Transport
from swarm.trust.audit import AuditLog
from swarm.trust.authority import Authority
from swarm.trust.credentials import Certificate, Credential, public_key_bytes
from swarm.trust.pairing import AUTHENTICATOR_BYTES, FINGERPRINT_BYTES, OFFER_BYTES, Pairing
from swarm.trust.signing import AUTHENTICATED_MAGIC, PAIRED_MAGIC, Signer
from tests.conftest import MosquittoServer
from tests.integration.nodes import Cluster, running

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def cluster(mosquitto_module: MosquittoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("forgery")
    with running(root, mosquitto_module, ["a", "b"]) as c:
        yield c


def _counter(c: Cluster, name: str) -> int:
    return sum(int(n["counters"].get(name, 0)) for n in c.status()["nodes"])


def _frame(signer: Signer | None, topic: str, sender: str, epoch: int, body: object, msg_id: str) -> bytes:
    env = Envelope(1, "test", sender, epoch, msg_id, body)  # type: ignore[arg-type]
    payload = encode(env)
    return payload if signer is None else signer.seal(topic, payload, time.time())


def _rogue_member(c: Cluster) -> Credential:
    """A real member's credential (the authority issued it), for a node that is not the coordinator."""
    authority = Authority.load(c.cluster, home=c.root)
    return authority.issue("n-0bad0bad", "node", "member", now=time.time(), name="rogue")


def _self_made(c: Cluster, real: Credential) -> Credential:
    """A credential for the coordinator's id, signed by a key of the forger's own making."""
    fake_authority = Ed25519PrivateKey.generate()
    key = Ed25519PrivateKey.generate()
    cert = Certificate(c.cluster, real.id, "node", "member", public_key_bytes(key), time.time())
    cert = cert.signed_by(fake_authority)
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return Credential(cert, raw, "x", public_key_bytes(fake_authority), real.tls_ca_pem)


async def _publish(c: Cluster, frames: list[tuple[str, bytes, bool]]) -> None:
    async with Transport(str(c.broker), c.cluster, "forger", login=c.login(), persistent=False) as t:
        for topic, frame, retain in frames:
            await t.publish_and_wait(topic, frame, retain=retain)


async def test_forgeries_are_refused_and_the_cluster_goes_on(cluster: Cluster, tmp_path: Path) -> None:
    status = cluster.status()
    coordinator, epoch = status["coordinator"], status["epoch"]
    worker = next(n["id"] for n in status["nodes"] if n["id"] != coordinator)
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    (victim_dir / "keep").write_text("mine")
    marker = tmp_path / "ran"
    assign = Assign((Assignment("x.t0", "x", 1, "echo", {"message": str(marker)}),))
    rogue = Signer(_rogue_member(cluster))
    user = Authority.load(cluster.cluster, home=cluster.root).issue(
        "u-0000beef", "user", "submitter", now=time.time()
    )
    forged_coordinator = Signer(_self_made(cluster, rogue.credential))
    inbox = f"node/{worker}/in"
    frames = [
        # No signature at all: the pre-security attack.
        (inbox, _frame(None, inbox, coordinator, epoch + 5, assign, "f-1"), False),
        # Signed with a key of its own making, in the coordinator's name.
        (inbox, _frame(forged_coordinator, inbox, coordinator, epoch, assign, "f-2"), False),
        # A user token may not speak the protocol.
        (inbox, _frame(Signer(user), inbox, user.id, epoch, assign, "f-3"), False),
        # A real member that is not the coordinator, at a higher epoch.
        (inbox, _frame(rogue, inbox, rogue.credential.id, epoch + 1, assign, "f-4"), False),
        # A claim far past the current epoch.
        ("election", _frame(rogue, "election", rogue.credential.id, 0, Claim(2**53 - 1), "f-5"), True),
        # A job state whose job id is a path.
        (
            "job/x/state",
            rogue.seal(
                "job/x/state",
                orjson.dumps(
                    {
                        "v": 1,
                        "c": "test",
                        "s": rogue.credential.id,
                        "e": epoch,
                        "id": "f-6",
                        "t": "job_state",
                        "b": {"job_id": str(victim_dir), "total": 1},
                    }
                ),
                time.time(),
            ),
            True,
        ),
        (
            "job/x/state",
            _frame(rogue, "job/x/state", rogue.credential.id, epoch, JobState("x", 1), "f-7"),
            True,
        ),
        # The retained message that used to crash every node at every start.
        ("job/y/spec", b'{"v":999,"s":"#"}', True),
    ]
    refused_before = _counter(cluster, "bad_messages") + _counter(cluster, "refused_messages")
    await _publish(cluster, frames)
    await asyncio.sleep(1.5)  # counters travel with the next heartbeat
    after = cluster.status()
    assert after["coordinator"] == coordinator and after["epoch"] == epoch
    assert sorted(n["state"] for n in after["nodes"]) == ["alive", "alive"]
    refused = _counter(cluster, "bad_messages") + _counter(cluster, "refused_messages")
    assert refused >= refused_before + len(frames) - 1, cluster.logs()
    assert (victim_dir / "keep").read_text() == "mine"
    assert all(node.proc.poll() is None for node in cluster.nodes)
    out = cluster.cli("tasks", "--json", "--job", "x")
    assert out.returncode == 0 and json.loads(out.stdout) == [], out.stdout
    assert not marker.exists()
    # A node that restarts reads the retained junk again, and survives it again.
    cluster.nodes[1].kill()
    restarted = cluster.restart(cluster.nodes[1])
    cluster.wait_ready(alive=2)
    assert restarted.proc.poll() is None
    # Still working: a real submission runs.
    out = cluster.cli("submit", "task", "echo", "--payload", '{"still": "here"}', "--wait")
    assert out.returncode == 0 and json.loads(out.stdout) == {"still": "here"}, out.stderr


async def test_a_forged_result_is_not_committed_and_a_replay_is_dropped(cluster: Cluster) -> None:
    rogue = Signer(_rogue_member(cluster))
    epoch = cluster.status()["epoch"]
    out = cluster.cli("submit", "task", "sleep", "--payload", '{"seconds": 4}', "--job-id", "slow-forged")
    assert out.returncode == 0, out.stderr
    await asyncio.sleep(0.5)
    # A success for a task that runs on another node, and a submission sent twice (the copy is a replay).
    result = Results((TaskResult("slow-forged.t0", "slow-forged", 1, "ok", result="forged"),))
    spec = SubmitJob("replayed", (TaskSpec("replayed.t0", "echo", {"n": 1}),))
    once = _frame(rogue, "job/replayed/spec", rogue.credential.id, epoch, spec, "r-1")
    bad_before = _counter(cluster, "bad_messages")
    await _publish(
        cluster,
        [
            ("coord/in", _frame(rogue, "coord/in", rogue.credential.id, epoch, result, "r-0"), False),
            ("job/replayed/spec", once, False),
            ("job/replayed/spec", once, False),
        ],
    )
    for _ in range(60):
        rows = json.loads(cluster.cli("tasks", "--json", "--job", "slow-forged").stdout)
        if [r["state"] for r in rows] == ["done"]:
            break
        await asyncio.sleep(0.2)
    assert [r["state"] for r in rows] == ["done"]
    assert _counter(cluster, "foreign_results") >= 1, cluster.logs()
    assert _counter(cluster, "bad_messages") >= bad_before + 1  # the replayed copy


def test_roles_through_the_cli(cluster: Cluster, tmp_path: Path) -> None:
    def token(role: str) -> str:
        out = cluster.cli("token", "create", "--role", role)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    viewer, submitter = token("viewer"), token("submitter")
    out = cluster.cli("submit", "task", "echo", "--wait", "--token", viewer, timeout=30)
    assert out.returncode != 0 and "lacks the 'submit' permission" in out.stderr + out.stdout, out
    assert cluster.cli("status", "--token", viewer).returncode == 0
    app = tmp_path / "evil.py"
    app.write_text("def map(name, text):\n    return []\n\ndef reduce(key, values):\n    return ''\n")
    data = tmp_path / "in.txt"
    data.write_text("a b c\n")
    out = cluster.cli(
        "submit",
        "mapreduce",
        "--app",
        str(app),
        "--input",
        str(data),
        "--reduces",
        "1",
        "--output",
        str(tmp_path / "out"),
        "--token",
        submitter,
        timeout=60,
    )
    assert out.returncode != 0 and "run_code" in out.stderr, (out.stdout, out.stderr)
    assert not (tmp_path / "out" / "mr-out-0").exists()


def test_audit_chain_detects_a_tampered_line(cluster: Cluster) -> None:
    assert cluster.cli("token", "create", "--role", "viewer").returncode == 0
    out = cluster.cli("audit", "--verify")
    assert out.returncode == 0 and "chain intact" in out.stdout, out
    log = cluster.root / "clusters" / cluster.cluster / "audit.log"
    lines = log.read_text().splitlines()
    issued = next(i for i, line in enumerate(lines) if '"token.create"' in line)
    lines[issued] = lines[issued].replace('"token.create"', '"token.revoke"')
    log.write_text("\n".join(lines) + "\n")
    out = cluster.cli("audit", "--verify")
    assert out.returncode == 1 and "BROKEN" in out.stdout, out


def test_a_submission_is_audited_by_the_coordinator(cluster: Cluster) -> None:
    out = cluster.cli("submit", "task", "echo", "--job-id", "audited-job", "--wait")
    assert out.returncode == 0, out.stderr
    log = AuditLog(cluster.root / "clusters" / cluster.cluster / "audit.log")
    deadline = time.monotonic() + 10
    while not any(r.action == "submit_job" and r.target == "audited-job" for r in log.records()):
        assert time.monotonic() < deadline, [(r.action, r.target) for r in log.records()][-5:]
        time.sleep(0.05)


def test_quota_refusal_through_the_cli(cluster: Cluster, tmp_path: Path) -> None:
    made = cluster.cli("token", "create", "--role", "submitter", "--team", "lab")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    out = cluster.cli("quota", "set", "--team", "lab", "tasks_per_day=2", "cores=4")
    assert out.returncode == 0, out.stderr
    time.sleep(1.0)  # the nodes on this machine read the authority's roster within a poll
    batch = tmp_path / "three.json"
    batch.write_text(json.dumps({"kind": "batch", "tasks": [{"type": "echo"}] * 3}))
    out = cluster.cli("submit", "batch", str(batch), "--wait", "--token", token, timeout=60)
    assert out.returncode != 0 and "quota: team 'lab' may submit 2 tasks a day" in out.stderr, out
    out = cluster.cli("submit", "task", "echo", "--wait", "--token", token, timeout=60)
    assert out.returncode == 0, out.stderr
    shown = cluster.cli("quota", "show", "--team", "lab", "--token", token)
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[0]: line.split()[1:3] for line in shown.stdout.splitlines()[2:]}
    assert rows["tasks_per_day"] == ["2", "1"] and rows["cores"] == ["4", "0"], shown.stdout


@pytest.mark.parametrize(
    ("expression", "needle"),
    [
        ("['a'*10**6]*10**6", "over the limit"),
        ("len(sorted([[0]*10**6]*10**6))", "over the limit"),
        ("(" * 450 + "1" + ")" * 450, "nested too deeply"),
    ],
)
def test_python_eval_bombs_end_with_clear_errors(cluster: Cluster, expression: str, needle: str) -> None:
    payload = json.dumps({"expression": expression})
    started = time.monotonic()
    out = cluster.cli("submit", "task", "python_eval", "--payload", payload, "--max-retries", "0", "--wait")
    assert out.returncode != 0 and needle in out.stderr + out.stdout, (out.stdout, out.stderr)
    assert time.monotonic() - started < 60
    assert all(node.proc.poll() is None for node in cluster.nodes)


async def test_the_task_path_between_members_is_paired_and_a_forged_pair_frame_is_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Assignments and results between the two members travel as paired frames (a MAC, no signature),
    what several members read stays signed, and a member cannot use its own pair key to act as the
    coordinator: neither in its own name nor with the coordinator's certificate and offer."""
    status = cluster.status()
    coordinator, epoch = status["coordinator"], status["epoch"]
    worker = next(n["id"] for n in status["nodes"] if n["id"] != coordinator)
    magic, heard = await _watch_a_batch(cluster, tmp_path)
    assert PAIRED_MAGIC in magic.get("node/in", set()) | magic.get("coord/in", set()), magic
    assert magic["node/hb"] == {AUTHENTICATED_MAGIC} and magic["job/state"] == {AUTHENTICATED_MAGIC}
    assert {coordinator, worker} <= heard.keys(), heard.keys()

    rogue = _rogue_member(cluster)
    pairing = Pairing(rogue)
    cert = Certificate.from_json(orjson.loads(heard[worker][0]))
    pairing.learn(cert, Ed25519PublicKey.from_public_bytes(cert.public_key), heard[worker][1], live=True)
    signer = Signer(rogue, pairing)
    inbox = f"node/{worker}/in"
    marker = tmp_path / "ran-paired"
    assign = Assign((Assignment("p.t0", "p", 1, "echo", {"message": str(marker)}),))

    def sealed(sender: str, msg_id: str) -> bytes:
        frame = signer.seal(
            inbox, encode(Envelope(1, "test", sender, epoch, msg_id, assign)), time.time(), worker
        )
        assert frame[:3] == PAIRED_MAGIC
        return frame

    # In its own name the frame is authentic, and the core refuses an assignment from a non-coordinator.
    as_itself = sealed(rogue.id, "p-1")
    # With the coordinator's certificate and offer (both public) in place of its own: the MAC fails.
    own = orjson.dumps(rogue.certificate.to_json())
    theirs = heard[coordinator][0]
    forged = sealed(coordinator, "p-2").replace(own + pairing.offer, theirs + heard[coordinator][1])
    forged = forged[:11] + len(theirs).to_bytes(2, "big") + forged[13:]
    refused_before = _counter(cluster, "bad_messages") + _counter(cluster, "refused_messages")
    await _publish(cluster, [(inbox, as_itself, False), (inbox, forged, False)])
    await asyncio.sleep(1.5)  # counters travel with the next heartbeat
    refused = _counter(cluster, "bad_messages") + _counter(cluster, "refused_messages")
    assert refused >= refused_before + 2, cluster.logs()
    assert not marker.exists()


async def test_a_client_pairs_with_the_coordinator_and_its_standbys(cluster: Cluster, tmp_path: Path) -> None:
    """A client learns the coordinator's pair offer from its announcement and each standby's from its
    heartbeat, so a job spec it signs carries a MAC for each of them: they check a MAC, not the
    signature, for every spec (`trust/pairing.py`, Authenticators)."""
    _, heard = await _watch_a_batch(cluster, tmp_path)
    admin = Authority.load(cluster.cluster, home=cluster.root).admin_credential()
    specs: list[bytes] = []
    login = cluster.login()
    async with Transport(
        str(cluster.broker), cluster.cluster, "spec-watcher", login=login, persistent=False
    ) as t:
        await t.subscribe("job/+/spec")

        async def watch() -> None:
            async for _, payload, retained in t.messages():
                if payload and not retained:
                    specs.append(payload)

        watcher = asyncio.create_task(watch())
        try:
            async with SwarmClient(str(cluster.broker), admin, login=login) as client:
                for _ in range(100):  # the retained announcement, then each standby's retained heartbeat
                    if client.tracker.standbys and client.members.keys() >= set(client.tracker.standbys):
                        break
                    await asyncio.sleep(0.05)
                readers = {client.tracker.coordinator, *client.tracker.standbys}
                job_id = new_job_id()
                job = SubmitJob(job_id, (TaskSpec(f"{job_id}.t0", "echo", {"n": 1}),))
                progress = await client.submit(job, timeout=30)
            assert progress.ok
            await asyncio.sleep(0.2)
        finally:
            watcher.cancel()
    assert len(readers) == 2 and readers <= heard.keys(), (readers, heard.keys())
    frame = specs[0]
    assert frame[:3] == AUTHENTICATED_MAGIC
    entries = _authenticators(frame)
    named = {entries[at : at + FINGERPRINT_BYTES] for at in range(0, len(entries), AUTHENTICATOR_BYTES)}
    assert named == {heard[member][1][:FINGERPRINT_BYTES] for member in readers}


#: Where a signed frame's authenticators start, after its head, whose last byte counts them.
_AUTHENTICATORS_AT = 78


def _authenticators(frame: bytes) -> bytes:
    """The authenticators of a signed frame (`trust/signing.py`): a fingerprint and a MAC for each reader."""
    return frame[
        _AUTHENTICATORS_AT : _AUTHENTICATORS_AT + frame[_AUTHENTICATORS_AT - 1] * AUTHENTICATOR_BYTES
    ]


async def _watch_a_batch(
    cluster: Cluster, tmp_path: Path
) -> tuple[dict[str, set[bytes]], dict[str, tuple[bytes, bytes]]]:
    """Run a batch while watching the wire: the frame kinds sent live by kind of topic, and each member's
    certificate (as sent) and key-exchange offer from its heartbeats' signed frames."""
    magic: dict[str, set[bytes]] = {}
    heard: dict[str, tuple[bytes, bytes]] = {}  # member -> (its certificate as sent, its offer)
    login = cluster.login()
    async with Transport(str(cluster.broker), cluster.cluster, "watcher", login=login, persistent=False) as t:
        await t.subscribe("#")

        async def watch() -> None:
            async for topic, payload, retained in t.messages():
                levels = topic.split("/")
                if not retained:  # what earlier tests left retained on this broker is not this batch
                    magic.setdefault(f"{levels[0]}/{levels[-1]}", set()).add(payload[:3])
                if levels[-1] == "hb" and payload[:3] == AUTHENTICATED_MAGIC:
                    offer_at = _AUTHENTICATORS_AT + len(_authenticators(payload))
                    cert_at = offer_at + OFFER_BYTES
                    cert_end = cert_at + int.from_bytes(payload[11:13], "big")
                    heard[levels[1]] = (payload[cert_at:cert_end], payload[offer_at:cert_at])

        watcher = asyncio.create_task(watch())
        try:
            batch = tmp_path / "batch.json"
            batch.write_text(
                json.dumps({"kind": "batch", "tasks": [{"type": "echo", "payload": {"n": 1}}] * 40})
            )
            out = cluster.cli("submit", "batch", str(batch), "--wait")
            assert out.returncode == 0, out.stderr
            await asyncio.sleep(0.5)
        finally:
            watcher.cancel()
    return magic, heard
