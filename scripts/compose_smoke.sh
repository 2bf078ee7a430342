#!/usr/bin/env bash
# The Compose smoke test (scripts/compose_smoke.py explains what it checks). From a clean clone,
# on a host with nothing but Debian and network access to its mirror and PyPI:
#
#   sudo scripts/compose_smoke.sh --local-bases        # no image registry: bases built here
#   sudo scripts/compose_smoke.sh                      # the upstream bases, pulled
#
# It installs Docker and Compose when missing (scripts/compose_up.sh), builds the cpu profile's
# images, runs the checks and tears the stack down. First run ~30 min on 2 cores (llama.cpp
# compiles); later runs reuse the image layers.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3 >/dev/null; }
exec python3 scripts/compose_smoke.py "$@"
