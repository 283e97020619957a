#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the tests (and for trying a shared study by hand).
#
#   ci/services/postgres.sh start    install if missing, create + start the cluster; print the SQLAlchemy URL
#   ci/services/postgres.sh status   print the URL and exit 0 if it answers, exit 3 if not
#   ci/services/postgres.sh stop     stop the server and delete its data directory
#   ci/services/postgres.sh url      print the URL (whether or not it runs)
#
# Only the URL goes to stdout; everything else goes to stderr.  Settings (environment):
#   VAE_SWEEP_SERVICES_DIR  parent of the cluster's directory       (default /tmp/vae_sweep_services)
#   VAE_SWEEP_PG_PORT       TCP port on 127.0.0.1                     (default 55432; if unset and busy,
#                                                                      the next free one up to 55441)
#   VAE_SWEEP_PG_DRIVER     psycopg (psycopg 3, SQLAlchemy 2 only) or psycopg2 (SQLAlchemy 1.4 and 2)
#                           (default: psycopg)
#   VAE_SWEEP_PG_PASSWORD   password of the test role `vae`           (default vae)
#   VAE_SWEEP_PG_TRIES      readiness checks, 0.5 s apart             (default 60)
# As root, the server runs as the `postgres` OS user (PostgreSQL refuses root; without root, as the caller,
# and the package must already be installed).  It listens on 127.0.0.1 only, with
# scram-sha-256 password auth over TCP and peer auth on its own Unix socket (inside its directory).
# Durability is off (fsync, synchronous_commit, full_page_writes): this data is thrown away.
set -euo pipefail

SVC_DIR=${VAE_SWEEP_SERVICES_DIR:-/tmp/vae_sweep_services}
PG_DIR=$SVC_DIR/pg            # everything of ours: data/, the log, the socket, state
DATA=$PG_DIR/data
STATE=$PG_DIR/state.env       # PG_PORT=... once started
LOG=$PG_DIR/postgres.log
DB=vae_sweep_test
ROLE=vae
PASSWORD=${VAE_SWEEP_PG_PASSWORD:-vae}
DRIVER=${VAE_SWEEP_PG_DRIVER:-psycopg}
TRIES=${VAE_SWEEP_PG_TRIES:-60}
PKGS=(postgresql-15 postgresql-client-15)

log() { echo "postgres.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

case $DRIVER in
    psycopg | psycopg2) ;;
    *) die "VAE_SWEEP_PG_DRIVER must be psycopg or psycopg2, not '$DRIVER'" ;;
esac

bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n $d && -x $d/pg_ctl ]] && echo "$d"
}

# As root, the server runs as the `postgres` OS user (PostgreSQL refuses root); otherwise as whoever we are.
if [[ $(id -u) -eq 0 ]]; then
    as_pg() { runuser -u postgres -- "$@"; }
    PG_OWNER=(-o postgres -g postgres)
else
    as_pg() { "$@"; }
    PG_OWNER=()
