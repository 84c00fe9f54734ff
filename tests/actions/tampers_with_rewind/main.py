"""Tries to make its state outlive the request by tampering with the rewind itself.

"patch": rewrites a page of libc's code (made writable, written, re-protected);
"remap": replaces a writable mapping with a fresh one at the same address, so the
kernel would no longer report writes there; "rearm": after writing, write-protects the
pages again through PAGEMAP_SCAN and any userfaultfd it holds, so they look unwritten;
"cwd" changes the working directory. Each also keeps a secret in a global and in the
mapping; every call reports what it sees.
"""

import ctypes
import fcntl
import mmap
import os
import struct

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
libc.mmap.argtypes += [ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
PAGE = mmap.PAGESIZE
ANON = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
# Four writable pages between PROT_NONE guards: a mapping merged with nothing.
BASE = libc.mmap(None, 6 * PAGE, 0, ANON, -1, 0)
AREA = BASE + PAGE
libc.mprotect(AREA, 4 * PAGE, 3)
ctypes.memset(AREA, 0, 4 * PAGE)
KEPT = []
PAGEMAP_SCAN = 0xC0606610  # _IOWR('f', 16, struct pm_scan_arg)
UFFDIO_WRITEPROTECT = 0xC018AA06
WP_MATCHING, PAGE_IS_WRITTEN = 1, 2


def _rearm() -> list[str]:
    """Write-protect AREA again, every way there is; returns the ways that worked."""
    worked = []
    arg = struct.pack(
        "12Q",
        96,
        WP_MATCHING,
        AREA,
        AREA + 4 * PAGE,
        0,
        0,
        0,
        0,
        0,
        PAGE_IS_WRITTEN,
        0,
        PAGE_IS_WRITTEN,
    )
    with open("/proc/self/pagemap", "rb") as fh:
        try:
            fcntl.ioctl(fh.fileno(), PAGEMAP_SCAN, bytearray(arg))
            worked.append("pagemap_scan")
        except OSError:
            pass
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[userfaultfd]":
                continue
            fcntl.ioctl(
                int(fd), UFFDIO_WRITEPROTECT, bytearray(struct.pack("4Q", AREA, 4 * PAGE, 1, 0))
            )
            worked.append("uffd")
        except OSError:
            pass
    return worked


def main(args):
    op = args.get("op")
    secret = args.get("secret", "").encode()
    if op == "patch":
        page = (ctypes.cast(libc.getpid, ctypes.c_void_p).value or 0) & ~(PAGE - 1)
        libc.mprotect(page, PAGE, 7)
        ctypes.memmove(page, page, 16)
        libc.mprotect(page, PAGE, 5)
    elif op == "remap":
        libc.munmap(AREA, 4 * PAGE)
        libc.mmap(AREA, 4 * PAGE, 3, ANON | 0x10, -1, 0)  # MAP_FIXED
    elif op == "cwd":
        os.chdir("/")
    if secret:
        KEPT.append(secret.decode())
        ctypes.memmove(AREA, secret, len(secret))
    rearmed = _rearm() if op == "rearm" else []
    out = {"kept": KEPT, "area": ctypes.string_at(AREA, 64).rstrip(b"\0").decode()}
    if op == "rearm":
        out["rearmed"] = rearmed
    return out
