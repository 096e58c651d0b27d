#!/usr/bin/env bash
# The reference mail stack for mailprov's end-to-end tests (issue 6):
# Postfix + Dovecot 2.3 reading the ISPmail tables in MariaDB, loopback only,
# without systemd, on Debian 12, as root.
#
#   deploy/stack.sh install   install the Debian packages (idempotent; quick when present)
#   deploy/stack.sh start     create DB + DB users, TLS, config; start Dovecot and Postfix
#   deploy/stack.sh stop      stop both (bounded)
#   deploy/stack.sh status    what runs; exit 0 all up, 3 all down, 1 partly up
#   deploy/stack.sh env       shell `export` lines for tests (eval "$(deploy/stack.sh env)")
#   deploy/stack.sh grant     narrow the read-only DB user to the three tables
#                             (run after mailprov's migrations if start found no tables)
#   deploy/stack.sh doveadm ARGS...   doveadm against this stack's configuration
#   deploy/stack.sh postfix ARGS...   postfix against this stack's configuration
#   deploy/stack.sh dns-reload        reload the test zone from its file (knotc -b)
#   deploy/stack.sh rspamd-reload     make rspamd reread its configuration and maps now
#
# Environment (all optional):
#   MAILPROV_STACK_DB          database name (default mailserver; [A-Za-z0-9_] only)
#   MAILPROV_STACK_DIR         state dir: config, TLS, secrets, maildirs, logs
#                              (default /tmp/mailprov-stack)
#   MAILPROV_STACK_MAILDIR_ROOT  maildir root, the guide's /var/vmail (default $DIR/vmail)
#   MAILPROV_STACK_RELAYHOST   where mail for other domains goes: "discard" (default:
#                              dropped, logged with its queue id) or a loopback
#                              host:port (e.g. 127.0.0.1:2525) a test listens on
#   MAILPROV_STACK_DB_PORT     MariaDB port on 127.0.0.1 (default 3306)
#   MAILPROV_STACK_AUTH_CACHE_TTL  Dovecot auth cache TTL; "0" (default) = cache off
#   MAILPROV_STACK_AUTH_FAILURE_DELAY  Dovecot delay after a failed login (default 0;
#                              Dovecot's own default and the production value: 2 secs)
#   MAILPROV_STACK_TIMEOUT     seconds to wait for ports / processes (default 30)
#   MAILPROV_STACK_DNS_PORT    the test name server's port on 127.0.0.1 (default 5300)
#   MAILPROV_STACK_DNS_ZONE    the zone it serves from $DIR/dns/zones/ZONE.zone
#                              (default example.org)
#
# Ports (fixed, 127.0.0.1 only): SMTP 25 (inbound MX), submission 587 (STARTTLS),
# submissions 465 (implicit TLS), IMAP 143 (STARTTLS), IMAPS 993; rspamd's milter
# 11332 (DKIM signing, issue 19); Knot DNS on MAILPROV_STACK_DNS_PORT (UDP + TCP).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
readonly HERE REPO
# have, port_open, maria_client, wait_until
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"
readonly STATE=${MAILPROV_STACK_DIR:-/tmp/mailprov-stack}
readonly DB=${MAILPROV_STACK_DB:-mailserver}
readonly DB_HOST=127.0.0.1
readonly DB_PORT=${MAILPROV_STACK_DB_PORT:-3306}
readonly MAILDIR_ROOT=${MAILPROV_STACK_MAILDIR_ROOT:-$STATE/vmail}
readonly RELAYHOST=${MAILPROV_STACK_RELAYHOST:-discard}
readonly AUTH_CACHE_TTL=${MAILPROV_STACK_AUTH_CACHE_TTL:-0}
readonly AUTH_FAILURE_DELAY=${MAILPROV_STACK_AUTH_FAILURE_DELAY:-0}
readonly TIMEOUT=${MAILPROV_STACK_TIMEOUT:-30}
readonly HOSTNAME_=localhost
readonly LISTEN=127.0.0.1
readonly PORTS=(25 587 465 143 993)

readonly PACKAGES=(postfix postfix-mysql dovecot-core dovecot-imapd dovecot-lmtpd dovecot-mysql)
# DKIM signing and the test name server (issue 19)
readonly DKIM_PACKAGES=(rspamd knot)
readonly EXTRA_PACKAGES=(openssl swaks libnet-ssleay-perl mariadb-client)

# Layout of the state dir
readonly SECRETS=$STATE/secrets
readonly TLS=$STATE/tls
readonly LOGS=$STATE/log
readonly PF_CONF=$STATE/postfix          # config_directory (postfix -c)
readonly PF_SPOOL=$STATE/postfix-spool   # queue_directory = chroot jail
readonly PF_DATA=$STATE/postfix-data     # data_directory
readonly DC_CONF=$STATE/dovecot          # dovecot.conf + dovecot-sql.conf.ext
readonly DC_RUN=$STATE/dovecot-run       # base_dir (sockets, master.pid)
readonly DC_STATE=$STATE/dovecot-state   # state_dir
# DKIM signing and the test name server (issue 19)
readonly DNS_PORT=${MAILPROV_STACK_DNS_PORT:-5300}
readonly DNS_ZONE=${MAILPROV_STACK_DNS_ZONE:-example.org}
readonly RSPAMD_CONF=$STATE/rspamd      # rspamd.conf + local.d/dkim_signing.conf
readonly RSPAMD_RUN=$STATE/rspamd-run   # pidfile
readonly RSPAMD_DB=$STATE/rspamd-db     # DBDIR (rspamd's own state)
readonly DKIM_DIR=$STATE/dkim           # key files ($domain.$selector.key), mailprov dkim sync
readonly DKIM_SELECTOR_MAP=$RSPAMD_CONF/dkim_selectors.map
readonly DNS_DIR=$STATE/dns             # knot.conf
readonly DNS_RUN=$STATE/dns-run         # knot's rundir: pidfile, control socket
readonly DNS_DB=$STATE/dns-db           # knot's databases (journal, timers)
readonly DNS_ZONES=$DNS_DIR/zones       # ZONE.zone

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C

