"""Touches 1 GiB in 64 MiB chunks without any rlimit (the container's memory limit is
what stops it), or reports the token drawn when the module was imported."""

import uuid

TOKEN = uuid.uuid4().hex


def main(args):
    if args.get("hog"):
        # Multiplying writes every byte, so each chunk is really resident.
        hog = [bytearray(b"\x01") * (64 << 20) for _ in range(16)]
        return {"allocated": len(hog)}
    return {"token": TOKEN}
