"""Plants a secret on the heap, or scans this process's memory for one.

The scan gets the secret shifted by one byte value, rebuilds it into one preallocated
buffer and reads /proc/self/mem into another, so the only copies of the secret it
makes are at two addresses it knows and excludes.
"""

import ctypes
import os

KEEP = []
SKIP_MAPPINGS = (b"[vvar]", b"[vsyscall]", b"[vvar_vclock]")


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
    view = memoryview(chunk)
    skip = [
        (_address(needle), _address(needle) + len(needle)),
        (_address(chunk), _address(chunk) + len(chunk)),
    ]
    found = []
    scanned = 0
    with open("/proc/self/maps", "rb") as fh:
        maps = fh.read().splitlines()
    fd = os.open("/proc/self/mem", os.O_RDONLY)
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
                    got = os.preadv(fd, [view[:want]], pos)
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
        os.close(fd)
    return {"found": len(found), "scanned": scanned}


def main(args):
    if args.get("op") == "plant":
        return plant(args["secret"])
    return scan(args["shifted"])
