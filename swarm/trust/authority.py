"""The cluster's authority: its signing key and the files the founding machine keeps.

The first `swarm join` of a cluster founds it: it makes the authority's Ed25519 key, the broker
secret (from which every principal's broker password is derived), the broker's TLS CA and server
certificate, an empty roster, and an admin token for the machine's owner, all under
`$SWARM_HOME/clusters/<cluster>/` (mode 0700; files 0600). Whatever runs on that machine as the same
user — more nodes, the CLI — reads them, so nothing has to be copied on the founding machine.

Every other device joins with a token made here (`swarm invite`), and user tokens are made here
(`swarm token create`): minting identities needs the authority's key, which never leaves this
directory. Back it up: without it, nobody can be invited or revoked (the cluster keeps running).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from swarm.durable import write_private
from swarm.errors import ConfigError
from swarm.ids import check_id
from swarm.trust.audit import AuditLog
from swarm.trust.credentials import Certificate, Credential, b64d, b64e, public_key_bytes
from swarm.trust.roles import MEMBER, check_role
from swarm.trust.roster import Principal, Roster, broker_password
from swarm.trust.tls import make_ca, make_server_cert

__all__ = ["Authority", "audit_log", "authority_dir", "swarm_home"]

_AUTHORITY_FILE = "authority.json"
_ROSTER_FILE = "roster.json"
_ADMIN_TOKEN_FILE = "admin.token"


def swarm_home() -> Path:
    """Where this machine keeps swarm's state: `$SWARM_HOME`, or `~/.swarm`."""
    return Path(os.environ.get("SWARM_HOME") or Path.home() / ".swarm")


def authority_dir(cluster: str, home: Path | None = None) -> Path:
    """The directory of `cluster`'s authority on this machine (it may not exist); `home` overrides
    `swarm_home()`."""
    return (home or swarm_home()) / "clusters" / check_id(cluster, "cluster name")


