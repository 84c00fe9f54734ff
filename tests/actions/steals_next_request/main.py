"""Leaves a process behind that tries to read the next request from stdin."""

import os
import time


def _steal(out_path):
    grabbed = b""
    sources = ["/proc/self/fd/0", f"/proc/{os.getppid()}/fd/0"]
    deadline = time.time() + 5
    while time.time() < deadline:
        for src in sources:
            try:
                fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                grabbed += os.read(fd, 1 << 16)
            except OSError:
                pass
            finally:
                os.close(fd)
        try:
            os.set_blocking(0, False)
            grabbed += os.read(0, 1 << 16)
        except OSError:
            pass
        if grabbed:
            with open(out_path, "ab") as fh:
                fh.write(grabbed)
            grabbed = b""
        time.sleep(0.01)


def main(args):
    if args.get("op") == "steal":
        if os.fork() == 0:
            try:
                _steal(args["out"])
            finally:
                os._exit(0)
        return {"stealing": True}
    return {"got": args.get("secret")}