say() { printf 'stack: %s\n' "$*"; }
warn() { printf 'stack: %s\n' "$*" >&2; }
die() {
    printf 'stack: error: %s\n' "$*" >&2
    exit 1
}

need_root() { [[ $EUID -eq 0 ]] || die "must run as root"; }

validate() {
    [[ $DB =~ ^[A-Za-z0-9_]{1,64}$ ]] || die "MAILPROV_STACK_DB must match [A-Za-z0-9_]{1,64}: '$DB'"
    [[ $STATE == /* && $STATE != *[[:space:]]* ]] || die "MAILPROV_STACK_DIR must be an absolute path without spaces: '$STATE'"
    [[ $MAILDIR_ROOT == /* && $MAILDIR_ROOT != *[[:space:]]* ]] || die "MAILPROV_STACK_MAILDIR_ROOT must be an absolute path without spaces"
    [[ $DB_PORT =~ ^[0-9]+$ ]] || die "MAILPROV_STACK_DB_PORT must be a number"
    [[ $DNS_PORT =~ ^[0-9]{1,5}$ ]] && ((DNS_PORT > 0 && DNS_PORT < 65536)) || die "MAILPROV_STACK_DNS_PORT must be a port number"
    [[ $DNS_ZONE =~ ^[a-z0-9]([a-z0-9.-]{0,200}[a-z0-9])?$ ]] || die "MAILPROV_STACK_DNS_ZONE must be a lower-case domain name"
    # unix socket paths are limited to 107 bytes
    local longest=$PF_SPOOL/private/dovecot-lmtp
    ((${#longest} <= 100)) || die "MAILPROV_STACK_DIR is too long for unix socket paths: $longest"
    if [[ $RELAYHOST != discard ]]; then
        relay_parse >/dev/null || die "MAILPROV_STACK_RELAYHOST must be 'discard' or a loopback host:port (127.x.x.x:PORT, localhost:PORT, [::1]:PORT): '$RELAYHOST'"
    fi
}

# "127.0.0.1:2525" -> "[127.0.0.1]:2525"; only loopback is allowed (nothing may leave the machine)
relay_parse() {
    local host port
    if [[ $RELAYHOST =~ ^\[?([0-9.]+|localhost|::1)\]?:([0-9]{1,5})$ ]]; then
        host=${BASH_REMATCH[1]} port=${BASH_REMATCH[2]}
    else
        return 1
    fi
    case $host in
    127.*) ;;
    localhost) host=127.0.0.1 ;;
    ::1) host=ipv6:::1 ;;
    *) return 1 ;;
    esac
    printf '[%s]:%s\n' "$host" "$port"
}

# ------------------------------------------------------------------ install

pkg_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

cmd_install() {
    need_root
    local -a missing=()
    local p
    for p in "${PACKAGES[@]}" "${DKIM_PACKAGES[@]}" "${EXTRA_PACKAGES[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        say "packages already installed"
    else
        # No prompt: Postfix's debconf question answered in advance. "No configuration"
        # leaves /etc/postfix alone; this stack runs from its own config directory.
        debconf-set-selections <<'SEL'
postfix postfix/main_mailer_type select No configuration
postfix postfix/mailname string localhost
SEL
        # No service may start from the package scripts (they would listen on
        # every interface with the Debian default config). Docker images have a
        # policy-rc.d saying so already; otherwise put one there for the install.
        local own_policy=0
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            printf '#!/bin/sh\n# temporary, from mailprov deploy/stack.sh install\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 0755 /usr/sbin/policy-rc.d
            own_policy=1
        fi
        local rc=0 log
        log=$(mktemp "${TMPDIR:-/tmp}/mailprov-stack-install.XXXXXX.log")
        say "apt-get update (output: $log)"
        apt-get update </dev/null >>"$log" 2>&1 ||
            warn "apt-get update failed; trying with the package lists at hand"
        say "installing ${missing[*]}"
        apt-get install -y --no-install-recommends \
            -o DPkg::Lock::Timeout=300 \
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
    fi
    ensure_vmail
    say "installed: $(dpkg-query -W -f='${Package} ${Version}\n' postfix dovecot-core | tr '\n' ' ')"
}

# The vmail user owns the maildirs; the guide's user_query says uid/gid 5000.
ensure_vmail() {
    if ! getent group vmail >/dev/null; then
        if getent group 5000 >/dev/null; then
            groupadd --system vmail
        else
            groupadd --gid 5000 vmail
        fi
    fi
    if ! getent passwd vmail >/dev/null; then
        local -a uid=()
        getent passwd 5000 >/dev/null || uid=(--uid 5000)
        useradd "${uid[@]}" --gid vmail --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin --comment "virtual mail (mailprov stack)" vmail
    fi
}

# ---------------------------------------------------------------- MariaDB

# SQL as MariaDB root over TCP (root@127.0.0.1, empty password).
root_sql() {
    local client
    client=$(maria_client) || die "no mariadb client; run: $0 install"
    "$client" --no-defaults --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root \
        --connect-timeout=5 -N -B "$@"
}

ensure_mariadb() {
    if root_sql -e 'SELECT 1' >/dev/null 2>&1; then
        return 0
    fi
    if [[ -x $REPO/scripts/dbservers.sh && $DB_PORT == 3306 ]]; then
        say "MariaDB not answering on $DB_HOST:$DB_PORT as root; running scripts/dbservers.sh mariadb"
        "$REPO/scripts/dbservers.sh" mariadb </dev/null || die "scripts/dbservers.sh mariadb failed"
    fi
    root_sql -e 'SELECT 1' >/dev/null || die "cannot log in to MariaDB as root@$DB_HOST:$DB_PORT (empty password)"
}

# A password kept in the state dir (made once, reused by every start).
secret() {
    local f=$SECRETS/$1.pw
    if [[ ! -s $f ]]; then
        install -d -m 0700 "$SECRETS"
        (umask 077 && openssl rand -hex 16 >"$f")
    fi
    cat -- "$f"
}

tables_present() {
    local n
    n=$(root_sql -e "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema='$DB'
        AND table_name IN ('virtual_domains','virtual_users','virtual_aliases')")
    [[ $n == 3 ]]
}

# Users exist for both host names a TCP client from 127.0.0.1 can be matched
# as ('127.0.0.1', or 'localhost' when the server resolves names).
readonly DB_USER_HOSTS=(127.0.0.1 localhost)

# The read-only user: SELECT on the three tables (or, while they don't exist
# yet, on the database, as the ISPmail guide grants it).
grant_readonly() {
    local h sql="" t
    if tables_present; then
        for h in "${DB_USER_HOSTS[@]}"; do
            # drop a database-wide grant from an earlier start ("no such grant" is fine)
            root_sql -e "REVOKE ALL PRIVILEGES ON \`$DB\`.* FROM 'mailserver'@'$h'" >/dev/null 2>&1 || true
            for t in virtual_domains virtual_users virtual_aliases; do
                sql+="GRANT SELECT ON \`$DB\`.\`$t\` TO 'mailserver'@'$h';"
            done
        done
        root_sql -e "$sql FLUSH PRIVILEGES;"
        say "db: mailserver may SELECT on $DB.virtual_domains, virtual_users, virtual_aliases"
    else
        for h in "${DB_USER_HOSTS[@]}"; do
            sql+="GRANT SELECT ON \`$DB\`.* TO 'mailserver'@'$h';"
        done
        root_sql -e "$sql FLUSH PRIVILEGES;"
        say "db: the ISPmail tables are not in $DB yet: mailserver may SELECT on $DB.* (as the guide grants);"
        say "db: after mailprov's migrations, '$0 grant' narrows that to the three tables"
    fi
}

setup_db() {
    local ro rw h sql
    ro=$(secret mailserver)
    rw=$(secret mailprov)
    sql="CREATE DATABASE IF NOT EXISTS \`$DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;"
    for h in "${DB_USER_HOSTS[@]}"; do
        sql+="CREATE USER IF NOT EXISTS 'mailserver'@'$h';
ALTER USER 'mailserver'@'$h' IDENTIFIED BY '$ro';
CREATE USER IF NOT EXISTS 'mailprov'@'$h';
ALTER USER 'mailprov'@'$h' IDENTIFIED BY '$rw';
GRANT ALL PRIVILEGES ON \`$DB\`.* TO 'mailprov'@'$h';"
    done
    root_sql -e "$sql FLUSH PRIVILEGES;"
    say "db: database $DB, users mailserver (read-only) and mailprov (read-write) ready"
    grant_readonly
}

# ---------------------------------------------------------------- TLS

# A private CA and a server certificate for localhost / 127.0.0.1, made once
# per state dir (remove $STATE/tls to make new ones).
setup_tls() {
    install -d -m 0755 "$TLS"
    if [[ -s $TLS/ca.crt && -s $TLS/server.crt && -s $TLS/server.key ]] &&
        openssl verify -CAfile "$TLS/ca.crt" "$TLS/server.crt" >/dev/null 2>&1 &&
        openssl x509 -checkend 86400 -noout -in "$TLS/server.crt" >/dev/null; then
        return 0
    fi
    say "tls: making a private CA and a certificate for localhost, 127.0.0.1"
    local tmp
    tmp=$(mktemp -d)
    (
        umask 077
        openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
            -keyout "$tmp/ca.key" -out "$tmp/ca.crt" -days 3650 -sha256 \
            -subj "/O=mailprov stack/CN=mailprov stack private CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -addext "subjectKeyIdentifier=hash" 2>/dev/null
        openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
            -keyout "$tmp/server.key" -out "$tmp/server.csr" \
            -subj "/O=mailprov stack/CN=localhost" 2>/dev/null
        cat >"$tmp/ext.cnf" <<'EXT'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EXT
        openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
            -CAcreateserial -out "$tmp/server.crt" -days 825 -sha256 \
            -extfile "$tmp/ext.cnf" 2>/dev/null
    ) || { rm -rf -- "$tmp"; die "openssl failed to make the certificates"; }
    install -m 0644 "$tmp/ca.crt" "$TLS/ca.crt"
    install -m 0600 "$tmp/ca.key" "$TLS/ca.key"
    install -m 0644 "$tmp/server.crt" "$TLS/server.crt"
    install -m 0600 "$tmp/server.key" "$TLS/server.key"
    rm -rf -- "$tmp"
}

# ---------------------------------------------------------------- config

declare -A SUBST=()

# render TEMPLATE DEST MODE OWNER:GROUP -- fills in the @...@ placeholders from SUBST
render() {
    local src=$1 dst=$2 mode=$3 owner=$4 content k left tmp
    content=$(<"$src")
    for k in "${!SUBST[@]}"; do
        content=${content//"@$k@"/"${SUBST[$k]}"}
    done
    left=$(grep -o '@[A-Z_]*@' <<<"$content" | sort -u | tr '\n' ' ') || true
    [[ -z $left ]] || die "$src: no value for $left"
    tmp=$(mktemp "$dst.XXXXXX")
    printf '%s\n' "$content" >"$tmp"
    chown "$owner" "$tmp"
    chmod "$mode" "$tmp"
    mv -f -- "$tmp" "$dst"
}

write_config() {
    local ro vmail_uid vmail_gid outbound override="" penalty=""
    ro=$(secret mailserver)
    vmail_uid=$(id -u vmail)
    vmail_gid=$(id -g vmail)
    if [[ $RELAYHOST == discard ]]; then
        outbound="default_transport = discard:outbound mail sink of the mailprov stack
relay_transport = \$default_transport
relayhost ="
    else
        outbound="default_transport = smtp
relay_transport = smtp
relayhost = $(relay_parse)"
    fi
    # The guide's user_query says home '/var/vmail/%d/%n' and uid/gid 5000;
    # override only what differs here, so the query stays the contract's.
    if [[ $MAILDIR_ROOT != /var/vmail ]]; then
        override+=" home=$MAILDIR_ROOT/%d/%n"
    fi
    if [[ $vmail_uid != 5000 || $vmail_gid != 5000 ]]; then
        override+=" uid=$vmail_uid gid=$vmail_gid"
    fi
    if [[ -n $override ]]; then
        override="  # STACK: maildirs under the state dir. Production: no override_fields.
  override_fields =$override"
    fi
    # No failure delay: no per-IP auth penalty either (anvil's socket closed to
    # the auth process, as Dovecot's documentation says to turn it off).
    if [[ $AUTH_FAILURE_DELAY =~ ^0+[[:space:]]*[a-z]*$ ]]; then
        penalty="service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}"
    fi
    SUBST=(
        [PF_CONF]=$PF_CONF [PF_SPOOL]=$PF_SPOOL [PF_DATA]=$PF_DATA
        [DC_CONF]=$DC_CONF [DC_RUN]=$DC_RUN [DC_STATE]=$DC_STATE
        [LOGS]=$LOGS [TLS]=$TLS [LISTEN]=$LISTEN [HOSTNAME]=$HOSTNAME_
        [DB]=$DB [DB_HOST]=$DB_HOST [DB_PORT]=$DB_PORT [MAILSERVER_PW]=$ro
        [OUTBOUND]=$outbound
        [USERDB_OVERRIDE]=$override
        [VMAIL_UID]=$vmail_uid [VMAIL_GID]=$vmail_gid
        [AUTH_CACHE_SIZE]=$([[ $AUTH_CACHE_TTL == 0 ]] && echo 0 || echo 10M)
        [AUTH_CACHE_TTL]=$([[ $AUTH_CACHE_TTL == 0 ]] && echo "1 hour" || echo "$AUTH_CACHE_TTL")
        [AUTH_FAILURE_DELAY]=$AUTH_FAILURE_DELAY
        [AUTH_PENALTY]=$penalty
        [MILTERS]=$(milter_config)
    )
    install -d -m 0755 "$STATE" "$LOGS" "$PF_CONF" "$DC_CONF" "$DC_STATE"
    install -d -m 0755 -o postfix -g postfix "$PF_DATA"
    install -d -m 0755 "$PF_SPOOL"
    install -d -m 0755 -o vmail -g vmail "$MAILDIR_ROOT"

    local f
    render "$HERE/postfix/main.cf.in" "$PF_CONF/main.cf" 0644 root:root
    render "$HERE/postfix/master.cf.in" "$PF_CONF/master.cf" 0644 root:root
    for f in "$HERE"/postfix/mysql-*.cf.in; do
        f=${f##*/}
        render "$HERE/postfix/$f" "$PF_CONF/${f%.in}" 0640 root:postfix
    done
    render "$HERE/dovecot/dovecot.conf.in" "$DC_CONF/dovecot.conf" 0644 root:root
    render "$HERE/dovecot/dovecot-sql.conf.ext.in" "$DC_CONF/dovecot-sql.conf.ext" 0640 root:dovecot

    # The chroot jail needs a few files from /etc (Debian's init script copies
    # the same ones for the default instance).
    install -d -m 0755 "$PF_SPOOL/etc"
    for f in localtime hosts services resolv.conf nsswitch.conf host.conf; do
        if [[ -e /etc/$f ]]; then
            cp -L --preserve=mode -- "/etc/$f" "$PF_SPOOL/etc/$f" 2>/dev/null || true
        fi
    done
    # Queue subdirectories and permissions (also creates private/ for Dovecot's sockets).
    postfix -c "$PF_CONF" set-permissions >>"$LOGS/postfix-start.log" 2>&1 ||
        { tail -n 20 "$LOGS/postfix-start.log" >&2; die "postfix set-permissions failed (see $LOGS/postfix-start.log)"; }
    postfix -c "$PF_CONF" check >>"$LOGS/postfix-start.log" 2>&1 ||
        { tail -n 20 "$LOGS/postfix-start.log" >&2; die "postfix check failed (see $LOGS/postfix-start.log)"; }
    doveconf -c "$DC_CONF/dovecot.conf" -n >/dev/null 2>>"$LOGS/dovecot-start.log" ||
        { tail -n 20 "$LOGS/dovecot-start.log" >&2; die "doveconf rejects $DC_CONF/dovecot.conf"; }
    printf 'db=%s\nmaildir_root=%s\nrelayhost=%s\n' "$DB" "$MAILDIR_ROOT" "$RELAYHOST" >"$STATE/stack.conf"
}

# ---------------------------------------------------------------- processes

# A socket listens on $LISTEN:PORT (no connection, so no noise in the logs).
port_listening() {
    if have ss; then
        [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null | awk -v a="$LISTEN:$1" '$4 == a') ]]
    else
        port_open "$1"
    fi
}

