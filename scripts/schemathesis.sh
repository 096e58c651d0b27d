#!/usr/bin/env bash
# Fuzz the committed OpenAPI document against a live mailprov with schemathesis:
# all checks, every phase (examples, coverage, fuzzing, stateful). Exits non-zero
# on any failure. Loopback only; bounded by --max-examples.
# Usage: scripts/schemathesis.sh [extra schemathesis options]
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export MAILPROV_DATABASE_URL="sqlite:///$work/fuzz.db" MAILPROV_BCRYPT_COST=4
# The fuzzer sends bad keys on purpose: keep the brute-force block out of its way.
export MAILPROV_AUTH_FAILURE_LIMIT=100000
.venv/bin/mailprov migrate
key=$(.venv/bin/mailprov keys create --admin --name schemathesis 2>/dev/null)
.venv/bin/mailprov serve --host 127.0.0.1 --port "$port" --no-migrate --log-level warning \
    >"$work/serve.log" 2>&1 &
server=$!
stop() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"; }
trap stop EXIT
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
rc=0
.venv/bin/schemathesis run openapi/openapi.json \
    --url "http://127.0.0.1:$port" \
    --header "Authorization: Bearer $key" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples 50 \
    --warnings off \
    --report-dir "$work/report" \
    "$@" || rc=$?
stop
trap - EXIT
exit $rc
