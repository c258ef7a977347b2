"""A content-addressed, versioned store of task artifacts (the code a DAG node runs) on one node's disk.

Theory of operation. An artifact is a name, a version and one blob of bytes: a single file (`.py`, `.sh`,
`.jar`) or a deterministic zip of a directory (`pack`). Blobs are kept once per SHA-256 under
`blobs/<sha256>`, metadata under `meta/<name>/<version>.json`, and the ready-to-run form of a blob under
`unpacked/`. Versions are immutable: a name+version published once always means the same bytes, so any
node holding a copy can serve it to a peer, and a receiver checks the hash before keeping it (`add_blob`).

Every file appears whole or not at all (temporary name, fsync, rename); a version's metadata is published
with a hard link, which fails if the name exists, so two writers racing on one version cannot both win.
Unpacking extracts into a private temporary directory and renames it into place: the first process to
rename wins and the others throw their copy away, so several processes may unpack at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args

import orjson

from swarm.durable import AtomicFile, fsync_directory
from swarm.errors import InvalidSpec
from swarm.ids import is_id
from swarm.runtime.datafetch import FetchError, fetch

__all__ = [
    "MAX_UNPACKED_BYTES",
    "MAX_ZIP_ENTRIES",
    "ArtifactConflict",
    "ArtifactCorrupt",
    "ArtifactError",
    "ArtifactKind",
    "ArtifactMeta",
    "ArtifactStore",
    "ArtifactUnreachable",
    "UnsafeArchive",
    "artifact_id",
    "check_version",
    "pack",
    "parse_artifact_ref",
    "version_key",
]

ArtifactKind = Literal["python", "shell", "jar", "mapreduce"]
KINDS: tuple[str, ...] = get_args(ArtifactKind)
#: Zip-bomb guards: what an archive may declare before a single byte of it is extracted.
MAX_ZIP_ENTRIES = 10_000
MAX_UNPACKED_BYTES = 1 << 30
#: The zip timestamp every packed entry carries, so that the same tree gives the same bytes on any day.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

# MAJOR.MINOR[.PATCH][-prerelease]; no leading zeros, so that each version has one spelling.
_NUM = r"(?:0|[1-9][0-9]{0,8})"
VERSION_PATTERN = re.compile(rf"({_NUM})\.({_NUM})(?:\.({_NUM}))?(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?")
_REF_WITH_V = re.compile(r"(?P<name>.+)-v(?P<version>[0-9][0-9A-Za-z.-]*)")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_VERSION_LENGTH = 64
_MAX_FILENAME_LENGTH = 200
_COPY_CHUNK = 1 << 20


class ArtifactError(InvalidSpec, ValueError):
    """An artifact name, version, metadata record or archive is invalid. Also a ValueError, so that a
    fetcher trying one peer after another (`except ValueError`) moves on from a corrupt copy."""


class ArtifactConflict(ArtifactError):
    """A name+version already exists with other content: versions are immutable."""


class ArtifactCorrupt(ArtifactError):
    """Bytes do not match the size or SHA-256 their metadata promises."""


class ArtifactUnreachable(ArtifactError):
    """No holder served an artifact's blob intact; the message gives each one's reason."""


class UnsafeArchive(ArtifactError):
    """A zip would write outside its directory, holds links, or is too large once unpacked."""


def check_version(version: object, path: str = "version") -> str:
    """Return `version` if it is MAJOR.MINOR[.PATCH][-prerelease]; raise ArtifactError naming `path`."""
    if not isinstance(version, str):
        raise ArtifactError(f"{path}: expected a version string like 2.1 or 1.0.3-rc1, got {version!r}")
    if len(version) > _MAX_VERSION_LENGTH or VERSION_PATTERN.fullmatch(version) is None:
        raise ArtifactError(
            f"{path}: expected a version like 2.1 or 1.0.3-rc1 (MAJOR.MINOR[.PATCH][-prerelease], no leading"
            f" zeros), got {version!r}"
        )
    return version


def _check_name(name: object, path: str = "name") -> str:
    if not isinstance(name, str) or not is_id(name):
        raise ArtifactError(
            f"{path}: expected an artifact name of letters, digits and _ . : = @ - (at most 200),"
            f" got {name!r}"
        )
    return name


def version_key(version: str) -> tuple[Any, ...]:
    """A sort key ordering versions as semver does: 1.10.0 > 1.9.0 > 1.9.0-rc.10 > 1.9.0-rc.2 > 1.9.0-a.

    Any string is accepted (DAG versions are not validated as strictly as artifact versions): a leading
    "v" is ignored, and text that is not a version sorts below every version, by its characters. Two
    spellings of one version ("2.1", "2.1.0") tie on the version and are ordered by their text.
    """
    text = version[1:] if version[:1] in ("v", "V") else version
    match = VERSION_PATTERN.fullmatch(text)
    if match is None:
        return (0, version)
    major, minor, patch, pre = match.groups()
    release: tuple[Any, ...] = (1,) if pre is None else (0, *(_pre_key(part) for part in pre.split(".")))
    return (1, (int(major), int(minor), int(patch or 0)), release, version)


def _pre_key(part: str) -> tuple[int, int, str]:
    # semver: numeric identifiers sort numerically and below alphanumeric ones
    return (0, int(part), "") if part.isdigit() else (1, 0, part)


def artifact_id(name: str, version: str) -> str:
    """The seed's artifact id: `artifact_id("sales-extractor", "2.1") == "sales-extractor-v2.1"`."""
    return f"{_check_name(name)}-v{check_version(version)}"


