#!/usr/bin/env bash
# Build the Compose stack's images on this host and start it: docs/deploy.md explains every step.
#
#   scripts/compose_up.sh [--profile cpu|gpu] [--local-bases] [--ca-bundle FILE] [--env-file FILE]
#                         [--build-only]
#
# --local-bases  for a host that reaches Debian's mirror and PyPI but no image registry: build
#                the base images here instead of pulling them. A debootstrap'd bookworm becomes
#                tta-local/debian:bookworm (docker import), and on it docker/local/ builds a
#                Python (PYTHON_IMAGE) and a Redis (REDIS_IMAGE) stand-in. Built once, reused.
# --ca-bundle    a CA bundle for pip in the build stages (a host whose HTTPS passes a
#                TLS-inspecting proxy); default: $PIP_CERT when it names a file.
# --env-file     the deployment's settings (default .env; created from .env.example with fresh
#                random secrets when missing). --local-bases writes REDIS_IMAGE into it.
# --build-only   build, do not start.
#
# The images build with Docker's layer cache: dependencies and llama.cpp sit in layers below
# the project's code, so a rebuild after a code change reuses them. Needs root (or the docker
# group) and Docker with Compose (v2's `docker compose`, or v1's `docker-compose` 1.29).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=cpu local_bases=0 build_only=0 env_file=.env ca_bundle="${PIP_CERT:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --local-bases) local_bases=1; shift ;;
    --ca-bundle) ca_bundle="$2"; shift 2 ;;
    --env-file) env_file="$2"; shift 2 ;;
    --build-only) build_only=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "compose_up.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$profile" in cpu|gpu) ;; *) echo "compose_up.sh: --profile is cpu or gpu, not $profile" >&2; exit 2 ;; esac

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
t0=$(date +%s)

# ---- Docker itself ------------------------------------------------------------------------------
need_apt=()
command -v docker >/dev/null 2>&1 || need_apt+=(docker.io)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
  need_apt+=(docker-compose)
fi
[ "$local_bases" = 1 ] && ! command -v debootstrap >/dev/null 2>&1 && need_apt+=(debootstrap)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]} (Debian packages)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  # A host without systemd (a container, a CI box) has no service manager to start the daemon.
  if [ "$(id -u)" -eq 0 ] && command -v dockerd >/dev/null 2>&1; then
    say "starting dockerd (log: /var/log/dockerd-tta.log)"
    nohup dockerd >/var/log/dockerd-tta.log 2>&1 &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  fi
  docker info >/dev/null 2>&1 || { echo "compose_up.sh: no Docker daemon answers (start it: systemctl start docker)" >&2; exit 1; }
fi
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi

# ---- the deployment's settings ------------------------------------------------------------------
set_env() {  # set_env KEY VALUE: replace the KEY= line of the env file, or append one
  if grep -q "^$1=" "$env_file"; then sed -i "s|^$1=.*|$1=$2|" "$env_file"; else echo "$1=$2" >> "$env_file"; fi
}
if [ ! -f "$env_file" ]; then
  say "writing $env_file from .env.example, with fresh secrets (the API key is TTA_API_KEYS in it)"
  install -m 600 .env.example "$env_file"
  set_env REDIS_PASSWORD "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
  set_env TTA_API_KEYS "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
  set_env COMPOSE_PROFILES "$profile"
fi
# the containers read it through ENV_FILE (env_file: in docker-compose.yml)
set_env ENV_FILE "$env_file"

# ---- base images built here (no registry) ---------------------------------------------------
build_args=()
if [ "$local_bases" = 1 ]; then
  if ! docker image inspect tta-local/debian:bookworm >/dev/null 2>&1; then
    mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    mirror=${mirror:-http://deb.debian.org/debian}
    root=$(mktemp -d /var/tmp/tta-debootstrap.XXXXXX)
    say "debootstrap bookworm from $mirror (about 1-2 min)"
    $SUDO debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
    # apt's downloaded packages and lists are dead weight in a base image
    $SUDO tar -C "$root" --exclude='./var/cache/apt/archives/*.deb' --exclude='./var/lib/apt/lists/*' -c . \
      | docker import - tta-local/debian:bookworm >/dev/null
    $SUDO rm -rf "$root"
  fi
  say "local bases: tta-local/python:3.11-bookworm, tta-local/redis:7-bookworm"
  docker build -q -f docker/local/Dockerfile.python -t tta-local/python:3.11-bookworm docker/local >/dev/null
  docker build -q -f docker/local/Dockerfile.redis -t tta-local/redis:7-bookworm docker/local >/dev/null
  build_args+=(--build-arg PYTHON_IMAGE=tta-local/python:3.11-bookworm)
  set_env REDIS_IMAGE tta-local/redis:7-bookworm
fi

# ---- what the build stages are handed -----------------------------------------------------------
rm -f docker/ca/ca.crt
if [ -n "$ca_bundle" ]; then
  [ -f "$ca_bundle" ] || { echo "compose_up.sh: --ca-bundle $ca_bundle: no such file" >&2; exit 2; }
  cp "$ca_bundle" docker/ca/ca.crt
  build_args+=(--build-arg PIP_CERT=/etc/tta-build-ca/ca.crt)
fi
# The CPU torch wheel where pip's find-links hold it (PyTorch's own index may be unreachable).
find docker/wheels -name 'torch-*.whl' -delete
if [ "$profile" = cpu ]; then
  for dir in $(echo "${PIP_FIND_LINKS:-}" | tr ' ' '\n'); do
    for whl in "${dir#file://}"/torch-2.13.0+cpu-cp311-*.whl; do
      [ -f "$whl" ] && ln -f "$whl" docker/wheels/ 2>/dev/null || { [ -f "$whl" ] && cp "$whl" docker/wheels/; }
    done
  done
fi

# ---- build and start ----------------------------------------------------------------------------
compose=("${COMPOSE[@]}" --env-file "$env_file" --profile "$profile")
say "building the $profile profile's images (first time: about 25 min on 2 cores, llama.cpp compiles; then cached)"
"${compose[@]}" build "${build_args[@]}"
docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^tta-(cpu|gpu|sandbox|local/redis)' || true
if [ "$build_only" = 1 ]; then
  say "built in $(( $(date +%s) - t0 )) s"
  exit 0
fi
say "starting (${compose[*]} up -d)"
"${compose[@]}" up -d
"${compose[@]}" ps
say "up in $(( $(date +%s) - t0 )) s; the API answers on ${API_PUBLISH:-127.0.0.1:8080} once every container is healthy"
