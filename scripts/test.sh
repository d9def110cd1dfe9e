#!/usr/bin/env bash
# Lint, type-check and test. Called by `./run test` (and so by CI's .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

echo "==> ruff check"; ruff check .
echo "==> ruff format --check"; ruff format --check .
echo "==> mypy (strict)"; mypy
echo "==> pytest"
exec pytest "$@"
