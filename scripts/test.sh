#!/usr/bin/env bash
# Installs what the test suite needs (Debian packages when run as root, a venv with the
# project) and runs it. Arguments go to pytest: `bash scripts/test.sh -m long` runs the
# long fault-injection and soak tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/install.sh
source scripts/install.sh
install_debian_packages memcached redis-server nutcracker wrk prometheus
install_venv test
exec .venv/bin/pytest "$@"
