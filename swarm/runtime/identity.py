"""Who this process is to its cluster: a node's credential, or the CLI's.

A node keeps its credential in its data dir (`credential.json`, 0600). The first time it starts it gets
one, in this order:

1. from `--token` (`swarm join --token`, or `$SWARM_TOKEN`): a credential `swarm invite` made elsewhere;
   the node takes the id the token names;
2. from the cluster's authority, when this machine holds it (another node of this machine founded the
   cluster): nothing to copy;
3. by founding the cluster — unless a broker of this cluster already answers on the LAN (then it was
   founded elsewhere, and the node says how to get a token instead of starting a rival cluster).

The CLI uses `--token` / `$SWARM_TOKEN`, or the owner's admin token when this machine holds the
authority, and the broker it is given, or the one its credential names, or else the one mDNS finds.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from swarm.config import NodeConfig
from swarm.durable import write_private
from swarm.errors import ConfigError, SwarmError
from swarm.runtime.mqtt import BrokerLogin
from swarm.runtime.storage import NodeStorage
from swarm.trust.authority import Authority
from swarm.trust.credentials import Credential
from swarm.trust.roles import MEMBER
from swarm.trust.roster import Roster

__all__ = [
    "broker_login",
    "client_credential",
    "load_roster",
    "node_credential",
    "resolve_broker",
    "save_roster",
]

_CREDENTIAL_FILE = "credential.json"
_ROSTER_FILE = "roster.json"


async def node_credential(
    config: NodeConfig, storage: NodeStorage, token: str | None, now: float
) -> Credential:
    """This node's credential: kept, from a token, from the local authority, or by founding the cluster."""
    path = storage.data_dir / _CREDENTIAL_FILE
    kept = _read_credential(path)
    if kept is not None and token is None:
        if kept.cluster != config.cluster:
            raise ConfigError(
                f"data dir {storage.data_dir} belongs to a node of cluster {kept.cluster!r}, not"
                f" {config.cluster!r}; give another --data-dir"
            )
        return kept
    if token is not None:
        cred = Credential.from_token(token)
        if cred.certificate.kind != "node":
            raise ConfigError(
                "this token is a user's token (for the CLI); a node joins with `swarm invite`'s"
            )
        if cred.cluster != config.cluster:
            raise ConfigError(f"the token is for cluster {cred.cluster!r}; run with --cluster {cred.cluster}")
        if kept is not None and kept.id != cred.id:
            raise ConfigError(
                f"data dir {storage.data_dir} already belongs to node {kept.id}; join with a fresh --data-dir"
            )
        storage.adopt_node_id(cred.id)
    else:
        authority = await _authority(config, now)
        cred = authority.issue(storage.node_id, "node", MEMBER, now=now, name=config.name)
        save_roster(storage.data_dir, authority.roster())
    write_private(path, orjson.dumps(cred.to_json()))
    return cred


async def _authority(config: NodeConfig, now: float) -> Authority:
    """The local authority, founding the cluster if this machine has none and no broker of it answers."""
    if Authority.exists(config.cluster):
        return Authority.load(config.cluster)
    found_elsewhere = False
    if config.broker is None:
        from swarm.runtime.discovery import find_broker

        found_elsewhere = await find_broker(config.cluster, timeout=config.mdns_timeout) is not None

    def may_found() -> None:
        if found_elsewhere:
            raise ConfigError(
                f"a broker of cluster {config.cluster!r} already runs on this network, and this machine"
                " holds no credential for it: run `swarm invite` on one of its members and"
                " `swarm join --token <token>` here (or use another --cluster name to found a new one)"
            )

    return Authority.open_or_found(config.cluster, now, may_found)


def client_credential(cluster: str, token: str | None) -> Credential:
    """The CLI's credential: `--token` / `$SWARM_TOKEN`, or the local owner's admin token."""
    token = token or os.environ.get("SWARM_TOKEN") or None
    if token is not None:
        cred = Credential.from_token(token)
        if cred.cluster != cluster:
            raise ConfigError(f"the token is for cluster {cred.cluster!r}; use --cluster {cred.cluster}")
        return cred
    if Authority.exists(cluster):
        return Authority.load(cluster).admin_credential()
    raise ConfigError(
        f"no credential for cluster {cluster!r} on this machine: pass --token (or set $SWARM_TOKEN) with a"
        " token from `swarm token create` on the machine of the cluster's first node"
    )


async def resolve_broker(config: NodeConfig, known: str | None = None) -> str:
    """The broker a client uses: the configured one (`--broker`, `$SWARM_BROKER`), else the one its
    credential names, else the cluster's advertised over mDNS; a `SwarmError` saying what to give."""
    if config.broker or known:
        return config.broker or str(known)
    from swarm.runtime.discovery import find_broker  # zeroconf loads only when nothing names a broker

    url = await find_broker(config.cluster, timeout=max(config.mdns_timeout, 3.0))
    if url is None:
        raise SwarmError(f"no broker for cluster {config.cluster!r} found over mDNS; give --broker")
    return url


def broker_login(config: NodeConfig, credential: Credential) -> BrokerLogin:
    """How to log in to the broker: the configured login of a user-run broker, else the credential's."""
    if config.broker_username is not None or config.broker_ca is not None:
        return BrokerLogin.from_config(config)
    return BrokerLogin(credential.id, credential.broker_password, credential.tls_ca_pem)


def load_roster(data_dir: Path, credential: Credential) -> Roster | None:
    """The newest roster this principal kept, if any (its signature checked)."""
    try:
        return Roster.from_bytes((data_dir / _ROSTER_FILE).read_bytes(), credential.authority_public)
    except (OSError, ValueError):
        return None


def save_roster(data_dir: Path, roster: Roster) -> None:
    """Keep a roster (already checked) for the next start."""
    write_private(data_dir / _ROSTER_FILE, roster.to_bytes())


def _read_credential(path: Path) -> Credential | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return Credential.from_json(orjson.loads(data))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is damaged ({exc}); remove it and join with a token again") from None
