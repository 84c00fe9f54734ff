#!/usr/bin/python3
# Test launcher speaking the ActionLoop protocol (stdin lines in, fd 3 lines
# out, {"ok": true} ack). The request's "value" selects a behaviour, so one
# fixture covers every proxy test.
import json
import os
import sys
import time

out = os.fdopen(3, "w")


def reply(obj):
    out.write(json.dumps(obj) + "\n")
    out.flush()


if os.environ.get("FIXTURE_EXIT_AT_START"):
    sys.exit(int(os.environ["FIXTURE_EXIT_AT_START"]))
print("launcher started", flush=True)
if os.environ.get("__OW_WAIT_FOR_ACK"):
    out.write(os.environ.get("FIXTURE_ACK", '{"ok": true}') + "\n")
    out.flush()

count = 0
for line in sys.stdin:
    count += 1
    req = json.loads(line)
    v = req.get("value", {})
    if not isinstance(v, dict):
        reply(v)
        continue
    if "print" in v:
        print(v["print"], flush=True)
        print("err: " + v["print"], file=sys.stderr, flush=True)
    if "sleep" in v:
        time.sleep(v["sleep"])
    if "status" in v:
        # A line on the proxy's status pipe (REWIND_STATUS_FD), as rewind's
        # launcher writes its fail-closed reason there before exiting 5.
        os.write(int(os.environ["REWIND_STATUS_FD"]), (v["status"] + "\n").encode())
    if "crash" in v:
        os._exit(v["crash"])
    if "close_fd3" in v:
        out.close()
        time.sleep(60)
    if "raw" in v:
        out.write(v["raw"] + "\n")
        out.flush()
        continue
    if "exited" in v:
        out.write(" " + json.dumps({"rewind_status": "exited"}) + "\n")
        out.flush()
        continue
    if "env" in v:
        reply({k: os.environ.get(k) for k in v["env"]})
        continue
    if "orphan" in v:
        # The grandchild outlives this request; after the launcher dies it
        # is re-parented to the proxy, which must reap it.
        pid = os.fork()
        if pid == 0:
            os.setsid()
            time.sleep(v["orphan"])
            os._exit(0)
        reply({"orphan": pid, "launcher": os.getpid()})
        continue
    if "seq" in v:
        reply({"seq": v["seq"], "n": count})
        continue
    if "spawn" in v:
        # A grandchild in the launcher's process group: stopping the
        # launcher must kill it too.
        pid = os.fork()
        if pid == 0:
            time.sleep(v["spawn"])
            os._exit(0)
        reply({"spawn": pid})
        continue
    if "big" in v:
        reply({"big": "x" * v["big"]})
        continue
    if "pid" in v:
        reply({"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()})
        continue
    reply(v)
    if "exit_after" in v:
        sys.stdout.flush()
        os._exit(v["exit_after"])
