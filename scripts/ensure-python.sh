#!/usr/bin/env bash
# Print the path of a real Python 3.11+ interpreter (not a pyenv shim: shims add ~50 ms
# to every process start), installing Debian's python3 when none is found.
set -euo pipefail
find_py() {
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1; then
      "$cand" -c 'import sys; assert sys.version_info >= (3, 11); print(sys.executable)' \
        2>/dev/null && return 0
    fi
  done
  return 1
}
if find_py; then exit 0; fi
if [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends python3 python3-venv python3-dev >/dev/null
  find_py && exit 0
fi
echo "ensure-python: Python 3.11 or newer is required" >&2
exit 1