dovecot_pid() {
    local pid
    [[ -r $DC_RUN/master.pid ]] || return 1
    pid=$(<"$DC_RUN/master.pid")
    [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */dovecot ]] || return 1
    printf '%s\n' "$pid"
}

postfix_pid() {
    local pid
    [[ -r $PF_SPOOL/pid/master.pid ]] || return 1
    pid=$(tr -d ' \n' <"$PF_SPOOL/pid/master.pid")
    [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */master ]] || return 1
    printf '%s\n' "$pid"
}

# wait_for WHAT ALIVE CMD...: wait_until (scripts/lib.sh), saying why it gave up.
wait_for() {
    local what=$1 rc=0
    shift
    wait_until "$TIMEOUT" "$@" || rc=$?
    case $rc in
    0) return 0 ;;
    2) warn "$what: the process is gone" ;;
    *) warn "$what: not ready within ${TIMEOUT}s" ;;
    esac
    return 1
}

sockets_ready() { [[ -S $PF_SPOOL/private/auth && -S $PF_SPOOL/private/dovecot-lmtp ]]; }
# listening first (quiet), then one real connection each
dovecot_ports() { port_listening 143 && port_listening 993 && port_open 143 && port_open 993; }
postfix_ports() {
    port_listening 25 && port_listening 587 && port_listening 465 &&
        port_open 25 && port_open 587 && port_open 465
}

