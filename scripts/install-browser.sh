#!/usr/bin/env bash
# Install what the headless-browser tests (tests/browser/) need, only what is missing:
#   - Chromium: the Debian package `chromium` (apt-get; as root, or with passwordless sudo);
#     an existing one is used as found (TESSERA_CHROMIUM names another binary);
#   - the Node driver: tests/browser/package-lock.json (playwright-core) installed with `npm ci`
#     into .tools/browser/ (again only when the lock file changed).
# Prints two lines: the Chromium binary and the driver's node_modules directory.
# Exit status 3: apt or the npm registry cannot be reached (the tests skip on it).
set -euo pipefail
cd "$(dirname "$0")/.."

find_chromium() {
  local name
  for name in "${TESSERA_CHROMIUM:-}" chromium chromium-browser google-chrome; do
    [ -n "$name" ] && command -v "$name" 2>/dev/null && return 0
  done
  return 1
}

if ! chromium=$(find_chromium); then
  echo "==> installing Chromium (Debian package chromium; first run only)" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "install-browser: Chromium is missing and installing it needs root: apt-get install chromium" >&2
      exit 1
    fi
  fi
  log=$(mktemp)
  if ! $sudo apt-get update -qq >"$log" 2>&1 || grep -Eq '^(W|E): (Failed to fetch|Some index files failed)' "$log"; then
    cat "$log" >&2; rm -f "$log"; echo "install-browser: the Debian archive cannot be reached" >&2; exit 3
  fi
  if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >"$log" 2>&1; then
    cat "$log" >&2
    if grep -Eq 'Failed to fetch|Temporary failure resolving|Could not connect|Unable to connect' "$log"; then
      rm -f "$log"; echo "install-browser: the Debian archive cannot be reached" >&2; exit 3
    fi
    rm -f "$log"; exit 1
  fi
  rm -f "$log"
  chromium=$(find_chromium)
fi

driver=.tools/browser
stamp="$(sha256sum tests/browser/package-lock.json | cut -d' ' -f1)"
if [ ! -f "$driver/.installed" ] || [ "$(cat "$driver/.installed")" != "$stamp" ]; then
  echo "==> installing the browser driver (tests/browser/package-lock.json) into $driver" >&2
  if ! command -v npm >/dev/null 2>&1; then
    echo "install-browser: npm is missing (install Node.js 20+)" >&2; exit 1
  fi
  if ! npm ping --silent >/dev/null 2>&1; then
    echo "install-browser: the npm registry cannot be reached" >&2; exit 3
  fi
  mkdir -p "$driver"
  cp tests/browser/package.json tests/browser/package-lock.json "$driver/"
  (cd "$driver" && npm ci --silent --no-audit --no-fund --ignore-scripts) >&2
  echo "$stamp" > "$driver/.installed"
fi
echo "$chromium"
echo "$PWD/$driver/node_modules"
