#!/usr/bin/env bash
# The end-to-end suite (issue 6): mailprov's HTTP API against a real Postfix +
# Dovecot (deploy/stack.sh). The fixtures in tests/e2e install, start and stop
# the stack themselves; this sets up nothing. Needs root and MariaDB on
# 127.0.0.1:3306 (root, no password). Without the stack the tests are skipped;
# with CI=true they fail. Run scripts/setup.sh first (scripts/test.sh does).
# Extra arguments go to pytest: scripts/e2e.sh -k quota
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/pytest ]; then
    echo "e2e: .venv/bin/pytest is missing; run scripts/setup.sh first" >&2
    exit 1
fi
exec .venv/bin/pytest -q -m e2e tests/e2e "$@"
