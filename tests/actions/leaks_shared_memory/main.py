"""Keeps a secret in shared anonymous memory mapped at import (mmap's default)."""

import mmap

BUF = mmap.mmap(-1, 4096)


def main(args):
    seen = BUF[:64].rstrip(b"\0").decode()
    if "secret" in args:
        BUF[:64] = args["secret"].encode().ljust(64, b"\0")
    return {"seen": seen}
