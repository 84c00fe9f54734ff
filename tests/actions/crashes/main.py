import ctypes
import os
import resource
import signal
import sys


def main(args):
    how = args.get("how")
    if how == "sys.exit":
        sys.exit(1)
    if how == "os._exit":
        os._exit(3)
    if how == "segfault":
        ctypes.string_at(0)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "memory":
        limit = 512 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        hog = [bytearray(64 * 1024 * 1024) for _ in range(64)]
        return {"allocated": len(hog)}
    return {"ok": True}
