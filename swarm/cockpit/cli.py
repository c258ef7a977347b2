"""`swarm cockpit`: print (and optionally open) the URL of the cockpit a node serves.

The API URL is found as `swarm dag` finds it (`--api`, `$SWARM_API`, else the first alive member whose
heartbeat names one). The token travels in the URL's fragment (`#token=...`): a browser never sends the
fragment to the server, so it reaches no request line, query string or access log; the page moves it to
its session storage and removes it from the address bar.
"""

from __future__ import annotations

import argparse
import os
import sys
import webbrowser
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from swarm.config import NodeConfig
from swarm.errors import SwarmError
from swarm.workflowcli import FindBroker

__all__ = ["add_cockpit_parser", "cockpit_url", "run_cockpit_command"]


def add_cockpit_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `cockpit` to the `swarm` parser; `common` adds --broker, --token, --cluster, ..."""
    parser: argparse.ArgumentParser = sub.add_parser("cockpit", help="the URL of the web cockpit")
    common(parser)
    parser.add_argument("--api", metavar="URL", help="a node's API (default: $SWARM_API, or discovered)")
    parser.add_argument("--open", action="store_true", help="open it in the default web browser")


def cockpit_url(api_url: str, token: str, run_id: str | None = None) -> str:
    """The cockpit's address on the node at `api_url`, carrying `token` in the fragment, and the run to
    open (`run_id`), if any."""
    run = "" if run_id is None else f"&run={quote(run_id, safe='')}"
    return f"{api_url.rstrip('/')}/#token={quote(token, safe='')}{run}"


async def run_cockpit_command(
    args: argparse.Namespace,
    config: NodeConfig,
    find_broker: FindBroker,
    *,
    open_url: Callable[[str], bool] = webbrowser.open,
) -> int:
    """Print the cockpit URL (and open it with `--open`); the exit status."""
    from swarm.runtime.identity import client_credential
    from swarm.workflowcli import discover_api

    try:
        credential = client_credential(config.cluster, args.token)
        api = args.api or os.environ.get("SWARM_API") or await discover_api(config, credential, find_broker)
    except (SwarmError, TimeoutError, OSError) as exc:
        print(f"swarm: {exc}", file=sys.stderr)
        return 1
    url = cockpit_url(api, credential.to_token())
    print(url)
    if args.open and not open_url(url):
        print("swarm: no web browser could be opened here; open the URL above yourself", file=sys.stderr)
        return 1
    return 0
