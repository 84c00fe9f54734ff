"""Content store for file snapshots: one blob per captured regular file.

Runs inside the sidecar process. Blobs live in a root-only directory outside the
protected trees. Copies are streamed: a reflink (``FICLONE``) where the filesystem
supports it, else a sparse-aware ``copy_file_range`` loop; a file is never read whole.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil

#: ``_IOW(0x94, 9, int)`` from <linux/fs.h>: share the extents of another file.
FICLONE = 0x40049409
_CHUNK = 1 << 20
# errnos meaning "this filesystem (pair) cannot reflink", so a copy is the answer.
_NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS}


def copy_fd(src: int, dst: int, size: int) -> int:
    """Copy ``size`` bytes from ``src`` into the empty file ``dst``; return bytes copied.

    Tries a reflink first (no data moves; reported as ``size``), else copies only the data
    segments (``SEEK_DATA``/``SEEK_HOLE``) so sparse files stay sparse and memory stays flat.
    """
    try:
        fcntl.ioctl(dst, FICLONE, src)
        return size
    except OSError as exc:
        if exc.errno not in _NO_REFLINK:
            raise
    copied = 0
    offset = 0
    while offset < size:
        try:
            data = os.lseek(src, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole remains
                break
            raise
        if data >= size:
            break
        hole = min(os.lseek(src, data, os.SEEK_HOLE), size)
        copied += _copy_range(src, dst, data, hole - data)
        offset = hole
    os.ftruncate(dst, size)
    return copied


def _copy_range(src: int, dst: int, offset: int, count: int) -> int:
    """Copy one data segment at the same offset in both files, in the kernel if it can."""
    done = 0
    while done < count:
        want = min(count - done, 1 << 30)
        try:
            n = os.copy_file_range(src, dst, want, offset + done, offset + done)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            n = _pcopy(src, dst, offset + done, want)
        if n == 0:  # the source shrank under us; the caller's ftruncate pads with zeros
            break
        done += n
    return done


def _pcopy(src: int, dst: int, offset: int, count: int) -> int:
    """User-space fallback: bounded pread/pwrite chunks."""
    done = 0
    while done < count:
        buf = os.pread(src, min(_CHUNK, count - done), offset + done)
        if not buf:
            break
        view = memoryview(buf)
        while view:
            w = os.pwrite(dst, view, offset + done)
            view = view[w:]
            done += w
    return done


def same_content(a: int, b: int, size: int) -> bool:
    """Compare two open files chunk by chunk, stopping at the first difference."""
    offset = 0
    while offset < size:
        x = os.pread(a, _CHUNK, offset)
        y = os.pread(b, _CHUNK, offset)
        if x != y:
            return False
        if not x:
            break
        offset += len(x)
    return os.pread(a, 1, size) == os.pread(b, 1, size)


class Store:
    """A directory of blobs, one per captured regular file, named by a counter."""

    def __init__(self, path: str) -> None:
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._next = 0

    def put(self, src_fd: int, size: int) -> tuple[str, int]:
        """Store the content of ``src_fd``; return the blob key and the bytes copied."""
        key = f"{self._next:x}"
        self._next += 1
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        dst = os.open(key, flags, 0o600, dir_fd=self._fd)
        try:
            copied = copy_fd(src_fd, dst, size)
        finally:
            os.close(dst)
        return key, copied

    def open(self, key: str) -> int:
        """Open a blob read-only; the caller closes the descriptor."""
        return os.open(key, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._fd)

    def discard(self) -> None:
        """Delete every blob and the store directory (the store is flat: no deep recursion)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        shutil.rmtree(self.path, ignore_errors=True)
