"""Echoes its arguments and counts the requests its process has served."""

COUNT = 0


def main(args):
    global COUNT
    COUNT += 1
    return {"count": COUNT, "echo": args}
