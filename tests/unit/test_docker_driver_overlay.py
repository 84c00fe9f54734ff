"""The docker driver's core on a real overlayfs mount standing in for a container's layers.

Two lower layers (with a whiteout and an opaque dir of their own, as image layers have),
an upper layer and the merged mount. Changes are made through the merged mount, as a
container makes them; ``OverlaySnapshot`` must bring the merged view back to the
checkpoint, repairing only through the merged mount. Needs root (mount, mknod, xattrs).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rewind.files.model import SnapshotError
from rewind.files.overlay import Lowers, OverlaySnapshot

pytestmark = pytest.mark.unit


@dataclass
class Layers:
    lowers: list[Path]
    upper: Path
    merged: Path
    store: Path


def _whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def _opaque(path: Path) -> None:
    os.setxattr(path, "trusted.overlay.opaque", b"y")


@pytest.fixture
def layers(tmp_path: Path) -> Iterator[Layers]:
    if os.geteuid() != 0:
        pytest.fail("these tests mount overlayfs and need root")
    top, bottom = tmp_path / "l1", tmp_path / "l2"
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (top, bottom, upper, work, merged):
        d.mkdir()
    # bottom layer: the "base image"
    (bottom / "etc").mkdir()
    (bottom / "etc" / "conf").write_text("conf from l2")
    (bottom / "etc" / "removed-by-l1").write_text("hidden by a whiteout in l1")
    (bottom / "opt").mkdir()
    (bottom / "opt" / "old").write_text("hidden by l1's opaque opt")
    (bottom / "lib").mkdir()
    (bottom / "lib" / "deep").mkdir()
    (bottom / "lib" / "deep" / "mod.py").write_text("x = 1\n")
    (bottom / "lib" / "link").symlink_to("deep/mod.py")
    (bottom / "lib" / "big.bin").write_bytes(os.urandom(200_000))
    (bottom / "home").mkdir()
    (bottom / "home" / "user").mkdir(mode=0o755)
    (bottom / "home" / "user" / ".profile").write_text("profile")
    (bottom / "tmp").mkdir(mode=0o777)
    os.chmod(bottom / "tmp", 0o1777)
    # top layer: a later image layer with a whiteout and an opaque dir
    (top / "etc").mkdir()
    _whiteout(top / "etc" / "removed-by-l1")
    (top / "etc" / "added-by-l1").write_text("l1")
    (top / "opt").mkdir()
    _opaque(top / "opt")
    (top / "opt" / "new").write_text("l1 opt")
    opts = f"lowerdir={top}:{bottom},upperdir={upper},workdir={work}"
    res = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.fail(f"cannot mount overlayfs: {res.stderr.strip()}")
    try:
        yield Layers([top, bottom], upper, merged, tmp_path / "store")
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def listing(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a later request could observe: type, mode, owner, times, content, target."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames + ([""] if dirpath == str(root) else []):
            p = Path(dirpath) / n if n else Path(dirpath)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                body: object = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            else:
                body = None
            key = str(p.relative_to(root)) if n else "."
            out[key] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, body)
    return out


def tree_hash(root: Path) -> dict[str, tuple[object, ...]]:
    return listing(root)


def capture(layers: Layers, max_bytes: int = 1 << 30) -> OverlaySnapshot:
    return OverlaySnapshot.capture(
        [str(p) for p in layers.lowers],
        str(layers.upper),
        str(layers.merged),
        str(layers.store),
        max_bytes,
    )


def container_init(m: Path) -> None:
    """What the container did before the checkpoint (all in the upper layer then)."""
    (m / "tmp" / "keep.txt").write_text("made before the checkpoint")
    (m / "tmp" / "kdir").mkdir()
    (m / "tmp" / "kdir" / "inner").write_text("inner")
    (m / "etc" / "conf").write_text("conf changed before the checkpoint")  # copy-up
    (m / "lib" / "deep" / "mod.py").unlink()  # whiteout at the checkpoint
    shutil.rmtree(m / "home" / "user")
    (m / "home" / "user").mkdir()  # opaque at the checkpoint
    (m / "home" / "user" / "own").write_text("own")
    (m / "action").mkdir()
    (m / "action" / "main.py").write_text("def main(a): return a\n")


def test_lowers_follow_overlay_semantics(layers: Layers) -> None:
    with Lowers([str(p) for p in layers.lowers]) as lowers:
        assert lowers.lookup("etc/removed-by-l1") is None
        assert lowers.lookup("opt/old") is None
        hit = lowers.lookup("etc/conf")
        assert hit is not None and hit[0] == 1
        assert set(lowers.children("etc")) == {"conf", "added-by-l1"}
        assert set(lowers.children("opt")) == {"new"}
        assert lowers.lookup("lib/link/x") is None  # never through a symlink


def test_unchanged_layer_rewinds_to_nothing(layers: Layers) -> None:
    container_init(layers.merged)
    snap = capture(layers)
    try:
        m = snap.rewind()
        assert (m.removed, m.restored) == (0, 0)
        assert m.scanned > 0
    finally:
        snap.discard()


def test_created_modified_deleted_and_opaque_are_restored(layers: Layers) -> None:
    m = layers.merged
    container_init(m)
    before = listing(m)
    lower_before = [tree_hash(p) for p in layers.lowers]
    snap = capture(layers)
    try:
        # created
        (m / "tmp" / "new.txt").write_text("new")
        (m / "tmp" / "newdir" / "a" / "b").mkdir(parents=True)
        (m / "etc" / "new.conf").write_text("new in a lower dir")
        (m / "lib" / "deep" / "mod.py").write_text("recreated a checkpoint whiteout")
        (m / "home" / "user" / ".profile").write_text("under a checkpoint-opaque dir")
        (m / "etc" / "removed-by-l1").write_text("over an image whiteout")
        # modified
        (m / "tmp" / "keep.txt").write_text("changed")
        (m / "tmp" / "kdir" / "inner").write_text("changed inner")
        (m / "etc" / "conf").write_text("changed again")
        (m / "lib" / "big.bin").write_bytes(b"short")  # copy-up of a lower file
        os.chmod(m / "etc" / "added-by-l1", 0o600)  # metadata-only copy-up
        st = os.stat(m / "action" / "main.py")
        (m / "action" / "main.py").write_text("def main(a): return 'evil'\n")
        os.utime(m / "action" / "main.py", ns=(st.st_atime_ns, st.st_mtime_ns))
        os.chown(m / "home" / "user" / "own", 1001, 1001)
        # deleted
        (m / "lib" / "link").unlink()  # lower symlink → whiteout
        (m / "opt" / "new").unlink()
        shutil.rmtree(m / "tmp" / "kdir")  # upper-only dir: simply gone
        (m / "action" / "main.py").unlink()
        # opaque: a lower dir removed and made again
        shutil.rmtree(m / "lib")
        (m / "lib").mkdir()
        (m / "lib" / "imposter").write_text("x")
        shutil.rmtree(m / "etc")  # lower dir with upper content, removed for good
        assert listing(m) != before
        metrics = snap.rewind()
        assert listing(m) == before
        assert metrics.removed > 0 and metrics.restored > 0
        again = snap.rewind()
        assert (again.removed, again.restored) == (0, 0)
        assert listing(m) == before
        # the same attack twice: the rebuilt opaque dir is handled from the record
        shutil.rmtree(m / "lib")
        (m / "lib").mkdir()
        snap.rewind()
        assert listing(m) == before
        assert [tree_hash(p) for p in layers.lowers] == lower_before
    finally:
        snap.discard()


def test_replaced_types_and_links_are_not_followed(layers: Layers, tmp_path: Path) -> None:
    outside = tmp_path / "host"
    outside.mkdir()
    sentinel = outside / "sentinel"
    sentinel.write_text("host data")
    m = layers.merged
    container_init(m)
    before = listing(m)
    snap = capture(layers)
    try:
        (m / "tmp" / "keep.txt").unlink()
        (m / "tmp" / "keep.txt").symlink_to(sentinel)
        shutil.rmtree(m / "tmp" / "kdir")
        (m / "tmp" / "kdir").symlink_to(outside)
        (m / "etc" / "conf").unlink()
        (m / "etc" / "conf").symlink_to(sentinel)
        shutil.rmtree(m / "home" / "user")
        (m / "home" / "user").symlink_to(outside)
        shutil.rmtree(m / "lib" / "deep")
        (m / "lib" / "deep").write_text("a file where a dir was")
        os.link(m / "action" / "main.py", m / "tmp" / "hard")
        assert listing(m) != before
        snap.rewind()
        assert listing(m) == before
        assert sentinel.read_text() == "host data"
        assert sorted(p.name for p in outside.iterdir()) == ["sentinel"]
        assert os.stat(sentinel).st_mode & 0o7777 == 0o644
    finally:
        snap.discard()


def test_store_limit_refuses_a_big_layer(layers: Layers) -> None:
    (layers.merged / "tmp" / "big").write_bytes(os.urandom(300_000))
    with pytest.raises(SnapshotError, match="REWIND_HOST_MAX_BYTES"):
        capture(layers, max_bytes=100_000)
    assert not layers.store.exists() or not any(layers.store.iterdir())
    small = capture(layers, max_bytes=1_000_000)
    small.discard()


def test_many_names_and_depth(layers: Layers) -> None:
    m = layers.merged
    deep = m / "tmp"
    for _ in range(300):
        deep = deep / "d"
    deep.mkdir(parents=True)
    odd = m / "tmp" / "odd"
    odd.mkdir()
    names = ["..x", "a\nb", "sp ace", "\udcff-bytes"]
    for n in names:
        (odd / n).write_text(n.encode("utf-8", "surrogateescape").hex())
    before = listing(m)
    snap = capture(layers)
    try:
        (deep / "leaf").write_text("x")
        for n in names:
            (odd / n).write_text("changed")
        (odd / "..").joinpath("escape").write_text("in tmp, not above")
        snap.rewind()
        assert listing(m) == before
    finally:
        snap.discard()
