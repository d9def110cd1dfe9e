#!/usr/bin/env bash
# Install the OHIF viewer (the built dist/ of the pinned @ohif/app npm package) into
# .tools/ohif/<version>/ and print the dist/ path: TESSERA_VIEWER_DIR=$(scripts/install-viewer.sh)
#
# Idempotent: a second run only prints the path. Needs npm (Node.js) and the npm registry.
# Exit status 3: the registry cannot be reached (the browser tests skip on it); other non-zero
# statuses are real failures. See docs/OHIF.md.
set -euo pipefail
cd "$(dirname "$0")/.."

OHIF_VERSION=3.13.2   # keep in step with tessera_gateway.viewer_assets.OHIF_VERSION
OHIF_INTEGRITY=sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==
target=.tools/ohif/$OHIF_VERSION
dist=$PWD/$target/dist

if [ -f "$dist/index.html" ] && [ -f "$target/.installed" ]; then
  echo "$dist"; exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "install-viewer: npm is missing (install Node.js 20+, e.g. apt-get install nodejs npm)" >&2
  exit 1
fi
if ! npm ping --silent >/dev/null 2>&1; then
  echo "install-viewer: the npm registry cannot be reached" >&2
  exit 3
fi

echo "==> installing @ohif/app@$OHIF_VERSION into $target (first run only)" >&2
mkdir -p .tools/ohif
work=$(mktemp -d .tools/ohif/.download.XXXXXX)
trap 'rm -rf "$work"' EXIT
tarball=$(npm pack "@ohif/app@$OHIF_VERSION" --pack-destination "$work" --silent 2>"$work/npm.log" | tail -n1) || {
  if grep -Eq 'ENOTFOUND|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EAI_AGAIN|network' "$work/npm.log"; then
    cat "$work/npm.log" >&2; echo "install-viewer: the npm registry cannot be reached" >&2; exit 3
  fi
  cat "$work/npm.log" >&2; exit 1
}
actual=$(node -e 'const c = require("crypto"), f = require("fs");
process.stdout.write("sha512-" + c.createHash("sha512").update(f.readFileSync(process.argv[1])).digest("base64"))' "$work/$tarball")
if [ "$actual" != "$OHIF_INTEGRITY" ]; then
  echo "install-viewer: $tarball has integrity $actual, expected $OHIF_INTEGRITY" >&2
  exit 1
fi
tar -xzf "$work/$tarball" -C "$work" package/dist package/package.json package/LICENSE
rm -rf "$target"
mv "$work/package" "$target"
echo "@ohif/app@$OHIF_VERSION $OHIF_INTEGRITY" > "$target/.installed"
echo "$dist"
