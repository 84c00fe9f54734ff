#!/usr/bin/env bash
# Fill build/wheelhouse/ with the wheels the runtime image installs, for offline builds.
#
# Downloads, with this machine's pip configuration (its index and mirrors), wheels for
# CPython 3.11 on manylinux x86_64: core/python3Action/requirements.txt and their
# dependencies, plus the rewind package's build requirements (setuptools, wheel). The
# Dockerfile installs from it with `pip install --no-index --find-links` when built with
# --build-arg WHEELHOUSE=build/wheelhouse. Cached: nothing is done while the inputs are
# unchanged. Prints the wheelhouse path (relative to the repo root) on stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REL=build/wheelhouse
OUT="$ROOT/$REL"
REQS="$ROOT/core/python3Action/requirements.txt"
# setuptools/wheel build the rewind package itself (pyproject.toml [build-system]).
BUILD_REQS=("setuptools>=61" "wheel")
STAMP="$OUT/.inputs.sha256"

die() { echo "wheelhouse.sh: $*" >&2; exit 1; }

pip_cmd() {
    if python3 -m pip --version >/dev/null 2>&1; then
        echo "python3 -m pip"
    elif command -v pip3 >/dev/null 2>&1; then
        echo pip3
    else
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends python3-pip >/dev/null \
            || die "pip is missing and apt-get install python3-pip failed"
        echo "python3 -m pip"
    fi
}

# Debian bookworm's glibc is 2.36: accept every manylinux tag up to it. pip does not
# expand manylinux_2_X tags given with --platform, so list them.
platform_args() {
    local minor
    echo "--platform manylinux2014_x86_64"
    for minor in $(seq 5 36); do
        echo "--platform manylinux_2_${minor}_x86_64"
    done
}

inputs_digest() {
    { cat "$REQS"; printf '%s\n' "${BUILD_REQS[@]}"; } | sha256sum | cut -d' ' -f1
}

main() {
    [ -f "$REQS" ] || die "missing $REQS"
    local digest
    digest="$(inputs_digest)"
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$digest" ]; then
        echo "$REL"
        return 0
    fi
    local tmp pip
    pip="$(pip_cmd)"
    mkdir -p "$(dirname "$OUT")"
    [ -f "$ROOT/build/.gitignore" ] || echo '*' >"$ROOT/build/.gitignore"
    tmp="$(mktemp -d "$OUT.tmp.XXXXXX")"
    # shellcheck disable=SC2046,SC2086
    if ! $pip download --quiet --disable-pip-version-check --dest "$tmp" \
        --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
        $(platform_args) -r "$REQS" "${BUILD_REQS[@]}" >"$tmp.log" 2>&1; then
        cat "$tmp.log" >&2
        rm -rf "$tmp" "$tmp.log"
        die "pip download failed"
    fi
    cp "$REQS" "$tmp/requirements.txt"
    echo "$digest" >"$tmp/.inputs.sha256"
    rm -rf "$OUT" "$tmp.log"
    mv "$tmp" "$OUT"
    echo "$REL"
}

main "$@"
