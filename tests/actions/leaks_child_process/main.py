"""Starts a child and a detached (double-forked, setsid) grandchild, or checks them."""

import os
import subprocess


def main(args):
    if args.get("op") == "spawn":
        child = subprocess.Popen(["sleep", "600"])
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.setsid()
            grand = os.fork()
            if grand:
                os.write(w, str(grand).encode())
                os._exit(0)
            os.close(w)
            import time

            while True:
                time.sleep(1)
        os.close(w)
        os.waitpid(pid, 0)
        grand = int(os.read(r, 32))
        os.close(r)
        return {"pids": [child.pid, grand]}
    alive = []
    for pid in args.get("pids", []):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                state = fh.read().split(")")[-1].split()[0]
            if state != "Z":
                alive.append(pid)
        except FileNotFoundError:
            pass
    return {"alive": alive}
