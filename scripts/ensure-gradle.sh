#!/usr/bin/env bash
# Make sure Debian's gradle is installed: the container tests run `gradle distDocker`
# (./gradlew would download gradle, which this machine's network does not allow).
set -euo pipefail
if command -v gradle >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-gradle: gradle is missing; install Debian's gradle package" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends gradle >/dev/null
gradle --version >/dev/null
