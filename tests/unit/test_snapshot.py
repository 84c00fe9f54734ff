"""Unit tests of the snapshot engine on real trees: every odd case the sidecar must survive.

Each test captures a tree, lets an "attacker" mutate it, rewinds, and checks the result with
an independent walker (``state``) that shares no code with the engine.
"""

from __future__ import annotations

import os
import resource
import socket
import stat
from pathlib import Path

import pytest

from rewind.files.apply import remove_tree
from rewind.files.diff import diff
from rewind.files.model import ChangeKind, Snapshot, SnapshotError
from rewind.files.snapshot import capture, rewind

pytestmark = pytest.mark.unit


def state(root: str | bytes) -> dict[bytes, tuple[object, ...]]:
    """(type, mode, uid, gid, content-or-target) per path; bytes paths, iterative."""
    base = os.fsencode(root)
    out: dict[bytes, tuple[object, ...]] = {}
    stack = [b""]
    while stack:
        rel = stack.pop()
        full = base + b"/" + rel if rel else base
        st = os.lstat(full)
        fmt = stat.S_IFMT(st.st_mode)
        body: object = None
        if stat.S_ISREG(st.st_mode):
            with open(full, "rb") as f:
                body = f.read()
        elif stat.S_ISLNK(st.st_mode):
            body = os.readlink(full)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            body = st.st_rdev
        elif stat.S_ISDIR(st.st_mode):
            for name in os.listdir(full):
                stack.append(rel + b"/" + name if rel else name)
        out[rel] = (fmt, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, body)
    return out


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("alpha")
    (root / "dir").mkdir()
    (root / "dir" / "b.txt").write_text("bravo")
    (root / "dir" / "sub").mkdir()
    (root / "dir" / "sub" / "c.txt").write_text("charlie")
    os.symlink("a.txt", root / "link")
    return root


def snap_of(root: Path, tmp_path: Path) -> Snapshot:
    return capture(str(root), str(tmp_path / "store"))


def check_rewinds(snap: Snapshot, root: Path, before: dict[bytes, tuple[object, ...]]) -> None:
    rewind(snap, str(root))
    assert state(root) == before
    assert list(diff(snap, str(root))) == []


def test_unchanged_tree_diffs_empty(tree: Path, tmp_path: Path) -> None:
    snap = snap_of(tree, tmp_path)
    assert list(diff(snap, str(tree))) == []
    metrics = rewind(snap, str(tree))
    assert (metrics.removed, metrics.restored, metrics.scanned) == (0, 0, 6)


def test_diff_is_pure_and_in_path_order(tree: Path, tmp_path: Path) -> None:
    snap = snap_of(tree, tmp_path)
    (tree / "dir" / "b.txt").write_text("changed")
    (tree / "new").mkdir()
    (tree / "a.txt").unlink()
    before = state(tree)
    changes = list(diff(snap, str(tree)))
    assert state(tree) == before
    paths = [c.path for c in changes]
    assert paths == sorted(paths, key=lambda p: p.split("/"))
    kinds = {c.path: c.kind for c in changes}
    assert kinds["new"] is ChangeKind.ADD
    assert kinds["a.txt"] is ChangeKind.DELETE
    assert kinds["dir/b.txt"] is ChangeKind.MODIFY


def test_write_delete_add_are_undone(tree: Path, tmp_path: Path) -> None:
    before = state(tree)
    snap = snap_of(tree, tmp_path)
    (tree / "dir" / "b.txt").write_text("overwritten and longer")
    (tree / "dir" / "sub" / "c.txt").unlink()
    (tree / "dir" / "sub").rmdir()
    (tree / "extra").mkdir()
    (tree / "extra" / "deep.txt").write_text("x")
    check_rewinds(snap, tree, before)


