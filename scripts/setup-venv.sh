#!/usr/bin/env bash
# Create or update the project's virtual environment (.venv, or $YOLOPATCH_VENV) with yolopatch and
# everything model building and the tests need. Safe to run again: it skips work already done.
#
# torch: the CPU wheel preinstalled on some machines has no matching torchvision; torch 2.15.0 and
# torchvision 0.29.2 from the package index run on the CPU. setuptools stays below 81 because
# YOLOv5 imports pkg_resources.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${YOLOPATCH_VENV:-$here/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating virtual environment $venv" >&2
    "$python" -m venv "$venv"
fi

stamp="$venv/.yolopatch-setup"
wanted="$(cat "$here/pyproject.toml" "$here/scripts/setup-venv.sh" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    exit 0
fi

pip=("$venv/bin/python" -m pip --disable-pip-version-check)
echo "setup: installing torch 2.15.0 + torchvision 0.29.2 (first time: a few minutes, about 5 GB)" >&2
"${pip[@]}" install -q "pip>=23" "setuptools<81" wheel
"${pip[@]}" install -q "torch==2.15.0" "torchvision==0.29.2"
echo "setup: installing yolopatch and YOLOv5's model-building dependencies" >&2
"${pip[@]}" install -q -e "$here[build,test]"
echo "$wanted" > "$stamp"
