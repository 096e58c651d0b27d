#!/usr/bin/env bash
# mailprov past one machine (issue 20): a three-node MariaDB Galera cluster
# (Debian's mariadb-server + galera-4, every node writable), HAProxy (Debian's) in
# front of the nodes and in front of several mailprov copies, all on loopback,
# without systemd, as root. The Galera tests run against exactly this.
#
#   deploy/ha.sh install        install the Debian packages (idempotent; quick when present)
#   deploy/ha.sh start          bootstrap (or restart) the cluster, HAProxy and the copies
#   deploy/ha.sh stop           stop everything (copies, HAProxy, nodes 3, 2, 1: bounded)
#   deploy/ha.sh status         what runs; exit 0 all up, 3 all down, 1 partly up
#   deploy/ha.sh env            shell `export` lines for tests (eval "$(deploy/ha.sh env)")
#   deploy/ha.sh kill-node N    SIGKILL node N's mariadbd (a crash, no clean shutdown)
#   deploy/ha.sh stop-node N    stop node N cleanly
#   deploy/ha.sh start-node N   start node N again: it rejoins (IST, or SST when it must)
#   deploy/ha.sh kill-copy N    SIGKILL mailprov copy N
#   deploy/ha.sh start-copy N   start mailprov copy N again
#   deploy/ha.sh sql N SQL      run SQL as root on node N (over its unix socket)
#   deploy/ha.sh destroy        stop, then remove the state directory
#
# Environment (all optional):
#   MAILPROV_HA_DIR         state dir: datadirs, configs, secrets, logs (default /tmp/mailprov-galera)
#   MAILPROV_HA_DB          database name (default mailprov; [A-Za-z0-9_] only)
#   MAILPROV_HA_COPIES      mailprov copies behind HAProxy (default 3; 0: none)
#   MAILPROV_HA_COPY_DB     how a copy reaches the cluster: "pinned" (default: copy N uses
#                           node ((N-1) mod 3)+1 directly) or "haproxy" (the SQL frontend)
#   MAILPROV_HA_WORKERS     uvicorn workers per copy (default 1)
#   MAILPROV_HA_SQL_PORT    HAProxy's SQL frontend (default 3310); node N listens on +N
#   MAILPROV_HA_GCOMM_PORT  base of Galera's ports (default 4510): node N's group
#                           communication on +N, IST on +10+N, SST (rsync) on +20+N
#   MAILPROV_HA_HTTP_PORT   HAProxy's HTTP frontend (default 8090); copy N listens on +N
#   MAILPROV_HA_STATS_PORT  HAProxy's statistics page (default 8099)
#   MAILPROV_HA_MAILPROV    the mailprov command (default .venv/bin/mailprov of this checkout)
#   MAILPROV_HA_TIMEOUT     seconds to wait for a node, HAProxy or a copy (default 120)
# Every other MAILPROV_* variable in the environment reaches the copies (e.g.
# MAILPROV_BCRYPT_COST, MAILPROV_SUBMISSION_HOST); ha.sh sets their DATABASE_URL.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
readonly HERE REPO
readonly STATE=${MAILPROV_HA_DIR:-/tmp/mailprov-galera}
readonly DB=${MAILPROV_HA_DB:-mailprov}
readonly COPIES=${MAILPROV_HA_COPIES:-3}
readonly COPY_DB=${MAILPROV_HA_COPY_DB:-pinned}
readonly WORKERS=${MAILPROV_HA_WORKERS:-1}
readonly SQL_PORT=${MAILPROV_HA_SQL_PORT:-3310}
readonly GCOMM_PORT=${MAILPROV_HA_GCOMM_PORT:-4510}
readonly HTTP_PORT=${MAILPROV_HA_HTTP_PORT:-8090}
readonly STATS_PORT=${MAILPROV_HA_STATS_PORT:-8099}
readonly MAILPROV=${MAILPROV_HA_MAILPROV:-$REPO/.venv/bin/mailprov}
readonly TIMEOUT=${MAILPROV_HA_TIMEOUT:-120}
readonly NODES=3
readonly HOST=127.0.0.1
readonly PROVIDER=/usr/lib/galera/libgalera_smm.so
readonly PACKAGES=(mariadb-server mariadb-client galera-4 rsync haproxy curl iproute2)

# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"

