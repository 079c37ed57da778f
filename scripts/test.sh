#!/usr/bin/env bash
# Installs what the test suite needs (Debian packages when run as root, a venv with the
# project), runs the static checks (ruff, mypy --strict) and then the tests. Arguments go to
# pytest: `bash scripts/test.sh -m long` runs the long fault-injection and soak tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/install.sh
source scripts/install.sh
install_debian_packages memcached redis-server nutcracker wrk prometheus nginx nodejs curl \
    chromium chromium-driver libmemcached-tools
install_venv test
# checkov (tests/deploy) pins many libraries of its own: it gets a venv of its own.
[ -x .venv-checkov/bin/checkov ] || {
  python3 -m venv .venv-checkov
  .venv-checkov/bin/pip install -q --disable-pip-version-check 'checkov>=3.2,<4'
}
packages=(ringleader proxy control)
.venv/bin/ruff check "${packages[@]}" tests bench
.venv/bin/ruff format --check "${packages[@]}"
.venv/bin/mypy --strict "${packages[@]}"
exec .venv/bin/pytest "$@"
