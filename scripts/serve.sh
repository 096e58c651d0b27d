#!/usr/bin/env bash
# Set up, migrate and serve mailprov on the embedded SQLite database (./mailprov.db).
# Pass-through options go to `mailprov serve` (e.g. --port 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/mailprov serve "$@"