def parse_artifact_ref(ref: str) -> tuple[str, str | None]:
    """Split an artifact reference into (name, version or None for the latest).

    Accepts "name-v2.1" (the seed's ids), "name@2.1", and a bare "name". The "-v<version>" form is
    recognised only when what follows "-v" is a valid version, so "my-vm" stays a name.
    """
    if not isinstance(ref, str) or not ref:
        raise ArtifactError(f"artifactId: expected a reference like sales-extractor-v2.1, got {ref!r}")
    name, at, version = ref.rpartition("@")
    if at and VERSION_PATTERN.fullmatch(version):
        return _check_name(name, "artifactId"), version
    match = _REF_WITH_V.fullmatch(ref)
    if match is not None and VERSION_PATTERN.fullmatch(match["version"]):
        return _check_name(match["name"], "artifactId"), match["version"]
    return _check_name(ref, "artifactId"), None


def _check_filename(filename: object, path: str = "filename") -> str:
    ok = (
        isinstance(filename, str)
        and 0 < len(filename) <= _MAX_FILENAME_LENGTH
        and not filename.startswith(".")
        and not any(c in filename for c in "/\\")
        and all(c.isprintable() for c in filename)
    )
    if not ok:
        raise ArtifactError(
            f"{path}: expected a plain file name (no directories, not hidden), got {filename!r}"
        )
    assert isinstance(filename, str)
    return filename


