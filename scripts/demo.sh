#!/usr/bin/env bash
# `make run`: the runtime serving example actions with isolation on, then the insecure
# baseline for contrast.
set -euo pipefail
cd "$(dirname "$0")/.."
rewind=.venv/bin/rewind
files=off
if [ "$(id -u)" = 0 ]; then files=local; fi

echo "== rewind invoke examples/hello.py --param name=Ann"
$rewind invoke examples/hello.py --param name=Ann
echo
echo "== examples/leaky.py, three callers, REWIND_MEMORY=auto REWIND_FILES=$files (isolated)"
$rewind invoke examples/leaky.py --files "$files" --repeat 3 --param caller=ann
echo
echo "== the same with REWIND_MEMORY=none REWIND_FILES=off (plain warm reuse, insecure)"
$rewind invoke examples/leaky.py --memory none --files off --repeat 3 --param caller=ann
rm -f /tmp/caller-ann
