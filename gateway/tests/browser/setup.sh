#!/usr/bin/env bash
# Installs the browser-test harness (pinned npm packages, no browser download) into
# target/browser-harness: package.json and peer.mjs from here, node_modules from the npm
# registry. Idempotent; tools/test-all runs it, and the tests run it when it is missing.
# Chromium itself is the Debian package (/usr/lib/chromium/chromium), never `playwright install`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
dest="${BROWSER_HARNESS_DIR:-$root/target/browser-harness}"
mkdir -p "$dest"
cp "$here/package.json" "$here/peer.mjs" "$dest/"
if [ ! -f "$dest/node_modules/playwright-core/package.json" ] ||
   ! grep -q '"version": "1.65.1"' "$dest/node_modules/playwright-core/package.json"; then
  (cd "$dest" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --loglevel=error)
fi
echo "$dest"
