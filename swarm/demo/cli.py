"""`swarm demo sales`'s arguments and defaults, apart from the demo itself.

Every `swarm` command builds all the parsers; the demo's module brings the API client, the local node
and the artifact packer with it, which no other command needs at start.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swarm.demo.salesdag import DEFAULT_RATE

__all__ = ["DEFAULT_ROWS", "DEFAULT_SEED", "DEFAULT_SHARDS", "DEFAULT_TIMEOUT", "add_demo_parser"]

DEFAULT_ROWS = 100_000
DEFAULT_SEED = 2024
DEFAULT_SHARDS = 4
DEFAULT_TIMEOUT = 600.0


def add_demo_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `swarm demo sales` to the `swarm` parser; `common` adds --broker, --token, --cluster, ..."""
    demos = sub.add_parser("demo", help="build and run a demonstration scenario").add_subparsers(
        dest="demo", required=True
    )
    sales = demos.add_parser("sales", help="seed 004's sales analytics pipeline, from nothing")
    common(sales)
    sales.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="orders to generate (default 100000)")
    sales.add_argument("--seed", type=int, default=DEFAULT_SEED, help="which data set (default 2024)")
    sales.add_argument("--shards", type=int, default=DEFAULT_SHARDS, help="shards and maps (default 4)")
    sales.add_argument("--rate", default=DEFAULT_RATE, help=f"USD per CNY (default {DEFAULT_RATE})")
    sales.add_argument(
        "--api", metavar="URL", help="a node's API (default: $SWARM_API, the cluster's, or own)"
    )
    sales.add_argument("--no-jvm", action="store_true", help="run the currency step in Python")
    sales.add_argument("--csv", type=Path, metavar="FILE", help="also write the generated orders here")
    sales.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds for the run")
    sales.add_argument(
        "--cockpit",
        action="store_true",
        help="open the web cockpit on the run (a node the demo started stays up for it until Ctrl-C)",
    )
