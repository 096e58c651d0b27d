# mailprov: one build stage, then a slim runtime that runs as an unprivileged user.
# Build and smoke-test it with scripts/image.sh; docs/docker.md explains the settings.
#
# Both stages start from BASE_IMAGE, so the venv's interpreter path is the same in
# both. Any Debian-like image with `python3` (3.11+, with venv) and `useradd` works:
# python:3.11-slim, or the local Debian bookworm stand-in scripts/image.sh makes
# where no container registry can be reached.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
RUN python3 -m venv /opt/mailprov
# The pinned dependencies first, read from pyproject.toml alone: this layer is
# reused until pyproject.toml changes, however often app/ does.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > requirements.txt \
 && /opt/mailprov/bin/pip install --no-cache-dir --disable-pip-version-check --requirement requirements.txt
# Then mailprov itself (non-editable; `pip check` proves nothing is missing);
# pip and setuptools are not needed at run time.
COPY README.md ./
COPY app ./app
RUN /opt/mailprov/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
 && /opt/mailprov/bin/pip check --disable-pip-version-check \
 && /opt/mailprov/bin/pip uninstall --yes --disable-pip-version-check pip setuptools


FROM ${BASE_IMAGE} AS runtime
# A fixed numeric uid/gid, so volumes can be prepared for it and orchestrators
# can verify "not root" (runAsNonRoot) without reading /etc/passwd. The code and
# /srv/mailprov belong to root; the service may write only to /srv/mailprov/data
# (the SQLite database, when one is used).
RUN groupadd --gid 10001 mailprov \
 && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home \
        --home-dir /srv/mailprov --shell /usr/sbin/nologin mailprov \
 && install -d -o root -g root -m 0755 /srv/mailprov \
 && install -d -o 10001 -g 10001 -m 0750 /srv/mailprov/data

# The entrypoint: `serve` (the default command) runs `mailprov serve` with its
# options taken from the environment; any other command runs as given, e.g.
# `mailprov keys create --admin --name ops` or `mailprov migrate`.
# SC2016: the $-expressions belong to the script being written, not to this RUN.
# hadolint ignore=SC2016
RUN printf '%s\n' \
        '#!/bin/sh' \
        '# mailprov-entrypoint (written by the Dockerfile; see docs/docker.md)' \
        'set -eu' \
        'flag() {' \
        '    case "$(printf "%s" "$2" | tr "[:upper:]" "[:lower:]")" in' \
        '        1|true|yes|on) echo true ;;' \
        '        0|false|no|off) echo false ;;' \
        '        *) echo "mailprov-entrypoint: $1 must be true or false, not \"$2\"" >&2; exit 64 ;;' \
        '    esac' \
        '}' \
        'if [ "${1:-serve}" = serve ]; then' \
        '    [ "$#" -eq 0 ] || shift' \
        '    migrate=$(flag MAILPROV_MIGRATE_ON_START "${MAILPROV_MIGRATE_ON_START:-true}")' \
        '    proxy=$(flag MAILPROV_PROXY_HEADERS "${MAILPROV_PROXY_HEADERS:-false}")' \
        '    [ "$migrate" = true ] || set -- --no-migrate "$@"' \
        '    [ "$proxy" = false ] || set -- --proxy-headers "$@"' \
        '    set -- --workers "${MAILPROV_WORKERS:-1}" --log-level "${MAILPROV_LOG_LEVEL:-info}" "$@"' \
        '    set -- mailprov serve --host "${MAILPROV_HOST:-0.0.0.0}" --port "${MAILPROV_PORT:-8000}" "$@"' \
        'fi' \
        'exec "$@"' \
        > /usr/local/bin/mailprov-entrypoint \
 && chmod 0755 /usr/local/bin/mailprov-entrypoint

COPY --from=build /opt/mailprov /opt/mailprov
COPY migrations /opt/mailprov/migrations

# Defaults only: every MAILPROV_* setting (README, "Configuration") can be given
# with `-e`/`--env-file` at run time.
ENV PATH=/opt/mailprov/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MAILPROV_MIGRATIONS_DIR=/opt/mailprov/migrations \
    MAILPROV_DATABASE_URL=sqlite:////srv/mailprov/data/mailprov.db \
    MAILPROV_ENVIRONMENT=production \
    MAILPROV_LOG_FORMAT=json \
    MALLOC_ARENA_MAX=2 \
    MAILPROV_HOST=0.0.0.0 \
    MAILPROV_PORT=8000 \
    MAILPROV_MIGRATE_ON_START=true

USER 10001:10001
WORKDIR /srv/mailprov
EXPOSE 8000

# Liveness on the port the service listens on; python, because there is no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; h = os.environ.get('MAILPROV_HOST', '0.0.0.0'); h = {'': '127.0.0.1', '0.0.0.0': '127.0.0.1', '::': '[::1]'}.get(h, '[%s]' % h if ':' in h else h); urllib.request.urlopen('http://%s:%s/health' % (h, os.environ.get('MAILPROV_PORT', '8000')), timeout=4)"]

ENTRYPOINT ["mailprov-entrypoint"]
CMD ["serve"]
