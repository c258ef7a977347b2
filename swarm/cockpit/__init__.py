"""The cockpit: the browser console every node with an HTTP API serves under `/` (static files only).

`static/` holds plain ES modules, a stylesheet and the vendored three.js files (see
`static/vendor/three/CHECKSUMS.sha256`); there is no build step. The page talks only to the node's JSON API
and its event stream.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["STATIC_DIR"]

#: The directory the node's HTTP application serves as `/`.
STATIC_DIR = Path(__file__).resolve().parent / "static"
