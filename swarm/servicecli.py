"""`swarm service install`: a systemd unit that runs `swarm join` with this very interpreter.

A unit written by hand names some `swarm` on the PATH, which for a virtualenv or pyenv install is not
the one that was installed; the generated unit runs `<this python> -m swarm.cli join ...` instead, and
keeps `SWARM_HOME` and the node's data directory explicit. It is printed, or written with `--output`
(for a user unit, `~/.config/systemd/user/swarm.service`), never enabled behind the user's back.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_service_parser", "run_service_command", "systemd_unit"]


def systemd_unit(
    python: str, join_args: list[str], *, user: str | None, swarm_home: str, working_dir: str
) -> str:
    """The text of a unit that runs `python -m swarm.cli join *join_args`."""
    exec_start = shlex.join([python, "-m", "swarm.cli", "join", *join_args])
    lines = [
        "[Unit]",
        "Description=swarm node (swarm join)",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        f"ExecStart={exec_start}",
        # Not the directory a checkout may sit in: see `swarm.runtime.executor_proc.start_fork_server`.
        f"WorkingDirectory={working_dir}",
        f"Environment=SWARM_HOME={swarm_home}",
        "Restart=on-failure",
        "RestartSec=5",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=20",
    ]
    if user:
        lines.append(f"User={user}")
    lines += ["", "[Install]", "WantedBy=" + ("multi-user.target" if user else "default.target"), ""]
    return "\n".join(lines)


def add_service_parser(sub: Any) -> None:
    """Add `swarm service install` to the top-level subparsers."""
    service = sub.add_parser("service", help="run a node as a systemd service")
    actions = service.add_subparsers(dest="action", required=True)
    install = actions.add_parser(
        "install",
        help="print (or write) a systemd unit running `swarm join` with this Python",
        epilog="examples:\n  swarm service install --cluster home > swarm.service\n"
        "  swarm service install --system --output /etc/systemd/system/swarm.service",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    install.add_argument("--cluster", help="the cluster the node joins")
    install.add_argument("--broker", help="a broker URL (default: found over mDNS)")
    install.add_argument("--name", help="the node's name (default: the host name)")
    install.add_argument("--slots", type=int, help="tasks run at once (default: cores)")
    install.add_argument("--system", action="store_true", help="a system unit with User= (else a user unit)")
    install.add_argument("--output", type=Path, help="write the unit here instead of printing it")


def run_service_command(args: argparse.Namespace) -> int:
    """Print or write the unit; never overwrites an existing file."""
    join_args: list[str] = []
    for flag in ("cluster", "broker", "name", "slots"):
        value = getattr(args, flag)
        if value is not None:
            join_args += [f"--{flag}", str(value)]
    home = Path(os.environ.get("SWARM_HOME") or Path.home() / ".swarm")
    unit = systemd_unit(
        sys.executable,
        join_args,
        user=getpass.getuser() if args.system else None,
        swarm_home=str(home),
        working_dir=str(home),
    )
    home.mkdir(parents=True, exist_ok=True)  # the unit's working directory must exist
    if args.output is None:
        print(unit, end="")
        return 0
    if args.output.exists():
        print(f"swarm: {args.output} exists; remove it first or choose another --output", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(unit)
    scope = "" if args.system else " --user"
    print(
        f"wrote {args.output}; enable it with: systemctl{scope} daemon-reload && "
        f"systemctl{scope} enable --now {args.output.name}",
        file=sys.stderr,
    )
    return 0