@dataclass(frozen=True, slots=True)
class ArtifactMeta:
    """What a version of an artifact is: its name, version, kind, and the size and hash of its blob."""

    name: str
    version: str
    kind: ArtifactKind
    sha256: str
    size: int
    filename: str
    created_at: float
    created_by: str

    @property
    def artifact_id(self) -> str:
        """The seed's id for this version, e.g. "sales-extractor-v2.1"."""
        return f"{self.name}-v{self.version}"

    def to_json(self) -> dict[str, Any]:
        """The wire form (camelCase)."""
        return {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "sha256": self.sha256,
            "size": self.size,
            "filename": self.filename,
            "createdAt": self.created_at,
            "createdBy": self.created_by,
        }

    @classmethod
    def from_json(cls, data: object, path: str = "artifact") -> ArtifactMeta:
        """Validate and build from the wire form; errors name the field, e.g. `artifact.sha256`."""
        if not isinstance(data, dict):
            raise ArtifactError(f"{path}: expected an object, got {type(data).__name__}")
        known = {"name", "version", "kind", "sha256", "size", "filename", "createdAt", "createdBy"}
        for key in data:
            if key not in known:
                raise ArtifactError(f"{path}.{key}: unknown field")
        for key in sorted(known - data.keys()):
            raise ArtifactError(f"{path}.{key}: missing")
        kind, sha, size = data["kind"], data["sha256"], data["size"]
        created_at, created_by = data["createdAt"], data["createdBy"]
        if kind not in KINDS:
            raise ArtifactError(f"{path}.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        if not isinstance(sha, str) or _SHA256.fullmatch(sha) is None:
            raise ArtifactError(f"{path}.sha256: expected 64 lowercase hex digits, got {sha!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ArtifactError(f"{path}.size: expected a byte count (an integer >= 0), got {size!r}")
        if (
            not isinstance(created_at, int | float)
            or isinstance(created_at, bool)
            or not math.isfinite(created_at)
        ):
            raise ArtifactError(f"{path}.createdAt: expected a timestamp in seconds, got {created_at!r}")
        if not isinstance(created_by, str) or len(created_by) > 200:
            raise ArtifactError(f"{path}.createdBy: expected a principal name (a string), got {created_by!r}")
        return cls(
            name=_check_name(data["name"], f"{path}.name"),
            version=check_version(data["version"], f"{path}.version"),
            kind=kind,
            sha256=sha,
            size=size,
            filename=_check_filename(data["filename"], f"{path}.filename"),
            created_at=float(created_at),
            created_by=created_by,
        )


def pack(path: Path) -> tuple[str, bytes]:
    """A file as (its name, its bytes); a directory as (name + ".zip", a deterministic zip of it).

    The zip depends on the tree alone, so the same tree gives the same hash: entries sorted, timestamps
    fixed, permissions reduced to "executable or not". `__pycache__` and dotfiles are left out, and so are
    empty directories. A symbolic link to a file inside the directory is stored as that file; one to a
    directory is skipped (its target is packed where it lives); one leading outside raises ArtifactError.
    """
    path = Path(path)
    if not path.is_dir():
        return path.name, path.read_bytes()
    root = path.resolve()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for arcname, source in _packable(root):
            info = zipfile.ZipInfo(arcname, date_time=ZIP_EPOCH)
            info.create_system = 3  # unix, so the mode bits below are read back the same everywhere
            executable = os.stat(source).st_mode & stat.S_IXUSR
            info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, source.read_bytes(), compresslevel=6)
    return f"{path.name}.zip", buffer.getvalue()


def _packable(root: Path) -> Iterator[tuple[str, Path]]:
    """(archive name, file) for every file `pack` keeps, in archive-name order."""
    found: list[tuple[str, Path]] = []
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
        for filename in filenames:
            if filename.startswith("."):
                continue
            source = Path(directory, filename)
            relative = source.relative_to(root).as_posix()
            if source.is_symlink():
                target = source.resolve()
                if not target.is_relative_to(root):
                    raise ArtifactError(
                        f"{relative}: a symbolic link to {target}, outside the packed directory"
                    )
                if not target.is_file():
                    continue
            found.append((relative, source))
    found.sort(key=lambda item: item[0])
    yield from found


class ArtifactStore:
    """Artifacts of one node: blobs by SHA-256, metadata by name and version, unpacked trees by blob."""

    def __init__(
        self, root: Path, *, max_entries: int = MAX_ZIP_ENTRIES, max_unpacked_bytes: int = MAX_UNPACKED_BYTES
    ) -> None:
        self.root = Path(root)
        self.max_entries = max_entries
        self.max_unpacked_bytes = max_unpacked_bytes
        for sub in ("blobs", "meta", "unpacked"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # -- blobs

    def blob_path(self, sha256: str) -> Path:
        """Where the blob of `sha256` lives (whether or not it is there)."""
        if not isinstance(sha256, str) or _SHA256.fullmatch(sha256) is None:
            raise ArtifactError(f"sha256: expected 64 lowercase hex digits, got {sha256!r}")
        return self.root / "blobs" / sha256

    def has_blob(self, sha256: str) -> bool:
        """Whether this node holds the blob of `sha256`."""
        return self.blob_path(sha256).is_file()

    def _write_blob(self, sha256: str, data: bytes) -> None:
        dest = self.blob_path(sha256)
        if dest.is_file():
            return  # content-addressed: what is there is what we would write
        # through the page cache: the blob is usually unpacked (read back) right after
        with AtomicFile(dest, direct=False, checksummed=False) as out:
            out.write(data)
            out.commit()

    # -- metadata

    def _meta_path(self, name: str, version: str) -> Path:
        return self.root / "meta" / _check_name(name) / f"{check_version(version)}.json"

    def _read_meta(self, file: Path) -> ArtifactMeta:
        try:
            data = orjson.loads(file.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ArtifactError(f"{file.name}: unreadable artifact metadata: {exc}") from exc
        return ArtifactMeta.from_json(data, f"meta/{file.parent.name}/{file.name}")

    def _publish_meta(self, meta: ArtifactMeta) -> ArtifactMeta:
        """Write `meta` unless its version exists: then return the existing one if it has the same content
        and raise ArtifactConflict if not."""
        dest = self._meta_path(meta.name, meta.version)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            fd, temp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(orjson.dumps(meta.to_json()))
                    out.flush()
                    os.fsync(out.fileno())
                with contextlib.suppress(FileExistsError):  # a racing writer got there first
                    os.link(temp, dest)
                    fsync_directory(dest.parent)
            finally:
                os.unlink(temp)
        existing = self._read_meta(dest)
        if (existing.sha256, existing.size) != (meta.sha256, meta.size):
            raise ArtifactConflict(
                f"{meta.artifact_id}: this version exists with other content"
                f" (sha256 {existing.sha256[:12]}..., not {meta.sha256[:12]}...);"
                " versions are immutable, publish a new version"
            )
        return existing

    # -- public operations

    def put(
        self,
        name: str,
        version: str,
        kind: ArtifactKind,
        filename: str,
        data: bytes,
        created_at: float,
        created_by: str,
    ) -> ArtifactMeta:
        """Publish `data` as name+version. Publishing the same bytes again is a no-op that returns the
        existing record; other bytes under an existing version raise ArtifactConflict."""
        meta = ArtifactMeta.from_json(
            {
                "name": name,
                "version": version,
                "kind": kind,
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "filename": filename,
                "createdAt": created_at,
                "createdBy": created_by,
            }
        )
        existing = self.get(name, version)
        if existing is not None and existing.sha256 != meta.sha256:
            self._publish_meta(meta)  # raises ArtifactConflict, before any byte is written
        self._write_blob(
            meta.sha256, data
        )  # a no-op when present; restores a blob lost from under its record
        return self._publish_meta(meta)

    def add_blob(self, meta: ArtifactMeta, data: bytes) -> None:
        """Keep a copy of `meta`'s blob fetched from a peer, after checking its size and hash; on a
        mismatch raise ArtifactCorrupt and keep nothing."""
        if len(data) != meta.size:
            raise ArtifactCorrupt(f"{meta.artifact_id}: expected {meta.size} bytes, got {len(data)}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != meta.sha256:
            raise ArtifactCorrupt(
                f"{meta.artifact_id}: expected sha256 {meta.sha256}, the bytes have {digest}"
            )
        self._write_blob(meta.sha256, data)
        self._publish_meta(meta)

    def copy_from(self, meta: ArtifactMeta, sources: Iterable[Mapping[str, str]]) -> None:
        """Fetch `meta`'s blob from the first holder (`{url, token}`) that serves it intact and keep it;
        ArtifactUnreachable with every holder's reason when none did."""
        errors = []
        for source in sources:
            try:
                self.add_blob(meta, fetch(source["url"], token=source["token"], retries=1, timeout=30.0))
                return
            except (FetchError, ValueError, OSError) as exc:
                errors.append(f"{source['url']}: {exc}")
        raise ArtifactUnreachable("; ".join(errors) or "no node holds it")

    def get(self, name: str, version: str | None = None) -> ArtifactMeta | None:
        """The record of name+version, or of the name's highest version when `version` is None."""
        if version is not None:
            file = self._meta_path(name, version)
            return self._read_meta(file) if file.is_file() else None
        directory = self.root / "meta" / _check_name(name)
        versions = [f.name[: -len(".json")] for f in _meta_files(directory)]
        if not versions:
            return None
        return self._read_meta(directory / f"{max(versions, key=version_key)}.json")

    def list(self) -> list[ArtifactMeta]:
        """Every record, by name, then by version (lowest first)."""
        metas = [
            self._read_meta(file)
            for directory in sorted((self.root / "meta").iterdir())
            if directory.is_dir() and not directory.name.startswith(".")
            for file in _meta_files(directory)
        ]
        metas.sort(key=lambda m: (m.name, version_key(m.version)))
        return metas

    def remove(self, name: str, version: str) -> bool:
        """Forget name+version; its blob and unpacked trees go too unless another version shares them.
        Return whether the version existed."""
        meta = self.get(name, version)
        if meta is None:
            return False
        file = self._meta_path(name, version)
        file.unlink(missing_ok=True)
        fsync_directory(file.parent)
        if not any(other.sha256 == meta.sha256 for other in self.list()):
            self.blob_path(meta.sha256).unlink(missing_ok=True)
            for tree in (self.root / "unpacked").glob(f"{meta.sha256}*"):
                shutil.rmtree(tree, ignore_errors=True)
        return True

    def unpacked(self, meta: ArtifactMeta) -> Path:
        """A directory holding the artifact ready to use, made once per blob.

        A `.zip` is extracted (refusing absolute paths, "..", links, duplicate names, more than
        `max_entries` entries or more than `max_unpacked_bytes` in all); any other file (`.py`, `.sh`,
        `.jar`) is copied in under its file name. The tree is `unpacked/<sha256>` for a zip and
        `unpacked/<sha256>-<filename>` for a single file, since the same bytes may be published under two
        file names.
        """
        is_zip = meta.filename.lower().endswith(".zip")
        dest = self.root / "unpacked" / (meta.sha256 if is_zip else f"{meta.sha256}-{meta.filename}")
        if dest.is_dir():
            return dest
        blob = self.blob_path(meta.sha256)
        if not blob.is_file():
            raise FileNotFoundError(f"{meta.artifact_id}: blob {meta.sha256} is not on this node")
        data = blob.read_bytes()
        if len(data) != meta.size or hashlib.sha256(data).hexdigest() != meta.sha256:
            raise ArtifactCorrupt(f"{meta.artifact_id}: the stored blob does not match its sha256")
        temp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
        try:
            if is_zip:
                self._extract(data, temp, meta.artifact_id)
            else:
                target = temp / meta.filename
                target.write_bytes(data)
                target.chmod(0o755 if meta.filename.endswith(".sh") else 0o644)
            temp.chmod(0o755)  # mkdtemp's 0700 would hide the tree from a sandboxed task's user
            try:
                os.rename(temp, dest)
            except OSError:
                if not dest.is_dir():  # not another process's finished tree: a real failure
                    raise
            else:
                fsync_directory(dest.parent)
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)
        return dest

    def _extract(self, data: bytes, into: Path, what: str) -> None:
        """Extract a zip after checking every entry, counting bytes as they come out (sizes a zip declares
        may lie)."""
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as exc:
            raise ArtifactError(f"{what}: not a zip archive: {exc}") from exc
        with archive:
            entries = archive.infolist()
            if len(entries) > self.max_entries:
                raise UnsafeArchive(
                    f"{what}: {len(entries)} entries, more than the {self.max_entries} allowed"
                )
            declared = sum(info.file_size for info in entries)
            if declared > self.max_unpacked_bytes:
                raise UnsafeArchive(
                    f"{what}: {declared} bytes once unpacked, more than the {self.max_unpacked_bytes} allowed"
                )
            for info in entries:
                _safe_parts(info, what)  # every entry checked before anything is written
            seen: set[str] = set()
            budget = self.max_unpacked_bytes
            for info in entries:
                parts = _safe_parts(info, what)
                key = "/".join(parts)
                if key in seen:
                    raise UnsafeArchive(f"{what}: entry {info.filename!r} appears twice")
                seen.add(key)
                target = into.joinpath(*parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    budget = _copy_out(archive, info, target, budget, what)
                except zipfile.BadZipFile as exc:
                    raise ArtifactError(f"{what}: entry {info.filename!r} is damaged: {exc}") from exc


def _safe_parts(info: zipfile.ZipInfo, what: str) -> tuple[str, ...]:
    """The path components of a zip entry, refusing anything that could land outside the tree."""
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UnsafeArchive(f"{what}: entry {name!r} is a symbolic link")
    if "\\" in name or "\0" in name or name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise UnsafeArchive(f"{what}: entry {name!r} has an absolute or non-portable path")
    parts = PurePosixPath(name).parts
    if not parts or any(part in ("..", ".") for part in parts):
        raise UnsafeArchive(f"{what}: entry {name!r} leaves its directory")
    return parts


def _copy_out(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int, what: str) -> int:
    """Write one entry to `target` and return what is left of the byte budget."""
    executable = (info.external_attr >> 16) & 0o111
    with archive.open(info) as source, open(target, "xb") as out:
        while chunk := source.read(_COPY_CHUNK):
            budget -= len(chunk)
            if budget < 0:
                raise UnsafeArchive(f"{what}: more bytes once unpacked than the archive declares or allows")
            out.write(chunk)
    target.chmod(0o755 if executable else 0o644)
    return budget


def _meta_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return [f for f in directory.iterdir() if f.name.endswith(".json") and not f.name.startswith(".")]
