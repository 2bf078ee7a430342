#!/usr/bin/env bash
# The main job: set up (if needed) and solve a bundled example on the default model, on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec tta solve "${1:-examples/fibonacci_json.yaml}" "${@:2}"
