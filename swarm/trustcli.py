"""The CLI's trust commands: invite and revoke devices, issue and revoke tokens, read the audit log.

Minting and revoking identities needs the cluster's authority, so these commands run on the machine
that holds it (the cluster's first node). Each change is kept in the authority's roster and audit log,
then published, retained, on `trust/roster`, where every node picks it up.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import time
from typing import Any

import orjson

from swarm import topics
from swarm.config import NodeConfig
from swarm.core.quota import RESOURCES, Quota
from swarm.errors import ConfigError, SwarmError
from swarm.messages import Envelope, TrustRoster
from swarm.trust.audit import AuditLog
from swarm.trust.authority import Authority, audit_log
from swarm.trust.credentials import Credential
from swarm.trust.roles import MEMBER, ROLES
from swarm.trust.roster import Roster

__all__ = ["TRUST_COMMANDS", "add_trust_parsers", "run_trust_command", "show_quota"]

#: Commands that run on the authority's machine without a cluster connection of their own.
TRUST_COMMANDS = frozenset({"invite", "revoke", "token", "audit"})
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def add_trust_parsers(sub: Any, common: Any) -> None:
    """Add `invite`, `revoke`, `token` and `audit` to the `swarm` parser."""
    invite = sub.add_parser("invite", help="make a join token for another device")
    common(invite)
    invite.add_argument("--name", default="", help="a label for the device")
    invite.add_argument("--expires", type=_duration, help="the device's credential expires (e.g. 90d)")

    revoke = sub.add_parser("revoke", help="remove a device or a token from the cluster")
    common(revoke)
    revoke.add_argument("id", help="a node id (n-...) or token id (u-...)")

    token = sub.add_parser("token", help="issue, list and revoke user tokens")
    token_sub = token.add_subparsers(dest="action", required=True)
    create = token_sub.add_parser("create", help="issue a token")
    common(create)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--team", default="")
    create.add_argument("--name", default="", help="who holds it")
    create.add_argument("--expires", type=_duration, help="e.g. 12h, 30d (default: never)")
    listing = token_sub.add_parser("list", help="every node and token, and which are revoked")
    common(listing)
    listing.add_argument("--json", action="store_true")
    token_revoke = token_sub.add_parser("revoke", help="end a token")
    common(token_revoke)
    token_revoke.add_argument("id")

    quota = sub.add_parser("quota", help="show your quotas and use; `quota set|unset` change them")
    common(quota)
    quota_sub = quota.add_subparsers(dest="action", required=False)
    for action, what in (("show", "show"), ("set", "set limits"), ("unset", "remove limits")):
        q = quota_sub.add_parser(action, help=f"{what} of a user or team")
        common(q)
        scope = q.add_mutually_exclusive_group()
        scope.add_argument("--user", help="a token id (default: your own)")
        scope.add_argument("--team", help="a team")
        if action != "show":
            q.add_argument(
                "limits",
                nargs="+",
                metavar="RESOURCE=LIMIT" if action == "set" else "RESOURCE",
                help=f"one of {', '.join(RESOURCES)}",
            )
        if action == "set":
            q.add_argument("--expires", type=_duration, help="the limits end after this (e.g. 7d)")

    audit = sub.add_parser("audit", help="show the audit log of this machine")
    common(audit)
    audit.add_argument("--verify", action="store_true", help="check the hash chain; exit 1 if broken")
    audit.add_argument("--json", action="store_true")


async def run_trust_command(args: argparse.Namespace, config: NodeConfig, broker: Any) -> int:
    """Run one trust command; `broker` is an async callable that finds the broker URL (or raises)."""
    if args.command == "audit":
        return _audit(config.cluster, args)
    if args.command == "quota":
        return await _set_quotas(args, config, broker)
    authority = Authority.load(config.cluster)
    admin = authority.admin_credential()
    log = audit_log(config.cluster)
    now = time.time()
    changed: Roster | None = None
    if args.command == "invite":
        node_id = f"n-{secrets.token_hex(4)}"
        expires = now + args.expires if args.expires else None
        cred = authority.issue(
            node_id, "node", MEMBER, now=now, name=args.name, expires=expires, broker_url=config.broker or ""
        )
        _record(log, admin, "invite", node_id, now, {"name": args.name})
        print(cred.to_token())
        print(
            f"\nOn the new device, once:  swarm join --cluster {config.cluster} --token <the token above>\n"
            f"It joins as node {node_id}. The token is a secret: whoever holds it is that node until"
            f" `swarm revoke {node_id}`.",
            file=sys.stderr,
        )
        changed = authority.roster()
    elif args.command == "revoke" or (args.command == "token" and args.action == "revoke"):
        changed = authority.revoke(args.id)
        _record(log, admin, "revoke", args.id, now, {})
        print(f"revoked {args.id}", file=sys.stderr)
    elif args.action == "create":
        token_id = f"u-{secrets.token_hex(4)}"
        expires = now + args.expires if args.expires else None
        cred = authority.issue(
            token_id, "user", args.role, now=now, team=args.team, name=args.name, expires=expires
        )
        _record(log, admin, "token.create", token_id, now, {"role": args.role, "team": args.team})
        print(cred.to_token())
        print(f"\ntoken {token_id} ({args.role}); use it with --token or $SWARM_TOKEN", file=sys.stderr)
        changed = authority.roster()
    else:
        return _list(authority.roster(), args.json)
    await _publish(changed, admin, config, broker)
    return 0


def _record(
    log: AuditLog, admin: Credential, action: str, target: str, now: float, details: dict[str, Any]
) -> None:
    log.append(
        time=now,
        actor=admin.id,
        role=admin.certificate.role,
        node="cli",
        action=action,
        target=target,
        details=details,
    )


async def _publish(roster: Roster, admin: Credential, config: NodeConfig, broker: Any) -> None:
    """Publish the roster, retained, so every node (and a broker a node runs) takes it."""
    from swarm.codec import encode
    from swarm.runtime.identity import broker_login
    from swarm.runtime.mqtt import Transport, TransportError
    from swarm.trust.signing import Signer

    topic = topics.ROSTER
    client_id = f"{admin.id}.{secrets.token_hex(4)}"
    env = Envelope(1, config.cluster, client_id, 0, f"{client_id}-0", TrustRoster(roster.to_bytes().decode()))
    frame = Signer(admin).seal(topic, encode(env), time.time())
    try:
        url = await broker()
        async with Transport(
            url, config.cluster, client_id, login=broker_login(config, admin), persistent=False
        ) as t:
            await t.publish_and_wait(topic, frame, retain=True)
    except (OSError, SwarmError, TransportError) as exc:  # kept here; it goes out with the next change
        print(
            f"swarm: the change is kept on this machine but could not be published to the cluster ({exc});"
            " nodes on this machine still see it, others once the next change is published",
            file=sys.stderr,
        )


async def _set_quotas(args: argparse.Namespace, config: NodeConfig, broker: Any) -> int:
    authority = Authority.load(config.cluster)
    admin = authority.admin_credential()
    kind, scope = ("team", args.team) if args.team else ("user", args.user)
    if not scope:
        raise ConfigError("say whose quota: --user TOKEN-ID or --team TEAM")
    now = time.time()
    changes: dict[str, float | None] = {}
    for item in args.limits:
        resource, sep, value = item.partition("=")
        if args.action == "set" and not sep:
            raise ConfigError(f"{item!r}: expected RESOURCE=LIMIT, e.g. cores=8")
        try:
            changes[resource] = float(value) if args.action == "set" else None
        except ValueError:
            raise ConfigError(f"{item!r}: the limit must be a number") from None
    kept = [
        q
        for q in authority.roster().quota_list()
        if (q.scope_kind, q.scope) != (kind, scope) or q.resource not in changes
    ]
    expires = now + args.expires if getattr(args, "expires", None) else None
    try:
        added = [
            Quota(r, v, kind, scope, expires)  # type: ignore[arg-type]
            for r, v in changes.items()
            if v is not None
        ]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    quotas = tuple(_quota_json(q) for q in (*kept, *added))
    roster = authority.set_quotas(quotas)
    _record(audit_log(config.cluster), admin, "quota.change", f"{kind}:{scope}", now, {"set": changes})
    print(
        f"quotas of {kind} {scope!r}: " + (", ".join(f"{r}={v}" for r, v in changes.items()) or "unchanged")
    )
    await _publish(roster, admin, config, broker)
    return 0


def _quota_json(q: Quota) -> dict[str, object]:
    return {
        "resource": q.resource,
        "limit": q.limit,
        "scope_kind": q.scope_kind,
        "scope": q.scope,
        "expires_at": q.expires_at,
    }


async def show_quota(client: Any, args: argparse.Namespace) -> int:
    """`swarm quota`: a user's or team's limits and what it uses now (the coordinator's count)."""
    cert = client.credential.certificate
    team, user = getattr(args, "team", None), getattr(args, "user", None)
    kind, scope = ("team", team) if team else ("user", user or cert.id)
    lines = await client.quota(kind, scope)
    print(f"{kind} {scope}")
    print(f"{'RESOURCE':<18}{'LIMIT':>10}{'USED':>10}  EXPIRES")
    for line in lines:
        limit = "-" if line.limit is None else f"{line.limit:g}"
        used = "-" if line.used is None else f"{line.used:g}"
        until = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(line.expires_at)) if line.expires_at else "never"
        )
        print(f"{line.resource:<18}{limit:>10}{used:>10}  {until if line.limit is not None else ''}")
    return 0


