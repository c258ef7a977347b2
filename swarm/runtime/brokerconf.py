"""How swarm configures and reaches a mosquitto it starts itself, and who that broker lets in.

The embedded broker of `swarm join` and the test suite's broker fixture both start mosquitto, and
both must run it with the settings measured to matter (see `mosquitto_config`); generating the
configuration in one place keeps the tests honest about what users run.

Security, decided once for both brokers (mosquitto and the amqtt fallback):

- Every principal logs in as itself: a node (id `n-...`) or a user token (id `u-...`) has its own
  broker username, its id, and a password; there is no anonymous access.
- The listener speaks TLS only, with a server certificate from the cluster's own CA
  (`swarm.trust.tls`); clients check the chain against that CA, not the host name.
- What each principal may read and write is one table, `ACL_RULES`, rendered as mosquitto's
  `acl_file` by `mosquitto_acl` and checked for amqtt by `acl_allows`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import ipaddress
import os
import re
import secrets
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from swarm import topics
from swarm.config import NodeConfig
from swarm.durable import write_private

__all__ = [
    "ACL_RULES",
    "MAX_QUEUED_BYTES",
    "MOSQUITTO_PATHS",
    "PACKET_MARGIN",
    "AclAction",
    "AclRule",
    "BrokerSecurity",
    "MosquittoFiles",
    "PrincipalKind",
    "UserEntry",
    "acl_allows",
    "check_cluster",
    "check_principal",
    "client_host",
    "find_mosquitto",
    "free_port",
    "hash_password",
    "mosquitto_acl",
    "mosquitto_config",
    "mosquitto_passwords",
    "port_accepts",
    "port_is_free",
    "url_for",
    "verify_password",
    "write_mosquitto_files",
]

# Where packages put mosquitto when its directory is not on PATH: Debian and Fedora use sbin, which
# ordinary users often lack on PATH; Homebrew's sbin is not on PATH by default either.
MOSQUITTO_PATHS = (
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
    "/opt/homebrew/opt/mosquitto/sbin/mosquitto",
    "/usr/local/opt/mosquitto/sbin/mosquitto",
)

#: Bytes a client may have queued at the broker (QoS 1 messages beyond those in flight, and everything
#: that arrives for a persistent session while it is offline) before further messages are dropped.
MAX_QUEUED_BYTES = 64 * 1024 * 1024
#: What an MQTT packet may carry beyond its payload: the fixed header, a topic of up to 64 KiB, the
#: packet id and MQTT 5 properties.
PACKET_MARGIN = 128 * 1024

PrincipalKind = Literal["node", "user"]
AclAction = Literal["publish", "subscribe", "receive"]

_PREFIX: dict[str, str] = {"node": "n-", "user": "u-"}
# A principal id as the broker sees it: the project's id grammar (swarm/ids.py) without ':', which
# separates the user from the hash in mosquitto's password file, and with the kind's prefix.
_PRINCIPAL_ID = re.compile(r"[nu]-[A-Za-z0-9_.=@-]{1,196}")
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:=@-]{0,199}")
# mosquitto_passwd's defaults (mosquitto 2.0): PBKDF2-SHA512, 101 iterations, a 12-byte salt, and the
# 64-byte digest, both in standard base64 with padding.
_PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12


@dataclass(frozen=True, slots=True)
class UserEntry:
    """One principal's broker login: its password and what kind of principal it is.

    `role` is the user's role ("viewer", "submitter", "operator", "admin") or "member" for a node;
    `ACL_RULES` says what each may publish.
    """

    password: str = field(repr=False)
    kind: PrincipalKind
    role: str = ""


@dataclass(frozen=True, slots=True)
class AclRule:
    """One line of the access table: principals of `kind` (and one of `roles`, unless None) may
    `access` the topic filter `topic`, relative to `swarm/<cluster>/`; `%u` stands for their own id."""

    kind: PrincipalKind
    roles: frozenset[str] | None
    access: Literal["read", "write"]
    topic: str


_SUBMITTERS = frozenset({"submitter", "operator", "admin"})

#: Who may read and write what, under `swarm/<cluster>/`. Everything else is refused, including every
#: topic outside the cluster's prefix. Why each write:
#: a node publishes heartbeats (its own, its last will, and the empty record that clears a member
#: long dead, which only the coordinator sends; a heartbeat whose signed sender is not the topic's node
#: is refused by every receiver, so another node's topic can be cleared but not spoken for), direct
#: messages to any node's inbox
#: (and to users' inboxes, which share the pattern), the coordinator announcement, claims, the quota
#: ledger, and the
#: job log (specs it republishes or clears, commits, events, states), and the workflow records under
#: `wf/` (definitions, artifacts, runs) its HTTP API takes on behalf of users. A user submits specs and sends
#: cancels and queries to the coordinator; a viewer may only query; only an admin publishes the
#: signed roster and revocations under `trust/`. Everyone reads the whole cluster: direct replies to
#: a user arrive on `node/<its client id>/in`, and messages are signed, so reading reveals no secret.
ACL_RULES: tuple[AclRule, ...] = (
    AclRule("node", None, "read", "#"),
    AclRule("node", None, "write", topics.EVERY_HEARTBEAT),
    AclRule("node", None, "write", topics.EVERY_INBOX),
    AclRule("node", None, "write", topics.COORD),
    AclRule("node", None, "write", topics.COORD_INBOX),
    AclRule("node", None, "write", topics.ELECTION),
    AclRule("node", None, "write", topics.QUOTA_LEDGER),
    AclRule("node", None, "write", "job/#"),
    AclRule("node", None, "write", "wf/#"),
    AclRule("user", None, "read", "#"),
    AclRule("user", None, "write", topics.COORD_INBOX),
    AclRule("user", _SUBMITTERS, "write", topics.JOB_SPECS),
    AclRule("user", frozenset({"admin"}), "write", "trust/#"),
)


@dataclass(frozen=True, slots=True)
class BrokerSecurity:
    """Everything a broker of the cluster needs to admit the right principals over TLS.

    `users` maps principal ids to their logins; it is copied into a read-only mapping. The PEM
    fields are the broker's server certificate and key and the cluster CA that signed them.

    Raises:
        ValueError: for a cluster name or principal id that cannot be a topic level, an id whose
            prefix does not match its kind, an empty password, or missing TLS material.
    """

    cluster: str
    users: Mapping[str, UserEntry] = field(repr=False)
    tls_cert_pem: bytes = field(repr=False)
    tls_key_pem: bytes = field(repr=False)
    ca_pem: bytes = field(repr=False)

    def __post_init__(self) -> None:
        """Validate, and freeze `users`."""
        check_cluster(self.cluster)
        for principal, entry in self.users.items():
            check_principal(principal, entry)
        for name in ("tls_cert_pem", "tls_key_pem", "ca_pem"):
            if b"-----BEGIN" not in getattr(self, name):
                raise ValueError(f"{name} must be PEM data")
        object.__setattr__(self, "users", MappingProxyType(dict(self.users)))

    def with_users(self, users: Mapping[str, UserEntry]) -> BrokerSecurity:
        """The same cluster and TLS material with another set of users."""
        return dataclasses.replace(self, users=users)


@dataclass(frozen=True, slots=True)
class MosquittoFiles:
    """Where the files that `mosquitto_config` points at are."""

    password_file: Path
    acl_file: Path
    cafile: Path
    certfile: Path
    keyfile: Path

    @classmethod
    def under(cls, directory: Path) -> MosquittoFiles:
        """The files' one set of names, in `directory`."""
        return cls(
            password_file=directory / "passwd",
            acl_file=directory / "acl",
            cafile=directory / "ca.pem",
            certfile=directory / "server.pem",
            keyfile=directory / "server.key",
        )


