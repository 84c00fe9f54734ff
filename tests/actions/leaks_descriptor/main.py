import os

HELD = []


def main(args):
    if "path" in args:
        HELD.append(os.open(args["path"], os.O_RDONLY))
        return {"opened": HELD[-1]}
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return {"targets": targets}
