"""Open a path beneath a directory without following a symbolic link at any component.

A path checked once and then reopened by name can be swapped in between (a directory on the way
replaced by a link to anywhere). Opening beneath a directory descriptor closes that race: with
`openat2` and `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` where the kernel has it (Linux 5.6), else one
`openat` per component with `O_NOFOLLOW` (and `O_DIRECTORY` on the way). Used by `file_operation` (task
code's file access) and by the data server (which serves files task code wrote).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
import sys

__all__ = ["CLOEXEC", "DIRECTORY", "DIR_FLAGS", "NOFOLLOW", "NONBLOCK", "open_beneath", "open_dir_nofollow"]

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
DIRECTORY = getattr(os, "O_DIRECTORY", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)
DIR_FLAGS = os.O_RDONLY | DIRECTORY | NOFOLLOW | CLOEXEC
# openat2 came after the syscall tables were unified, so it has one number on every Linux architecture
# these devices use.
_OPENAT2_NR = 437
_OPENAT2_MACHINES = frozenset({"x86_64", "aarch64", "arm64", "armv7l", "armv8l", "i686", "riscv64"})
_RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH = 0x02, 0x04, 0x08
_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EPERM, errno.EOPNOTSUPP})  # EPERM: a seccomp filter


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _openat2(dir_fd: int, path: str, flags: int, mode: int) -> int | None:
    """openat2 confined beneath `dir_fd` with no links followed; None where this kernel lacks it."""
    if not sys.platform.startswith("linux") or platform.machine() not in _OPENAT2_MACHINES:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    mode = mode if flags & os.O_CREAT else 0  # openat2, unlike openat, refuses a mode it would not use
    how = _OpenHow(flags, mode, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
    fd = int(
        libc.syscall(
            ctypes.c_long(_OPENAT2_NR),
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(os.fsencode(path)),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
    )
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return None
    raise OSError(err, f"{os.strerror(err)}: {path!r}")


def _walk(dir_fd: int, parts: list[str], flags: int, mode: int) -> int:
    """One openat per component, never following a link: what `openat2` does, for older kernels."""
    fd = os.dup(dir_fd)
    try:
        for part in parts[:-1]:
            nxt = open_dir_nofollow(part, fd)
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], flags | NOFOLLOW | CLOEXEC, mode, dir_fd=fd)
    finally:
        os.close(fd)


def open_dir_nofollow(name: str, dir_fd: int) -> int:
    """One directory below `dir_fd`; a link there fails with ELOOP, as openat2 reports it."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except NotADirectoryError:  # O_DIRECTORY | O_NOFOLLOW on a link says ENOTDIR: tell the two apart
        if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), name) from None
        raise


def open_beneath(dir_fd: int, parts: list[str], flags: int, mode: int = 0o644) -> int:
    """Open `parts` (plain names, see `split_beneath`) below the directory `dir_fd`; no link is followed.

    An empty `parts` opens `dir_fd`'s directory itself.
    """
    if not parts:
        return os.open(".", flags | CLOEXEC, dir_fd=dir_fd)
    fd = _openat2(dir_fd, "/".join(parts), flags | NOFOLLOW | CLOEXEC, mode)
    return _walk(dir_fd, parts, flags, mode) if fd is None else fd
