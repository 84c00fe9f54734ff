"""Changes every kind of thing in /tmp and in its own directory, or reports what is there."""

import hashlib
import os
import stat

ROOTS = ["/tmp", os.getcwd()]


def _setup():
    os.makedirs("/tmp/tree/sub", exist_ok=True)
    for name in (
        "keep.txt",
        "to_modify.txt",
        "to_delete.txt",
        "to_chmod.txt",
        "to_rename.txt",
        "to_symlink.txt",
        "tree/sub/deep.txt",
    ):
        with open(os.path.join("/tmp", name), "w") as fh:
            fh.write(f"original {name}\n")
    os.chmod("/tmp/to_chmod.txt", 0o644)


_setup()


def manifest():
    out = {}
    for root in ROOTS:
        for dirpath, dirnames, filenames in os.walk(root):
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


def mutate(count):
    with open("/tmp/to_modify.txt", "a") as fh:
        fh.write("changed by a request\n")
    os.unlink("/tmp/to_delete.txt")
    os.chmod("/tmp/to_chmod.txt", 0o777)
    os.rename("/tmp/to_rename.txt", "/tmp/renamed.txt")
    os.unlink("/tmp/to_symlink.txt")
    os.symlink("/etc/passwd", "/tmp/to_symlink.txt")
    os.makedirs("/tmp/created/dir", exist_ok=True)
    for i in range(count):
        with open(f"/tmp/created/dir/f{i}", "w") as fh:
            fh.write("x" * i)
    with open("main__.py", "a") as fh:
        fh.write("\n# tampered\n")
    with open("new_in_action_dir.txt", "w") as fh:
        fh.write("secret")
    os.unlink("/tmp/tree/sub/deep.txt")
    os.rmdir("/tmp/tree/sub")
    return {"mutated": True}


def main(args):
    if args.get("op") == "mutate":
        return mutate(int(args.get("count", 10)))
    return {"manifest": manifest()}
