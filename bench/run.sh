#!/usr/bin/env bash
# Every benchmark of docs/benchmarks.md, one after the other, Markdown on stdout
# (progress on stderr). About 15 minutes on a quiet 2-core machine;
# --quick: about 6.
#   bench/run.sh > /tmp/bench.md          bench/run.sh --quick
# Loopback only. Needs wrk (installed with apt-get when run as root) and, for the
# MariaDB and PostgreSQL parts, the servers scripts/dbservers.sh sets up; a backend
# that is not reachable is skipped with a warning.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
send=(--messages 200 --concurrency 8 --rounds 3)
if [ "${1:-}" = --quick ]; then
    quick=(--quick)
    send=(--messages 50 --concurrency 8 --rounds 1)
fi
./scripts/setup.sh
.venv/bin/python bench/throughput.py "${quick[@]}"
echo
.venv/bin/python bench/growth.py "${quick[@]}"
echo
.venv/bin/python bench/hashing.py "${quick[@]}"
echo
echo '```'
.venv/bin/python bench/send.py "${send[@]}"
echo '```'