def audit_log(cluster: str) -> AuditLog:
    """This machine's audit log of `cluster`, shared by its nodes and its CLI."""
    directory = authority_dir(cluster)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return AuditLog(directory / "audit.log")


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (directory / "lock").open("wb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True, slots=True)
class Authority:
    """The founding machine's view of a cluster: its keys and roster, in `directory`."""

    directory: Path
    cluster: str
    key: Ed25519PrivateKey
    broker_secret: bytes
    tls_ca_pem: bytes
    tls_ca_key_pem: bytes
    tls_cert_pem: bytes
    tls_key_pem: bytes

    @property
    def public_key(self) -> bytes:
        """The authority's public key: every member checks certificates against it."""
        return public_key_bytes(self.key)

    # --- opening ------------------------------------------------------------------------------------

    @classmethod
    def exists(cls, cluster: str, home: Path | None = None) -> bool:
        """Whether this machine holds `cluster`'s authority."""
        return (authority_dir(cluster, home) / _AUTHORITY_FILE).exists()

    @classmethod
    def load(cls, cluster: str, home: Path | None = None) -> Authority:
        """Open the authority of `cluster` on this machine; ConfigError when there is none."""
        directory = authority_dir(cluster, home)
        try:
            data = orjson.loads((directory / _AUTHORITY_FILE).read_bytes())
        except FileNotFoundError:
            raise ConfigError(
                f"this machine does not hold the authority of cluster {cluster!r}: run this on the machine"
                " of its first node (or pass --token)"
            ) from None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read {directory / _AUTHORITY_FILE}: {exc}") from None
        return cls(
            directory,
            cluster,
            Ed25519PrivateKey.from_private_bytes(b64d(data["key"])),
            b64d(data["broker_secret"]),
            data["tls_ca"].encode(),
            data["tls_ca_key"].encode(),
            data["tls_cert"].encode(),
            data["tls_key"].encode(),
        )

    @classmethod
    def open_or_found(cls, cluster: str, now: float, may_found: Callable[[], None]) -> Authority:
        """Load the authority, or found the cluster when none exists here.

        `may_found` runs under the directory's lock before founding and raises to forbid it (e.g. when a
        broker of this cluster already runs on the LAN: then the cluster was founded elsewhere). The lock
        makes nodes that start together on one machine found one cluster, not several.
        """
        directory = authority_dir(cluster)
        with _locked(directory):
            if (directory / _AUTHORITY_FILE).exists():
                return cls.load(cluster)
            may_found()
            return cls._found(directory, cluster, now)

    @classmethod
    def _found(cls, directory: Path, cluster: str, now: float) -> Authority:
        ca_pem, ca_key_pem = make_ca(cluster)
        cert_pem, key_pem = make_server_cert(ca_pem, ca_key_pem)
        authority = cls(
            directory,
            cluster,
            Ed25519PrivateKey.generate(),
            secrets.token_bytes(32),
            ca_pem,
            ca_key_pem,
            cert_pem,
            key_pem,
        )
        data = {
            "cluster": cluster,
            "key": b64e(_raw(authority.key)),
            "broker_secret": b64e(authority.broker_secret),
            "tls_ca": ca_pem.decode(),
            "tls_ca_key": ca_key_pem.decode(),
            "tls_cert": cert_pem.decode(),
            "tls_key": key_pem.decode(),
            "founded": now,
        }
        authority._save_roster(Roster(cluster))
        admin = authority._issue(
            Roster(cluster), f"u-{secrets.token_hex(4)}", "user", "admin", "", "owner", None, now
        )
        write_private(directory / _ADMIN_TOKEN_FILE, admin.to_token().encode())
        write_private(directory / _AUTHORITY_FILE, orjson.dumps(data, option=orjson.OPT_INDENT_2))
        return authority

    # --- the roster ---------------------------------------------------------------------------------

    def roster(self) -> Roster:
        """The current roster, as signed."""
        return Roster.from_bytes((self.directory / _ROSTER_FILE).read_bytes(), self.public_key)

    def _save_roster(self, roster: Roster) -> Roster:
        signed = roster.signed(self.key)
        write_private(self.directory / _ROSTER_FILE, signed.to_bytes())
        return signed

    def admin_credential(self) -> Credential:
        """The local owner's admin credential."""
        return Credential.from_token((self.directory / _ADMIN_TOKEN_FILE).read_text())

    # --- issuing and revoking -----------------------------------------------------------------------

    def issue(
        self,
        principal_id: str,
        kind: str,
        role: str,
        *,
        now: float,
        team: str = "",
        name: str = "",
        expires: float | None = None,
        broker_url: str = "",
    ) -> Credential:
        """Mint a credential and add its principal to the roster (kept on disk, signed)."""
        if kind == "user":
            check_role(role)
        elif role != MEMBER:
            raise ConfigError(f"a node's role is {MEMBER!r}, not {role!r}")
        check_id(principal_id, "principal id")
        if team:
            check_id(team, "team")
        with _locked(self.directory):
            roster = self.roster()
            if principal_id in roster.revoked:
                raise ConfigError(f"{principal_id} was revoked; a revoked id is never issued again")
            cred = self._issue(roster, principal_id, kind, role, team, name, expires, now, broker_url)
        return cred

    def _issue(
        self,
        roster: Roster,
        principal_id: str,
        kind: str,
        role: str,
        team: str,
        name: str,
        expires: float | None,
        now: float,
        broker_url: str = "",
    ) -> Credential:
        key = Ed25519PrivateKey.generate()
        cert = Certificate(
            self.cluster,
            principal_id,
            "node" if kind == "node" else "user",
            role,
            public_key_bytes(key),
            now,
            expires,
            team,
            name,
        ).signed_by(self.key)
        member = kind == "node"
        cred = Credential(
            certificate=cert,
            private_key=_raw(key),
            broker_password=broker_password(self.broker_secret, principal_id),
            authority_public=self.public_key,
            tls_ca_pem=self.tls_ca_pem,
            broker_url=broker_url,
            broker_secret=self.broker_secret if member else b"",
            tls_cert_pem=self.tls_cert_pem if member else b"",
            tls_key_pem=self.tls_key_pem if member else b"",
        )
        others = tuple(p for p in roster.principals if p.id != principal_id)
        entry = Principal(principal_id, cert.kind, role, team, name, expires)
        self._save_roster(replace(roster, serial=roster.serial + 1, principals=(*others, entry)))
        return cred

    def revoke(self, principal_id: str) -> Roster:
        """Revoke a principal: its messages are refused and its broker login removed everywhere the
        new roster reaches. Returns the new roster."""
        with _locked(self.directory):
            roster = self.roster()
            if roster.get(principal_id) is None:
                raise ConfigError(f"no node or token {principal_id!r} in cluster {self.cluster!r}")
            if principal_id in roster.revoked:
                return roster
            return self._save_roster(
                replace(roster, serial=roster.serial + 1, revoked=(*roster.revoked, principal_id))
            )

    def set_quotas(self, quotas: tuple[dict[str, object], ...]) -> Roster:
        """Replace the cluster's quotas. Returns the new roster."""
        with _locked(self.directory):
            roster = self.roster()
            return self._save_roster(replace(roster, serial=roster.serial + 1, quotas=quotas))