def check_cluster(cluster: str) -> str:
    """Return `cluster` if it can be one topic level and an ACL file word; raise ValueError if not."""
    if not _CLUSTER_NAME.fullmatch(cluster) or ".." in cluster:
        raise ValueError(f"cluster name {cluster!r} must be letters, digits and _ . : = @ -")
    return cluster


def check_principal(principal: str, entry: UserEntry) -> str:
    """Return `principal` if it is a valid broker username for `entry`; raise ValueError if not."""
    if entry.kind not in _PREFIX:
        raise ValueError(f"{principal!r}: kind must be 'node' or 'user', got {entry.kind!r}")
    if not _PRINCIPAL_ID.fullmatch(principal) or ".." in principal:
        raise ValueError(f"{principal!r} is not a valid principal id")
    if not principal.startswith(_PREFIX[entry.kind]):
        raise ValueError(f"{principal!r}: a {entry.kind} id starts with {_PREFIX[entry.kind]!r}")
    if not entry.password or any(c in entry.password for c in "\r\n\0"):
        raise ValueError(f"{principal!r}: the password must be non-empty and on one line")
    return principal


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = _PBKDF2_ITERATIONS) -> str:
    """Hash `password` the way `mosquitto_passwd` does: `$7$<iterations>$<salt>$<PBKDF2-SHA512>`.

    The iteration count is mosquitto's default; it is low, which is harmless for the random secrets
    the cluster issues as passwords and keeps a broker's start and reload fast with many principals.
    """
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether `password` matches a `$7$` hash made by `hash_password` or `mosquitto_passwd`."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt, expected = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    return secrets.compare_digest(digest, expected)


