#!/usr/bin/env bash
# Make sure a MariaDB and a PostgreSQL server listen on loopback for the test suite.
#
#   scripts/dbservers.sh [mariadb] [postgresql]      (default: both)
#
# Wanted state:
#   mariadb:    127.0.0.1:3306, user root, empty password, over TCP
#   postgresql: 127.0.0.1:5432, user postgres, no password (trust), over TCP
#
# A server that already answers like that is reused as is (fast path, no root
# needed). Otherwise (as root, Debian 12, no systemd) the missing packages are
# installed with apt-get, the server is started without systemd and the
# loopback login is configured.
#
# stdout: progress lines prefixed "dbservers: ", then one line per server that
#         is ready, e.g. "mariadb: ready on 127.0.0.1:3306".
# stderr: warnings and, on failure, the reason (and the tail of the log).
# exit:   0 all requested servers ready; 2 bad usage; otherwise, when a server
#         cannot be had: 1 if CI=true (or 1/yes), else 3 (caller may skip it).
#
# Environment: DBSERVERS_TIMEOUT  seconds to wait for a server to accept
#              connections after starting it (default 60).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly HOST=127.0.0.1
readonly MARIADB_PORT=3306
readonly PG_PORT=5432
readonly WAIT_SECS=${DBSERVERS_TIMEOUT:-60}
if [[ -d /run/lock ]]; then
    readonly LOCK_FILE=/run/lock/mailprov-dbservers.lock
else
    readonly LOCK_FILE=/tmp/mailprov-dbservers.lock
fi

export DEBIAN_FRONTEND=noninteractive