readonly SECRETS=$STATE/secrets
readonly LOGS=$STATE/log

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C

say() { printf 'ha: %s\n' "$*"; }
warn() { printf 'ha: %s\n' "$*" >&2; }
die() {
    printf 'ha: error: %s\n' "$*" >&2
    exit 1
}
need_root() { [[ $EUID -eq 0 ]] || die "must run as root"; }

validate() {
    [[ $DB =~ ^[A-Za-z0-9_]{1,64}$ ]] || die "MAILPROV_HA_DB must match [A-Za-z0-9_]{1,64}: '$DB'"
    [[ $STATE == /* && $STATE != *[[:space:]]* ]] ||
        die "MAILPROV_HA_DIR must be an absolute path without spaces: '$STATE'"
    # unix socket paths are limited to 107 bytes
    ((${#STATE} <= 80)) || die "MAILPROV_HA_DIR is too long for unix socket paths"
    local v
    for v in COPIES WORKERS SQL_PORT GCOMM_PORT HTTP_PORT STATS_PORT TIMEOUT; do
        [[ ${!v} =~ ^[0-9]+$ ]] || die "MAILPROV_HA_$v must be a number: '${!v}'"
    done
    ((COPIES <= 8)) || die "MAILPROV_HA_COPIES: at most 8"
    [[ $COPY_DB == pinned || $COPY_DB == haproxy ]] ||
        die "MAILPROV_HA_COPY_DB must be 'pinned' or 'haproxy': '$COPY_DB'"
}

node_number() {
    [[ ${1:-} =~ ^[1-3]$ ]] || die "a node is 1, 2 or 3: '${1:-}'"
}

copy_number() {
    [[ ${1:-} =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= COPIES)) || die "a copy is 1..$COPIES: '${1:-}'"
}

# ------------------------------------------------------------------ layout

node_dir() { printf '%s/node%s\n' "$STATE" "$1"; }
node_port() { printf '%s\n' $((SQL_PORT + $1)); }
gcomm_port() { printf '%s\n' $((GCOMM_PORT + $1)); }
ist_port() { printf '%s\n' $((GCOMM_PORT + 10 + $1)); }
sst_port() { printf '%s\n' $((GCOMM_PORT + 20 + $1)); }
node_socket() { printf '%s/mysqld.sock\n' "$(node_dir "$1")"; }
copy_port() { printf '%s\n' $((HTTP_PORT + $1)); }
# Copy N's node when pinned: 1, 2, 3, 1, ...
copy_node() { printf '%s\n' $((($1 - 1) % NODES + 1)); }

cluster_address() {
    local n a=""
    for ((n = 1; n <= NODES; n++)); do a+="${a:+,}$HOST:$(gcomm_port "$n")"; done
    printf 'gcomm://%s\n' "$a"
}

# A live pid from a pid file whose command line contains $2 (so a stale pid file
# never makes us signal someone else's process).
live_pid() {
    local file=$1 pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2" || return 1
    printf '%s\n' "$pid"
}

node_pid() { live_pid "$(node_dir "$1")/mysqld.pid" "$(node_dir "$1")/my.cnf"; }
haproxy_pid() { live_pid "$STATE/haproxy.pid" "$STATE/haproxy/haproxy.cfg"; }
copy_pid() { live_pid "$STATE/copy$1.pid" "serve --no-migrate --host $HOST --port $(copy_port "$1") "; }

# A password kept in the state dir (made once, reused by every start).
secret() {
    local f=$SECRETS/$1.pw
    if [[ ! -s $f ]]; then
        install -d -m 0700 "$SECRETS"
        (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$f")
    fi
    cat -- "$f"
}

# ------------------------------------------------------------------ install

pkg_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

cmd_install() {
    need_root
    local -a missing=()
    local p
    for p in "${PACKAGES[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        say "packages already installed"
        return 0
    fi
    # No service may start from the package scripts: HAProxy and MariaDB run here from
    # their own config files, and the machine's own MariaDB on 3306 is left as it is.
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# temporary, from mailprov deploy/ha.sh install\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local rc=0 log
    log=$(mktemp "${TMPDIR:-/tmp}/mailprov-ha-install.XXXXXX.log")
    say "apt-get update (output: $log)"
    apt-get update </dev/null >>"$log" 2>&1 || warn "apt-get update failed; trying with the package lists at hand"
    say "installing ${missing[*]}"
    apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" </dev/null >>"$log" 2>&1 || rc=$?
    if [[ $own_policy -eq 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    if [[ $rc -ne 0 ]]; then
        tail -n 30 -- "$log" >&2
        die "apt-get install failed (exit $rc); full output in $log"
    fi
    rm -f -- "$log"
    say "installed: $(dpkg-query -W -f='${Package} ${Version}\n' mariadb-server galera-4 haproxy | tr '\n' ' ')"
}

check_installed() {
    local b
    for b in /usr/sbin/mariadbd /usr/bin/mariadb-install-db /usr/bin/mariadb /usr/sbin/haproxy \
        /usr/bin/rsync /usr/bin/wsrep_sst_rsync "$PROVIDER"; do
        [[ -e $b ]] || die "$b is missing; run: $0 install"
    done
    if ((COPIES > 0)); then
        [[ -x $MAILPROV ]] || die "$MAILPROV is missing; run scripts/setup.sh (or set MAILPROV_HA_MAILPROV)"
    fi
}

# ------------------------------------------------------------------ nodes

write_node_config() {
    local n=$1 dir
    dir=$(node_dir "$n")
    install -d -o mysql -g mysql -m 0750 "$dir" "$dir/data"
    # Short failure detection on loopback: a killed peer is declared gone within seconds,
    # not the WAN defaults (suspect 5 s, inactive 15 s) that would stall commits longer.
    local provider_options
    provider_options="gmcast.listen_addr=tcp://$HOST:$(gcomm_port "$n");ist.recv_addr=$HOST:$(ist_port "$n")"
    provider_options+=";gcache.size=128M;evs.suspect_timeout=PT2S;evs.inactive_timeout=PT4S"
    provider_options+=";evs.inactive_check_period=PT0.5S;evs.keepalive_period=PT0.5S"
    provider_options+=";pc.wait_prim_timeout=PT30S"
    cat >"$dir/my.cnf" <<EOF
# Made by mailprov deploy/ha.sh for node $n; edits are overwritten by 'start'.
[mariadbd]
user                = mysql
datadir             = $dir/data
socket              = $dir/mysqld.sock
pid-file            = $dir/mysqld.pid
log-error           = $dir/error.log
port                = $(node_port "$n")
bind-address        = $HOST
skip-name-resolve
character-set-server = utf8mb4
collation-server    = utf8mb4_general_ci
# What Galera requires
binlog_format       = ROW
default_storage_engine = InnoDB
innodb_autoinc_lock_mode = 2
# Small: three nodes share one machine with the tests
innodb_buffer_pool_size = 64M
innodb_log_file_size = 32M
performance_schema  = OFF
max_connections     = 200
# Durable commits: Galera's guides suggest 0 or 2 here, which can lose acknowledged
# transactions when nodes crash close together (Jepsen, MariaDB Galera 12.1.2).
innodb_flush_log_at_trx_commit = 1
wsrep_on            = ON
wsrep_provider      = $PROVIDER
wsrep_cluster_name  = mailprov
wsrep_cluster_address = $(cluster_address)
wsrep_node_name     = node$n
wsrep_node_address  = $HOST:$(gcomm_port "$n")
wsrep_node_incoming_address = $HOST:$(node_port "$n")
wsrep_sst_method    = rsync
wsrep_sst_receive_address = $HOST:$(sst_port "$n")
wsrep_provider_options = "$provider_options"
wsrep_slave_threads = 2
# Causal reads: a SELECT waits until this node has applied everything the cluster
# committed before it, so a change made through one node is seen through any other.
wsrep_sync_wait     = 1
EOF
    chown root:mysql "$dir/my.cnf"
    chmod 0640 "$dir/my.cnf"
}

node_client() {
    local n=$1
    shift
    mariadb --no-defaults --protocol=socket -S "$(node_socket "$n")" -u root --connect-timeout=3 -N -B "$@"
}

cmd_sql() {
    need_root
    node_number "${1:-}"
    local n=$1
    shift
    [[ $# -gt 0 ]] || die "usage: $0 sql N 'SQL'"
    node_client "$n" -e "$*"
}

# "name value" lines of the wsrep status we look at.
node_wsrep() {
    node_client "$1" -e "SHOW GLOBAL STATUS WHERE Variable_name IN
        ('wsrep_local_state_comment','wsrep_cluster_size','wsrep_cluster_status','wsrep_ready',
         'wsrep_last_committed','wsrep_local_cert_failures','wsrep_local_bf_aborts')" 2>/dev/null
}

node_synced() {
    local s
    s=$(node_wsrep "$1") || return 1
    grep -q '^wsrep_local_state_comment[[:space:]]Synced$' <<<"$s" &&
        grep -q '^wsrep_ready[[:space:]]ON$' <<<"$s" &&
        grep -q '^wsrep_cluster_status[[:space:]]Primary$' <<<"$s"
}

# The position (uuid:seqno) InnoDB recovered, for a node that did not shut down cleanly:
# with it the node asks for the missing write sets only (IST) rather than a full copy.
recover_position() {
    local n=$1 dir out pos
    dir=$(node_dir "$n")
    out=$dir/recover.log
    : >"$out"
    chown mysql:mysql "$out"
    timeout "$TIMEOUT" /usr/sbin/mariadbd --defaults-file="$dir/my.cnf" --wsrep-recover \
        --log-error="$out" >/dev/null 2>&1 || true
    pos=$(sed -n 's/.*WSREP: Recovered position: *\([0-9a-f-]*:-\{0,1\}[0-9]*\).*/\1/p' "$out" | tail -n 1)
    [[ -n $pos && $pos != *:-1 ]] || return 1
    printf '%s\n' "$pos"
}

grastate() { sed -n "s/^$2:[[:space:]]*//p" "$(node_dir "$1")/data/grastate.dat" 2>/dev/null; }

start_node() {
    local n=$1 bootstrap=${2:-} dir pos
    local -a extra=()
    dir=$(node_dir "$n")
    if node_pid "$n" >/dev/null; then
        say "node $n: already running"
        return 0
    fi
    port_open "$(node_port "$n")" && die "port $(node_port "$n") is taken by something else"
    write_node_config "$n"
    if [[ ! -d $dir/data/mysql ]]; then
        if [[ $bootstrap == bootstrap ]]; then
            say "node $n: initialising its data directory"
            mariadb-install-db --no-defaults --user=mysql --datadir="$dir/data" \
                --auth-root-authentication-method=socket --skip-test-db \
                >"$dir/install.log" 2>&1 || die "mariadb-install-db failed; see $dir/install.log"
        fi
        # A joiner with an empty data directory receives a full copy (SST) from a donor.
    elif [[ $(grastate "$n" seqno) == -1 ]]; then
        if pos=$(recover_position "$n"); then
            say "node $n: recovered position $pos"
            extra+=(--wsrep_start_position="$pos")
        else
            say "node $n: no position recovered; it will receive a full copy (SST)"
        fi
    fi
    if [[ $bootstrap == bootstrap ]]; then
        extra+=(--wsrep-new-cluster)
        # After a crash of the whole cluster no node is marked safe; this one was chosen.
        sed -i 's/^safe_to_bootstrap: 0/safe_to_bootstrap: 1/' "$dir/data/grastate.dat" 2>/dev/null || true
    fi
    say "node $n: starting${bootstrap:+ (bootstrapping the cluster)} on $HOST:$(node_port "$n")"
    rm -f -- "$dir/mysqld.pid"
    setsid /usr/sbin/mariadbd --defaults-file="$dir/my.cnf" "${extra[@]}" \
        </dev/null >>"$dir/mariadbd.out" 2>&1 &
}

wait_node() {
    local n=$1
    if ! wait_until "$TIMEOUT" "" node_synced "$n"; then
        tail -n 30 -- "$(node_dir "$n")/error.log" >&2 || true
        die "node $n is not synced after ${TIMEOUT}s (log: $(node_dir "$n")/error.log)"
    fi
    say "node $n: synced ($(node_wsrep "$n" | awk '$1 == "wsrep_cluster_size" { print "cluster size " $2 }'))"
}

stop_node() {
    local n=$1 pid
    pid=$(node_pid "$n") || return 0
    say "node $n: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + TIMEOUT))
    while [[ -d /proc/$pid ]]; do
        if ((SECONDS >= deadline)); then
            warn "node $n: still running after ${TIMEOUT}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
}

any_node_data() {
    local n
    for ((n = 1; n <= NODES; n++)); do
        [[ -d $(node_dir "$n")/data/mysql ]] && return 0
    done
    return 1
}

running_primary() {
    local n
    for ((n = 1; n <= NODES; n++)); do
        node_pid "$n" >/dev/null && node_synced "$n" && {
            printf '%s\n' "$n"
            return 0
        }
    done
    return 1
}

# The node to bootstrap a stopped cluster from: the one marked safe (the last to stop
# cleanly), else the one that recovers the highest position.
bootstrap_candidate() {
    local n best=1 best_seqno=-2 seqno pos
    for ((n = 1; n <= NODES; n++)); do
        if [[ $(grastate "$n" safe_to_bootstrap) == 1 ]]; then
            printf '%s\n' "$n"
            return 0
        fi
    done
    for ((n = 1; n <= NODES; n++)); do
        [[ -d $(node_dir "$n")/data/mysql ]] || continue
        seqno=$(grastate "$n" seqno)
        if [[ $seqno == -1 || -z $seqno ]]; then
            write_node_config "$n"
            pos=$(recover_position "$n") || pos=":-1"
            seqno=${pos##*:}
        fi
        if ((seqno > best_seqno)); then best=$n best_seqno=$seqno; fi
    done
    printf '%s\n' "$best"
}

# Database and users, made once through node 1 (Galera replicates them).
setup_users() {
    local n=$1 rw ro check admin h sql=""
    rw=$(secret mailprov)
    ro=$(secret mailserver)
    check=$(secret haproxy_check)
    admin=$(secret admin)
    sql="CREATE DATABASE IF NOT EXISTS \`$DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;"
    for h in 127.0.0.1 localhost; do
        sql+="CREATE USER IF NOT EXISTS 'mailprov'@'$h' IDENTIFIED BY '$rw';
ALTER USER 'mailprov'@'$h' IDENTIFIED BY '$rw';
GRANT ALL PRIVILEGES ON \`$DB\`.* TO 'mailprov'@'$h';
CREATE USER IF NOT EXISTS 'mailserver'@'$h' IDENTIFIED BY '$ro';
ALTER USER 'mailserver'@'$h' IDENTIFIED BY '$ro';
GRANT SELECT ON \`$DB\`.* TO 'mailserver'@'$h';
CREATE USER IF NOT EXISTS 'haproxy_check'@'$h' IDENTIFIED BY '$check';
ALTER USER 'haproxy_check'@'$h' IDENTIFIED BY '$check';
CREATE USER IF NOT EXISTS 'ha_admin'@'$h' IDENTIFIED BY '$admin';
ALTER USER 'ha_admin'@'$h' IDENTIFIED BY '$admin';
GRANT ALL PRIVILEGES ON *.* TO 'ha_admin'@'$h' WITH GRANT OPTION;"
    done
    node_client "$n" -e "$sql"
    say "db: database $DB; users mailprov (read-write on $DB), mailserver (read-only),"
    say "db: haproxy_check (health checks only) and ha_admin (tests: scratch databases)"
}

# ------------------------------------------------------------------ HAProxy

write_haproxy_config() {
    local n c check_pw
    check_pw=$(secret haproxy_check)
    # The health check of a node: logged in, and Synced in a primary component. A donor
    # busy with a full copy, a joiner, or a node cut off from the majority is taken out.
    install -d -m 0755 "$STATE/haproxy"
    cat >"$STATE/haproxy/galera-check" <<EOF
#!/bin/sh
# HAProxy external check: \$3 = node address, \$4 = its port. Made by deploy/ha.sh.
state=\$(mariadb --no-defaults --protocol=tcp -h "\$3" -P "\$4" -u haproxy_check \\
    --password='$check_pw' --connect-timeout=2 -N -B -e "SHOW GLOBAL STATUS WHERE Variable_name IN
    ('wsrep_local_state_comment','wsrep_ready','wsrep_cluster_status')" 2>/dev/null) || exit 1
echo "\$state" | grep -q 'wsrep_local_state_comment.Synced' || exit 1
echo "\$state" | grep -q 'wsrep_ready.ON' || exit 1
echo "\$state" | grep -q 'wsrep_cluster_status.Primary' || exit 1
exit 0
EOF
    chown root:haproxy "$STATE/haproxy/galera-check"
    chmod 0750 "$STATE/haproxy/galera-check"
    {
        cat <<EOF
# Made by mailprov deploy/ha.sh; edits are overwritten by 'start'.
global
    user haproxy
    group haproxy
    pidfile $STATE/haproxy.pid
    stats socket $STATE/haproxy/admin.sock mode 600 level admin
    # The Galera health check is a small script (external-check): it forks.
    insecure-fork-wanted
    external-check
    maxconn 4096

defaults
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 3s

# MariaDB Galera: any synced node takes reads and writes (mailprov retries what
# certification refuses). Postfix and Dovecot may read through here as well.
listen galera
    bind $HOST:$SQL_PORT
    mode tcp
    balance leastconn
    option external-check
    external-check path "/usr/bin:/bin"
    external-check command $STATE/haproxy/galera-check
    default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions
EOF
        for ((n = 1; n <= NODES; n++)); do
            printf '    server node%s %s:%s check\n' "$n" "$HOST" "$(node_port "$n")"
        done
        if ((COPIES > 0)); then
            cat <<EOF

# mailprov copies: /ready answers 200 only while the copy reaches its database.
# A request that could not be sent (connection refused) goes to another copy; one
# that was sent is never sent twice.
frontend mailprov
    bind $HOST:$HTTP_PORT
    mode http
    option forwardfor
    default_backend mailprov

backend mailprov
    mode http
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    retries 2
    retry-on conn-failure
    option redispatch 1
    default-server inter 1s fall 2 rise 2
EOF
            for ((c = 1; c <= COPIES; c++)); do
                printf '    server copy%s %s:%s check\n' "$c" "$HOST" "$(copy_port "$c")"
            done
        fi
        cat <<EOF

listen stats
    bind $HOST:$STATS_PORT
    mode http
    stats enable
    stats uri /
    stats refresh 5s
EOF
    } >"$STATE/haproxy/haproxy.cfg"
    haproxy -c -f "$STATE/haproxy/haproxy.cfg" >/dev/null || die "HAProxy refuses $STATE/haproxy/haproxy.cfg"
}

start_haproxy() {
    write_haproxy_config
    if haproxy_pid >/dev/null; then
        say "haproxy: already running; reloading its configuration"
        stop_haproxy
    fi
    local p
    for p in "$SQL_PORT" "$STATS_PORT" $( ((COPIES > 0)) && echo "$HTTP_PORT"); do
        port_open "$p" && die "port $p is taken by something else"
    done
    say "haproxy: SQL on $HOST:$SQL_PORT$( ((COPIES > 0)) && echo ", HTTP on $HOST:$HTTP_PORT"), stats on $HOST:$STATS_PORT"
    haproxy -D -f "$STATE/haproxy/haproxy.cfg" -p "$STATE/haproxy.pid" >>"$LOGS/haproxy.out" 2>&1 ||
        die "haproxy did not start; see $LOGS/haproxy.out"
}

stop_haproxy() {
    local pid
    pid=$(haproxy_pid) || return 0
    say "haproxy: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while [[ -d /proc/$pid ]] && ((SECONDS < deadline)); do sleep 0.1; done
    [[ -d /proc/$pid ]] && kill -KILL "$pid" 2>/dev/null || true
}

# "name status" for each server HAProxy checks (UP, DOWN, ...), from its CSV statistics.
haproxy_servers() {
    curl -fsS --max-time 3 "http://$HOST:$STATS_PORT/;csv" 2>/dev/null |
        awk -F, '$1 != "# pxname" && $2 != "FRONTEND" && $2 != "BACKEND" && $1 != "stats" { print $1 "/" $2, $18 }'
}

haproxy_all_up() {
    local out
    out=$(haproxy_servers) || return 1
    [[ -n $out ]] && ! grep -qv ' UP$' <<<"$out"
}

# ------------------------------------------------------------------ mailprov copies

rw_url() { printf 'mysql+pymysql://mailprov:%s@%s:%s/%s\n' "$(secret mailprov)" "$HOST" "$1" "$DB"; }

copy_database_url() {
    if [[ $COPY_DB == haproxy ]]; then
        rw_url "$SQL_PORT"
    else
        rw_url "$(node_port "$(copy_node "$1")")"
    fi
}

migrate() {
    say "mailprov: migrating $DB (through node 1)"
    MAILPROV_DATABASE_URL=$(rw_url "$(node_port 1)") "$MAILPROV" migrate >>"$LOGS/migrate.log" 2>&1 ||
        die "mailprov migrate failed; see $LOGS/migrate.log"
    # Postfix's and Dovecot's user reads the three ISPmail tables, nothing of mailprov's
    # own (key hashes, the audit trail): docs/databases.md, section 6.
    local h t sql=""
    for h in 127.0.0.1 localhost; do
        sql+="REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'mailserver'@'$h';"
        for t in virtual_domains virtual_users virtual_aliases; do
            sql+="GRANT SELECT ON \`$DB\`.\`$t\` TO 'mailserver'@'$h';"
        done
    done
    node_client 1 -e "$sql"
    say "db: mailserver may SELECT on $DB.virtual_domains, virtual_users, virtual_aliases"
}

copy_ready() { curl -fsS --max-time 2 -o /dev/null "http://$HOST:$(copy_port "$1")/ready" 2>/dev/null; }

start_copy() {
    local c=$1
    if copy_pid "$c" >/dev/null; then
        say "copy $c: already running"
        return 0
    fi
    port_open "$(copy_port "$c")" && die "port $(copy_port "$c") is taken by something else"
    say "copy $c: mailprov on $HOST:$(copy_port "$c") -> $([[ $COPY_DB == haproxy ]] && echo "HAProxy $SQL_PORT" || echo "node $(copy_node "$c")")"
    # --proxy-headers: the client address is the one HAProxy saw (brute-force counts).
    # The state dir in its command line lets live_pid recognise it.
    MAILPROV_DATABASE_URL=$(copy_database_url "$c") \
        setsid "$MAILPROV" serve --no-migrate --host "$HOST" --port "$(copy_port "$c")" \
        --workers "$WORKERS" --proxy-headers --log-level warning \
        </dev/null >>"$LOGS/copy$c.log" 2>&1 &
    printf '%s\n' "$!" >"$STATE/copy$c.pid"
}

wait_copy() {
    wait_until "$TIMEOUT" "" copy_ready "$1" || {
        tail -n 30 -- "$LOGS/copy$1.log" >&2 || true
        die "copy $1 is not ready after ${TIMEOUT}s (log: $LOGS/copy$1.log)"
    }
}

stop_copy() {
    local c=$1 pid
    pid=$(copy_pid "$c") || return 0
    say "copy $c: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while [[ -d /proc/$pid ]] && ((SECONDS < deadline)); do sleep 0.1; done
    [[ -d /proc/$pid ]] && kill -KILL "$pid" 2>/dev/null || true
}

# ------------------------------------------------------------------ commands

cmd_start() {
    need_root
    check_installed
    install -d -m 0755 "$STATE"
    install -d -m 0755 "$LOGS"
    local n c first
    if first=$(running_primary); then
        say "cluster: node $first is up and synced"
    elif any_node_data; then
        first=$(bootstrap_candidate)
        start_node "$first" bootstrap
        wait_node "$first"
    else
        first=1
        start_node 1 bootstrap
        wait_node 1
    fi
    # One joiner at a time: each may need a full copy from a donor.
    for ((n = 1; n <= NODES; n++)); do
        [[ $n == "$first" ]] && continue
        start_node "$n"
        wait_node "$n"
    done
    setup_users "$first"
    if ((COPIES > 0)); then
        migrate
    fi
    start_haproxy
    for ((c = 1; c <= COPIES; c++)); do start_copy "$c"; done
    for ((c = 1; c <= COPIES; c++)); do wait_copy "$c"; done
    wait_until "$TIMEOUT" "" haproxy_all_up || {
        haproxy_servers >&2 || true
        die "HAProxy does not see every node and copy up after ${TIMEOUT}s"
    }
    say "up: $NODES nodes, $COPIES copies; HTTP http://$HOST:$HTTP_PORT, SQL $HOST:$SQL_PORT"
}

cmd_stop() {
    need_root
    local n c
    for ((c = 1; c <= 8; c++)); do stop_copy "$c"; done
    stop_haproxy
    # The last node to stop cleanly is marked safe to bootstrap from.
    for ((n = NODES; n >= 1; n--)); do stop_node "$n"; done
}

cmd_destroy() {
    cmd_stop
    [[ -d $STATE ]] || return 0
    say "removing $STATE"
    rm -rf -- "$STATE"
}

cmd_kill_node() {
    need_root
    node_number "${1:-}"
    local pid
    pid=$(node_pid "$1") || die "node $1 is not running"
    say "node $1: SIGKILL (pid $pid)"
    kill -KILL "$pid"
    while [[ -d /proc/$pid ]]; do sleep 0.05; done
}

cmd_stop_node() {
    need_root
    node_number "${1:-}"
    stop_node "$1"
}

cmd_start_node() {
    need_root
    check_installed
    node_number "${1:-}"
    running_primary >/dev/null || die "no synced node to join; use: $0 start"
    start_node "$1"
    wait_node "$1"
}

cmd_kill_copy() {
    need_root
    copy_number "${1:-}"
    local pid
    pid=$(copy_pid "$1") || die "copy $1 is not running"
    say "copy $1: SIGKILL (pid $pid and its workers)"
    # serve's own process and its uvicorn workers share the process group setsid made.
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
    while [[ -d /proc/$pid ]]; do sleep 0.05; done
}

cmd_start_copy() {
    need_root
    copy_number "${1:-}"
    start_copy "$1"
    wait_copy "$1"
}

cmd_status() {
    local up=0 down=0 n c pid s
    for ((n = 1; n <= NODES; n++)); do
        if pid=$(node_pid "$n"); then
            s=$(node_wsrep "$n" | awk '{ printf "%s=%s ", substr($1, 7), $2 }') || s=""
            say "node $n: running (pid $pid, $HOST:$(node_port "$n")) ${s:-not answering}"
            if node_synced "$n"; then up=$((up + 1)); else down=$((down + 1)); fi
        else
            say "node $n: not running"
            down=$((down + 1))
        fi
    done
    if pid=$(haproxy_pid); then
        say "haproxy: running (pid $pid); stats http://$HOST:$STATS_PORT/"
        haproxy_servers | sed 's/^/ha:   /' || true
        up=$((up + 1))
    else
        say "haproxy: not running"
        down=$((down + 1))
    fi
    for ((c = 1; c <= COPIES; c++)); do
        if pid=$(copy_pid "$c") && copy_ready "$c"; then
            say "copy $c: ready (pid $pid, $HOST:$(copy_port "$c"))"
            up=$((up + 1))
        else
            say "copy $c: not ready"
            down=$((down + 1))
        fi
    done
    if ((down == 0)); then return 0; fi
    if ((up == 0)); then return 3; fi
    return 1
}

cmd_env() {
    [[ -s $SECRETS/mailprov.pw ]] || die "no cluster in $STATE yet; run: $0 start"
    local n c nodes="" admins="" copies=""
    for ((n = 1; n <= NODES; n++)); do
        nodes+="${nodes:+ }$(rw_url "$(node_port "$n")")"
        admins+="${admins:+ }mysql+pymysql://ha_admin:$(secret admin)@$HOST:$(node_port "$n")/"
    done
    for ((c = 1; c <= COPIES; c++)); do copies+="${copies:+ }http://$HOST:$(copy_port "$c")"; done
    local -a kv=(
        MAILPROV_HA_DIR "$STATE"
        MAILPROV_HA_DB "$DB"
        MAILPROV_HA_URL "http://$HOST:$HTTP_PORT"
        MAILPROV_HA_COPY_URLS "$copies"
        MAILPROV_HA_DB_URL "$(rw_url "$SQL_PORT")"
        MAILPROV_HA_DB_URL_RO "mysql+pymysql://mailserver:$(secret mailserver)@$HOST:$SQL_PORT/$DB"
        MAILPROV_HA_NODE_URLS "$nodes"
        MAILPROV_HA_ADMIN_URLS "$admins"
        MAILPROV_HA_STATS_URL "http://$HOST:$STATS_PORT/"
    )
    local i
    for ((i = 0; i < ${#kv[@]}; i += 2)); do
        printf 'export %s=%q\n' "${kv[i]}" "${kv[i + 1]}"
    done
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

main() {
    validate
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case $cmd in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    destroy) cmd_destroy ;;
    status) cmd_status ;;
    env) cmd_env ;;
    kill-node) cmd_kill_node "$@" ;;
    stop-node) cmd_stop_node "$@" ;;
    start-node) cmd_start_node "$@" ;;
    kill-copy) cmd_kill_copy "$@" ;;
    start-copy) cmd_start_copy "$@" ;;
    sql) cmd_sql "$@" ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
