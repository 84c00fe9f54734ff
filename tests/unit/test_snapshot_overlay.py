"""The snapshot engine on a real overlayfs mount (the docker driver's world).

Needs root to mount; skipped otherwise. The test mounts an overlay under tmp_path, protects
the merged dir, mutates lower-layer and upper-layer files, rewinds and unmounts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rewind.files.diff import diff
from rewind.files.snapshot import capture, rewind

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting overlayfs needs root"),
]


@pytest.fixture
def merged(tmp_path: Path) -> Iterator[Path]:
    lower, upper, work, mnt = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, mnt):
        d.mkdir()
    (lower / "etc").mkdir()
    (lower / "etc" / "conf").write_text("from lower")
    (lower / "gone-dir").mkdir()
    (lower / "gone-dir" / "x").write_text("lower x")
    (lower / "lib.txt").write_text("lower lib")
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    res = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(mnt)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount overlayfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def listing(root: Path) -> dict[str, tuple[int, bytes | None]]:
    out: dict[str, tuple[int, bytes | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = os.lstat(p)
            body = p.read_bytes() if p.is_file() and not p.is_symlink() else None
            out[str(p.relative_to(root))] = (st.st_mode, body)
    return out


def test_overlay_merged_dir_is_rewound(merged: Path, tmp_path: Path) -> None:
    (merged / "upper-made").write_text("made in upper before checkpoint")
    before = listing(merged)
    snap = capture(str(merged), str(tmp_path / "store"))
    (merged / "etc" / "conf").write_text("tampered (copy-up)")
    (merged / "lib.txt").unlink()  # whiteout in upper
    shutil.rmtree(merged / "gone-dir")
    (merged / "gone-dir").mkdir()  # opaque dir in upper
    (merged / "gone-dir" / "new").write_text("n")
    (merged / "upper-made").write_text("changed")
    (merged / "fresh").write_text("added")
    rewind(snap, str(merged))
    assert listing(merged) == before
    assert list(diff(snap, str(merged))) == []
    assert (tmp_path / "lower" / "lib.txt").read_text() == "lower lib"