check_ports_free() {
    local p busy=()
    for p in "$@"; do
        port_listening "$p" && busy+=("$p")
    done
    [[ ${#busy[@]} -eq 0 ]] || die "port(s) ${busy[*]} on $LISTEN are taken by another program (ss -ltnp); stop it first"
}

start_dovecot() {
    if dovecot_pid >/dev/null; then
        say "dovecot: running; reloading its configuration"
        doveadm -c "$DC_CONF/dovecot.conf" reload </dev/null >>"$LOGS/dovecot-start.log" 2>&1 ||
            die "doveadm reload failed (see $LOGS/dovecot-start.log)"
        # the config is reread; wait until the sockets are back
        sleep 0.5
    else
        check_ports_free 143 993
        say "dovecot: starting"
        # The master keeps its caller's stdout/stderr open: never a pipe.
        # Nor may it inherit the lock (fd 9).
        dovecot -c "$DC_CONF/dovecot.conf" </dev/null >>"$LOGS/dovecot-start.log" 2>&1 9>&- ||
            { tail -n 20 "$LOGS/dovecot-start.log" "$LOGS/dovecot.log" >&2 2>/dev/null; die "dovecot failed to start"; }
    fi
    if ! wait_for "dovecot" dovecot_pid sockets_ready ||
        ! wait_for "dovecot ports 143/993" dovecot_pid dovecot_ports; then
        tail -n 20 "$LOGS/dovecot.log" >&2 2>/dev/null
        die "dovecot is not ready (log: $LOGS/dovecot.log)"
    fi
}

start_postfix() {
    if postfix_pid >/dev/null; then
        say "postfix: running; reloading its configuration"
        postfix -c "$PF_CONF" reload </dev/null >>"$LOGS/postfix-start.log" 2>&1 9>&- ||
            die "postfix reload failed (see $LOGS/postfix-start.log)"
        sleep 0.5
    else
        check_ports_free 25 587 465
        say "postfix: starting"
        postfix -c "$PF_CONF" start </dev/null >>"$LOGS/postfix-start.log" 2>&1 9>&- ||
            { tail -n 20 "$LOGS/postfix-start.log" "$LOGS/postfix.log" >&2 2>/dev/null; die "postfix failed to start"; }
    fi
    wait_for "postfix ports 25/587/465" postfix_pid postfix_ports ||
        { tail -n 20 "$LOGS/postfix.log" >&2 2>/dev/null; die "postfix is not ready (log: $LOGS/postfix.log)"; }
}

# reachable DIR USER...: Postfix, Dovecot and vmail work in the state dir as
# unprivileged users, so every directory above it must let them through (a
# state dir under a mode 0700 directory, such as pytest's /tmp/pytest-of-root,
# would start Dovecot and then fail in Postfix or at the first delivery).
reachable() {
    local dir=$1 u
    shift
    for u in "$@"; do
        runuser -u "$u" -- test -x "$dir" 2>/dev/null ||
            die "user $u cannot reach $dir: a directory above it is not searchable by others (chmod o+x it, or choose another MAILPROV_STACK_DIR)"
    done
}

lock() {
    { exec 9>>"/run/lock/mailprov-stack.lock"; } 2>/dev/null || exec 9>>"/tmp/mailprov-stack.lock"
    flock -w $((TIMEOUT * 3)) 9 || die "another stack.sh holds the lock"
}

cmd_start() {
    need_root
    validate
    local p
    for p in "${PACKAGES[@]}" "${DKIM_PACKAGES[@]}"; do
        pkg_installed "$p" || die "package $p is missing; run: $0 install"
    done
    lock
    local t0=$SECONDS
    ensure_vmail
    install -d -m 0755 "$STATE" "$LOGS"
    reachable "$STATE" postfix dovecot vmail _rspamd knot
    # Ports held by another program (or by a stack of another state dir): stop
    # now, before setup_db gives the shared DB users this state dir's passwords
    # (which would cut the running stack off from its database).
    dovecot_pid >/dev/null || check_ports_free 143 993
    postfix_pid >/dev/null || check_ports_free 25 587 465
    rspamd_pid >/dev/null || check_ports_free 11332
    knot_pid >/dev/null || check_ports_free "$DNS_PORT"
    ensure_mariadb
    setup_db
    setup_tls
    write_config
    write_dkim_config
    reachable "$MAILDIR_ROOT" vmail
    start_knot
    start_rspamd
    start_dovecot
    start_postfix
    # Can the read-only user log in (what Postfix and Dovecot do)?
    local client
    client=$(maria_client)
    "$client" --no-defaults --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u mailserver \
        -p"$(secret mailserver)" -N -B -e 'SELECT 1' "$DB" >/dev/null ||
        die "the read-only user mailserver cannot log in to $DB"
    say "ready in $((SECONDS - t0))s: smtp $LISTEN:25, submission 587, submissions 465, imap 143, imaps 993, rspamd milter 11332, dns $DNS_PORT ($DNS_ZONE)"
    say "state dir $STATE; shell settings: eval \"\$($0 env)\""
}

# Alive and not a zombie (PID 1 of a container may be slow to reap).
pid_alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

stop_pid() {
    local what=$1 pid=$2 deadline=$((SECONDS + TIMEOUT))
    while pid_alive "$pid" && ((SECONDS < deadline)); do
        sleep 0.1
    done
    if pid_alive "$pid"; then
        warn "$what (pid $pid) still runs after ${TIMEOUT}s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
}

cmd_stop() {
    need_root
    lock
    local pid
    # The ports of what this call stops (others may belong to another program,
    # or to the stack of another state dir: not ours to wait for).
    local -a ports=()
    if pid=$(postfix_pid); then
        say "postfix: stopping (pid $pid)"
        timeout "$TIMEOUT" postfix -c "$PF_CONF" stop </dev/null >>"$LOGS/postfix-start.log" 2>&1 ||
            kill -TERM "$pid" 2>/dev/null || true
        stop_pid postfix "$pid"
        ports+=(25 587 465)
    else
        say "postfix: not running"
    fi
    if pid=$(dovecot_pid); then
        say "dovecot: stopping (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        stop_pid dovecot "$pid"
        ports+=(143 993)
    else
        say "dovecot: not running"
    fi
    stop_dkim_services
    # Children of the old masters may hold the listening sockets a moment longer.
    local deadline=$((SECONDS + TIMEOUT)) p busy
    busy=""
    while ((${#ports[@]} > 0 && SECONDS < deadline)); do
        busy=""
        for p in "${ports[@]}"; do
            port_listening "$p" && busy+=" $p"
        done
        [[ -z $busy ]] && break
        sleep 0.2
    done
    [[ -z $busy ]] || warn "port(s)$busy on $LISTEN still listening after ${TIMEOUT}s"
    local leftover
    # shellcheck disable=SC2009 # pgrep -f would match this script's own arguments
    leftover=$(ps -eo pid=,stat=,args= | awk -v d="$STATE/" '$2 !~ /^Z/ && index($0, d) && !/awk|stack\.sh/' || true)
    if [[ -n $leftover ]]; then
        warn "processes still mention $STATE:"
        printf '%s\n' "$leftover" >&2
        return 1
    fi
    say "stopped"
}

cmd_status() {
    local up=0 down=0 pid p line=""
    if pid=$(dovecot_pid); then
        say "dovecot: running (pid $pid)"
        up=$((up + 1))
    else
        say "dovecot: not running"
        down=$((down + 1))
    fi
    if pid=$(postfix_pid); then
        say "postfix: running (pid $pid)"
        up=$((up + 1))
    else
        say "postfix: not running"
        down=$((down + 1))
    fi
    for what in rspamd knot; do
        if pid=$("${what}_pid"); then
            say "$what: running (pid $pid)"
            up=$((up + 1))
        else
            say "$what: not running"
            down=$((down + 1))
        fi
    done
    for p in "${PORTS[@]}" 11332 "$DNS_PORT"; do
        if port_listening "$p"; then line+=" $p:listening"; else line+=" $p:closed"; fi
    done
    say "ports on $LISTEN:$line"
    if [[ -r $STATE/stack.conf ]]; then
        say "config: $(tr '\n' ' ' <"$STATE/stack.conf")"
    fi
    if ((down == 0)); then return 0; fi
    if ((up == 0)); then return 3; fi
    return 1
}

cmd_env() {
    [[ -s $SECRETS/mailprov.pw && -s $TLS/ca.crt ]] || die "no stack in $STATE yet; run: $0 start"
    local db=$DB maildir=$MAILDIR_ROOT rw ro
    if [[ -r $STATE/stack.conf ]]; then
        db=$(sed -n 's/^db=//p' "$STATE/stack.conf")
        maildir=$(sed -n 's/^maildir_root=//p' "$STATE/stack.conf")
    fi
    rw=$(<"$SECRETS/mailprov.pw")
    ro=$(<"$SECRETS/mailserver.pw")
    local -a kv=(
        MAILPROV_STACK_DIR "$STATE"
        MAILPROV_STACK_DB "$db"
        MAILPROV_STACK_DB_URL_RW "mysql+pymysql://mailprov:$rw@$DB_HOST:$DB_PORT/$db"
        MAILPROV_STACK_DB_URL_RO "mysql+pymysql://mailserver:$ro@$DB_HOST:$DB_PORT/$db"
        MAILPROV_STACK_SMTP_HOST "$LISTEN"
        MAILPROV_STACK_SMTP_TLS_NAME "$HOSTNAME_"
        MAILPROV_STACK_SMTP_PORT 25
        MAILPROV_STACK_SUBMISSION_PORT 587
        MAILPROV_STACK_SUBMISSIONS_PORT 465
        MAILPROV_STACK_IMAP_PORT 143
        MAILPROV_STACK_IMAPS_PORT 993
        MAILPROV_STACK_CA_FILE "$TLS/ca.crt"
        MAILPROV_STACK_MAILDIR_ROOT "$maildir"
        MAILPROV_STACK_POSTFIX_LOG "$LOGS/postfix.log"
        MAILPROV_STACK_DOVECOT_LOG "$LOGS/dovecot.log"
        MAILPROV_STACK_POSTFIX_CONFIG "$PF_CONF"
        MAILPROV_STACK_DOVECOT_CONFIG "$DC_CONF/dovecot.conf"
        MAILPROV_STACK_DKIM_DIR "$DKIM_DIR"
        MAILPROV_STACK_DKIM_SELECTOR_MAP "$DKIM_SELECTOR_MAP"
        MAILPROV_STACK_RSPAMD_LOG "$LOGS/rspamd.log"
        MAILPROV_STACK_DNS_HOST "$LISTEN"
        MAILPROV_STACK_DNS_PORT "$DNS_PORT"
        MAILPROV_STACK_DNS_ZONE "$DNS_ZONE"
        MAILPROV_STACK_DNS_ZONE_FILE "$DNS_ZONES/$DNS_ZONE.zone"
    )
    local i
    for ((i = 0; i < ${#kv[@]}; i += 2)); do
        printf 'export %s=%q\n' "${kv[i]}" "${kv[i + 1]}"
    done
}

cmd_grant() {
    need_root
    validate
    ensure_mariadb
    tables_present || die "the tables virtual_domains, virtual_users, virtual_aliases are not in $DB (run mailprov's migrations first)"
    grant_readonly
}

# ---------------------------------------------------------------- DKIM: rspamd + Knot DNS (issue 19)

# Postfix hands every message to rspamd, as the ISPmail guide sets it up; rspamd
# signs mail from logged-in users (local.d/dkim_signing.conf) and nothing else here.
milter_config() {
    printf '%s\n' \
        "smtpd_milters = inet:$LISTEN:11332" \
        'non_smtpd_milters = $smtpd_milters' \
        '# Without rspamd, mail still flows (unsigned) rather than waiting in the queue.' \
        'milter_default_action = accept'
}

write_dkim_config() {
    SUBST+=(
        [RSPAMD_CONF]=$RSPAMD_CONF [RSPAMD_RUN]=$RSPAMD_RUN
        [DKIM_DIR]=$DKIM_DIR [DKIM_SELECTOR_MAP]=$DKIM_SELECTOR_MAP
        [DNS_PORT]=$DNS_PORT [DNS_ZONE]=$DNS_ZONE [DNS_RUN]=$DNS_RUN
        [DNS_DB]=$DNS_DB [DNS_ZONES]=$DNS_ZONES
    )
    install -d -m 0755 "$RSPAMD_CONF" "$RSPAMD_CONF/local.d" "$DNS_DIR" "$DNS_ZONES"
    install -d -m 0755 -o _rspamd -g _rspamd "$RSPAMD_RUN" "$RSPAMD_DB"
    install -d -m 0755 -o knot -g knot "$DNS_RUN" "$DNS_DB"
    # The keys: only root writes them (mailprov dkim sync), only _rspamd reads them.
    install -d -m 0750 -g _rspamd "$DKIM_DIR"
    render "$HERE/rspamd/rspamd.conf.in" "$RSPAMD_CONF/rspamd.conf" 0644 root:root
    render "$HERE/rspamd/dkim_signing.conf.in" "$RSPAMD_CONF/local.d/dkim_signing.conf" 0644 root:root
    render "$HERE/knot/knot.conf.in" "$DNS_DIR/knot.conf" 0644 root:root
    [[ -e $DKIM_SELECTOR_MAP ]] || install -m 0644 /dev/null "$DKIM_SELECTOR_MAP"
    # rspamd's workers write their log lines themselves, as _rspamd.
    touch "$LOGS/rspamd.log" && chown _rspamd:_rspamd "$LOGS/rspamd.log"
    touch "$LOGS/knot.log" && chown knot:knot "$LOGS/knot.log"
    local zone=$DNS_ZONES/$DNS_ZONE.zone
    if [[ ! -s $zone ]]; then
        # An empty zone (SOA and NS only); tests write their records into this file.
        printf '%s\n' "\$ORIGIN $DNS_ZONE." '$TTL 60' \
            "@ IN SOA ns.$DNS_ZONE. hostmaster.$DNS_ZONE. 1 60 60 600 5" \
            "@ IN NS ns.$DNS_ZONE." "ns IN A 127.0.0.1" >"$zone"
        chmod 0644 "$zone"
    fi
    knotc -c "$DNS_DIR/knot.conf" conf-check >>"$LOGS/knot-start.log" 2>&1 ||
        { tail -n 20 "$LOGS/knot-start.log" >&2; die "knotc conf-check rejects $DNS_DIR/knot.conf"; }
    rspamadm configtest -c "$RSPAMD_CONF/rspamd.conf" >>"$LOGS/rspamd-start.log" 2>&1 ||
        { tail -n 20 "$LOGS/rspamd-start.log" >&2; die "rspamadm configtest rejects $RSPAMD_CONF/rspamd.conf"; }
}

rspamd_pid() {
    local pid
    [[ -r $RSPAMD_RUN/rspamd.pid ]] || return 1
    pid=$(tr -d ' \n' <"$RSPAMD_RUN/rspamd.pid")
    [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */rspamd ]] || return 1
    printf '%s\n' "$pid"
}

knot_pid() {
    local pid
    [[ -r $DNS_RUN/knot.pid ]] || return 1
    pid=$(tr -d ' \n' <"$DNS_RUN/knot.pid")
    [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */knotd ]] || return 1
    printf '%s\n' "$pid"
}

rspamd_port() { port_listening 11332 && port_open 11332; }
knot_port() { port_listening "$DNS_PORT"; }

start_rspamd() {
    if rspamd_pid >/dev/null; then
        cmd_rspamd_reload
        return 0
    fi
    say "rspamd: starting"
    # Debian's DBDIR and pattern caches stay as they are; this instance's state is ours.
    rspamd -c "$RSPAMD_CONF/rspamd.conf" -u _rspamd -g _rspamd --var "DBDIR=$RSPAMD_DB" \
        </dev/null >>"$LOGS/rspamd-start.log" 2>&1 9>&- ||
        { tail -n 20 "$LOGS/rspamd-start.log" "$LOGS/rspamd.log" >&2 2>/dev/null; die "rspamd failed to start"; }
    # The first start on a host compiles rspamd's pattern caches (up to a minute on a
    # busy machine); later starts take a few seconds.
    local deadline=$((SECONDS + TIMEOUT * 4))
    until rspamd_port; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "$LOGS/rspamd.log" >&2 2>/dev/null
            die "rspamd is not ready within $((TIMEOUT * 4))s (log: $LOGS/rspamd.log)"
        fi
        sleep 0.2
    done
}

start_knot() {
    if knot_pid >/dev/null; then
        say "knot: running; reloading"
        knotc -c "$DNS_DIR/knot.conf" -b reload >>"$LOGS/knot-start.log" 2>&1 ||
            die "knotc reload failed (see $LOGS/knot-start.log)"
        return 0
    fi
    say "knot: starting (zone $DNS_ZONE on $LISTEN:$DNS_PORT)"
    knotd -c "$DNS_DIR/knot.conf" -d </dev/null >>"$LOGS/knot-start.log" 2>&1 9>&- ||
        { tail -n 20 "$LOGS/knot-start.log" "$LOGS/knot.log" >&2 2>/dev/null; die "knotd failed to start"; }
    wait_for "knot port $DNS_PORT" "" knot_port ||
        { tail -n 20 "$LOGS/knot.log" >&2 2>/dev/null; die "knot is not ready (log: $LOGS/knot.log)"; }
}

stop_dkim_services() {
    local pid
    if pid=$(rspamd_pid); then
        say "rspamd: stopping (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        stop_pid rspamd "$pid"
        ports+=(11332)
    else
        say "rspamd: not running"
    fi
    if pid=$(knot_pid); then
        say "knot: stopping (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        stop_pid knot "$pid"
        ports+=("$DNS_PORT")
    else
        say "knot: not running"
    fi
}

cmd_dns_reload() {
    need_root
    knot_pid >/dev/null || die "knot is not running; run: $0 start"
    # -b: answer only when the zone file is loaded (or refused).
    knotc -c "$DNS_DIR/knot.conf" -b zone-reload "$DNS_ZONE" ||
        die "knot refused $DNS_ZONES/$DNS_ZONE.zone (see $LOGS/knot.log)"
}

# SIGHUP: rspamd rereads its configuration and maps and replaces its workers.
cmd_rspamd_reload() {
    need_root
    local pid old
    pid=$(rspamd_pid) || die "rspamd is not running; run: $0 start"
    old=$(pgrep -P "$pid" -f 'rspamd_proxy' | tr '\n' ' ') || true
    say "rspamd: reloading (pid $pid)"
    kill -HUP "$pid"
    # Ready again when a new proxy worker listens and the old ones are gone.
    local deadline=$((SECONDS + TIMEOUT)) now
    while ((SECONDS < deadline)); do
        now=$(pgrep -P "$pid" -f 'rspamd_proxy' | tr '\n' ' ') || true
        if [[ -n $now && $now != "$old" ]] && rspamd_port; then
            local p gone=1
            for p in $old; do pid_alive "$p" && gone=0; done
            ((gone)) && return 0
        fi
        sleep 0.1
    done
    die "rspamd did not come back within ${TIMEOUT}s (log: $LOGS/rspamd.log)"
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case $cmd in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    grant) cmd_grant ;;
    doveadm) exec doveadm -c "$DC_CONF/dovecot.conf" "$@" ;;
    postfix) exec postfix -c "$PF_CONF" "$@" ;;
    dns-reload) cmd_dns_reload ;;
    rspamd-reload) cmd_rspamd_reload ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
