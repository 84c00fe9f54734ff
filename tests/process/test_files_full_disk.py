"""File rewind on a full file system: restoring a file that grew needs no free space
beyond the checkpoint's own size (a real size-limited tmpfs; needs root, as CI runs)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rewind.files.snapshot import capture, rewind

SIZE = 1024 * 1024


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(path: Path) -> None:
    """Grow ``path`` until the file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"s" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_file_grown_until_the_disk_is_full_is_restored(small_tmpfs: Path, tmp_path: Path):
    data = small_tmpfs / "data"
    data.write_bytes(b"c" * (SIZE * 6 // 10))
    snap = capture(str(small_tmpfs), str(tmp_path / "store"))
    fill(data)
    assert data.stat().st_size > SIZE * 8 // 10
    rewind(snap, str(small_tmpfs))
    assert data.read_bytes() == b"c" * (SIZE * 6 // 10)


def test_new_files_filling_the_disk_are_removed_before_anything_is_restored(
    small_tmpfs: Path, tmp_path: Path
):
    kept = small_tmpfs / "kept"
    kept.write_bytes(b"k" * (SIZE // 2))
    snap = capture(str(small_tmpfs), str(tmp_path / "store"))
    kept.unlink()
    fill(small_tmpfs / "zz-filler")
    rewind(snap, str(small_tmpfs))
    assert kept.read_bytes() == b"k" * (SIZE // 2)
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["kept"]
