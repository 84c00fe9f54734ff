"""Writes extra result lines toward every channel it can find."""

import os

FORGED = b'{"forged": true}\n'


def main(args):
    if args.get("op") != "forge":
        return {"own": args.get("n")}
    wrote = []
    for fd in range(3, 64):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "pipe" in target or "memfd" in target:
            try:
                os.write(fd, FORGED * 3)
                wrote.append(target)
            except OSError:
                pass
    return {"own": args.get("n"), "wrote": wrote}
