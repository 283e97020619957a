#!/usr/bin/env bash
# A one-node Slurm cluster on 127.0.0.1 for the tests: munged + slurmctld + slurmd, all from our own dir.
#
#   ci/services/slurm.sh start    install if missing, write the config, start the daemons, wait until the
#                                 node is idle, check with `srun -N1 hostname`; print `SLURM_CONF=...`
#   ci/services/slurm.sh status   print `SLURM_CONF=...` and exit 0 if the node answers, exit 3 if not
#   ci/services/slurm.sh stop     cancel our jobs, stop the daemons we started (by recorded pid), remove the dir
#
# Only `SLURM_CONF=/path/slurm.conf` goes to stdout (export it, or `eval "export $(... start)"`); logs go to
# stderr.  Settings (environment):
#   VAE_SWEEP_SERVICES_DIR      parent of the cluster's directory   (default /tmp/vae_sweep_services)
#   VAE_SWEEP_SLURMCTLD_PORT    controller port on 127.0.0.1         (default 16817)
#   VAE_SWEEP_SLURMD_PORT       node daemon port on 127.0.0.1        (default 16818)
#   VAE_SWEEP_SLURM_TRIES       readiness checks, 0.5 s apart         (default 120)
# Runs as root (SlurmUser=root): slurmd must be root to start jobs as their user.  The cluster is the one
# node named after this host (`hostname -s`) at 127.0.0.1, with partition `debug`; it has its own munge key,
# munged and socket, so it neither needs nor touches /etc/munge, /etc/slurm or a system munged.
set -euo pipefail

SVC_DIR=${VAE_SWEEP_SERVICES_DIR:-/tmp/vae_sweep_services}
DIR=$SVC_DIR/slurm
CONF=$DIR/slurm.conf
MUNGE_DIR=$DIR/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket.2
CTLD_PORT=${VAE_SWEEP_SLURMCTLD_PORT:-16817}
SLURMD_PORT=${VAE_SWEEP_SLURMD_PORT:-16818}
TRIES=${VAE_SWEEP_SLURM_TRIES:-120}
PKGS=(slurmctld slurmd slurm-client munge)
export SLURM_CONF=$CONF

log() { echo "slurm.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

pid_of() {  # the pid recorded in pid file $1, if that process is alive
    local pid
    [[ -f $1 ]] || return 1
    pid=$(head -n 1 "$1")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

node_idle() {  # our node answers, and is idle or already running something
    local state
    state=$(timeout 10 sinfo -h -N -o '%t' 2>/dev/null | head -n 1) || return 1
    [[ $state == idle || $state == mix || $state == alloc ]]
}

running() {
    [[ -f $CONF ]] && pid_of "$DIR/munged.pid" >/dev/null && pid_of "$DIR/slurmctld.pid" >/dev/null \
        && pid_of "$DIR/slurmd.pid" >/dev/null && node_idle
}

install_if_missing() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v srun >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) -eq 0 ]] || die "Slurm is not installed and installing it needs root (apt-get install ${PKGS[*]})"
    log "installing ${PKGS[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache show slurmctld >/dev/null 2>&1; then
        timeout 300 apt-get update -q >&2
    fi
    # Where services may start, Debian's postinst would start the packaged munged/slurm daemons with the
    # packaged config; slurm has no config there so those don't come up, and ours never use theirs.
    timeout 600 apt-get install -y -q --no-install-recommends "${PKGS[@]}" >&2
}