def mosquitto_passwords(users: Mapping[str, UserEntry]) -> str:
    """The text of a mosquitto `password_file` for `users` (freshly salted at every call)."""
    return "".join(f"{name}:{hash_password(entry.password)}\n" for name, entry in sorted(users.items()))


def _rules_for(entry: UserEntry) -> list[AclRule]:
    return [
        rule
        for rule in ACL_RULES
        if rule.kind == entry.kind and (rule.roles is None or entry.role in rule.roles)
    ]


def _absolute(cluster: str, principal: str, rule: AclRule) -> str:
    # Expanded per principal rather than written as a mosquitto `pattern`: patterns apply to every
    # user of the broker, and a user token must not pass for a node's heartbeat.
    return f"swarm/{cluster}/{rule.topic.replace('%u', principal)}"


def mosquitto_acl(cluster: str, users: Mapping[str, UserEntry]) -> str:
    """The text of a mosquitto `acl_file` granting each principal what `ACL_RULES` gives its kind/role.

    Raises:
        ValueError: for an invalid cluster name or principal (see `BrokerSecurity`).
    """
    check_cluster(cluster)
    lines = ["# Generated by swarm from its ACL table; rewritten whenever the cluster's users change."]
    for principal, entry in sorted(users.items()):
        check_principal(principal, entry)
        lines += ["", f"user {principal}"]
        lines += [f"topic {rule.access} {_absolute(cluster, principal, rule)}" for rule in _rules_for(entry)]
    return "\n".join(lines) + "\n"


def _covers(pattern: list[str], topic: list[str]) -> bool:
    """Whether filter `pattern` matches every topic that `topic` (a name or a filter) can stand for."""
    for index, level in enumerate(pattern):
        if level == "#":
            return True
        if index >= len(topic):
            return False
        if level == "+":
            if topic[index] == "#":
                return False
        elif level != topic[index]:
            return False
    return len(pattern) == len(topic)