def test_symlink_planted_for_directory_does_not_touch_outside(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("keep me")
    (outside / "b.txt").write_text("outside b")
    before = state(tree)
    snap = snap_of(tree, tmp_path)
    # The attacker swaps dir/ for a link to outside/, hoping restores of dir/b.txt and
    # removals of dir/* land there.
    import shutil

    shutil.rmtree(tree / "dir")
    os.symlink(outside, tree / "dir")
    outside_before = state(outside)
    check_rewinds(snap, tree, before)
    assert state(outside) == outside_before
    assert (outside / "sentinel").read_text() == "keep me"


def test_symlink_in_parent_component_is_not_followed(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "c.txt").write_text("outside c")
    before = state(tree)
    snap = snap_of(tree, tmp_path)
    (tree / "dir" / "sub" / "c.txt").write_text("dirty")
    os.rename(tree / "dir", tmp_path / "moved")
    os.symlink(outside, tree / "dir")
    check_rewinds(snap, tree, before)
    assert (outside / "sub" / "c.txt").read_text() == "outside c"


def test_hard_link_to_outside_file_is_replaced_not_written_through(
    tree: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "secret"
    outside.write_text("outside content")
    before = state(tree)
    snap = snap_of(tree, tmp_path)
    (tree / "a.txt").unlink()
    os.link(outside, tree / "a.txt")
    check_rewinds(snap, tree, before)
    assert outside.read_text() == "outside content"
    assert os.stat(outside).st_nlink == 1


def test_file_hard_linked_outside_at_capture_is_restored_by_rename(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "shared"
    outside.write_text("original")
    os.link(outside, root / "f")
    snap = snap_of(root, tmp_path)
    before = state(root)
    (root / "f").write_text("evil")  # writes through the link: the outside file too
    check_rewinds(snap, root, before)
    outside.write_text("outside changes later")
    assert (root / "f").read_text() == "original"


def test_fifo_is_restored_and_never_opened(tree: Path, tmp_path: Path) -> None:
    os.mkfifo(tree / "pipe", 0o640)
    before = state(tree)
    snap = snap_of(tree, tmp_path)
    (tree / "pipe").unlink()
    (tree / "pipe").write_text("now a file")
    os.mkfifo(tree / "dir" / "added-pipe")
    check_rewinds(snap, tree, before)
    assert stat.S_ISFIFO(os.lstat(tree / "pipe").st_mode)


def test_chmod_of_fifo_recreates_it_with_the_old_mode(tree: Path, tmp_path: Path) -> None:
    os.mkfifo(tree / "pipe", 0o640)
    before = state(tree)
    snap = snap_of(tree, tmp_path)
    os.chmod(tree / "pipe", 0o666)
    check_rewinds(snap, tree, before)


def test_socket_added_is_removed_and_captured_socket_is_dropped(tree: Path, tmp_path: Path) -> None:
    kept = socket.socket(socket.AF_UNIX)
    kept.bind(str(tree / "kept.sock"))
    snap = snap_of(tree, tmp_path)
    added = socket.socket(socket.AF_UNIX)
    added.bind(str(tree / "added.sock"))
    (tree / "kept.sock").unlink()
    rewind(snap, str(tree))
    assert not (tree / "added.sock").exists()
    assert not (tree / "kept.sock").exists()  # documented: sockets cannot be restored
    assert list(diff(snap, str(tree))) == []
    kept.close()
    added.close()


def test_unchanged_socket_is_left_alone(tree: Path, tmp_path: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tree / "s.sock"))
    snap = snap_of(tree, tmp_path)
    (tree / "a.txt").write_text("x")
    rewind(snap, str(tree))
    assert stat.S_ISSOCK(os.lstat(tree / "s.sock").st_mode)
    s.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device needs root")
def test_device_node_is_recreated_with_mknod(tree: Path, tmp_path: Path) -> None:
    os.mknod(tree / "null", 0o620 | stat.S_IFCHR, os.makedev(1, 3))
    before = state(tree)
    snap = snap_of(tree, tmp_path)
    (tree / "null").unlink()
    os.mknod(tree / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    check_rewinds(snap, tree, before)
    assert os.lstat(tree / "null").st_rdev == os.makedev(1, 3)


def test_non_utf8_and_newline_names(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path / "root")
    os.mkdir(root)
    names = [b"caf\xe9", b"line\nbreak", b"\xff\xfe\n\x01", b" trailing ", b"-dash"]
    for n in names:
        with open(root + b"/" + n, "wb") as f:
            f.write(n)
    os.mkdir(root + b"/dir\n\xff")
    with open(root + b"/dir\n\xff/in\x80side", "wb") as f:
        f.write(b"inner")
    before = state(root)
    snap = capture(os.fsdecode(root), str(tmp_path / "store"))
    for n in names[:3]:
        with open(root + b"/" + n, "wb") as f:
            f.write(b"dirty")
    os.unlink(root + b"/dir\n\xff/in\x80side")
    with open(root + b"/new\n\xfe", "wb") as f:
        f.write(b"added")
    rewind(snap, os.fsdecode(root))
    assert state(root) == before
    assert list(diff(snap, os.fsdecode(root))) == []


def _make_chain(root: str, depth: int) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    with open(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
        f.write("bottom")
    os.close(fd)


def _chain_depth(root: str) -> tuple[int, str]:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    depth = 0
    while True:
        try:
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            break
        os.close(fd)
        fd = nfd
        depth += 1
    leaf = os.open("leaf", os.O_RDONLY, dir_fd=fd)
    content = os.read(leaf, 100).decode()
    os.close(leaf)
    os.close(fd)
    return depth, content


def test_depth_2000_tree_is_captured_and_restored_without_recursion(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    os.mkdir(root)
    _make_chain(root, 2000)
    snap = capture(root, str(tmp_path / "store"))
    assert len(snap.entries) == 2002
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    assert remove_tree(fd, "d") == 2001
    os.mkdir("d", dir_fd=fd)
    os.close(fd)
    try:
        metrics = rewind(snap, root)
        assert metrics.restored == 2001
        assert _chain_depth(root) == (2000, "bottom")
        assert list(diff(snap, root)) == []
    finally:
        # pytest's own tmp_path cleanup (shutil.rmtree) recurses and would crash here.
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        remove_tree(fd, "d")
        os.close(fd)


def test_directory_replaced_by_file_and_file_by_directory(tree: Path, tmp_path: Path) -> None:
    before = state(tree)
    snap = snap_of(tree, tmp_path)
    import shutil

    shutil.rmtree(tree / "dir")
    (tree / "dir").write_text("was a directory")
    (tree / "a.txt").unlink()
    (tree / "a.txt").mkdir()
    (tree / "a.txt" / "nested").write_text("in a dir that was a file")
    check_rewinds(snap, tree, before)


def test_chmod_only_change_keeps_the_inode(tree: Path, tmp_path: Path) -> None:
    before = state(tree)
    snap = snap_of(tree, tmp_path)
    ino = os.lstat(tree / "a.txt").st_ino
    os.chmod(tree / "a.txt", 0o600)
    os.chmod(tree / "dir", 0o700)
    changes = {c.path: c for c in diff(snap, str(tree))}
    assert changes["a.txt"].kind is ChangeKind.MODIFY
    assert changes["a.txt"].recreate is False
    check_rewinds(snap, tree, before)
    assert os.lstat(tree / "a.txt").st_ino == ino


def test_rename_is_undone(tree: Path, tmp_path: Path) -> None:
    before = state(tree)
    snap = snap_of(tree, tmp_path)
    os.rename(tree / "dir", tree / "renamed")
    os.rename(tree / "a.txt", tree / "renamed" / "a-moved.txt")
    check_rewinds(snap, tree, before)


def test_file_replaced_by_symlink_to_outside(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "target"
    outside.write_text("outside")
    before = state(tree)
    snap = snap_of(tree, tmp_path)
    (tree / "a.txt").unlink()
    os.symlink(outside, tree / "a.txt")
    os.unlink(tree / "link")
    os.symlink("/etc/passwd", tree / "link")
    check_rewinds(snap, tree, before)
    assert outside.read_text() == "outside"


def test_mtime_reset_with_utime_is_still_detected(tree: Path, tmp_path: Path) -> None:
    before = state(tree)
    snap = snap_of(tree, tmp_path)
    path = tree / "dir" / "b.txt"
    st = os.stat(path)
    path.write_text("BRAVO")  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    changes = {c.path: c for c in diff(snap, str(tree))}
    assert changes["dir/b.txt"].recreate is True
    check_rewinds(snap, tree, before)


def test_owner_change_is_restored(tree: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    before = state(tree)
    snap = snap_of(tree, tmp_path)
    os.chown(tree / "a.txt", 1234, 5678)
    os.lchown(tree / "link", 1234, 5678)
    check_rewinds(snap, tree, before)


def test_root_metadata_is_restored(tree: Path, tmp_path: Path) -> None:
    before = state(tree)
    snap = snap_of(tree, tmp_path)
    os.chmod(tree, 0o777)
    check_rewinds(snap, tree, before)


def test_large_sparse_file_is_restored_streaming(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    big = root / "big"
    size = 200 * 1024 * 1024
    with open(big, "wb") as f:
        f.truncate(size)
        f.seek(1234)
        f.write(b"head")
        f.seek(size - 4)
        f.write(b"tail")
    before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    snap = snap_of(root, tmp_path)
    with open(big, "r+b") as f:
        f.seek(1234)
        f.write(b"EVIL")
        f.seek(100 * 1024 * 1024)
        f.write(b"planted")
    metrics = rewind(snap, str(root))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_rss
    assert grown_kib < 64 * 1024, "the copy must stream, not load the file"
    assert metrics.restored == 1
    assert os.stat(big).st_size == size
    with open(big, "rb") as f:
        f.seek(1234)
        assert f.read(4) == b"head"
        f.seek(100 * 1024 * 1024)
        assert f.read(7) == b"\0" * 7
        f.seek(size - 4)
        assert f.read(4) == b"tail"
    assert os.stat(big).st_blocks * 512 < 16 * 1024 * 1024, "holes must stay holes"


def test_rewind_twice_and_snapshot_record_is_refreshed(tree: Path, tmp_path: Path) -> None:
    before = state(tree)
    snap = snap_of(tree, tmp_path)
    for i in range(3):
        (tree / "a.txt").write_text(f"round {i}")
        (tree / f"junk{i}").write_text("junk")
        check_rewinds(snap, tree, before)


def test_missing_root_raises_snapshot_error(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="capture"):
        capture(str(tmp_path / "nope"), str(tmp_path / "store"))


def test_root_that_is_a_symlink_is_refused(tree: Path, tmp_path: Path) -> None:
    os.symlink(tree, tmp_path / "alias")
    with pytest.raises(SnapshotError):
        capture(str(tmp_path / "alias"), str(tmp_path / "store"))
