"""An action that tries to keep data between requests, to show what REWIND prevents.

Each request remembers its caller in a global list, in os.environ and in a file under
/tmp. Under REWIND every request starts clean, so it only ever sees itself; under plain
warm reuse (REWIND_MEMORY=none) it sees every earlier caller.
"""

import os

CALLERS = []


def main(args):
    caller = args.get("caller", "anonymous")
    CALLERS.append(caller)
    previous_env = os.environ.get("LAST_CALLER")
    os.environ["LAST_CALLER"] = caller
    files = sorted(f for f in os.listdir("/tmp") if f.startswith("caller-"))
    with open(f"/tmp/caller-{caller}", "w") as fh:
        fh.write(caller)
    return {"callers_in_memory": CALLERS, "previous_env": previous_env, "files_in_tmp": files}
