#!/usr/bin/env bash
# Provide local stand-ins for the Dockerfile's base images when the public ones cannot be
# pulled (no registry reachable on build machines like this one).
#
#   rewind-local/python:3.11-slim-bookworm  stands in for python:3.11-slim-bookworm
#   rewind-local/golang:1.22-bookworm       stands in for golang:1.22-bookworm
#
# A stand-in that already exists is kept: rebuilding gives a new image ID and would
# invalidate every downstream build cache. When the public image can be pulled it is
# tagged as the stand-in instead of being rebuilt (set REWIND_TRY_PULL=0 to skip trying).
# Rootfs are made with debootstrap from the mirror this machine's apt uses, read at run
# time. Prints the two image names on stdout, one per line.
set -euo pipefail

DOCKER="${DOCKER:-/usr/bin/docker}"
PY_IMAGE="${REWIND_PYTHON_STANDIN:-rewind-local/python:3.11-slim-bookworm}"
GO_IMAGE="${REWIND_GO_STANDIN:-rewind-local/golang:1.22-bookworm}"
PY_PUBLIC=python:3.11-slim-bookworm
GO_PUBLIC=golang:1.22-bookworm
SUITE=bookworm
CACHE="${REWIND_DEBOOTSTRAP_CACHE:-/var/cache/rewind/debootstrap}"
TRY_PULL="${REWIND_TRY_PULL:-1}"
# The Go versions bookworm-backports carries, best first.
GO_PACKAGES=(golang-1.22-go golang-1.21-go)

die() { echo "base-images.sh: $*" >&2; exit 1; }
log() { [ -z "${REWIND_VERBOSE:-}" ] || echo "base-images.sh: $*" >&2; }

image_exists() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# The first Debian mirror configured for apt (deb822 `URIs:` or one-line `deb` format).
apt_mirror() {
    local uri=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri="$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) \
            if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)"
    fi
    [ -n "$uri" ] || die "no Debian mirror found in the apt configuration"
    echo "$uri"
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 && return 0
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
        || die "apt-get install debootstrap failed"
}

try_pull() {
    local public="$1" standin="$2"
    [ "$TRY_PULL" = 1 ] || return 1
    timeout 60 "$DOCKER" pull -q "$public" >/dev/null 2>&1 || return 1
    "$DOCKER" tag "$public" "$standin"
}

# debootstrap into $1 with extra packages $2 (comma separated).
bootstrap() {
    local root="$1" include="$2"
    mkdir -p "$CACHE"
    debootstrap --variant=minbase --cache-dir="$CACHE" --include="$include" \
        "$SUITE" "$root" "$(apt_mirror)" >"$root.log" 2>&1 \
        || die "debootstrap failed; see $root.log"
}

# Leave the rootfs as small as the official slim images: no apt lists, caches or docs.
trim_rootfs() {
    local root="$1"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
        "$root"/var/cache/apt/archives/*.deb "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/usr/share/info/*
    : >"$root/etc/resolv.conf"
}

# docker import with the remaining arguments as --change instructions.
import_rootfs() {
    local root="$1" name="$2"
    shift 2
    local changes=()
    for c in "$@"; do changes+=(--change "$c"); done
    tar -C "$root" --numeric-owner -c . | "$DOCKER" import "${changes[@]}" - "$name" >/dev/null
}

build_python() {
    local root="$WORK/python"
    log "debootstrap $PY_IMAGE"
    bootstrap "$root" python3,python3-venv,python3-pip,ca-certificates
    # The official image's interpreter is /usr/local/bin/python (bin/compile's shebang).
    ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
    ln -sf /usr/bin/python3 "$root/usr/local/bin/python3"
    ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
    ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip3"
    # Without the PEP 668 marker pip installs system-wide, as in the official image.
    rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
    trim_rootfs "$root"
    import_rootfs "$root" "$PY_IMAGE" \
        'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'ENV LANG=C.UTF-8' 'CMD ["python3"]'
}

build_go() {
    local root="$WORK/go"
    log "debootstrap $GO_IMAGE"
    bootstrap "$root" ca-certificates
    # debootstrap cannot add a second suite (--extra-suites fails): add backports and
    # install golang with apt inside the rootfs.
    echo "deb $(apt_mirror) $SUITE-backports main" >"$root/etc/apt/sources.list.d/backports.list"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    mount -t proc proc "$root/proc"
    local apt=(chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get -qq
        -o Acquire::Check-Valid-Until=false)
    local pkg installed=""
    if "${apt[@]}" update >"$root.apt.log" 2>&1; then
        for pkg in "${GO_PACKAGES[@]}"; do
            if "${apt[@]}" install -y --no-install-recommends "$pkg" >>"$root.apt.log" 2>&1; then
                installed="$pkg"
                break
            fi
        done
    fi
    umount "$root/proc"
    [ -n "$installed" ] || die "no golang package from ${GO_PACKAGES[*]} installed; see $root.apt.log"
    local version="${installed#golang-}"
    version="${version%-go}"
    ln -sfn "/usr/lib/go-$version" "$root/usr/local/go"
    rm -f "$root/etc/apt/sources.list.d/backports.list"
    mkdir -p "$root/go/bin" "$root/go/src"
    trim_rootfs "$root"
    import_rootfs "$root" "$GO_IMAGE" \
        'ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'ENV GOPATH=/go' 'ENV GOTOOLCHAIN=local' 'WORKDIR /go'
}

cleanup() {
    if [ -n "${WORK:-}" ]; then
        mountpoint -q "$WORK/go/proc" 2>/dev/null && umount "$WORK/go/proc"
        rm -rf "$WORK"
    fi
}

main() {
    WORK=""
    trap cleanup EXIT
    local need_py=0 need_go=0
    image_exists "$PY_IMAGE" || try_pull "$PY_PUBLIC" "$PY_IMAGE" || need_py=1
    image_exists "$GO_IMAGE" || try_pull "$GO_PUBLIC" "$GO_IMAGE" || need_go=1
    if [ "$need_py" = 1 ] || [ "$need_go" = 1 ]; then
        [ "$(id -u)" = 0 ] || die "building stand-in images needs root (debootstrap)"
        ensure_debootstrap
        WORK="$(mktemp -d /var/tmp/rewind-base.XXXXXX)"
        [ "$need_py" = 0 ] || build_python
        [ "$need_go" = 0 ] || build_go
    fi
    echo "$PY_IMAGE"
    echo "$GO_IMAGE"
}

main "$@"
