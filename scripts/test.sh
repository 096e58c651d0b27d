#!/usr/bin/env bash
# Set up, lint, and run the whole test suite on SQLite, MariaDB and PostgreSQL,
# the end-to-end suite on a real Postfix + Dovecot (with the MariaDB run), and the
# Galera suite once (scripts/galera.sh; MAILPROV_SKIP_GALERA=1 leaves it out).
# Backends to run can be narrowed: scripts/test.sh sqlite  (default: all three and
# galera; `scripts/test.sh galera` runs only the Galera suite).
# Extra pytest arguments after --: scripts/test.sh sqlite -- -k aliases
set -euo pipefail
cd "$(dirname "$0")/.."

backends=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do backends+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#backends[@]} -gt 0 ] || backends=(sqlite mariadb postgresql galera)
galera=0
databases=()
for backend in "${backends[@]}"; do
    if [ "$backend" = galera ]; then galera=1; else databases+=("$backend"); fi
done

./scripts/setup.sh
# curl runs the README's examples; libargon2 checks pre-hashed {ARGON2*} passwords.
missing=()
command -v curl >/dev/null || missing+=(curl)
ldconfig -p 2>/dev/null | grep -q 'libargon2\.so\.1' || missing+=(libargon2-1)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "test: please install ${missing[*]}" >&2
        exit 1
    fi
fi

echo "== lint"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy app

status=0
if [ "${MAILPROV_SKIP_FUZZ:-}" != 1 ]; then
    # A tool nobody here wrote holds the committed OpenAPI document to the running app.
    echo "== schemathesis against the committed OpenAPI document"
    rc=0
    ./scripts/schemathesis.sh || rc=$?
    [ $rc -eq 0 ] || status=$rc
fi
if [ "${MAILPROV_SKIP_IMAGE:-}" != 1 ]; then
    # The container image: hadolint, then build with buildah and smoke-run with podman.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== container image (hadolint, build, smoke)"
        rc=0
        { ./scripts/image.sh lint && ./scripts/image.sh all; } || rc=$?
        [ $rc -eq 0 ] || status=$rc
    elif [ "${CI:-}" = true ]; then
        echo "test: the image build needs root and apt-get" >&2
        status=1
    else
        echo "test: SKIPPING the container image: needs root and apt-get (CI would fail)" >&2
    fi
fi
for backend in "${databases[@]}"; do
    if [ "$backend" != sqlite ]; then
        rc=0
        ./scripts/dbservers.sh "$backend" || rc=$?
        if [ $rc -ne 0 ]; then
            if [ "${CI:-}" = true ] || [ $rc -ne 3 ]; then
                echo "test: $backend server not available" >&2
                exit 1
            fi
            echo "test: SKIPPING $backend: no server could be had here (CI would fail)" >&2
            continue
        fi
    fi
    echo "== tests on $backend"
    rc=0
    MAILPROV_TEST_BACKEND=$backend .venv/bin/pytest "$@" || rc=$?
    [ $rc -eq 0 ] || status=$rc
    if [ "$backend" = mariadb ] && [ "${MAILPROV_SKIP_E2E:-}" != 1 ]; then
        # Real Postfix + Dovecot read what mailprov writes (deploy/stack.sh, on MariaDB).
        echo "== end-to-end tests on Postfix + Dovecot"
        rc=0
        ./scripts/e2e.sh || rc=$?
        [ $rc -eq 0 ] || status=$rc
    fi
done
if [ $galera -eq 1 ] && [ "${MAILPROV_SKIP_GALERA:-}" != 1 ]; then
    # Once, not per backend: three MariaDB Galera nodes, HAProxy and three mailprov
    # copies (deploy/ha.sh), started and stopped by the suite's fixtures.
    echo "== Galera: mailprov copies on a three-node cluster behind HAProxy"
    rc=0
    ./scripts/galera.sh || rc=$?
    [ $rc -eq 0 ] || status=$rc
fi
exit $status
