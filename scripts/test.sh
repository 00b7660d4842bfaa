#!/usr/bin/env bash
# Set up the virtual environment if needed, then run the whole test suite.
# Real YOLOv5 trees are downloaded from the package index on first use and cached in
# ~/.cache/yolopatch-tests (or $YOLOPATCH_TEST_CACHE). Extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup-venv.sh"
venv="${YOLOPATCH_VENV:-$here/.venv}"
cd "$here"
exec "$venv/bin/python" -m pytest "$@"
