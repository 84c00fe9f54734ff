"""tmpwrite: write `files` scratch files of `kib` KiB under /tmp (exercises file rewind).

Run it only with file rewind on (REWIND_FILES=local): otherwise its files stay behind.
"""

import os
import tempfile


def main(args):
    files = int(args.get("files", 10))
    kib = int(args.get("kib", 64))
    block = os.urandom(1024) * kib
    # Left behind on purpose: the file rewind removes it before the next request.
    scratch = tempfile.mkdtemp(dir="/tmp", prefix="scratch-")
    for i in range(files):
        with open(os.path.join(scratch, f"part{i}.bin"), "wb") as fh:
            fh.write(block)
    return {"files": files, "kib": kib, "dir_entries": len(os.listdir(scratch))}
