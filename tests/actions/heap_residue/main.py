"""Plants a secret on the heap, or scans this process's memory for one.

The scan gets the secret shifted by one byte value, rebuilds it into one preallocated
buffer and reads /proc/self/mem into another, so the only copies of the secret it
makes are at two addresses it knows and excludes.

A non-dumpable process that is not root cannot open its own /proc/self/mem (the file
then belongs to root, and Docker's seccomp profile refuses process_vm_readv); the scan
then has the kernel copy its memory into a memfd with write(2).
"""

import ctypes
import os

KEEP = []
SKIP_MAPPINGS = (b"[vvar]", b"[vsyscall]", b"[vvar_vclock]")


def _memory_reader(chunk: bytearray):
    """``(name, read(want, pos) -> bytes read into chunk, close)`` for this process's memory."""
    view = memoryview(chunk)
    try:
        fd = os.open("/proc/self/mem", os.O_RDONLY)
    except PermissionError:
        fd = -1
    if fd >= 0:

        def read_mem(want, pos):
            return os.preadv(fd, [view[:want]], pos)

        return "/proc/self/mem", read_mem, lambda: os.close(fd)
    # write(2) from an address fails with EFAULT, or stops short, where the memory is
    # unreadable, instead of crashing; the bytes go through a memfd that is not mapped.
    memfd = os.memfd_create("heap-scan")
    libc = ctypes.CDLL(None, use_errno=True)
    pwrite = libc.pwrite
    pwrite.restype = ctypes.c_ssize_t
    pwrite.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long]

    def read_via_write(want, pos):
        got = pwrite(memfd, pos, want, 0)
        if got < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return os.preadv(memfd, [view[:got]], 0)

    return "write(2) to a memfd", read_via_write, lambda: os.close(memfd)


def plant(secret: str) -> dict:
    data = secret.encode()
    KEEP.append(data * 3)  # still referenced
    junk = bytearray(data * 1000)  # freed: residue in the allocator
    del junk
    text = ("<" + secret + ">") * 50
    del text
    return {"planted": len(data)}


def _address(buf: bytearray) -> int:
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


def scan(shifted: list) -> dict:
    needle = bytearray(len(shifted))
    for i, value in enumerate(shifted):
        needle[i] = value - 1
    chunk = bytearray(1 << 20)
    skip = [
        (_address(needle), _address(needle) + len(needle)),
        (_address(chunk), _address(chunk) + len(chunk)),
    ]
    found = []
    scanned = 0
    with open("/proc/self/maps", "rb") as fh:
        maps = fh.read().splitlines()
    reader, read, close = _memory_reader(chunk)
    try:
        for line in maps:
            fields = line.split()
            special = len(fields) > 5 and fields[5] in SKIP_MAPPINGS
            if not fields[1].startswith(b"r") or special:
                continue
            start, end = (int(x, 16) for x in fields[0].split(b"-"))
            pos = start
            while pos < end:
                want = min(len(chunk), end - pos)
                try:
                    got = read(want, pos)
                except OSError:
                    break
                if got <= 0:
                    break
                scanned += got
                at = chunk.find(needle, 0, got)
                while at >= 0:
                    addr = pos + at
                    if not any(lo <= addr < hi for lo, hi in skip):
                        found.append(hex(addr))
                    at = chunk.find(needle, at + 1, got)
                if pos + got >= end:
                    break
                # Overlap the next read so a secret split across two chunks is found.
                pos += max(1, got - (len(needle) - 1))
    finally:
        close()
    return {"found": len(found), "scanned": scanned, "reader": reader}


def main(args):
    if args.get("op") == "plant":
        return plant(args["secret"])
    return scan(args["shifted"])
