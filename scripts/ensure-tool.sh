#!/usr/bin/env bash
# ensure-tool.sh COMMAND PACKAGE...: make sure COMMAND is on PATH, installing Debian's
# PACKAGEs with apt when it is not (as root; otherwise say what is missing).
# Used for Go (golang-go, 1.19+) and gradle (the container tests run `gradle distDocker`;
# ./gradlew would download gradle, which this machine's network does not allow).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: ensure-tool.sh COMMAND PACKAGE..." >&2; exit 2; }
cmd=$1
shift
if command -v "$cmd" >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-tool: $cmd is missing; install the Debian package(s): $*" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "$@" >/dev/null
command -v "$cmd" >/dev/null
