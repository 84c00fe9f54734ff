"""Mount points inside a protected tree are left alone (neither captured nor removed)."""

import os
import subprocess

import pytest

from rewind.files.snapshot import capture, rewind


@pytest.fixture
def tree_with_mount(tmp_path):
    root = tmp_path / "root"
    (root / "mnt").mkdir(parents=True)
    (root / "plain.txt").write_text("x")
    subprocess.run(["mount", "-t", "tmpfs", "t", str(root / "mnt")], check=True)
    (root / "mnt" / "keep.txt").write_text("operator data")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root / "mnt")], check=False)


def test_a_mounted_directory_is_neither_snapshotted_nor_removed(tree_with_mount, tmp_path):
    root = tree_with_mount
    snap = capture(str(root), str(tmp_path / "store"))
    assert "mnt" not in snap.entries and "mnt/keep.txt" not in snap.entries
    (root / "mnt" / "new.txt").write_text("written inside the mount")
    (root / "plain.txt").write_text("changed")
    (root / "added.txt").write_text("added")
    rewind(snap, str(root))
    assert (root / "plain.txt").read_text() == "x"
    assert not (root / "added.txt").exists()
    assert os.path.ismount(root / "mnt")
    assert sorted(os.listdir(root / "mnt")) == ["keep.txt", "new.txt"]
