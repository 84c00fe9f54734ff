#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine; install and start it when needed.
#
# Idempotent and quiet on success: when `docker info` already answers it does nothing.
# Otherwise it installs docker.io with apt (when dockerd is absent), removes a stale
# containerd pidfile left by a SIGKILLed engine, starts dockerd in the background with its
# log in $REWIND_DOCKERD_LOG, and waits up to $REWIND_DOCKERD_TIMEOUT seconds for it.
set -euo pipefail

# /usr/local/bin/docker may shadow the distribution client (and lacks buildx); the legacy
# builder of /usr/bin/docker is what the build scripts use.
DOCKER="${DOCKER:-/usr/bin/docker}"
LOG="${REWIND_DOCKERD_LOG:-/var/log/rewind-dockerd.log}"
TIMEOUT="${REWIND_DOCKERD_TIMEOUT:-60}"
CONTAINERD_PIDFILE=/var/run/docker/containerd/containerd.pid

die() { echo "docker-engine.sh: $*" >&2; exit 1; }

engine_answers() { [ -x "$DOCKER" ] && "$DOCKER" info >/dev/null 2>&1; }

# True when a live dockerd process exists (without pgrep: procps is not always
# installed). A SIGKILLed engine can linger as a zombie for a while: that one is dead.
dockerd_running() {
    local comm dir state
    for comm in /proc/[0-9]*/comm; do
        [ "$(cat "$comm" 2>/dev/null)" = dockerd ] || continue
        dir="${comm%/comm}"
        state="$(sed -e 's/.*) //' "$dir/stat" 2>/dev/null | cut -d' ' -f1)"
        [ -n "$state" ] && [ "$state" != Z ] && return 0
    done
    return 1
}

start_engine() {
    remove_stale_containerd_pidfile
    mkdir -p "$(dirname "$LOG")"
    # setsid: the engine must outlive this script and the shell that called it.
    setsid dockerd >>"$LOG" 2>&1 </dev/null &
}

install_engine() {
    [ "$(id -u)" = 0 ] || die "dockerd is missing and installing it needs root"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends docker.io >/dev/null \
        || die "apt-get install docker.io failed"
}

# A dockerd killed with SIGKILL leaves containerd's pidfile behind; the next dockerd then
# waits for that dead containerd and gives up with "timeout waiting for containerd".
remove_stale_containerd_pidfile() {
    [ -f "$CONTAINERD_PIDFILE" ] || return 0
    local pid
    pid="$(tr -dc '0-9' <"$CONTAINERD_PIDFILE")"
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$CONTAINERD_PIDFILE"
    fi
}

main() {
    if engine_answers; then
        return 0
    fi
    if ! command -v dockerd >/dev/null 2>&1 || [ ! -x "$DOCKER" ]; then
        install_engine
    fi
    if ! dockerd_running; then
        start_engine
    fi
    local waited=0 starts=1
    until engine_answers; do
        if [ "$waited" -ge "$((TIMEOUT * 2))" ]; then
            die "Docker engine did not answer within ${TIMEOUT}s; see $LOG"
        fi
        # An engine that was already exiting when we looked, or that died at start
        # (e.g. on a stale pidfile), is started again, a few times at most.
        if ! dockerd_running && [ "$starts" -lt 3 ]; then
            sleep 1
            start_engine
            starts=$((starts + 1))
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
}

main "$@"