def acl_allows(cluster: str, principal: str, entry: UserEntry, action: AclAction, topic: str) -> bool:
    """Whether `ACL_RULES` let `principal` publish to, subscribe to or receive from `topic`.

    For "subscribe", `topic` is a filter, allowed only when a readable filter covers all of it.
    """
    access = "write" if action == "publish" else "read"
    if action != "subscribe" and ("+" in topic or "#" in topic):
        return False
    wanted = topic.split("/")
    return any(
        _covers(_absolute(cluster, principal, rule).split("/"), wanted)
        for rule in _rules_for(entry)
        if rule.access == access
    )


def write_mosquitto_files(
    directory: Path, security: BrokerSecurity, *, probe: tuple[str, str] | None = None
) -> MosquittoFiles:
    """Write the password, ACL and TLS files for `security` into `directory` (mode 0600).

    Called again after the users change: every file is replaced atomically. `probe` is one more
    (username, password) login, outside the principals' namespace and without any ACL entry, so it
    can log in but neither read nor write: the embedded broker uses it to tell when mosquitto has
    loaded these files.
    """
    files = MosquittoFiles.under(directory)
    passwords = mosquitto_passwords(security.users)
    if probe is not None:
        if _PRINCIPAL_ID.fullmatch(probe[0]) or ":" in probe[0] or not probe[0].isprintable():
            raise ValueError(f"probe user {probe[0]!r} must be a plain name outside the principals' ids")
        passwords += f"{probe[0]}:{hash_password(probe[1])}\n"
    write_private(files.password_file, passwords.encode())
    write_private(files.acl_file, mosquitto_acl(security.cluster, security.users).encode())
    write_private(files.cafile, security.ca_pem)
    write_private(files.certfile, security.tls_cert_pem)
    write_private(files.keyfile, security.tls_key_pem)
    return files


def _default_max_message_bytes() -> int:
    default = {f.name: f.default for f in dataclasses.fields(NodeConfig)}["max_message_bytes"]
    assert isinstance(default, int)
    return default


