# Prints at import without flushing: the text sits in the stdio buffers when the
# snapshot is taken, unless the runtime flushes them first.
import sys

print("printed at import on stdout")
print("printed at import on stderr", file=sys.stderr)
sys.stdout.buffer.write(b"written at import to stdout.buffer\n")


def main(args):
    print("printed by the request")
    return {"ok": True}