write_conf() {
    local host=$1 cpus mem_mb
    cpus=$(nproc)
    # RealMemory: what the machine has, less a margin of 10 % (at least 512 MB) for the OS and the daemons.
    mem_mb=$(awk '/^MemTotal:/ {m = int($2 / 1024); r = int(m / 10); if (r < 512) r = 512; print m - r}' /proc/meminfo)
    ((mem_mb > 256)) || mem_mb=256
    : > "$DIR/plugstack.conf"  # no SPANK plugins (not /etc/slurm/plugstack.conf)
    cat > "$CONF" <<EOF
# Written by ci/services/slurm.sh: a one-node test cluster on 127.0.0.1.
ClusterName=vae_sweep_test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
# Bind the daemons and srun to the configured address (127.0.0.1), not to every address.
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$DIR/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# Short scheduling and clean-up intervals: a test cluster should answer quickly.
SchedulerParameters=sched_interval=2
MessageTimeout=10
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=60
NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

on_start_exit() {  # the EXIT trap while `start` runs: only reached on failure
    local rc=$?
    log "start failed (exit $rc); the logs in $DIR/log:"
    tail -n 15 "$DIR"/log/*.log >&2 2>/dev/null || true
    stop_daemons
    rm -rf "$DIR"
    rmdir "$SVC_DIR" 2>/dev/null || true
    exit $((rc == 0 ? 1 : rc))
}

start() {
    install_if_missing
    if running; then
        log "already running (config: $CONF)"
        echo "SLURM_CONF=$CONF"
        return 0
    fi
    # A half-started or dead cluster from before: clear it away, then start afresh.
    if [[ -d $DIR ]]; then
        log "clearing a previous cluster in $DIR"
        stop_daemons
        rm -rf "$DIR"
    fi
    local host
    host=$(hostname -s)
    [[ -n $host ]] || die "hostname -s printed nothing"
    local addr
    addr=$(getent hosts "$host" | awk '{print $1; exit}' || true)
    [[ $addr == 127.* ]] || log "warning: $host resolves to '${addr:-nothing}', not 127.x: the daemons still bind" \
        "127.0.0.1 (SlurmctldHost/NodeAddr), but srun's own ports follow the host name"
    local p
    for p in "$CTLD_PORT" "$SLURMD_PORT"; do
        port_busy "$p" && die "port $p on 127.0.0.1 is in use (VAE_SWEEP_SLURMCTLD_PORT / VAE_SWEEP_SLURMD_PORT)"
    done

    trap on_start_exit EXIT
    mkdir -p "$SVC_DIR"
    chmod 755 "$SVC_DIR"
    install -d -m 755 "$DIR" "$DIR/state" "$DIR/spool" "$DIR/log" "$MUNGE_DIR"
    chmod 700 "$DIR/state"

    # munge: our own key, daemon and socket.
    local key=$MUNGE_DIR/munge.key
    if [[ ! -s $key ]]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$key" --force >&2
        else
            dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
        fi
    fi
    chmod 400 "$key"
    log "starting munged (socket $MUNGE_SOCKET)"
    munged --force --socket="$MUNGE_SOCKET" --key-file="$key" --pid-file="$DIR/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$MUNGE_DIR/munged.seed" >&2
    local i
    for ((i = 1; i <= TRIES; i++)); do
        munge -n --socket="$MUNGE_SOCKET" 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1 && break
        sleep 0.5
    done
    ((i <= TRIES)) || die "munged did not answer after $TRIES tries"

    write_conf "$host"
    log "starting slurmctld and slurmd (SLURM_CONF=$CONF; ports $CTLD_PORT, $SLURMD_PORT on 127.0.0.1)"
    slurmctld -c -f "$CONF" >&2
    slurmd -f "$CONF" >&2

    for ((i = 1; i <= TRIES; i++)); do
        node_idle && break
        # A node that came up DOWN (say, before the controller knew it) is told to resume.
        if [[ $(timeout 10 sinfo -h -N -o '%t' 2>/dev/null | head -n 1) == down* ]]; then
            timeout 10 scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
        fi
        sleep 0.5
    done
    ((i <= TRIES)) || { timeout 10 sinfo -N -l >&2 || true; die "node $host not idle after $TRIES tries"; }

    local out
    out=$(timeout 60 srun -N1 -n1 --time=1 hostname 2>&1) || die "srun -N1 hostname failed: $out"
    [[ $out == "$host"* ]] || die "srun -N1 hostname printed '$out', expected $host"
    trap - EXIT
    log "ready: node $host idle in partition debug; srun -N1 hostname -> $out"
    echo "SLURM_CONF=$CONF"
}

stop_daemons() {
    # Our jobs first (bounded), so that no job step outlives its slurmd.
    if [[ -f $CONF ]] && pid_of "$DIR/slurmctld.pid" >/dev/null; then
        timeout 10 scancel --quiet --partition=debug >/dev/null 2>&1 || true
        local i
        for ((i = 1; i <= 20; i++)); do
            [[ -z $(timeout 10 squeue -h -t R,CG,PD -o %i 2>/dev/null || true) ]] && break
            sleep 0.5
        done
    fi
    # Then the daemons, all at once (each takes a second or two to go), by the pids they recorded.
    local name pid pids=()
    for name in slurmd slurmctld munged; do
        pid=$(pid_of "$DIR/$name.pid") || continue
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid")
    done
    for pid in "${pids[@]}"; do
        for ((i = 1; i <= 40; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid still there after 10 s: KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    return 0
}

stop() {
    stop_daemons
    rm -rf "$DIR"
    rmdir "$SVC_DIR" 2>/dev/null || true
    log "stopped and removed $DIR"
}

status() {
    if running; then
        echo "SLURM_CONF=$CONF"
    else
        log "not running (dir: $DIR)"
        return 3
    fi
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
