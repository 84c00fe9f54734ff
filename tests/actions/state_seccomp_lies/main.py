"""Installs a seccomp filter that makes close, umask and rt_sigaction lie, then leaves a
secret behind: a pipe holding it, a umask and a SIGUSR2 handler. "peek" looks for them."""

import ctypes
import fcntl
import os
import signal
import stat
import struct

libc = ctypes.CDLL(None, use_errno=True)
KEEP: list = []
NR = {"close": 3, "umask": 95, "rt_sigaction": 13}


def lying_filter() -> int:
    ins = [struct.pack("HBBI", 0x20, 0, 0, 0)]  # ld nr
    for nr in NR.values():
        ins.append(struct.pack("HBBI", 0x15, 0, 1, nr))
        ins.append(struct.pack("HBBI", 0x06, 0, 0, 0x00050000))  # "succeeds": returns 0
    ins.append(struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000))
    code = ctypes.create_string_buffer(b"".join(ins))
    prog = ctypes.create_string_buffer(struct.pack("HxxxxxxQ", len(ins), ctypes.addressof(code)))
    libc.prctl(38, 1, 0, 0, 0)
    return libc.prctl(22, 2, ctypes.c_void_p(ctypes.addressof(prog)), 0, 0)


def main(args):
    if args.get("do") == "plant":
        r, w = os.pipe()
        os.write(w, args["secret"].encode())
        KEEP.append((r, w))
        os.umask(0o077)
        signal.signal(signal.SIGUSR2, lambda *a: None)
        return {"fd": r, "filter": lying_filter()}
    found = ""
    fd = int(args.get("fd", -1))
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode) and fd > 3:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
            found = os.read(fd, 4096).decode(errors="replace")
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return {
        "found": found if "S3CR3T" in found else "",
        "umask": umask,
        "usr2_default": signal.getsignal(signal.SIGUSR2) in (signal.SIG_DFL, None),
    }