progname=${0##*/}
LOG=""
KEEP_LOG=0
APT_UPDATED=0
REASON=""

usage() {
    printf 'usage: %s [mariadb] [postgresql]\n' "$progname"
    printf 'Ensures MariaDB (root@%s:%s, empty password) and PostgreSQL\n' "$HOST" "$MARIADB_PORT"
    printf '(postgres@%s:%s, trust) are listening; default: both.\n' "$HOST" "$PG_PORT"
}

say() { printf 'dbservers: %s\n' "$*"; }
warn() { printf 'dbservers: %s\n' "$*" >&2; }
why() { REASON=$*; }

ensure_log() {
    if [[ -z $LOG ]]; then
        LOG=$(mktemp "${TMPDIR:-/tmp}/dbservers.XXXXXX.log")
    fi
}

cleanup() {
    if [[ -n $LOG && $KEEP_LOG -eq 0 ]]; then
        rm -f -- "$LOG"
    fi
}
trap cleanup EXIT

# Run a command quietly (never reading stdin); its output goes to the log.
# fd 9 (the lock) is closed so that daemons started from here don't keep it.
run() {
    ensure_log
    printf '+ %s\n' "$*" >>"$LOG"
    "$@" </dev/null >>"$LOG" 2>&1 9>&-
}

is_root() { [[ $EUID -eq 0 ]]; }

apt_install() {
    if ! is_root; then
        why "need root to install $*"
        return 1
    fi
    if ! have apt-get; then
        why "apt-get not found (not a Debian machine?); cannot install $*"
        return 1
    fi
    if [[ $APT_UPDATED -eq 0 ]]; then
        APT_UPDATED=1
        say "apt-get update"
        if ! run apt-get update; then
            warn "apt-get update failed; trying the install with the package lists at hand"
        fi
    fi
    say "installing $*"
    if ! run apt-get install -y --no-install-recommends \
        -o DPkg::Lock::Timeout=300 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "$@"; then
        why "apt-get install $* failed"
        return 1
    fi
}

# ---------------------------------------------------------------- MariaDB

maria_server_bin() {
    local b
    for b in /usr/sbin/mariadbd /usr/sbin/mysqld; do
        if [[ -x $b ]]; then
            printf '%s\n' "$b"
            return 0
        fi
    done
    return 1
}

# Value of a [mysqld] option from the server's config files, or $2.
maria_opt() {
    local v=""
    if have my_print_defaults; then
        v=$(my_print_defaults --mysqld 2>/dev/null | sed -n "s/^--$1=//p" | tail -n 1) || v=""
    fi
    printf '%s\n' "${v:-$2}"
}

MARIA_ERR=""
maria_tcp_ok() {
    local client
    client=$(maria_client) || return 1
    if MARIA_ERR=$("$client" --no-defaults --protocol=tcp -h "$HOST" -P "$MARIADB_PORT" \
        -u root --connect-timeout=3 -N -B -e 'select 1' </dev/null 2>&1 >/dev/null); then
        return 0
    fi
    return 1
}

maria_socket_sql() {
    local client sock
    client=$(maria_client) || return 1
    sock=$(maria_opt socket /run/mysqld/mysqld.sock)
    run "$client" --no-defaults --protocol=socket -S "$sock" -u root -N -B -e "$1"
}

maria_alive() {
    local bin
    bin=$(maria_server_bin) || return 1
    start-stop-daemon --status --exec "$bin"
}

start_mariadb() {
    local bin datadir out="" rc=0
    bin=$(maria_server_bin) || { why "mariadbd not installed"; return 1; }
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    datadir=$(maria_opt datadir /var/lib/mysql)
    if [[ ! -d $datadir/mysql ]]; then
        say "mariadb: initialising data directory $datadir"
        if ! run mariadb-install-db --user=mysql --datadir="$datadir"; then
            why "mariadb-install-db failed for $datadir"
            return 1
        fi
    fi
    if maria_alive; then
        say "mariadb: mariadbd is running; waiting for port $MARIADB_PORT"
    else
        say "mariadb: starting $bin"
        out=/var/log/mysql
        [[ -d $out ]] || out=/var/log
        out=$out/dbservers-mariadbd.out
        if ! run start-stop-daemon --start --oknodo --background --output "$out" \
            --exec "$bin" -- --user=mysql; then
            why "start-stop-daemon could not start $bin"
            return 1
        fi
    fi
    wait_until "$WAIT_SECS" maria_alive port_open "$MARIADB_PORT" "$HOST" || rc=$?
    if [[ $rc -ne 0 ]]; then
        ensure_log
        {
            if [[ -n $out ]]; then
                printf -- '--- tail of %s\n' "$out"
                tail -n 20 -- "$out" || true
            fi
            local errlog
            errlog=$(maria_opt log-error "")
            if [[ -n $errlog && -f $errlog ]]; then
                printf -- '--- tail of %s\n' "$errlog"
                tail -n 20 -- "$errlog" || true
            fi
        } >>"$LOG" 2>&1
        if [[ $rc -eq 2 ]]; then
            why "mariadbd exited before listening on $HOST:$MARIADB_PORT"
        else
            why "mariadbd did not listen on $HOST:$MARIADB_PORT within ${WAIT_SECS}s"
        fi
        return 1
    fi
}

# root@127.0.0.1 with empty password over TCP; Debian's root@localhost only
# allows unix_socket, so fix it through the socket (as OS root).
configure_mariadb_root() {
    say "mariadb: enabling root@$HOST with empty password (via the unix socket)"
    if ! maria_socket_sql "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;"; then
        why "TCP login as root failed (${MARIA_ERR:-?}) and root login over the unix socket failed too; cannot fix it"
        return 1
    fi
    maria_tcp_ok && return 0
    # Without skip-name-resolve a loopback client is matched as 'localhost'.
    say "mariadb: also allowing root@localhost with empty password"
    if ! maria_socket_sql "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
FLUSH PRIVILEGES;"; then
        why "could not alter root@localhost over the unix socket"
        return 1
    fi
}

ensure_mariadb() {
    if maria_client >/dev/null; then
        maria_tcp_ok && return 0
    elif port_open "$MARIADB_PORT"; then
        say "mariadb: port $MARIADB_PORT is open but no client is installed"
        if apt_install mariadb-client && maria_client >/dev/null; then
            maria_tcp_ok && return 0
        else
            warn "mariadb: could not install mariadb-client (${REASON:-?}); accepting the open port $MARIADB_PORT"
            REASON=""
            return 0
        fi
    fi

    if ! is_root; then
        why "no working root@$HOST:$MARIADB_PORT login (${MARIA_ERR:-no server/client}) and not root, so cannot install/start/configure"
        return 1
    fi
    if port_open "$MARIADB_PORT" && ! maria_server_bin >/dev/null; then
        why "something listens on $HOST:$MARIADB_PORT but root login fails (${MARIA_ERR:-?}) and it is no local MariaDB this script could configure"
        return 1
    fi
    if ! maria_server_bin >/dev/null || ! maria_client >/dev/null; then
        if ! apt_install mariadb-server mariadb-client; then
            if maria_server_bin >/dev/null && maria_client >/dev/null; then
                warn "mariadb: ${REASON}; the binaries are there, carrying on"
                REASON=""
            else
                return 1
            fi
        fi
        # the package scripts may have started it already
        maria_tcp_ok && return 0
    fi
    if ! port_open "$MARIADB_PORT"; then
        start_mariadb || return 1
        maria_tcp_ok && return 0
    fi
    configure_mariadb_root || return 1
    if ! maria_tcp_ok; then
        why "root@$HOST:$MARIADB_PORT login still fails after configuring: ${MARIA_ERR:-?}"
        return 1
    fi
}

# ------------------------------------------------------------- PostgreSQL

PG_ERR=""
pg_tcp_ok() {
    have psql || return 1
    if PG_ERR=$(PGCONNECT_TIMEOUT=3 psql -X -w -h "$HOST" -p "$PG_PORT" -U postgres -d postgres \
        -Atq -c 'select 1' </dev/null 2>&1 >/dev/null); then
        return 0
    fi
    return 1
}

pg_server_installed() {
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

PG_VER=""
PG_CLUSTER_PORT=""
# Pick the "main" cluster: the one on $PG_PORT, else the newest.
pg_pick_cluster() {
    local line
    PG_VER="" PG_CLUSTER_PORT=""
    line=$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '
        $2 == "main" { last = $0; if ($3 == p) on = $0 }
        END { if (on != "") print on; else if (last != "") print last }') || true
    [[ -n $line ]] || return 1
    read -r PG_VER _ PG_CLUSTER_PORT _ <<<"$line"
}

pg_alive() {
    pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VER" '$1 == v && $2 == "main" && $4 ~ /^online/ { ok = 1 } END { exit !ok }'
}

pg_hba_file() {
    local f=""
    if have pg_conftool; then
        f=$(pg_conftool -s "$PG_VER" main show hba_file 2>/dev/null) || f=""
    fi
    printf '%s\n' "${f:-/etc/postgresql/$PG_VER/main/pg_hba.conf}"
}

configure_pg_trust() {
    local hba tmp trust="host all all 127.0.0.1/32 trust"
    hba=$(pg_hba_file)
    if [[ ! -f $hba ]]; then
        why "pg_hba.conf not found at $hba"
        return 1
    fi
    # already the first rule?
    if ! awk '!/^[[:space:]]*(#|$)/ { ok = ($1 == "host" && $2 == "all" && $3 == "all" && $4 == "127.0.0.1/32" && $5 == "trust"); exit }
        END { exit !ok }' "$hba"; then
        say "postgresql: adding '$trust' at the front of $hba"
        tmp=$(mktemp)
        {
            printf '# added by mailprov scripts/dbservers.sh (tests need passwordless TCP login)\n%s\n' "$trust"
            cat -- "$hba"
        } >"$tmp"
        cat -- "$tmp" >"$hba" # keeps owner and mode of pg_hba.conf
        rm -f -- "$tmp"
    fi
    say "postgresql: reloading $PG_VER/main"
    if ! run pg_ctlcluster --skip-systemctl-redirect "$PG_VER" main reload; then
        why "pg_ctlcluster $PG_VER main reload failed"
        return 1
    fi
    local deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        pg_tcp_ok && return 0
        sleep 0.5
    done
    why "postgres@$HOST:$PG_PORT login still fails after trusting 127.0.0.1: ${PG_ERR:-?}"
    return 1
}

ensure_postgresql() {
    if have psql; then
        pg_tcp_ok && return 0
    elif port_open "$PG_PORT"; then
        say "postgresql: port $PG_PORT is open but no client is installed"
        if apt_install postgresql-client && have psql; then
            pg_tcp_ok && return 0
        else
            warn "postgresql: could not install postgresql-client (${REASON:-?}); accepting the open port $PG_PORT"
            REASON=""
            return 0
        fi
    fi

    if ! is_root; then
        why "no working postgres@$HOST:$PG_PORT login (${PG_ERR:-no server/client}) and not root, so cannot install/start/configure"
        return 1
    fi
    if port_open "$PG_PORT" && ! pg_server_installed; then
        why "something listens on $HOST:$PG_PORT but postgres login fails (${PG_ERR:-?}) and it is no local PostgreSQL this script could configure"
        return 1
    fi
    if ! pg_server_installed || ! have psql || ! have pg_ctlcluster; then
        if ! apt_install postgresql postgresql-client; then
            if pg_server_installed && have psql && have pg_ctlcluster; then
                warn "postgresql: ${REASON}; the binaries are there, carrying on"
                REASON=""
            else
                return 1
            fi
        fi
        pg_tcp_ok && return 0
    fi

    if ! pg_pick_cluster; then
        local ver
        ver=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' 2>/dev/null |
            awk -F/ '{ print $5 }' | sort -n | tail -n 1)
        if [[ -z $ver ]]; then
            why "no PostgreSQL server version found under /usr/lib/postgresql"
            return 1
        fi
        say "postgresql: creating cluster $ver/main on port $PG_PORT"
        if ! run pg_createcluster -p "$PG_PORT" "$ver" main; then
            why "pg_createcluster $ver main failed"
            return 1
        fi
        pg_pick_cluster || { why "cluster $ver/main not listed after creating it"; return 1; }
    fi
    if [[ $PG_CLUSTER_PORT != "$PG_PORT" ]]; then
        why "cluster $PG_VER/main is configured for port $PG_CLUSTER_PORT, not $PG_PORT (see /etc/postgresql/$PG_VER/main/postgresql.conf)"
        return 1
    fi

    install -d -o postgres -g postgres -m 2775 /run/postgresql
    if ! pg_alive; then
        say "postgresql: starting cluster $PG_VER/main"
        if ! run timeout $((WAIT_SECS + 30)) pg_ctlcluster --skip-systemctl-redirect "$PG_VER" main start; then
            ensure_log
            tail -n 20 -- "/var/log/postgresql/postgresql-$PG_VER-main.log" >>"$LOG" 2>&1 || true
            why "pg_ctlcluster $PG_VER main start failed"
            return 1
        fi
    fi
    local rc=0
    wait_until "$WAIT_SECS" pg_alive port_open "$PG_PORT" "$HOST" || rc=$?
    if [[ $rc -ne 0 ]]; then
        ensure_log
        tail -n 20 -- "/var/log/postgresql/postgresql-$PG_VER-main.log" >>"$LOG" 2>&1 || true
        if [[ $rc -eq 2 ]]; then
            why "PostgreSQL $PG_VER/main stopped before listening on $HOST:$PG_PORT"
        else
            why "PostgreSQL $PG_VER/main did not listen on $HOST:$PG_PORT within ${WAIT_SECS}s"
        fi
        return 1
    fi
    # accepting TCP does not mean done with startup (e.g. recovery)
    local deadline=$((SECONDS + WAIT_SECS))
    while ((SECONDS < deadline)); do
        pg_tcp_ok && return 0
        case $PG_ERR in
        *"starting up"* | *"shutting down"* | *"recovery"*) sleep 0.5 ;;
        *) break ;;
        esac
    done
    configure_pg_trust
}

