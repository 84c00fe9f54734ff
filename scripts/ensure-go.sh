#!/usr/bin/env bash
# Make sure a Go toolchain (1.19+) is on PATH; installs Debian's golang-go when absent.
set -euo pipefail
if command -v go >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-go: no Go toolchain found; install golang-go (Go 1.19 or newer)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends golang-go ca-certificates >/dev/null
go version >/dev/null
