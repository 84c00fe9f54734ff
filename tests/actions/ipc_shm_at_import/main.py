"""Attaches a SysV shared memory segment at import: a shared writable mapping of the
snapshot process, which fork and inplace must refuse at the checkpoint."""

import ctypes
import ctypes.util

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
libc.shmat.restype = ctypes.c_void_p
SEGMENT = libc.shmget(0x52574E33, 4096, 0o1000 | 0o600)
ADDR = libc.shmat(SEGMENT, None, 0)


def main(args):
    seen = ctypes.string_at(ADDR, 64).rstrip(b"\0").decode()
    if "secret" in args:
        ctypes.memmove(ADDR, args["secret"].encode().ljust(64, b"\0"), 64)
    return {"seen": seen}
