"""A real Chromium for the cockpit's tests: Debian's `chromium`, driven by the Python playwright package.

`playwright install` (which downloads a browser build of its own) is never used: the tests launch the
system executable, with software WebGL (SwiftShader), and skip, saying why, when it or the package is
missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

#: Software GL: this machine (and CI) has no GPU.
CHROMIUM_ARGS = [
    "--use-gl=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    "--no-sandbox",
]
VIEWPORT = {"width": 1280, "height": 800}


@dataclass
class Console:
    """What a page said: console errors and uncaught exceptions."""

    errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> Any:
        page.on(
            "console",
            lambda msg: (
                self.errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None
            ),
        )
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        return page


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip(
            "chromium is not installed (apt-get install chromium); the cockpit's browser tests need it"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(
            "the playwright package is not installed (pip install playwright; never `playwright install`)"
        )
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
