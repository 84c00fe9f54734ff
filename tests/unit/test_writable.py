"""The derived writable set and single-file roots (real files, real users; runs as root)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rewind.files.local import DriverError, FileRoot, check_roots, outermost
from rewind.files.writable import NOBODY, find_writable, mounts, resolve_user


@pytest.fixture
def tree() -> Iterator[Path]:
    """A tree nobody can reach (pytest's tmp dirs are 0700): under /var/tmp, 0755."""
    top = Path(tempfile.mkdtemp(prefix="rewind-writable-", dir="/var/tmp"))
    top.chmod(0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top)


def test_the_walk_finds_what_the_user_can_write_and_nothing_else(tree):
    (tree / "open").mkdir(mode=0o777)
    (tree / "open").chmod(0o1777)
    (tree / "open" / "inside").mkdir()  # covered by its writable parent: not listed
    (tree / "closed").mkdir(mode=0o755)
    (tree / "closed" / "shared.txt").write_text("x")
    (tree / "closed" / "shared.txt").chmod(0o666)
    (tree / "closed" / "private.txt").write_text("x")
    (tree / "closed" / "owned-readonly.txt").write_text("x")
    os.chown(tree / "closed" / "owned-readonly.txt", NOBODY, NOBODY)
    (tree / "closed" / "owned-readonly.txt").chmod(0o444)  # its owner can chmod it back
    hidden = tree / "unlistable"  # --x: nobody cannot list it but can open names in it
    hidden.mkdir()
    (hidden / "guessable").mkdir(mode=0o777)
    (hidden / "guessable").chmod(0o777)
    hidden.chmod(0o711)
    (tree / "mine").mkdir(mode=0o555)
    os.chown(tree / "mine", NOBODY, NOBODY)
    found = find_writable("nobody", tops=[str(tree)])
    assert found.dirs == (str(tree / "mine"), str(tree / "open"), str(hidden / "guessable"))
    assert found.files == (
        str(tree / "closed" / "owned-readonly.txt"),
        str(tree / "closed" / "shared.txt"),
    )


def test_skipped_trees_are_not_entered(tree):
    (tree / "snap").mkdir(mode=0o777)
    (tree / "snap").chmod(0o777)
    assert find_writable("nobody", skip=[str(tree / "snap")], tops=[str(tree)]).dirs == ()


def test_root_is_walked_as_nobody():
    assert resolve_user("root") == (NOBODY, NOBODY, [])
    assert resolve_user("0")[0] == NOBODY


def test_mountinfo_keeps_read_write_storage_and_drops_pseudo_and_read_only(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(
        "1 0 8:1 / / rw,relatime - overlay overlay rw,lowerdir=x\n"
        "2 1 0:5 / /proc rw - proc proc rw\n"
        "3 1 0:6 / /dev rw - tmpfs tmpfs rw\n"
        "4 3 0:7 / /dev/shm rw - tmpfs shm rw\n"
        "5 3 0:8 / /dev/mqueue rw - mqueue mqueue rw\n"
        "6 1 0:9 / /srv/ro ro - ext4 /dev/sda ro\n"
        "7 1 0:10 / /with\\040space rw - tmpfs tmpfs rw\n"
        "8 2 0:5 /null /proc/keys rw - tmpfs tmpfs rw\n"
    )
    storage, others = mounts(str(info))
    assert storage == ["/", "/dev", "/dev/shm", "/with space"]
    assert others == ["/dev/mqueue", "/proc", "/proc/keys", "/srv/ro"]


def test_outermost_drops_nested_roots_of_the_same_filesystem(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    kept = outermost([str(tmp_path / "a" / "b"), str(tmp_path / "a"), str(tmp_path / "a")])
    assert kept == [str(tmp_path / "a")]


def test_a_root_may_hold_the_snapshot_dir_only_across_a_mount(tmp_path):
    (tmp_path / "snaps").mkdir()
    with pytest.raises(DriverError, match="contains the snapshot dir"):
        check_roots([str(tmp_path)], str(tmp_path / "snaps"), "checkpoint")
    check_roots(["/dev/shm"], "/var/lib/rewind/snapshots", "checkpoint")  # another fs
    with pytest.raises(DriverError, match="it is the root /"):
        check_roots(["/"], str(tmp_path / "snaps"), "checkpoint")


def test_a_single_file_root_is_restored_in_place(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"original" * 1000)
    target.chmod(0o666)
    root = FileRoot(str(target), str(tmp_path / "store"))
    try:
        ino = target.stat().st_ino
        assert root.rewind().restored == 0
        with open(target, "r+b") as fh:
            fh.write(b"SECRET")
            fh.truncate(3)
        target.chmod(0o600)
        assert root.rewind().restored == 1
        assert target.read_bytes() == b"original" * 1000
        assert target.stat().st_mode & 0o777 == 0o666 and target.stat().st_ino == ino
        assert root.rewind().restored == 0  # the record follows the restore
        (tmp_path / "new").write_bytes(b"another inode")
        os.replace(tmp_path / "new", target)  # only root can: the dir is not the user's
        with pytest.raises(DriverError, match="replaced"):
            root.rewind()
    finally:
        root.discard()
