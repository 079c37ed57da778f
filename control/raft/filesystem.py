"""The file-system calls :class:`~control.raft.diskstore.DiskStorage` makes, as a seam, and
their real implementation on ``os`` and ``fcntl``.

The durability contract the storage relies on, and that control.raft.faultfs models:

- ``pwrite``, ``ftruncate`` and ``posix_fallocate`` change a file's page cache: the change
  reads back at once, and survives the process being killed, but not a power loss.
- ``fsync`` or ``fdatasync`` of a file makes its data and size durable (this storage never
  relies on other metadata).
- Creating a file and ``replace`` change its directory, durably only once the directory is
  fsynced (``fsync_dir``); until then a power loss may undo them, latest first.
- What a power loss does to a write that was not yet durable: it survives whole, not at
  all, or in part, 512-byte sectors each whole or not at all; a sector that never landed
  keeps its old contents (zeros in fallocated space).
- A failed call raises ``OSError`` with its errno; a failed sync leaves the writes before it
  as undurable as they were.
"""

from __future__ import annotations

import fcntl
import os
from typing import Protocol

_READ_CHUNK = 1 << 20


class FileSystem(Protocol):
    """Exactly the calls DiskStorage makes; paths are strings and files are descriptors."""

    def exists(self, path: str, /) -> bool: ...

    def isdir(self, path: str, /) -> bool: ...

    def access(self, path: str, mode: int, /) -> bool:
        """Whether ``path`` allows ``mode`` (``os.R_OK`` etc.) to this process."""
        ...

    def makedirs(self, path: str, /) -> None: ...

    def open(self, path: str, flags: int, mode: int = 0o644, /) -> int:
        """A descriptor for ``path``, with ``os.open``'s flags (O_RDONLY, O_WRONLY, O_RDWR,
        O_CREAT, O_TRUNC); FileNotFoundError if it is missing and not created."""
        ...

    def close(self, fd: int, /) -> None: ...

    def lock(self, fd: int, /) -> None:
        """Takes an exclusive lock on the file, held until ``fd`` is closed; OSError at once
        if another descriptor holds it."""
        ...

    def size(self, fd: int, /) -> int: ...

    def read_all(self, fd: int, /) -> bytes:
        """The whole file, from its start."""
        ...

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int, /) -> int:
        """Writes a prefix of ``data`` at ``offset``; returns its length."""
        ...

    def fsync(self, fd: int, /) -> None: ...

    def fdatasync(self, fd: int, /) -> None: ...

    def ftruncate(self, fd: int, length: int, /) -> None: ...

    def posix_fallocate(self, fd: int, offset: int, length: int, /) -> None:
        """Allocates zeroed space, extending the file to at least ``offset + length``."""
        ...

    def replace(self, src: str, dst: str, /) -> None:
        """Renames ``src`` over ``dst`` atomically (same directory)."""
        ...

    def fsync_dir(self, path: str, /) -> None:
        """Makes the directory's entries (creations, renames) durable."""
        ...


class OsFiles:
    """The real file system. Each call looks its ``os`` function up when called, so a test
    can wrap one (the module's functions are the seam below this one)."""

    def exists(self, path: str, /) -> bool:
        return os.path.exists(path)

    def isdir(self, path: str, /) -> bool:
        return os.path.isdir(path)

    def access(self, path: str, mode: int, /) -> bool:
        return os.access(path, mode)

    def makedirs(self, path: str, /) -> None:
        os.makedirs(path)

    def open(self, path: str, flags: int, mode: int = 0o644, /) -> int:
        return os.open(path, flags, mode)

    def close(self, fd: int, /) -> None:
        os.close(fd)

    def lock(self, fd: int, /) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def size(self, fd: int, /) -> int:
        return os.fstat(fd).st_size

    def read_all(self, fd: int, /) -> bytes:
        chunks = []
        while chunk := os.read(fd, _READ_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int, /) -> int:
        return os.pwrite(fd, data, offset)

    def fsync(self, fd: int, /) -> None:
        os.fsync(fd)

    def fdatasync(self, fd: int, /) -> None:
        os.fdatasync(fd)

    def ftruncate(self, fd: int, length: int, /) -> None:
        os.ftruncate(fd, length)

    def posix_fallocate(self, fd: int, offset: int, length: int, /) -> None:
        os.posix_fallocate(fd, offset, length)

    def replace(self, src: str, dst: str, /) -> None:
        os.replace(src, dst)

    def fsync_dir(self, path: str, /) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


OS_FILES: FileSystem = OsFiles()
