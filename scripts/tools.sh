#!/usr/bin/env bash
# Build the pinned engine and S3 server binaries the tests and the bench run, once per machine.
#
#   scripts/tools.sh            build what is missing, print one "name=path" line per tool
#   scripts/tools.sh --print    print the paths only (nothing is built; missing tools are left out)
#
# Each tool lands in $BUCKETS_TOOLS_DIR/<name>-<version>/bin (default ~/.cache/buckets-tools),
# outside the checkout, so a fresh clone on the same machine reuses it and a new pin builds
# beside the old one. Sources come from the registries: rustic from crates.io (cargo install
# --locked), restic and MinIO from the Go module proxy (go install). Debian's restic 0.14
# (apt, scripts/bootstrap.sh) stays the third engine.
set -euo pipefail

RUSTIC_VERSION=0.11.4
RESTIC_VERSION=0.18.1
# MinIO publishes no semver tags the Go proxy can serve; this pseudo-version is a fixed commit.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

TOOLS_DIR=${BUCKETS_TOOLS_DIR:-${HOME:-/root}/.cache/buckets-tools}
print_only=false
[ "${1:-}" = "--print" ] && print_only=true

say() { echo "tools: $*" >&2; }

# build NAME VERSION BINARY MINUTES COMMAND...: run COMMAND (installing into $install_prefix) unless
# the binary exists.
build() {
    local name=$1 version=$2 binary=$3 minutes=$4
    shift 4
    local prefix="$TOOLS_DIR/$name-$version"
    local path="$prefix/bin/$binary"
    if [ ! -x "$path" ] && ! $print_only; then
        say "building $name $version into $prefix (first time on this machine: about $minutes min)"
        local started=$SECONDS work="$prefix.partial"
        rm -rf "$work"
        mkdir -p "$work/bin"
        install_prefix=$work
        "$@" >"$work.log" 2>&1 || {
            say "building $name $version failed; the last lines of $work.log:"
            tail -n 20 "$work.log" >&2
            return 1
        }
        rm -rf "$prefix"
        mv "$work" "$prefix"
        mv "$work.log" "$prefix/build.log"
        say "built $name $version in $((SECONDS - started)) s"
    fi
    [ -x "$path" ] && echo "$name=$path"
    return 0
}

cargo_install() {
    # Only what the agent runs: no TUI, WebDAV, Prometheus or OpenTelemetry.
    nice -n 10 cargo install --locked --quiet --no-default-features --root "$install_prefix" \
        rustic-rs --version "$RUSTIC_VERSION"
}

go_install() {
    local module=$1 version=$2
    GOBIN="$install_prefix/bin" CGO_ENABLED=0 GOFLAGS=-trimpath nice -n 10 go install "$module@$version"
}

if ! $print_only; then
    mkdir -p "$TOOLS_DIR"
    # Two set-ups at once (two worktrees, two test runs) wait for each other instead of
    # building into, and deleting, the same partial directory.
    exec 9>"$TOOLS_DIR/.lock"
    flock 9
fi
build rustic "$RUSTIC_VERSION" rustic 15 cargo_install
build restic "$RESTIC_VERSION" restic 3 go_install github.com/restic/restic/cmd/restic "v$RESTIC_VERSION"
build minio "$MINIO_VERSION" minio 8 go_install github.com/minio/minio "$MINIO_VERSION"
