"""Prints the invoker's log sentinel, on both streams, with and without a newline."""

import os
import sys

SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"


def main(args):
    print(SENTINEL, flush=True)
    print(SENTINEL, file=sys.stderr, flush=True)
    os.write(1, b"tail " + SENTINEL.encode())  # no newline: a partial line at the reply
    return {"ok": True}
