"""Tries to make its state outlive the request by tampering with the rewind itself.

"patch": rewrites a page of libc's code (made writable, written, re-protected);
"remap": replaces a writable mapping with a fresh one at the same address, so the
kernel would no longer report writes there; "cwd" changes the working directory. Each
also keeps a secret in a global and in the mapping. "check" reports what it sees.
"""

import ctypes
import mmap
import os

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
    return {"kept": KEPT, "area": ctypes.string_at(AREA, 64).rstrip(b"\0").decode()}
