#!/usr/bin/env bash
# Install the TypeScript SDK's pinned npm packages (clients/typescript/package-lock.json) with
# `npm ci`, once: again only when the lock file changed. Prints what it installs. Exit 3 (and
# says so) when node or npm is missing: the SDK's tests then skip.
set -euo pipefail
cd "$(dirname "$0")/../clients/typescript"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "typescript sdk: node/npm not found; the TypeScript SDK is not installed (its tests skip)" >&2
    exit 3
fi
stamp=node_modules/.buckets-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "typescript sdk: npm ci in clients/typescript (node $(node --version), npm $(npm --version)):" \
     "$(node -e 'const p=require("./package.json");console.log(Object.entries({...p.dependencies,...p.devDependencies}).map(([n,v])=>n+"@"+v).join(" "))')" >&2
npm ci --no-audit --no-fund --loglevel=error >&2
echo "$want" > "$stamp"
