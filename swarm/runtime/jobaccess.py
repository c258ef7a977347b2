"""Who may read a job's data on a node: where the data lives, and the capability tokens that open it.

All data belongs to a job, and every data server request must present that job's capability token: a
random secret the submitter makes when it plans the job and hands to the job's tasks inside their
(signed) payloads. A node keeps job `j`'s data in `<root>/mr/<j>/` and learns the job's token from the
file `.capability` there, which the task that writes the job's data leaves first (`register_capability`),
so a restarted node still serves it. The file is trusted only while nobody else on the machine could have
added to it. It holds the token's SHA-256 digest (`token_digest`), never the token: the tasks of every
job on a node run as one user, so a task of one job can read another job's file, and what it reads there
must not open that job's data on other nodes or at its submitter (a token is a long random secret, so
its unsalted digest gives nothing away). `Capabilities` is the table a data server checks tokens
against; it compares digests in constant time. Apart from the server because tasks and step plugins
need the layout and `register_capability` too, and have no use for the server itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from swarm.durable import write_all
from swarm.runtime.httpwire import is_name, is_token

__all__ = [
    "CAPABILITY_FILE",
    "JOBS_DIR",
    "MAX_TOKENS_PER_JOB",
    "Capabilities",
    "job_data_name",
    "read_capability_file",
    "register_capability",
    "token_digest",
]

#: On a node, job `j`'s data lives in `<root>/mr/j/` (where map tasks leave their runs).
JOBS_DIR = "mr"
#: The file in a job's directory that lists the digests of the tokens its data is served to, one a line.
CAPABILITY_FILE = ".capability"
#: Tokens kept per job (the newest): a job id resubmitted after its submitter died gets a new token.
MAX_TOKENS_PER_JOB = 8

_FileKey = tuple[int, int, int, int]
_DIGEST = re.compile(r"[0-9a-f]{64}")


def token_digest(token: str) -> str:
    """What a `.capability` file and a `Capabilities` table keep of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def job_data_name(job_id: str) -> str:
    """The directory name of a job's data under `mr/`: the id itself when it is a servable name, else
    the id with every other character made `-` and a hash of the id appended (a workflow run's id holds
    `@`, which a served path may not)."""
    if is_name(job_id):
        return job_id
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '-', job_id).lstrip('.')[:80]}-{digest}"


def register_capability(job_dir: Path, token: str) -> Path:
    """Let the node's data server serve the job data in `job_dir` (`<data>/mr/<job id>`) to `token`.

    Called by a task before it writes the job's data there. The token's digest goes into
    `job_dir/.capability`, mode 0600, appended (one short write with O_APPEND, so tasks of the job
    registering at once on one node never tear the file) unless already there. Returns the file's path.
    """
    if not is_token(token):
        raise ValueError("not a capability token")
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / CAPABILITY_FILE
    digest = token_digest(token)
    if digest in read_capability_file(path):
        return path
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # a file left wider by hand would let other users add tokens
        write_all(fd, memoryview(f"{digest}\n".encode("ascii")))
    finally:
        os.close(fd)
    return path


def read_capability_file(path: Path) -> frozenset[str]:
    """The token digests a `.capability` file lists (its newest `MAX_TOKENS_PER_JOB`); none if it is
    missing, malformed, a symlink, or has any group or other permission (then others on the machine could
    have added to it). Its owner is not checked: where the node runs task code as another user, that user
    writes it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return frozenset()
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > 64 * 1024 or not _private(info):
            return frozenset()
        text = os.read(fd, 64 * 1024).decode("ascii", "replace")
    except OSError:
        return frozenset()
    finally:
        os.close(fd)
    digests = [line for line in text.split("\n") if _DIGEST.fullmatch(line)]
    return frozenset(digests[-MAX_TOKENS_PER_JOB:])


def _private(info: os.stat_result) -> bool:
    if os.name != "posix":  # no POSIX modes to check
        return True
    return info.st_mode & 0o077 == 0


class Capabilities:
    """Which tokens a data server accepts, per job: granted in memory (`grant`), and, with `jobs_dir`,
    listed in `<jobs_dir>/<job id>/.capability` (`register_capability`), re-read whenever that file
    changes. Each check costs a `stat` and a hash, no more, and compares digests in constant time."""

    def __init__(
        self, jobs_dir: Path | None = None, grants: Mapping[str, str | Iterable[str]] | None = None
    ) -> None:
        self._jobs_dir = jobs_dir
        self._granted: dict[str, set[str]] = {}
        self._files: dict[str, tuple[_FileKey, frozenset[str]]] = {}
        for job_id, tokens in (grants or {}).items():
            for token in [tokens] if isinstance(tokens, str) else tokens:
                self.grant(job_id, token)

    def grant(self, job_id: str, token: str) -> None:
        """Accept `token` for `job_id`'s data from now on."""
        if not is_name(job_id):
            raise ValueError(f"bad job id {job_id[:40]!r}")
        if not is_token(token):
            raise ValueError("not a capability token")
        self._granted.setdefault(job_id, set()).add(token_digest(token))

    def revoke(self, job_id: str) -> None:
        """Accept no token for `job_id` any more (save what its `.capability` file still lists)."""
        self._granted.pop(job_id, None)
        self._files.pop(job_id, None)

    def accepts(self, job_id: str, token: str) -> bool:
        """Whether `token` opens `job_id`'s data."""
        if not is_name(job_id) or not is_token(token):
            return False
        known = self._granted.get(job_id, set()) | self._from_file(job_id)
        digest = token_digest(token)
        # Every known digest is compared, so the time taken says nothing about which matched.
        return sum(hmac.compare_digest(candidate, digest) for candidate in known) > 0

    def _from_file(self, job_id: str) -> frozenset[str]:
        if self._jobs_dir is None:
            return frozenset()
        path = self._jobs_dir / job_id / CAPABILITY_FILE
        try:
            info = os.stat(path, follow_symlinks=False)
        except OSError:
            self._files.pop(job_id, None)  # the job's data was dropped: forget its tokens too
            return frozenset()
        key = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)  # ctime: a chmod counts
        cached = self._files.get(job_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        digests = read_capability_file(path)
        self._files[job_id] = (key, digests)
        return digests
