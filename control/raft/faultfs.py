"""An in-memory :class:`~control.raft.filesystem.FileSystem` that fails the way a disk does.

Each file has a page cache (what reads see) over a durable medium (what survives a power
loss). Writes, truncations and allocations land in the page cache and are remembered as
unsynced; ``fsync``/``fdatasync`` make the file's contents durable. Creating and renaming
change the directory at once, durably only after ``fsync_dir``. So, as the durability
contract in control.raft.filesystem says:

- :meth:`FaultyFileSystem.kill` is a process dying: descriptors and locks go, the page
  cache stays (and is still not durable).
- :meth:`FaultyFileSystem.crash` is a power loss: each unsynced change survives whole, not
  at all, or (a write) torn, each 512-byte sector of it landing or not on its own; each
  directory keeps a prefix of its unsynced entry changes, as a journal commits in order.
- :meth:`FaultyFileSystem.flip_bit` rots durable data.
- :meth:`FaultyFileSystem.fail_next` makes the next write or sync raise ENOSPC, EIO, ...
- :meth:`FaultyFileSystem.hang_sync` makes a sync not return: it blocks until a
  ``threading.Event`` is set, or, for a single-threaded caller, raises :class:`SyncHung`,
  after which the caller must treat the process as stuck there (and crash or kill it).

Everything random is drawn from the ``rng`` passed to :meth:`crash`, so a run is
reproducible. Paths are plain strings; there is one namespace and no permissions.
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import threading
from dataclasses import dataclass, field

from control.raft.records import SECTOR


class SyncHung(Exception):
    """A sync that will not return; the process is stuck in it."""


@dataclass(slots=True)
class _Write:
    offset: int
    data: bytes


@dataclass(slots=True)
class _Resize:
    size: int


@dataclass(slots=True)
class _Inode:
    serial: int
    cached: bytearray = field(default_factory=bytearray)
    durable: bytes = b""
    unsynced: list[_Write | _Resize] = field(default_factory=list)
    locked_by: int | None = None

    def resize(self, size: int) -> None:
        cached = self.cached
        if size < len(cached):
            del cached[size:]
        else:
            cached.extend(bytes(size - len(cached)))


@dataclass(slots=True)
class _Link:
    path: str
    inode: _Inode


@dataclass(slots=True)
class _Rename:
    src: str
    dst: str


@dataclass(slots=True)
class _Hang:
    after: int
    release: threading.Event | None


class FaultyFileSystem:
    """Implements :class:`~control.raft.filesystem.FileSystem` in memory, with faults."""

    def __init__(self) -> None:
        self._dirs: set[str] = set()
        self._names: dict[str, _Inode] = {}
        self._durable_names: dict[str, _Inode] = {}
        self._unsynced_names: dict[str, list[_Link | _Rename]] = {}
        self._fds: dict[int, _Inode] = {}
        self._next_fd = itertools.count(1000)
        self._serials = itertools.count(1)
        self._dirty: dict[int, _Inode] = {}
        """Files with unsynced changes, by serial, in the order they were first changed."""
        self._failure: tuple[int, bool] | None = None
        self._hang: _Hang | None = None

    # ----------------------------------------------------------------- faults

    def kill(self) -> None:
        """The process dies: its descriptors close and its locks go; the page cache stays."""
        for inode in self._fds.values():
            inode.locked_by = None
        self._fds.clear()
        self._failure = None
        self._hang = None

    def crash(self, rng: random.Random) -> None:
        """Power is lost: what was not durable survives whole, not at all or torn."""
        self.kill()
        for inode in self._dirty.values():
            medium = bytearray(inode.durable)
            for change in inode.unsynced:
                _land(medium, change, rng)
            inode.durable = bytes(medium)
            inode.cached = medium
            inode.unsynced.clear()
        self._dirty.clear()
        for entries in self._unsynced_names.values():
            for entry in entries[: rng.randint(0, len(entries))]:
                _rename_or_link(self._durable_names, entry)
        self._unsynced_names.clear()
        self._names = dict(self._durable_names)

    def flip_bit(self, path: str, offset: int, bit: int) -> None:
        """Flips ``bit`` (0-7) of the durable byte at ``offset`` of ``path``, and of its page
        cache, which a reader would refill from the medium."""
        inode = self._inode_at(path)
        if not 0 <= offset < len(inode.durable) or not 0 <= bit < 8:
            raise ValueError(f"{path}: no durable bit {bit} at byte offset {offset}")
        medium = bytearray(inode.durable)
        medium[offset] ^= 1 << bit
        inode.durable = bytes(medium)
        if offset < len(inode.cached):
            inode.cached[offset] ^= 1 << bit

    def durable_bytes(self, path: str) -> bytes:
        """What a power loss now would leave in the file (its unsynced changes aside)."""
        return self._inode_at(path).durable

    def fail_next(self, error: int, *, on_sync: bool = False) -> None:
        """The next write (pwrite, ftruncate, posix_fallocate), or with ``on_sync`` the next
        sync (fsync, fdatasync, fsync_dir), raises OSError(``error``) and changes nothing."""
        self._failure = (error, on_sync)

    def hang_sync(self, after: int = 0, release: threading.Event | None = None) -> None:
        """The sync ``after`` syncs from now does not return: with ``release`` it blocks
        until that is set and then completes; without, it raises :class:`SyncHung`."""
        self._hang = _Hang(after, release)

    # ----------------------------------------------------------------- FileSystem

    def exists(self, path: str, /) -> bool:
        return path in self._dirs or path in self._names

    def isdir(self, path: str, /) -> bool:
        return path in self._dirs

    def access(self, path: str, mode: int, /) -> bool:
        return self.exists(path)

    def makedirs(self, path: str, /) -> None:
        if self.exists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
        while path and path not in self._dirs:
            self._dirs.add(path)
            path = os.path.dirname(path)

    def open(self, path: str, flags: int, mode: int = 0o644, /) -> int:
        if path in self._dirs:
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        inode = self._names.get(path)
        if inode is None:
            directory = os.path.dirname(path)
            if not flags & os.O_CREAT or directory not in self._dirs:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
            inode = _Inode(next(self._serials))
            self._names[path] = inode
            self._unsynced_names.setdefault(directory, []).append(_Link(path, inode))
        if flags & os.O_TRUNC:
            self._change(inode, _Resize(0))
            inode.resize(0)
        fd = next(self._next_fd)
        self._fds[fd] = inode
        return fd

    def close(self, fd: int, /) -> None:
        inode = self._fds.pop(fd)
        if inode.locked_by == fd:
            inode.locked_by = None

    def lock(self, fd: int, /) -> None:
        inode = self._fds[fd]
        if inode.locked_by not in (None, fd):
            raise BlockingIOError(errno.EWOULDBLOCK, os.strerror(errno.EWOULDBLOCK))
        inode.locked_by = fd

    def size(self, fd: int, /) -> int:
        return len(self._fds[fd].cached)

    def read_all(self, fd: int, /) -> bytes:
        return bytes(self._fds[fd].cached)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int, /) -> int:
        inode = self._fds[fd]
        self._fault(sync=False)
        if offset > len(inode.cached):
            inode.resize(offset)
        inode.cached[offset : offset + len(data)] = data
        self._change(inode, _Write(offset, bytes(data)))
        return len(data)

    def fsync(self, fd: int, /) -> None:
        inode = self._fds[fd]
        self._fault(sync=True)
        inode.durable = bytes(inode.cached)
        inode.unsynced.clear()
        self._dirty.pop(inode.serial, None)

    fdatasync = fsync

    def ftruncate(self, fd: int, length: int, /) -> None:
        inode = self._fds[fd]
        self._fault(sync=False)
        inode.resize(length)
        self._change(inode, _Resize(length))

    def posix_fallocate(self, fd: int, offset: int, length: int, /) -> None:
        inode = self._fds[fd]
        self._fault(sync=False)
        if offset + length > len(inode.cached):
            inode.resize(offset + length)
            self._change(inode, _Resize(offset + length))

    def replace(self, src: str, dst: str, /) -> None:
        directory = os.path.dirname(dst)
        if os.path.dirname(src) != directory:
            raise OSError(errno.EXDEV, "replace across directories is not modelled")
        if src not in self._names:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), src)
        change = _Rename(src, dst)
        _rename_or_link(self._names, change)
        self._unsynced_names.setdefault(directory, []).append(change)

    def fsync_dir(self, path: str, /) -> None:
        if path not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        self._fault(sync=True)
        for change in self._unsynced_names.pop(path, []):
            _rename_or_link(self._durable_names, change)

    # ----------------------------------------------------------------- internals

    def _inode_at(self, path: str) -> _Inode:
        inode = self._names.get(path)
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return inode

    def _change(self, inode: _Inode, change: _Write | _Resize) -> None:
        inode.unsynced.append(change)
        self._dirty.setdefault(inode.serial, inode)

    def _fault(self, sync: bool) -> None:
        """Raises the armed failure, or hangs, if this call is the one they wait for."""
        failure = self._failure
        if failure is not None and failure[1] == sync:
            self._failure = None
            raise OSError(failure[0], os.strerror(failure[0]))
        hang = self._hang
        if not sync or hang is None:
            return
        if hang.after:
            hang.after -= 1
            return
        self._hang = None
        if hang.release is None:
            raise SyncHung
        hang.release.wait()


def _land(medium: bytearray, change: _Write | _Resize, rng: random.Random) -> None:
    """Applies what of an unsynced ``change`` a power loss let reach ``medium``."""
    if isinstance(change, _Resize):
        if rng.random() < 0.5:
            if change.size < len(medium):
                del medium[change.size :]
            else:
                medium.extend(bytes(change.size - len(medium)))
        return
    start, end = change.offset, change.offset + len(change.data)
    cuts = [start, *range((start // SECTOR + 1) * SECTOR, end, SECTOR), end]
    outcome = rng.randrange(3)
    if outcome == 0:
        return
    if outcome == 1 or len(cuts) == 2:
        landed = [True] * (len(cuts) - 1)
    else:  # torn: some sectors land and some do not, in any pattern
        landed = [rng.random() < 0.5 for _ in cuts[1:]]
        if len(set(landed)) == 1:
            odd = rng.randrange(len(landed))
            landed[odd] = not landed[odd]
    for lo, hi, lands in zip(cuts, cuts[1:], landed, strict=False):
        if lands:
            if hi > len(medium):
                medium.extend(bytes(hi - len(medium)))
            medium[lo:hi] = change.data[lo - start : hi - start]


def _rename_or_link(names: dict[str, _Inode], change: _Link | _Rename) -> None:
    if isinstance(change, _Link):
        names[change.path] = change.inode
    elif change.src in names:
        names[change.dst] = names.pop(change.src)
