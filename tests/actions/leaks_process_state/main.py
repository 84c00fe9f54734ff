"""Changes cwd, umask, a signal handler, a module attribute and a builtin."""

import builtins
import json
import os
import signal


def main(args):
    before = {
        "cwd": os.getcwd(),
        "umask": os.umask(0o022),
        "sigusr1_default": signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None),
        "json_dumps_patched": getattr(json.dumps, "patched", False),
        "builtin_patched": hasattr(builtins, "leaked_secret"),
    }
    os.umask(before["umask"])
    if args.get("tamper"):
        os.chdir("/")
        os.umask(0o000)
        signal.signal(signal.SIGUSR1, lambda *a: None)

        def fake_dumps(*a, **k):
            return "{}"

        fake_dumps.patched = True
        json.dumps = fake_dumps
        builtins.leaked_secret = args.get("secret")
    return before
