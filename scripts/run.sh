#!/usr/bin/env bash
# Installs Ringleader (and memcached, when run as root on Debian) and runs the whole
# system on this machine with `ringleader up`. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/install.sh
source scripts/install.sh
install_debian_packages memcached || echo "continuing without apt: ringleader up uses what it finds" >&2
install_venv standalone
exec .venv/bin/ringleader up "$@"
