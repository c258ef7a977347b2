"""The cockpit ships three.js unmodified: every file its checksum list names is present, as published."""

from __future__ import annotations

import hashlib
from pathlib import Path

import swarm.cockpit

VENDOR = Path(swarm.cockpit.__file__).parent / "static" / "vendor" / "three"


def _listed() -> list[tuple[str, str]]:
    lines = (VENDOR / "CHECKSUMS.sha256").read_text().splitlines()
    return [tuple(line.split(maxsplit=1)) for line in lines if line and not line.startswith("#")]  # type: ignore[misc]


def test_every_vendored_file_is_present_and_unmodified() -> None:
    listed = _listed()
    assert any(path.endswith("three.module.min.js") for _, path in listed)
    for digest, path in listed:
        file = VENDOR / path
        assert file.is_file(), f"{path} is missing from the package (the cockpit cannot start without it)"
        assert hashlib.sha256(file.read_bytes()).hexdigest() == digest, f"{path} differs from three's release"


def test_the_import_map_points_at_vendored_files() -> None:
    """Each import-map target of index.html is a listed file, or a folder holding listed files."""
    listed = {path for _, path in _listed()}
    index = (VENDOR.parent.parent / "index.html").read_text()
    targets = [part.split('"', 1)[0] for part in index.split("./vendor/three/")[1:]]
    assert targets, "the cockpit imports three from somewhere else"
    for target in targets:
        assert target in listed or any(p.startswith(target) for p in listed if target.endswith("/")), target
