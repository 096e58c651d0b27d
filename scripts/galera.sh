#!/usr/bin/env bash
# The Galera suite (issue 20): mailprov copies on a three-node MariaDB Galera cluster
# behind HAProxy (deploy/ha.sh). The fixtures in tests/galera install, start and
# stop the cluster themselves (a fresh state dir under /tmp, ports 3310-3313,
# 4511-4533, 8090-8093 and 8099); this sets up nothing. Needs root. Without the
# cluster the tests are skipped; with CI=true they fail. Run scripts/setup.sh first
# (scripts/test.sh does). Extra arguments go to pytest: scripts/galera.sh -k alias
# The run's numbers are printed at the end and, with MAILPROV_GALERA_REPORT=FILE,
# written there as JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/pytest ]; then
    echo "galera: .venv/bin/pytest is missing; run scripts/setup.sh first" >&2
    exit 1
fi
exec .venv/bin/pytest -q -m galera tests/galera "$@"
