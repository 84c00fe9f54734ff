"""The read-only lower layers of an overlay, seen as one tree (host sidecar process).

``Lowers`` looks paths up with overlay semantics (topmost layer wins, whiteouts and opaque
directories hide lower layers) for the ``docker`` driver's rewind; ``LayerStore`` serves
lower-layer files as blobs, so a deleted image file is restored by copying it from its layer.
Only reads the layers, one ``O_NOFOLLOW`` component at a time.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import replace

from rewind.files.model import Entry, split_path
from rewind.files.store import Store
from rewind.files.walk import DIR_FLAGS, READ_FLAGS, open_below

_LOWER_KEY = "lower:"
OPAQUE_XATTR = "trusted.overlay.opaque"


def is_whiteout(st: os.stat_result) -> bool:
    """An overlay whiteout: a character device with device number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(dir_fd: int) -> bool:
    """Whether an upper/lower directory (open fd) hides the layers below it."""
    try:
        return os.getxattr(dir_fd, OPAQUE_XATTR) == b"y"
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP):
            return False
        raise


class Lowers:
    """The read-only lower layers (top first) seen as one tree, with overlay semantics."""

    def __init__(self, roots: list[str]) -> None:
        self.roots = roots
        self._fds: list[int] = []
        self._contrib: dict[str, list[int]] = {}

    def __enter__(self) -> Lowers:
        try:
            for root in self.roots:
                self._fds.append(os.open(root, DIR_FLAGS))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        self._contrib.clear()

    def _dir(self, layer: int, path: str) -> int | None:
        try:
            return open_below(self._fds[layer], path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None
            raise

    def _lstat(self, layer: int, path: str) -> os.stat_result | None:
        parent, _, name = path.rpartition("/")
        fd = self._dir(layer, parent)
        if fd is None:
            return None
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(fd)

    def _opaque(self, layer: int, path: str) -> bool:
        fd = self._dir(layer, path)
        if fd is None:
            return False
        try:
            return is_opaque(fd)
        finally:
            os.close(fd)

    def contributors(self, path: str) -> list[int]:
        """Layers (top first) whose directory ``path`` shows through in the merged lowers."""
        cached = self._contrib.get(path)
        if cached is not None:
            return cached
        result: list[int] = []
        if not path:
            for layer in range(len(self._fds)):
                result.append(layer)
                if self._opaque(layer, ""):
                    break
        else:
            for layer in self.contributors(split_path(path)[0]):
                st = self._lstat(layer, path)
                if st is None:
                    continue
                if is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                    break  # hides this name in every layer below
                result.append(layer)
                if self._opaque(layer, path):
                    break
        self._contrib[path] = result
        return result

    def lookup(self, path: str) -> tuple[int, os.stat_result] | None:
        """The topmost layer holding ``path`` and its lstat; None when absent or whited out."""
        for layer in self.contributors(split_path(path)[0]):
            st = self._lstat(layer, path)
            if st is None:
                continue
            return None if is_whiteout(st) else (layer, st)
        return None

    def children(self, path: str) -> dict[str, tuple[int, os.stat_result]]:
        """The visible entries of directory ``path`` of the merged lowers."""
        seen: dict[str, tuple[int, os.stat_result] | None] = {}
        for layer in self.contributors(path):
            fd = self._dir(layer, path)
            if fd is None:
                continue
            try:
                with os.scandir(fd) as it:
                    for de in it:
                        if de.name in seen:
                            continue
                        st = de.stat(follow_symlinks=False)
                        seen[de.name] = None if is_whiteout(st) else (layer, st)
            finally:
                os.close(fd)
        return {name: hit for name, hit in seen.items() if hit is not None}

    def entry(self, path: str, layer: int, st: os.stat_result) -> Entry:
        """The record of a lower path; a regular file's blob names the layer file itself."""
        e = Entry.from_stat(path, st)
        if stat.S_ISLNK(st.st_mode):
            parent, _, name = path.rpartition("/")
            fd = self._dir(layer, parent)
            if fd is None:
                raise OSError(errno.ENOENT, f"lower {path!r} vanished")
            try:
                return replace(e, target=os.readlink(name, dir_fd=fd))
            finally:
                os.close(fd)
        if stat.S_ISREG(st.st_mode):
            return replace(e, blob=f"{_LOWER_KEY}{layer}:{path}")
        return e


class LayerStore(Store):
    """The blob store of one container, which also serves lower-layer files as blobs.

    Keys ``lower:<layer>:<path>`` open the file in the (read-only, root-owned) layer dir,
    one ``O_NOFOLLOW`` component at a time; other keys are the store's own blobs.
    """

    def __init__(self, path: str, lower_roots: list[str]) -> None:
        super().__init__(path)
        self.lower_roots = lower_roots

    def open(self, key: str) -> int:
        if not key.startswith(_LOWER_KEY):
            return super().open(key)
        layer, _, path = key[len(_LOWER_KEY) :].partition(":")
        root = os.open(self.lower_roots[int(layer)], DIR_FLAGS)
        try:
            parent, _, name = path.rpartition("/")
            pfd = open_below(root, parent)
        finally:
            os.close(root)
        try:
            fd = os.open(name, READ_FLAGS, dir_fd=pfd)
        finally:
            os.close(pfd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, f"lower {path!r} is not a regular file")
        return fd
