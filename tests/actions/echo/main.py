import os
import sys


def main(args):
    print("stdout line", flush=True)
    print("stderr line", file=sys.stderr, flush=True)
    ctx = {k: v for k, v in os.environ.items() if k.startswith("__OW_")}
    return {"args": args, "env": ctx}
