"""Temporal-locality prefaulting for the fork backend (request processes).

Consecutive requests of one function write mostly the same pages. A request process
that learns (one in ``LEARN_EVERY``) lists, after its result is written, the pages it
owns exclusively — the ones it copied on write — as page addresses only, into a memfd.
The snapshot process keeps the latest list, and every standby child writes those pages
(each byte back onto itself, so nothing changes) before its request arrives: the
copy-on-write faults move off the request's critical path.
"""

from __future__ import annotations

import bisect
import ctypes
import os
from array import array

PAGE = os.sysconf("SC_PAGE_SIZE")
LEARN_EVERY = 8
MAX_PAGES = 32768  # bounds what a hostile function can make every standby copy
_PRESENT = 1 << 63
_EXCLUSIVE = 1 << 56


def writable_ranges() -> list[tuple[int, int]]:
    """(start, end) of this process's private writable mappings."""
    ranges = []
    with open("/proc/self/maps", "rb") as fh:
        for line in fh:
            fields = line.split()
            if fields[1][:2] == b"rw" and fields[1][3:4] == b"p":
                lo, hi = (int(x, 16) for x in fields[0].split(b"-"))
                ranges.append((lo, hi))
    return ranges


def written_pages(limit: int = MAX_PAGES) -> array:
    """Addresses of pages this process owns exclusively (it wrote them since fork)."""
    found = array("Q")
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        for lo, hi in writable_ranges():
            raw = os.pread(fd, (hi - lo) // PAGE * 8, lo // PAGE * 8)
            entries = array("Q", raw[: len(raw) // 8 * 8])
            want = _PRESENT | _EXCLUSIVE
            found.extend(lo + i * PAGE for i, e in enumerate(entries) if e & want == want)
            if len(found) >= limit:
                return found[:limit]
    finally:
        os.close(fd)
    return found


def touch(pages: array) -> int:
    """Write every listed page that lies in a private writable mapping; return how many.

    The list comes from an earlier request process, so it is checked against this
    process's own mappings: an address outside them is skipped, never dereferenced.
    """
    ranges = writable_ranges()
    starts = [lo for lo, _ in ranges]
    done = 0
    for addr in pages:
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0 and addr < ranges[i][1] and addr % PAGE == 0:
            cell = ctypes.c_ubyte.from_address(addr)
            cell.value = cell.value
            done += 1
    return done


def save(fd: int, pages: array) -> None:
    """Write a page list into ``fd`` (a memfd the snapshot process reads)."""
    os.write(fd, pages.tobytes())


def load(fd: int) -> array:
    """Read a page list written by ``save``; at most MAX_PAGES entries."""
    size = min(os.fstat(fd).st_size, MAX_PAGES * 8)
    pages = array("Q")
    pages.frombytes(os.pread(fd, size - size % 8, 0))
    return pages
