#!/usr/bin/env bash
# Build the runtime image on this machine, offline: the same build `distDocker` runs.
#
#   docker-engine.sh   make sure a Docker engine answers
#   base-images.sh     local stand-ins for golang:1.22-bookworm / python:3.11-slim-bookworm
#   wheelhouse.sh      build/wheelhouse/ for `pip install --no-index`
#   gradle distDocker  (or the equivalent docker build + docker tag without gradle)
#
# Result: ${REWIND_IMAGE_PREFIX:-whisk}/action-python-v3.11-rewind:${REWIND_IMAGE_TAG:-latest},
# printed on stdout. Build output goes to build/image-build.log (REWIND_VERBOSE=1 shows it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKER="${DOCKER:-/usr/bin/docker}"
NAME=action-python-v3.11-rewind
PREFIX="${REWIND_IMAGE_PREFIX:-whisk}"
TAG="${REWIND_IMAGE_TAG:-latest}"
LOG="$ROOT/build/image-build.log"

die() { echo "build-image.sh: $*" >&2; exit 1; }

# Runs "$@" with its output in $LOG (or on stderr with REWIND_VERBOSE), showing the end
# of the log when it fails.
logged() {
    if [ -n "${REWIND_VERBOSE:-}" ]; then
        "$@" >&2
        return
    fi
    if ! "$@" >>"$LOG" 2>&1; then
        tail -n 40 "$LOG" >&2
        return 1
    fi
}

main() {
    cd "$ROOT"
    mkdir -p build
    # build/ holds generated files only (wheelhouse, logs, gradle caches).
    [ -f build/.gitignore ] || echo '*' >build/.gitignore
    : >"$LOG"

    "$ROOT/scripts/docker-engine.sh"
    local bases py_image go_image wheelhouse
    bases="$(DOCKER="$DOCKER" "$ROOT/scripts/base-images.sh")"
    py_image="$(sed -n 1p <<<"$bases")"
    go_image="$(sed -n 2p <<<"$bases")"
    wheelhouse="$("$ROOT/scripts/wheelhouse.sh")"
    local build_args="GO_IMAGE=$go_image PYTHON_IMAGE=$py_image WHEELHOUSE=$wheelhouse"

    if command -v gradle >/dev/null 2>&1 && [ -z "${REWIND_NO_GRADLE:-}" ]; then
        # --project-cache-dir keeps gradle's per-project state inside build/.
        logged gradle --quiet --offline --no-daemon --project-cache-dir build/gradle \
            -PdockerBinary="$DOCKER" -PdockerImagePrefix="$PREFIX" -PdockerImageTag="$TAG" \
            -PdockerBuildArgs="$build_args" :core:python3Action:distDocker \
            || die "gradle distDocker failed; see $LOG"
    else
        local arg docker_args=()
        for arg in $build_args; do docker_args+=(--build-arg "$arg"); done
        logged "$DOCKER" build "${docker_args[@]}" -f core/python3Action/Dockerfile \
            -t "$NAME" . || die "docker build failed; see $LOG"
        logged "$DOCKER" tag "$NAME" "$PREFIX/$NAME:$TAG" || die "docker tag failed"
    fi
    "$DOCKER" image inspect "$PREFIX/$NAME:$TAG" >/dev/null 2>&1 \
        || die "the build did not produce $PREFIX/$NAME:$TAG; see $LOG"
    echo "$PREFIX/$NAME:$TAG"
}

main "$@"
