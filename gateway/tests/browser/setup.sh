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
cp "$here/package.json" "$here/peer.mjs" "$here/jssip-phone.js" "$dest/"
pinned() { # package version: installed at exactly that version?
  [ -f "$dest/node_modules/$1/package.json" ] &&
    grep -q "\"version\": \"$2\"" "$dest/node_modules/$1/package.json"
}
if ! pinned playwright-core 1.65.1 || ! pinned jssip 3.13.8 || ! pinned esbuild 0.28.2; then
  (cd "$dest" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --loglevel=error)
fi
# JsSIP has no browser build: bundle it for the test pages (global `JsSIP`).
if [ ! -s "$dest/jssip.bundle.js" ] || [ "$dest/node_modules/jssip/package.json" -nt "$dest/jssip.bundle.js" ]; then
  (cd "$dest" && node_modules/.bin/esbuild node_modules/jssip/lib/JsSIP.js --bundle --format=iife \
    --global-name=JsSIP --platform=browser --log-level=warning --outfile=jssip.bundle.js)
fi
echo "$dest"
