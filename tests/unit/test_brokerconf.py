"""The broker's generated security: password hashes, the ACL table, the config text, the TLS material."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from swarm.runtime.brokerconf import (
    PACKET_MARGIN,
    AclAction,
    BrokerSecurity,
    MosquittoFiles,
    UserEntry,
    acl_allows,
    hash_password,
    mosquitto_acl,
    mosquitto_config,
    mosquitto_passwords,
    verify_password,
    write_mosquitto_files,
)
from swarm.trust.tls import client_context, make_ca, make_server_cert

NODE = "n-1ad6b476"
USERS = {
    NODE: UserEntry("pw-node", "node", "member"),
    "u-3f2a9c01": UserEntry("pw-admin", "user", "admin"),
    "u-5b6c7d8e": UserEntry("pw-submitter", "user", "submitter"),
    "u-9f0a1b2c": UserEntry("pw-viewer", "user", "viewer"),
}

# Made by mosquitto 2.0.11's own `mosquitto_passwd -b file alice secret`.
MOSQUITTO_PASSWD_LINE = (
    "alice:$7$101$35EStGZCxJ9ruUQc$p7U5sfWnQTVjhKAtMEl4TIaQ+gqgaqKHPwAgMxHbdLaEGJEHGdlmGWzSf1JYKU3fXhNmxkNRr0"
    "+tGhxO9PoQwg=="
)


def test_password_hashes_are_mosquitto_passwd_compatible() -> None:
    hashed = MOSQUITTO_PASSWD_LINE.split(":", 1)[1]
    assert verify_password("secret", hashed)
    assert not verify_password("Secret", hashed)
    salt = bytes.fromhex("df9112b46642c49f6bb9441c")  # the salt of the line above
    assert hash_password("secret", salt=salt) == hashed
    mine = hash_password("pw")
    assert mine.startswith("$7$101$") and verify_password("pw", mine) and not verify_password("px", mine)
    assert hash_password("pw") != mine  # freshly salted
    assert not verify_password("pw", "$6$rounds$whatever") and not verify_password("pw", "garbage")


def test_password_file_has_one_line_per_principal() -> None:
    lines = mosquitto_passwords(USERS).splitlines()
    assert [line.split(":")[0] for line in lines] == sorted(USERS)
    assert verify_password("pw-node", dict(line.split(":", 1) for line in lines)[NODE])


def test_acl_file_grants_each_kind_its_topics() -> None:
    text = mosquitto_acl("home", USERS)
    blocks = {block.splitlines()[0]: block.splitlines()[1:] for block in text.split("\n\n")[1:]}
    assert blocks[f"user {NODE}"] == [
        "topic read swarm/home/#",
        "topic write swarm/home/node/+/hb",
        "topic write swarm/home/node/+/in",
        "topic write swarm/home/coord",
        "topic write swarm/home/coord/in",
        "topic write swarm/home/election",
        "topic write swarm/home/quota/ledger",
        "topic write swarm/home/job/#",
        "topic write swarm/home/wf/#",
    ]
    assert blocks["user u-3f2a9c01"] == [
        "topic read swarm/home/#",
        "topic write swarm/home/coord/in",
        "topic write swarm/home/job/+/spec",
        "topic write swarm/home/trust/#",
    ]
    assert blocks["user u-9f0a1b2c"] == ["topic read swarm/home/#", "topic write swarm/home/coord/in"]
    assert "pattern" not in text  # mosquitto applies patterns to every user, nodes and users alike


@pytest.mark.parametrize(
    ("who", "action", "topic", "allowed"),
    [
        (NODE, "publish", f"swarm/home/node/{NODE}/hb", True),
        (NODE, "publish", "swarm/home/node/n-2be7c587/hb", True),  # clearing a dead member
        (NODE, "publish", "swarm/home/node/n-2be7c587/in", True),
        (NODE, "publish", "swarm/home/job/j1/commits/3.1", True),
        (NODE, "publish", "swarm/home/election", True),
        (NODE, "publish", "swarm/home/quota/ledger", True),
        ("u-3f2a9c01", "publish", "swarm/home/quota/ledger", False),  # only members keep the ledger
        (NODE, "publish", "swarm/home/trust/roster", False),
        (NODE, "publish", "swarm/other/coord", False),
        (NODE, "publish", "swarm/home/node/+/in", False),  # no wildcards in a topic name
        (NODE, "subscribe", "swarm/home/#", True),
        (NODE, "subscribe", "swarm/home/node/+/hb", True),
        (NODE, "subscribe", "swarm/#", False),
        (NODE, "subscribe", "swarm/+/coord", False),
        (NODE, "receive", "swarm/home/coord", True),
        (NODE, "receive", "swarm/other/coord", False),
        ("u-3f2a9c01", "publish", "swarm/home/trust/roster", True),
        ("u-3f2a9c01", "publish", "swarm/home/job/j1/spec", True),
        ("u-3f2a9c01", "publish", "swarm/home/job/j1/commits/1.0", False),
        ("u-3f2a9c01", "publish", "swarm/home/node/u-3f2a9c01/hb", False),
        ("u-5b6c7d8e", "publish", "swarm/home/job/j1/spec", True),
        ("u-5b6c7d8e", "publish", "swarm/home/trust/roster", False),
        ("u-5b6c7d8e", "publish", "swarm/home/coord/in", True),
        ("u-5b6c7d8e", "publish", "swarm/home/coord", False),
        ("u-9f0a1b2c", "publish", "swarm/home/job/j1/spec", False),
        ("u-9f0a1b2c", "publish", "swarm/home/coord/in", True),
        ("u-9f0a1b2c", "subscribe", "swarm/home/node/u-9f0a1b2c/in", True),
    ],
)
def test_acl_table(who: str, action: AclAction, topic: str, allowed: bool) -> None:
    assert acl_allows("home", who, USERS[who], action, topic) is allowed


def _tls() -> tuple[bytes, bytes, bytes]:
    ca_pem, ca_key = make_ca("home")
    cert_pem, key_pem = make_server_cert(ca_pem, ca_key)
    return cert_pem, key_pem, ca_pem


@pytest.mark.parametrize(
    ("users", "cluster", "message"),
    [
        ({"n-a:b": UserEntry("p", "node")}, "home", "not a valid principal id"),
        ({"n-a/b": UserEntry("p", "node")}, "home", "not a valid principal id"),
        ({"u-abc": UserEntry("p", "node")}, "home", "starts with 'n-'"),
        ({"n-abc": UserEntry("p", "robot")}, "home", "kind must be"),  # type: ignore[arg-type]
        ({"n-abc": UserEntry("", "node")}, "home", "password"),
        ({"n-abc": UserEntry("p\nuser x", "node")}, "home", "password"),
        ({}, "home/#", "cluster name"),
        ({}, "", "cluster name"),
    ],
)
def test_security_refuses_what_cannot_be_a_login_or_a_topic(
    users: dict[str, UserEntry], cluster: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        BrokerSecurity(cluster, users, *_tls())


def test_security_hides_secrets_and_is_frozen(tmp_path: Path) -> None:
    users = dict(USERS)
    security = BrokerSecurity("home", users, *_tls())
    users.clear()
    assert set(security.users) == set(USERS)  # a copy, read-only
    with pytest.raises(TypeError):
        security.users["n-x"] = UserEntry("p", "node")  # type: ignore[index]
    shown = repr(security)
    assert "pw-node" not in shown and "PRIVATE" not in shown
    files = write_mosquitto_files(tmp_path, security)
    for path in (files.password_file, files.acl_file, files.keyfile):
        assert path.stat().st_mode & 0o777 == 0o600
    assert "pw-node" not in files.password_file.read_text()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp file left behind
    with pytest.raises(ValueError, match="probe"):
        write_mosquitto_files(tmp_path, security, probe=("n-probe", "x"))


def test_config_with_security(tmp_path: Path) -> None:
    files = MosquittoFiles(*(tmp_path / name for name in ("passwd", "acl", "ca.pem", "cert.pem", "key.pem")))
    lines = mosquitto_config(8883, "0.0.0.0", tmp_path / "log", security=files).splitlines()
    for expected in (
        "listener 8883 0.0.0.0",
        f"cafile {tmp_path / 'ca.pem'}",
        f"certfile {tmp_path / 'cert.pem'}",
        f"keyfile {tmp_path / 'key.pem'}",
        "tls_version tlsv1.2",
        "allow_anonymous false",
        f"password_file {tmp_path / 'passwd'}",
        f"acl_file {tmp_path / 'acl'}",
        "max_queued_messages 0",
        "max_inflight_messages 0",
        f"max_packet_size {16 * 1024 * 1024 + PACKET_MARGIN}",
        "set_tcp_nodelay true",
        "persistent_client_expiration 1h",
    ):
        assert expected in lines
    assert "allow_anonymous true" not in lines
    open_lines = mosquitto_config(1883, "127.0.0.1", tmp_path / "log", security=None, max_message_bytes=1000)
    assert "allow_anonymous true" in open_lines.splitlines()
    assert f"max_packet_size {1000 + PACKET_MARGIN}" in open_lines.splitlines()
    broken = MosquittoFiles(
        tmp_path / "pass\nwd", files.acl_file, files.cafile, files.certfile, files.keyfile
    )
    with pytest.raises(ValueError, match="line break"):
        mosquitto_config(1883, "127.0.0.1", tmp_path / "log", security=broken)


def test_certificates() -> None:
    cert_pem, key_pem, ca_pem = _tls()
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert = x509.load_pem_x509_certificate(cert_pem)
    for c in (ca, cert):
        assert isinstance(c.public_key(), ec.EllipticCurvePublicKey)
        assert c.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    now = datetime.datetime.now(datetime.UTC)
    assert ca.not_valid_after_utc - now > datetime.timedelta(days=365 * 10 - 2)
    assert cert.not_valid_after_utc - now > datetime.timedelta(days=365 * 5 - 2)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert b"PRIVATE KEY" in key_pem
    context = client_context(ca_pem)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert not context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(ValueError, match="empty"):
        make_ca("")
