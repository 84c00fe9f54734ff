#!/usr/bin/python3
# Test sidecar: checks its arguments, records them and REWIND_ACTION_DIR in
# <socket>.info, then listens on the unix socket until SIGTERM.
import json
import os
import socket
import sys

args = sys.argv[1:]
assert args[0:2] == ["--driver", "local"] and args[2] == "--listen", args
path = args[3].split(":", 1)[1]
with open(path + ".info", "w") as f:
    json.dump({"argv": args, "action_dir": os.environ.get("REWIND_ACTION_DIR")}, f)
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(1)
while True:
    s.accept()[0].close()