def mosquitto_config(
    port: int,
    host: str,
    log_path: Path,
    persistence_dir: Path | None = None,
    *,
    security: MosquittoFiles | None,
    max_message_bytes: int | None = None,
) -> str:
    """Return a mosquitto.conf for one listener on `host:port`.

    With `security`, the listener speaks TLS only and admits only the users of its password file, as
    its ACL file allows. `security=None` gives an open, plaintext, anonymous broker: it exists for
    tests and benchmarks of the transport alone, and must be asked for by name.

    The settings that are not mosquitto's defaults, and why:

    - `max_queued_messages 0`: by default mosquitto silently drops QoS 1 messages once a client's
      queue holds 1000, which loses task assignments under load. The queue is bounded in bytes
      instead (`max_queued_bytes`, `MAX_QUEUED_BYTES`): a count bound cannot tell a heartbeat from a
      batch, and a device that stays away for an hour must not pile up memory without limit.
      mosquitto counts in this queue what a client cannot take in flight and what arrives for it
      while it is offline; with no in-flight limit (below) a connected client queues nothing there.
    - `max_inflight_messages 0`: no cap on unacknowledged QoS 1 messages per client, so a burst is
      not throttled to 20 in flight.
    - `max_packet_size`: the largest message a node accepts (`NodeConfig.max_message_bytes`) plus
      `PACKET_MARGIN` for the packet's header and topic; a client that sends more is disconnected
      before the broker buffers it.
    - `set_tcp_nodelay true`: without it a request/response round trip waits on Nagle's algorithm.
    - `persistent_client_expiration 1h`: nodes keep persistent sessions so that a blip loses nothing;
      without an expiry the broker would queue messages forever for a device that never returns.
    - `allow_anonymous false`, `password_file`, `acl_file`: every principal logs in as itself and may
      publish only what `ACL_RULES` allows.
    - `cafile`/`certfile`/`keyfile`, `tls_version tlsv1.2`: TLS 1.2 or newer with the cluster CA's
      certificate; no plaintext listener at all.
    - `user root` when run as root (CI containers): otherwise mosquitto drops privileges to user
      `mosquitto`, which cannot open a log or persistence file under a root-owned directory.
    - persistence only when `persistence_dir` is given: a throwaway broker keeps nothing on disk.

    Raises:
        ValueError: for a port outside 1..65535 or a path or host mosquitto's parser cannot take.
    """
    if not 0 < port < 65536:
        raise ValueError(f"port must be in 1..65535, got {port}")
    texts = {"host": host, "log_path": str(log_path), "persistence_dir": str(persistence_dir or "")}
    if security is not None:
        texts.update({name: str(path) for name, path in dataclasses.asdict(security).items()})
    for what, text in texts.items():
        if "\n" in text or "\r" in text:
            raise ValueError(f"{what} must not contain a line break: {text!r}")
    if host.strip() != host or " " in host:
        raise ValueError(f"host must not contain spaces: {host!r}")
    if max_message_bytes is None:
        max_message_bytes = _default_max_message_bytes()
    if max_message_bytes <= 0:
        raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
    lines = [
        "# Generated by swarm; rewritten at every start.",
        f"listener {port} {host}".rstrip(),
    ]
    if security is None:
        lines.append("allow_anonymous true")
    else:
        lines += [
            f"cafile {security.cafile}",
            f"certfile {security.certfile}",
            f"keyfile {security.keyfile}",
            "tls_version tlsv1.2",
            "allow_anonymous false",
            f"password_file {security.password_file}",
            f"acl_file {security.acl_file}",
        ]
    lines += [
        "max_queued_messages 0",
        f"max_queued_bytes {MAX_QUEUED_BYTES}",
        "max_inflight_messages 0",
        f"max_packet_size {max_message_bytes + PACKET_MARGIN}",
        "set_tcp_nodelay true",
        "persistent_client_expiration 1h",
    ]
    if persistence_dir is None:
        lines.append("persistence false")
    else:
        lines += [
            "persistence true",
            # mosquitto joins this with the file name by plain concatenation.
            f"persistence_location {str(persistence_dir).rstrip('/')}/",
            "autosave_interval 30",
        ]
    lines += [
        f"log_dest file {log_path}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        lines.append("user root")
    return "\n".join(lines) + "\n"


def find_mosquitto() -> str | None:
    """Return the path of an executable mosquitto, or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in MOSQUITTO_PATHS:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def client_host(host: str) -> str:
    """The address a local client dials to reach a listener bound to `host`.

    A broker bound to every interface ("0.0.0.0", "::" or "") is reached locally over loopback.
    """
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def url_for(host: str, port: int, *, tls: bool = False) -> str:
    """Format an mqtt:// URL (mqtts:// with `tls`), bracketing IPv6 literals."""
    scheme = "mqtts" if tls else "mqtt"
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return f"{scheme}://{host}:{port}"
    if literal.version == 6:
        return f"{scheme}://[{host}]:{port}"
    return f"{scheme}://{host}:{port}"


def free_port(host: str = "127.0.0.1") -> int:
    """Pick a TCP port that is free on `host` right now.

    The port is released before the caller binds it, so another process may take it in between;
    callers that start a listener on it retry with a fresh port when the bind fails.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(host: str, port: int, timeout: float = 0.1) -> bool:
    """Tell whether a TCP connection to `host:port` succeeds now (loopback answers in microseconds)."""
    try:
        with socket.create_connection((client_host(host), port), timeout=timeout):
            return True
    except OSError:
        return False


def port_is_free(host: str, port: int) -> None:
    """Check that a listener could bind `host:port` now; raise the bind's OSError if not.

    Brokers set SO_REUSEADDR, so this does too: a port held only by connections in TIME_WAIT is
    free for them. Polling the port cannot tell our broker from another process already listening
    there, hence this check before starting one on a given port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if os.name == "posix":  # elsewhere SO_REUSEADDR would let us bind over a live listener
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
