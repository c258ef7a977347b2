"""The artifact store: immutable versions, verified copies, deterministic packing, safe unpacking."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import stat
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from swarm.errors import InvalidSpec
from swarm.runtime.artifacts import (
    ArtifactConflict,
    ArtifactCorrupt,
    ArtifactError,
    ArtifactMeta,
    ArtifactStore,
    ArtifactUnreachable,
    UnsafeArchive,
    artifact_id,
    pack,
    parse_artifact_ref,
    version_key,
)

SCRIPT = b"print('hello')\n"


def make_tree(root: Path) -> Path:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "main.py").write_text("from sub import x\n")
    (root / "pkg" / "sub" / "x.py").write_text("x = 1\n")
    (root / "pkg" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "pkg" / "run.sh").chmod(0o755)
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"junk")
    (root / "pkg" / ".git").mkdir()
    (root / "pkg" / ".git" / "HEAD").write_text("ref")
    (root / "pkg" / ".env").write_text("SECRET=1")
    return root / "pkg"


def zip_of(entries: Sequence[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are made on purpose
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def put_zip(store: ArtifactStore, data: bytes, version: str = "1.0") -> ArtifactMeta:
    return store.put("job", version, "python", "job.zip", data, 1.0, "alice")


# -- metadata and references


def test_meta_round_trips_through_json_and_names_bad_fields() -> None:
    meta = ArtifactMeta("sales-extractor", "2.1", "jar", "a" * 64, 10, "x.jar", 5.0, "alice")
    assert ArtifactMeta.from_json(meta.to_json()) == meta
    assert meta.to_json()["createdAt"] == 5.0
    assert meta.artifact_id == "sales-extractor-v2.1"
    for field, value, message in [
        ("sha256", "A" * 64, r"artifact\.sha256: expected 64 lowercase hex"),
        ("size", -1, r"artifact\.size"),
        ("size", True, r"artifact\.size"),
        ("kind", "ruby", r"artifact\.kind: expected one of python, shell, jar, mapreduce"),
        ("version", "1.02", r"artifact\.version"),
        ("name", "../etc", r"artifact\.name"),
        ("filename", "a/b.py", r"artifact\.filename"),
        ("filename", ".hidden", r"artifact\.filename"),
        ("createdAt", float("nan"), r"artifact\.createdAt"),
    ]:
        with pytest.raises(ArtifactError, match=message):
            ArtifactMeta.from_json(meta.to_json() | {field: value})
    with pytest.raises(InvalidSpec, match=r"artifact\.extra: unknown field"):
        ArtifactMeta.from_json(meta.to_json() | {"extra": 1})
    with pytest.raises(ArtifactError, match=r"artifact\.createdBy: missing"):
        ArtifactMeta.from_json({k: v for k, v in meta.to_json().items() if k != "createdBy"})
    with pytest.raises(ArtifactError, match="expected an object"):
        ArtifactMeta.from_json([1])


def test_references_and_ids() -> None:
    assert artifact_id("sales-extractor", "2.1") == "sales-extractor-v2.1"
    assert parse_artifact_ref("sales-extractor-v2.1") == ("sales-extractor", "2.1")
    assert parse_artifact_ref("sales-extractor@2.1") == ("sales-extractor", "2.1")
    assert parse_artifact_ref("sales-extractor-v1.0.3-rc.1") == ("sales-extractor", "1.0.3-rc.1")
    assert parse_artifact_ref("sales-extractor") == ("sales-extractor", None)
    assert parse_artifact_ref("my-vm") == ("my-vm", None)  # "-v" not followed by a version
    assert parse_artifact_ref("team@x@3.0") == ("team@x", "3.0")
    for bad in ["", "../x", "a/b-v1.0", "x@1.0/.."]:
        with pytest.raises(ArtifactError, match="artifactId"):
            parse_artifact_ref(bad)
    with pytest.raises(ArtifactError, match="version"):
        artifact_id("x", "latest")


def test_versions_sort_as_semver() -> None:
    ordered = ["draft", "1.2", "1.9.0-alpha", "1.9.0-rc.2", "1.9.0-rc.10", "1.9.0", "1.10.0", "v2.0.0"]
    assert sorted(reversed(ordered), key=version_key) == ordered


# -- packing


def test_pack_is_deterministic_and_skips_caches_and_dotfiles(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    name, first = pack(tree)
    os.utime(tree / "main.py", (1, 1))  # times do not matter
    (tree / "__pycache__" / "other.pyc").write_bytes(b"more junk")
    _, second = pack(tree)
    assert name == "pkg.zip"
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert archive.namelist() == ["main.py", "run.sh", "sub/x.py"]
        assert (archive.getinfo("run.sh").external_attr >> 16) & 0o777 == 0o755
        assert (archive.getinfo("main.py").external_attr >> 16) & 0o777 == 0o644
    (tree / "sub" / "x.py").write_text("x = 2\n")
    assert pack(tree)[1] != first
    assert pack(tree / "main.py") == ("main.py", b"from sub import x\n")


def test_pack_follows_links_inside_the_tree_and_refuses_links_out(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    (tree / "alias.py").symlink_to(tree / "main.py")
    with zipfile.ZipFile(io.BytesIO(pack(tree)[1])) as archive:
        assert archive.read("alias.py") == b"from sub import x\n"
    (tmp_path / "secret").write_text("s")
    (tree / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(ArtifactError, match=r"leak: a symbolic link .* outside"):
        pack(tree)


# -- the store


def test_put_get_list_and_latest(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    for version in ["1.9", "1.10", "1.2.3", "1.10.1-rc.1"]:
        store.put("extract", version, "python", "extract.py", SCRIPT + version.encode(), 1.0, "alice")
    store.put("load", "0.1", "shell", "load.sh", b"echo\n", 2.0, "bob")
    latest = store.get("extract")
    assert latest is not None
    assert latest.version == "1.10.1-rc.1"  # the highest semver, which 1.10.1's pre-release is
    assert store.get("extract", "1.9") is not None
    assert store.get("extract", "3.0") is None
    assert store.get("nothing") is None
    assert [(m.name, m.version) for m in store.list()] == [
        ("extract", "1.2.3"),
        ("extract", "1.9"),
        ("extract", "1.10"),
        ("extract", "1.10.1-rc.1"),
        ("load", "0.1"),
    ]
    meta = store.get("extract", "1.9")
    assert meta is not None
    assert store.blob_path(meta.sha256).read_bytes() == SCRIPT + b"1.9"
    assert meta.sha256 == hashlib.sha256(SCRIPT + b"1.9").hexdigest()
    assert ArtifactStore(tmp_path).get("load") == store.get("load")  # it is all on disk


def test_versions_are_immutable(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    first = store.put("extract", "1.0", "python", "extract.py", SCRIPT, 1.0, "alice")
    again = store.put("extract", "1.0", "python", "extract.py", SCRIPT, 9.0, "mallory")
    assert again == first  # the same bytes again: a no-op keeping the first record
    with pytest.raises(ArtifactConflict, match=r"extract-v1\.0: this version exists with other content"):
        store.put("extract", "1.0", "python", "extract.py", b"print('other')\n", 2.0, "alice")
    assert store.blob_path(first.sha256).read_bytes() == SCRIPT
    assert not store.has_blob(hashlib.sha256(b"print('other')\n").hexdigest())  # nothing kept
    with pytest.raises(ArtifactError, match="version"):
        store.put("extract", "one", "python", "extract.py", SCRIPT, 1.0, "alice")
    with pytest.raises(ArtifactError, match="kind"):
        store.put("extract", "2.0", "cobol", "extract.py", SCRIPT, 1.0, "alice")  # type: ignore[arg-type]
    with pytest.raises(ArtifactError, match="sha256"):
        store.blob_path("../../etc/passwd")


def test_a_copy_from_a_peer_is_checked_before_it_is_kept(tmp_path: Path) -> None:
    source = ArtifactStore(tmp_path / "a")
    meta = source.put("extract", "1.0", "python", "extract.py", SCRIPT, 1.0, "alice")
    replica = ArtifactStore(tmp_path / "b")
    with pytest.raises(ArtifactCorrupt, match="expected sha256"):
        replica.add_blob(meta, SCRIPT.replace(b"hello", b"HELLO"))
    with pytest.raises(ValueError, match="bytes"):  # what a fetcher catches to try the next peer
        replica.add_blob(meta, SCRIPT + b"#")
    assert not replica.has_blob(meta.sha256)
    assert replica.get("extract") is None
    assert list((tmp_path / "b" / "blobs").iterdir()) == []
    replica.add_blob(meta, SCRIPT)
    assert replica.get("extract", "1.0") == meta
    assert replica.has_blob(meta.sha256)


def test_a_copy_names_every_holder_that_failed(tmp_path: Path) -> None:
    meta = ArtifactStore(tmp_path / "a").put("extract", "1.0", "python", "extract.py", SCRIPT, 1.0, "alice")
    replica = ArtifactStore(tmp_path / "b")
    with pytest.raises(ArtifactUnreachable, match="no node holds it"):
        replica.copy_from(meta, [])
    gone = [{"url": f"http://127.0.0.1:9/f/{meta.sha256}", "token": "t" * 32}]
    with pytest.raises(ArtifactUnreachable, match=r"127\.0\.0\.1:9"):
        replica.copy_from(meta, gone)
    assert not replica.has_blob(meta.sha256)


def test_remove_keeps_blobs_another_version_shares(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    one = store.put("extract", "1.0", "python", "extract.py", SCRIPT, 1.0, "alice")
    store.put("extract", "1.1", "python", "extract.py", SCRIPT, 1.0, "alice")
    store.unpacked(one)
    assert store.remove("extract", "1.0")
    assert not store.remove("extract", "1.0")
    assert store.has_blob(one.sha256)
    assert store.remove("extract", "1.1")
    assert not store.has_blob(one.sha256)
    assert list((tmp_path / "unpacked").iterdir()) == []


# -- unpacking


def test_unpacked_single_files_and_trees(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    script = store.put("load", "1.0", "shell", "load.sh", b"#!/bin/sh\necho hi\n", 1.0, "alice")
    directory = store.unpacked(script)
    assert os.listdir(directory) == ["load.sh"]
    assert (directory / "load.sh").stat().st_mode & stat.S_IXUSR
    jar = store.put("calc", "1.0", "jar", "calc.jar", b"PK-not-really", 1.0, "alice")
    assert (store.unpacked(jar) / "calc.jar").read_bytes() == b"PK-not-really"
    filename, data = pack(make_tree(tmp_path))
    tree = store.put("pkg", "1.0", "python", filename, data, 1.0, "alice")
    directory = store.unpacked(tree)
    assert sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")) == [
        "main.py",
        "run.sh",
        "sub",
        "sub/x.py",
    ]
    assert (directory / "run.sh").stat().st_mode & stat.S_IXUSR
    assert store.unpacked(tree) == directory  # made once


def test_the_same_bytes_under_two_file_names_unpack_to_both(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    a = store.put("a", "1.0", "python", "a.py", SCRIPT, 1.0, "alice")
    b = store.put("b", "1.0", "python", "b.py", SCRIPT, 1.0, "alice")
    assert (store.unpacked(a) / "a.py").exists()
    assert (store.unpacked(b) / "b.py").exists()


def test_a_damaged_blob_is_not_unpacked(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    meta = store.put("extract", "1.0", "python", "extract.py", SCRIPT, 1.0, "alice")
    store.blob_path(meta.sha256).write_bytes(SCRIPT.upper())
    with pytest.raises(ArtifactCorrupt, match="does not match"):
        store.unpacked(meta)
    store.blob_path(meta.sha256).unlink()
    with pytest.raises(FileNotFoundError):
        store.unpacked(meta)


def symlink_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("../evil.py", b"x")], "leaves its directory"),
        ([("ok/../../evil.py", b"x")], "leaves its directory"),
        ([("/etc/evil", b"x")], "absolute"),
        ([("C:/evil", b"x")], "absolute"),
        ([("dir\\..\\evil", b"x")], "absolute or non-portable"),
        ([(symlink_entry("link"), b"/etc/passwd")], "symbolic link"),
        ([("a.py", b"1"), ("a.py", b"2")], "appears twice"),
    ],
)
def test_unsafe_archives_are_refused_and_leave_nothing(
    tmp_path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]], message: str
) -> None:
    store = ArtifactStore(tmp_path / "store")
    meta = put_zip(store, zip_of([("fine.py", b"ok"), *entries]))
    with pytest.raises(UnsafeArchive, match=message):
        store.unpacked(meta)
    assert list((tmp_path / "store" / "unpacked").iterdir()) == []
    assert not (tmp_path / "evil.py").exists()


def test_zip_bombs_are_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, max_unpacked_bytes=1 << 20)
    bomb = put_zip(store, zip_of([("zeros", bytes(4 << 20))]))
    assert bomb.size < 64 << 10  # a small archive...
    with pytest.raises(UnsafeArchive, match="bytes once unpacked, more than"):
        store.unpacked(bomb)  # ...refused for what it would become
    many = put_zip(ArtifactStore(tmp_path), zip_of([(f"f{i}", b"") for i in range(10_001)]), "2.0")
    with pytest.raises(UnsafeArchive, match="10001 entries, more than the 10000 allowed"):
        ArtifactStore(tmp_path).unpacked(many)
    assert list((tmp_path / "unpacked").iterdir()) == []


def test_a_zip_that_lies_about_its_sizes_is_refused(tmp_path: Path) -> None:
    data = bytearray(zip_of([("zeros", bytes(1 << 20))]))
    # shrink the declared size in the central directory: the real bytes must still be counted
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    store = ArtifactStore(tmp_path, max_unpacked_bytes=1000)
    meta = put_zip(store, bytes(data))
    with pytest.raises(ArtifactError, match="damaged"):
        store.unpacked(meta)
    assert list((tmp_path / "unpacked").iterdir()) == []


def test_garbage_in_a_zip_file_is_an_error(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(ArtifactError, match="not a zip archive"):
        store.unpacked(put_zip(store, b"not a zip at all"))


def _unpack_in_child(root: str, meta_json: dict[str, object], out: str, start: Any) -> None:
    store = ArtifactStore(Path(root))
    start.wait()  # all children begin together, so that their extractions overlap
    path = store.unpacked(ArtifactMeta.from_json(meta_json))
    Path(out).write_text(str(path))


def test_concurrent_unpacking_from_several_processes_gives_one_good_tree(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    files = [(f"mod{i}/data{j}.txt", os.urandom(2000)) for i in range(20) for j in range(10)]
    meta = put_zip(store, zip_of(files))
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(4)
    children = [
        context.Process(
            target=_unpack_in_child, args=(str(store.root), meta.to_json(), str(tmp_path / f"out{n}"), start)
        )
        for n in range(4)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    paths = {(tmp_path / f"out{n}").read_text() for n in range(4)}
    assert len(paths) == 1
    tree = Path(paths.pop())
    assert os.listdir(store.root / "unpacked") == [tree.name]  # no temporary trees left behind
    for name, data in files:
        assert (tree / name).read_bytes() == data
    assert sum(1 for p in tree.rglob("*") if p.is_file()) == len(files)
