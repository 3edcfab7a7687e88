#!/usr/bin/env bash
# Install the browser assets the built book serves itself (MathJax, require.js, the Jupyter widget
# manager), so a reader's browser never fetches code from a CDN. Versions are pinned by
# book/package.json and book/package-lock.json; book/_ext/offline_assets.py copies the files into
# the HTML output at build time.
#
# Installs into book/_vendor/ (ignored by git and by the book build). A second run with an
# unchanged lock file does nothing. To change a version: edit book/package.json, then in book/ run
#   npm install --package-lock-only --omit-lockfile-registry-resolved
# and commit both files.
set -euo pipefail
cd "$(dirname "$0")/.."

VENDOR=book/_vendor
STAMP=$VENDOR/.installed-lock.sha256

command -v npm >/dev/null || { echo "error: npm not found; install Node.js and npm (Debian: apt-get install -y npm)" >&2; exit 1; }

lock_sum=$(cat book/package.json book/package-lock.json | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$lock_sum" ]; then
  echo "web assets: up to date ($VENDOR)"
  exit 0
fi

mkdir -p "$VENDOR"
cp book/package.json book/package-lock.json "$VENDOR"/
# --ignore-scripts: these packages only ship files; none needs an install script to be usable.
npm ci --prefix "$VENDOR" --ignore-scripts --no-audit --no-fund --loglevel=error
echo "$lock_sum" > "$STAMP"
echo "web assets: installed into $VENDOR"
