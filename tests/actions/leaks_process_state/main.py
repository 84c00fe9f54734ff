"""Changes cwd, umask, a signal handler, a module attribute and a builtin."""

import builtins
import os
import signal
import textwrap


def main(args):
    before = {
        "cwd": os.getcwd(),
        "umask": os.umask(0o022),
        "sigusr1_default": signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None),
        "module_patched": getattr(textwrap.dedent, "patched", False),
        "builtin_patched": hasattr(builtins, "leaked_secret"),
    }
    os.umask(before["umask"])
    if args.get("tamper"):
        os.chdir("/")
        os.umask(0o000)
        signal.signal(signal.SIGUSR1, lambda *a: None)

        def fake_dedent(text):
            return text

        fake_dedent.patched = True
        textwrap.dedent = fake_dedent
        builtins.leaked_secret = args.get("secret")
    return before