fi
chown_pg() { [[ $(id -u) -ne 0 ]] || chown postgres:postgres "$@"; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

saved_port() { [[ -f $STATE ]] && sed -n 's/^PG_PORT=//p' "$STATE" | head -n 1; }

url() {
    local port=$1
    echo "postgresql+$DRIVER://$ROLE:$PASSWORD@127.0.0.1:$port/$DB"
}

running() {  # our postmaster answers on its port
    local bin port
    bin=$(bindir) || return 1
    port=$(saved_port) || return 1
    [[ -n $port && -f $DATA/postmaster.pid ]] || return 1
    as_pg "$bin/pg_ctl" status -D "$DATA" >/dev/null 2>&1 || return 1
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2
}

install_if_missing() {
    if bindir >/dev/null; then return 0; fi
    [[ $(id -u) -eq 0 ]] || die "PostgreSQL is not installed and installing it needs root (apt-get install ${PKGS[*]})"
    log "installing ${PKGS[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    # An `apt-get update` only when the package lists don't know the package yet (a fresh machine).
    if ! apt-cache show "${PKGS[0]}" >/dev/null 2>&1; then
        timeout 300 apt-get update -q >&2
    fi
    timeout 600 apt-get install -y -q --no-install-recommends "${PKGS[@]}" >&2
    # Debian's postinst may have created and started the packaged cluster `main` (where services can be
    # started); we never use it, and leave it as the package set it up.
    bindir >/dev/null || die "installed ${PKGS[*]} but found no /usr/lib/postgresql/*/bin/pg_ctl"
}

pick_port() {
    if [[ -n ${VAE_SWEEP_PG_PORT:-} ]]; then
        port_busy "$VAE_SWEEP_PG_PORT" && die "port $VAE_SWEEP_PG_PORT on 127.0.0.1 is in use (VAE_SWEEP_PG_PORT)"
        echo "$VAE_SWEEP_PG_PORT"
        return
    fi
    local p
    for p in $(seq 55432 55441); do
        if ! port_busy "$p"; then echo "$p"; return; fi
    done
    die "ports 55432-55441 on 127.0.0.1 are all in use; set VAE_SWEEP_PG_PORT"
}

psql_admin() {  # psql as the superuser over our own Unix socket (peer auth)
    local bin=$1 port=$2; shift 2
    as_pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR" -p "$port" -d postgres "$@"
}

on_start_exit() {  # the EXIT trap while `start` runs: only reached on failure
    local rc=$?
    log "start failed (exit $rc); the server's log, $LOG:"
    tail -n 20 "$LOG" >&2 2>/dev/null || true
    as_pg "$FAIL_BIN/pg_ctl" stop -D "$DATA" -m immediate >/dev/null 2>&1 || true
    if [[ $FAIL_FRESH -eq 1 ]]; then rm -rf "$PG_DIR"; rmdir "$SVC_DIR" 2>/dev/null || true; fi
    exit $((rc == 0 ? 1 : rc))
}

start() {
    install_if_missing
    local bin port
    bin=$(bindir)
    if running; then
        log "already running on 127.0.0.1:$(saved_port) (data: $DATA)"
        url "$(saved_port)"
        return 0
    fi

    local fresh=0
    if [[ ! -f $PG_DIR/.ready ]]; then
        # Nothing, or a half-made cluster from an interrupted start: begin again.
        [[ -d $PG_DIR ]] && { as_pg "$bin/pg_ctl" stop -D "$DATA" -m immediate >/dev/null 2>&1 || true; rm -rf "$PG_DIR"; }
        fresh=1
    fi
    port=$(saved_port || true)
    if [[ -z $port ]] || port_busy "$port"; then port=$(pick_port); fi

    # On failure from here on: stop what we started, and remove what we made fresh.
    FAIL_BIN=$bin FAIL_FRESH=$fresh
    trap on_start_exit EXIT

    mkdir -p "$SVC_DIR"
    chmod 755 "$SVC_DIR"
    if [[ $fresh -eq 1 ]]; then
        install -d "${PG_OWNER[@]}" -m 700 "$PG_DIR"
        log "initdb in $DATA"
        local pwfile=$PG_DIR/.pw
        printf '%s\n' "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$pwfile"
        chown_pg "$pwfile"
        as_pg "$bin/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
            --auth-local=peer --auth-host=scram-sha-256 --pwfile="$pwfile" >"$LOG.initdb" 2>&1 \
            || { cat "$LOG.initdb" >&2; false; }
        rm -f "$pwfile"
        cat >> "$DATA/postgresql.conf" <<EOF

# --- vae_sweep test cluster (ci/services/postgres.sh) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_DIR'
max_connections = 200
shared_buffers = 64MB
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
EOF
        # Only loopback over TCP (initdb's default pg_hba also has ::1 and replication lines: replace it).
        cat > "$DATA/pg_hba.conf" <<EOF
local   all   all                  peer
host    all   all   127.0.0.1/32   scram-sha-256
EOF
        chown_pg "$DATA/pg_hba.conf"
    fi
    echo "PG_PORT=$port" > "$STATE"

    log "starting on 127.0.0.1:$port"
    touch "$LOG"; chown_pg "$LOG"
    as_pg "$bin/pg_ctl" start -D "$DATA" -l "$LOG" -o "-p $port" -w -t 60 >&2

    local i
    for ((i = 1; i <= TRIES; i++)); do
        "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2 && break
        sleep 0.5
    done
    ((i <= TRIES)) || { log "not ready after $TRIES tries"; false; }

    if [[ $fresh -eq 1 ]]; then
        local sqlpw=${PASSWORD//\'/\'\'}
        psql_admin "$bin" "$port" -c "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$sqlpw'" >&2
        psql_admin "$bin" "$port" -c "CREATE DATABASE $DB OWNER $ROLE" >&2
        touch "$PG_DIR/.ready"
    fi
    trap - EXIT
    log "ready: 127.0.0.1:$port, database $DB, role $ROLE (data: $DATA, log: $LOG)"
    url "$port"
}

stop() {
    local bin
    if bin=$(bindir) && [[ -f $DATA/postmaster.pid ]]; then
        log "stopping (data: $DATA)"
        # immediate: no shutdown checkpoint, since the data is deleted next.
        as_pg "$bin/pg_ctl" stop -D "$DATA" -m immediate -w -t 30 >&2 || true
    fi
    # The postmaster's pid, if one survived everything above.
    if [[ -f $DATA/postmaster.pid ]]; then
        local pid
        pid=$(head -n 1 "$DATA/postmaster.pid")
        [[ $pid =~ ^[0-9]+$ ]] && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -rf "$PG_DIR"
    rmdir "$SVC_DIR" 2>/dev/null || true
    log "stopped and removed $PG_DIR"
}

status() {
    if running; then
        url "$(saved_port)"
    else
        log "not running (dir: $PG_DIR)"
        return 3
    fi
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    url) port=$(saved_port || true); url "${port:-${VAE_SWEEP_PG_PORT:-55432}}" ;;
    *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
