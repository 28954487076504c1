#!/usr/bin/env bash
# Install what `make demo` and `make test` need on a fresh Debian machine:
# restic and btrfs-progs from Debian (when missing, as root), a venv with the package, and the
# pinned engines and S3 server (scripts/tools.sh: rustic, restic 0.18, MinIO; built once per machine),
# the pinned rustic linked as .venv/bin/rustic.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v restic >/dev/null 2>&1 || need_apt+=(restic)
command -v mkfs.btrfs >/dev/null 2>&1 || need_apt+=(btrfs-progs)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: please install ${need_apt[*]} (needs root)" >&2
        exit 1
    fi
    echo "bootstrap: apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${need_apt[@]}" >/dev/null 2>&1 || {
        apt-get update -q >/dev/null
        apt-get install -y -q "${need_apt[@]}" >/dev/null
    }
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
touch .venv/.installed

# The TypeScript SDK's pinned npm packages (clients/typescript, npm ci once per lock file); without
# node/npm it says so and its tests skip.
scripts/typescript_sdk.sh || [ $? -eq 3 ]

# The pinned tools: built once per machine (cached outside the checkout); each build says what it
# builds and roughly how long the first time takes. A failed build stops the set-up: the tests
# that need the tool would otherwise skip.
tools=$(scripts/tools.sh)
# The production engine beside the venv's Python, where the agent's engine = "auto" looks for it
# (agent/engine/choice.py): `make demo` runs on the pinned rustic without changing PATH.
rustic=$(sed -n 's/^rustic=//p' <<<"$tools")
if [ -n "$rustic" ]; then
    ln -sfn "$rustic" .venv/bin/rustic
fi
