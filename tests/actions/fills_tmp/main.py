"""A checkpointed file in /tmp that a request grows until /tmp is full."""

import os

PATH = "/tmp/checkpointed.bin"
SIZE = 24 * 1024 * 1024

with open(PATH, "wb") as fh:
    fh.write(b"c" * SIZE)


def main(args):
    if args.get("fill"):
        fd = os.open(PATH, os.O_WRONLY | os.O_APPEND)
        try:
            while True:
                os.write(fd, b"s" * 65536)
        except OSError as exc:
            return {"filled": os.path.getsize(PATH), "error_seen": exc.strerror}
        finally:
            os.close(fd)
    with open(PATH, "rb") as fh:
        data = fh.read()
    return {"size": len(data), "clean": data == b"c" * SIZE}
