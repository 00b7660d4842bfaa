#!/usr/bin/env bash
# Set up the virtual environment if needed, then run the whole test suite.
# Real YOLOv5 trees are downloaded from the package index on first use and cached in
# ~/.cache/yolopatch-tests (or $YOLOPATCH_TEST_CACHE). Extra arguments go to pytest. The suite runs on
# every core (pytest-xdist, --dist worksteal: idle workers take over queued tests);
# YOLOPATCH_TEST_WORKERS=0 runs it in one process.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup-venv.sh"
venv="${YOLOPATCH_VENV:-$here/.venv}"
cd "$here"
workers="${YOLOPATCH_TEST_WORKERS:-auto}"
if [ "$workers" = "0" ]; then
    exec "$venv/bin/python" -m pytest "$@"
fi
exec "$venv/bin/python" -m pytest -n "$workers" --dist worksteal "$@"