def _list(roster: Roster, as_json: bool) -> int:
    revoked = set(roster.revoked)
    rows = [{**p.to_json(), "revoked": p.id in revoked} for p in roster.principals]
    if as_json:
        print(
            orjson.dumps({"serial": roster.serial, "principals": rows}, option=orjson.OPT_INDENT_2).decode()
        )
        return 0
    print(f"{'ID':<12}{'KIND':<6}{'ROLE':<11}{'TEAM':<10}{'NAME':<18}{'EXPIRES':<22}STATE")
    for r in rows:
        expires = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["expires"])) if r["expires"] else "never"
        state = "revoked" if r["revoked"] else "active"
        team, name = r["team"] or "-", r["name"][:17] or "-"
        print(f"{r['id']:<12}{r['kind']:<6}{r['role']:<11}{team:<10}{name:<18}{expires:<22}{state}")
    return 0


def _audit(cluster: str, args: argparse.Namespace) -> int:
    log = audit_log(cluster)
    if args.verify:
        report = log.verify()
        if report.ok:
            print(f"audit log {log.path}: {report.count} records, chain intact")
            return 0
        print(f"audit log {log.path}: BROKEN at line {report.line} (seq {report.bad_seq}): {report.reason}")
        return 1
    for record in log.records():
        data = record.to_json()
        if args.json:
            print(orjson.dumps(data).decode())
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data["time"]))
        who, what, target = data["actor"], data["action"], data["target"]
        print(f"{data['seq']:>5} {when} {who:<12} {what:<14} {target:<14} {data['outcome']}")
    return 0


def _duration(text: str) -> float:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 12h, 30d)")
    return float(match.group(1)) * _UNITS[match.group(2)]
