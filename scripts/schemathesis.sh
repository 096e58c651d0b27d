#!/usr/bin/env bash
# Fuzz the committed OpenAPI document against a live mailprov with schemathesis:
# all checks, every phase (examples, coverage, fuzzing, stateful). /send relays to
# the tests' submission server (STARTTLS + AUTH). Exits non-zero on any failure.
# Loopback only; bounded by --max-examples.
# Usage: scripts/schemathesis.sh [extra schemathesis options]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

work=$(mktemp -d)
server="" smtp_pid=""
# shellcheck disable=SC2317  # called by the EXIT trap
stop() {
    # shellcheck disable=SC2086  # unquoted on purpose: either pid may still be empty
    kill $server $smtp_pid 2>/dev/null || true
    # shellcheck disable=SC2086
    wait $server $smtp_pid 2>/dev/null || true
    rm -rf "$work"
}
trap stop EXIT

coproc SMTP { exec .venv/bin/python -m tests.smtpd "$work/ca.pem"; }
# shellcheck disable=SC2153  # SMTP_PID is set by coproc
smtp_pid=$SMTP_PID
read -r smtp_host smtp_port <&"${SMTP[0]}"
port=$(free_port)
export MAILPROV_DATABASE_URL="sqlite:///$work/fuzz.db" MAILPROV_BCRYPT_COST=4
export MAILPROV_SUBMISSION_HOST=$smtp_host MAILPROV_SUBMISSION_PORT=$smtp_port
export MAILPROV_SUBMISSION_CA_FILE=$work/ca.pem MAILPROV_SUBMISSION_TIMEOUT=10
# The fuzzer sends bad keys on purpose: keep the brute-force block out of its way.
export MAILPROV_AUTH_FAILURE_LIMIT=100000
# /dns/check asks a closed loopback port, briefly: no lookups leave the machine.
export MAILPROV_DNS_RESOLVERS=127.0.0.1:9 MAILPROV_DNS_TIMEOUT=0.5
.venv/bin/mailprov migrate
key=$(.venv/bin/mailprov keys create --admin --name schemathesis 2>/dev/null)
.venv/bin/mailprov serve --host 127.0.0.1 --port "$port" --no-migrate --log-level warning \
    >"$work/serve.log" 2>&1 &
server=$!
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
if [ $rc -ne 0 ]; then
    echo "schemathesis: the server's log:" >&2
    tail -50 "$work/serve.log" >&2
fi
exit $rc
