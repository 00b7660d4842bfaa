#!/usr/bin/env bash
# The main job in one command, on a fresh machine: set up the virtual environment (scripts/setup-venv.sh:
# torch, torchvision, yolopatch with what model building needs), then `yolopatch demo`: get YOLOv5 into
# ./yolov5-demo (git, or the package index when GitHub is out of reach), apply every module, write
# their variants and verify them (parameters, GFLOPs, latency). Extra arguments go to `yolopatch demo`,
# e.g. --dest DIR, --img 320, --source pypi.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup-venv.sh"
venv="${YOLOPATCH_VENV:-$here/.venv}"
status=0
"$venv/bin/yolopatch" demo "$@" || status=$?
echo "(yolopatch is installed in $venv: run 'source $venv/bin/activate' before the command above)" >&2
exit "$status"