# ------------------------------------------------------------------- main

main() {
    local -a targets=()
    local a t
    for a in "$@"; do
        case $a in
        mariadb | mysql) t=mariadb ;;
        postgresql | postgres | pg) t=postgresql ;;
        -h | --help)
            usage
            return 0
            ;;
        *)
            usage >&2
            return 2
            ;;
        esac
        [[ " ${targets[*]-} " == *" $t "* ]] || targets+=("$t")
    done
    if [[ ${#targets[@]} -eq 0 ]]; then
        targets=(mariadb postgresql)
    fi

    # Serialise concurrent runs (best effort: skipped if the lock file can't be opened).
    if { exec 9>>"$LOCK_FILE"; } 2>/dev/null; then
        if ! flock -w 900 9; then
            warn "another dbservers.sh run holds $LOCK_FILE; gave up waiting for it"
            fail_exit
            return
        fi
    fi

    local -a ready=() failed=()
    local port
    for t in "${targets[@]}"; do
        REASON=""
        if "ensure_$t"; then
            if [[ $t == mariadb ]]; then port=$MARIADB_PORT; else port=$PG_PORT; fi
            ready+=("$t: ready on $HOST:$port")
        else
            failed+=("$t")
            warn "$t: NOT AVAILABLE: ${REASON:-unknown reason}"
        fi
    done

    if [[ ${#ready[@]} -gt 0 ]]; then
        printf '%s\n' "${ready[@]}"
    fi
    if [[ ${#failed[@]} -gt 0 ]]; then
        if [[ -n $LOG && -s $LOG ]]; then
            KEEP_LOG=1
            warn "last lines of the log ($LOG):"
            tail -n 30 -- "$LOG" >&2 || true
        fi
        fail_exit "${failed[*]}"
        return
    fi
}

# Exit status for "a server cannot be had": 1 under CI, else 3.
fail_exit() {
    case ${CI:-} in
    true | TRUE | True | 1 | yes)
        warn "CI is set: failing"
        return 1
        ;;
    esac
    warn "exit 3: the caller may skip ${1:-the requested servers}"
    return 3
}

main "$@"
