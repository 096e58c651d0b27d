# Shell helpers shared by scripts/*.sh and deploy/stack.sh: sourced, never run.
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Bash only; defines functions and nothing else (no options, traps or output).

# have CMD: CMD is on PATH.
have() { command -v "$1" >/dev/null 2>&1; }

# port_open PORT [HOST]: something accepts a TCP connection on HOST (default
# 127.0.0.1) and PORT now (a real connect, bounded to 3 seconds).
port_open() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "${2:-127.0.0.1}" "$1" 2>/dev/null
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# maria_client: the path of the MariaDB command-line client (mariadb, else mysql).
maria_client() {
    if have mariadb; then
        command -v mariadb
    elif have mysql; then
        command -v mysql
    else
        return 1
    fi
}

# wait_until SECONDS ALIVE CMD...: run CMD until it succeeds (0). 1 when SECONDS
# pass first; 2 when ALIVE (a command whose output is dropped; "" for none) stops
# succeeding and CMD, tried once more after a second, still fails.
wait_until() {
    local seconds=$1 alive=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    while ((SECONDS < deadline)); do
        "$@" && return 0
        if [[ -n $alive ]] && ! "$alive" >/dev/null; then
            sleep 1 # it may just have exited after getting ready; look once more
            "$@" && return 0
            return 2
        fi
        sleep 0.2
    done
    return 1
}
