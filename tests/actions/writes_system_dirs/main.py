"""Tries to write where the function user must not (site-packages, /etc) and where it
may (/tmp); returns what happened for each path."""

import os
import site
import sysconfig


def _try_write(directory):
    path = os.path.join(directory, "rewind-write-probe")
    try:
        with open(path, "w") as fh:
            fh.write("probe")
    except FileNotFoundError:
        return "missing"
    except PermissionError:
        return "denied"
    except OSError as exc:
        return f"error: {exc.strerror}"
    os.unlink(path)
    return "written"


def main(args):
    protected = {
        "/usr/local/lib/python3.11/site-packages",
        "/etc",
        sysconfig.get_paths()["purelib"],
        *site.getsitepackages(),
    }
    return {
        "uid": os.getuid(),
        "protected": {d: _try_write(d) for d in sorted(protected)},
        "tmp": _try_write("/tmp"),
    }
