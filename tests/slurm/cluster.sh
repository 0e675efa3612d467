#!/usr/bin/env bash
# Bring a real SLURM test cluster up / down for the autosci_hpc tests: two nodes on this one host
# (Slurm built with MULTIPLE_SLURMD: each node is its own slurmd, `slurmd -N <node>`).
#
#   bash tests/slurm/install.sh         # once: Debian/Ubuntu packages
#   bash tests/slurm/cluster.sh up      # start munged [, MariaDB, slurmdbd], slurmctld, one slurmd per node
#   . /tmp/autosci-slurm/env.sh         # or: eval "$(bash tests/slurm/cluster.sh env)"
#   sinfo; sbatch ...; sacct ...
#   bash tests/slurm/cluster.sh status  # exit 0 if up, 1 if not
#   bash tests/slurm/cluster.sh down    # stop everything it started (safe to repeat)
#
# Everything lives in the state dir ${AUTOSCI_SLURM_DIR:-/tmp/autosci-slurm}:
#   etc/   slurm.conf, gres.conf, slurmdbd.conf, plugstack.conf (from the *.in templates)
#   run/   pid files of the daemons (the only processes `down` stops)
#   log/   daemon logs (kept after `down`, wiped by the next `up`)
#   spool/ slurmctld state + slurmd spools    munge/  key + socket
#   mysql/ MariaDB datadir + socket           dev/    fake GPU device files (dev/<node>/ per node)
#   env.sh `export SLURM_CONF=...` etc., for callers to source
# The system's /etc/slurm, /etc/munge, /run/munge and MariaDB are not used.
#
# Every `up` starts from nothing: state, job ids (they restart at 1) and the
# accounting database are recreated, so old sacct rows never answer for new
# job ids.  `up` on a cluster that is already up does nothing.
#
# Nodes: <host> (the first; the only node of the partitions `cpu` and `h100`, so
# every test written for one node sees the cluster as before) and <host>-b (a
# second slurmd on the same host, NodeAddr=127.0.0.1, its own port, spool, pid
# file, log and fake GPUs).  The partition `pair` holds both: multi-node jobs
# (--nodes=2) run there.  AUTOSCI_SLURM_NODES=1 leaves the second node out (no
# `pair` partition; the multi-node tests then skip, saying so).
#
# Must run as root (daemons run as root: a throw-away test cluster on one host
# needs no privilege separation, and this avoids chown-ing the state dir).
#
# Knobs (environment variables):
#   AUTOSCI_SLURM_DIR            state dir                    [/tmp/autosci-slurm]
#   AUTOSCI_SLURM_NO_ACCOUNTING  1: no slurmdbd/MariaDB/sacct [0; auto-off if not installed]
#   AUTOSCI_SLURM_CPUS           CPUs declared for the node   [8]
#   AUTOSCI_SLURM_MEM_MB         RealMemory declared (MB)     [65536]
#   AUTOSCI_SLURM_GPUS           fake h100 GPUs on each node  [2]
#   AUTOSCI_SLURM_NODES          nodes: 2 (<host>, <host>-b) or 1 (<host> alone) [2]
#   AUTOSCI_SLURM_PORT_BASE      slurmctld port; slurmd/slurmdbd/MariaDB/second slurmd use
#                                +1/+2/+3/+4                  [16817]
#   AUTOSCI_SLURM_UP_TIMEOUT     seconds `up` may take        [60]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Daemons live in /usr/sbin, which a non-login root shell may not have in PATH.
export PATH="$PATH:/usr/sbin:/sbin"

STATE_DIR="${AUTOSCI_SLURM_DIR:-/tmp/autosci-slurm}"
CLUSTER_NAME="${AUTOSCI_SLURM_CLUSTER:-autosci}"
CPUS="${AUTOSCI_SLURM_CPUS:-8}"
MEM_MB="${AUTOSCI_SLURM_MEM_MB:-65536}"
GPUS="${AUTOSCI_SLURM_GPUS:-2}"
PORT_BASE="${AUTOSCI_SLURM_PORT_BASE:-16817}"
UP_TIMEOUT="${AUTOSCI_SLURM_UP_TIMEOUT:-60}"
SLURMCTLD_PORT=$((PORT_BASE))
SLURMD_PORT=$((PORT_BASE + 1))
SLURMDBD_PORT=$((PORT_BASE + 2))
MYSQL_PORT=$((PORT_BASE + 3))
SLURMD_B_PORT=$((PORT_BASE + 4))
CPU_PARTITION=cpu
GPU_PARTITION=h100
PAIR_PARTITION=pair
NODE_NAME="$(hostname -s)"
NODE_B_NAME="$NODE_NAME-b"
case "${AUTOSCI_SLURM_NODES:-2}" in
1) NODES=("$NODE_NAME") ;;
2) NODES=("$NODE_NAME" "$NODE_B_NAME") ;;
*) echo "cluster.sh: AUTOSCI_SLURM_NODES must be 1 or 2, not '${AUTOSCI_SLURM_NODES}'" >&2; exit 2 ;;
esac

# Daemons in start order; `down` stops them in reverse.  The name is the pid
# file name (run/<name>.pid); up to its first '-' it is the expected
# /proc/<pid>/comm (slurmd-<node> is a slurmd), so a stale pid file whose pid
# was reused by another program is never acted on.  A node's slurmd writes
# run/slurmd-<node>.pid (SlurmdPidFile with %n); plain `slurmd` is the pid file
# of a cluster started before the second node existed, stopped by `down` too.
ALL_DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd "slurmd-$NODE_NAME" "slurmd-$NODE_B_NAME")

# fd 3 = the caller's stderr, so messages get through even from inside
# wait_for, which silences the command it retries.
exec 3>&2
log() { echo "cluster.sh: $*" >&3; }

# ---------------------------------------------------------------- helpers ---

resolve_state_dir() {
    # Absolute path (it goes into config files); no need for it to exist yet.
    STATE_DIR="$(realpath -m "$STATE_DIR")"
    CONF="$STATE_DIR/etc/slurm.conf"
    ENV_FILE="$STATE_DIR/env.sh"
    export SLURM_CONF="$CONF"
}

pidfile() { echo "$STATE_DIR/run/$1.pid"; }

# Process state letter (R, S, Z, ...) from /proc/PID/stat; the comm field may
# contain spaces, so take the first word after its closing parenthesis.
proc_state() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    stat="${stat##*) }"
    echo "${stat%% *}"
}

# Prints the recorded pid of daemon $1 if that process is alive and really is
# that daemon; fails otherwise.
daemon_pid() {
    local f pid comm
    f="$(pidfile "$1")"
    [[ -s "$f" ]] || return 1
    pid="$(tr -dc '0-9' <"$f")"
    [[ -n "$pid" ]] || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
    [[ "$comm" == "${1%%-*}" ]] || return 1
    # A zombie (exited, not yet reaped by its parent) is not running.
    [[ "$(proc_state "$pid")" != Z ]] || return 1
    echo "$pid"
}

daemon_alive() { daemon_pid "$1" >/dev/null; }

accounting_wanted() {
    [[ "${AUTOSCI_SLURM_NO_ACCOUNTING:-0}" != "1" ]] || return 1
    command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null &&
        command -v mariadb-install-db >/dev/null && command -v mariadb >/dev/null
}

# The nodes of the cluster this state dir runs (its slurm.conf says), else
# those this invocation would start.
cluster_nodes() {
    if [[ -f "$CONF" ]]; then
        sed -n 's/^NodeName=\([^ ]*\) .*/\1/p' "$CONF"
    else
        printf '%s\n' "${NODES[@]}"
    fi
}

# Daemons this state dir runs: accounting ones only if it was started with them.
expected_daemons() {
    local n
    if [[ -f "$STATE_DIR/etc/slurmdbd.conf" ]]; then
        echo munged mariadbd slurmdbd slurmctld
    else
        echo munged slurmctld
    fi
    for n in $(cluster_nodes); do echo "slurmd-$n"; done
}

# Short client timeouts: a dead slurmctld must not stall a check for long.
node_state() {
    timeout 5 sinfo -h -N -n "$1" -o '%T' 2>/dev/null | head -n1
}

is_up() {
    [[ -f "$CONF" ]] || return 1
    local d n st
    for d in $(expected_daemons); do daemon_alive "$d" || return 1; done
    for n in $(cluster_nodes); do
        st="$(node_state "$n")" || return 1
        [[ -n "$st" && "$st" != down* && "$st" != drain* && "$st" != fail* ]] || return 1
    done
}

print_logs() {
    local f
    for f in "$STATE_DIR"/log/*.log; do
        [[ -f "$f" && "$f" != */mariadb-install-db.log ]] || continue
        echo "----- last 25 lines of $f -----" >&3
        tail -n 25 "$f" >&3 || true
    done
}

DEADLINE=0

# launch CMD...: start a daemon with stdin/stdout/stderr on /dev/null and
# every other inherited descriptor closed (fd 3 included).  A daemon that kept
# a caller's pipe open would hang any caller that reads our output to the end
# (`$(cluster.sh up)`, subprocess.run(capture_output=True), CI log capture).
# With --bg, for a daemon that does not fork by itself, the command runs in
# the background (the background subshell execs it: no bash stays behind).
launch() {
    local bg=0 fd fds=()
    if [[ "$1" == --bg ]]; then bg=1; shift; fi
    for fd in "/proc/$BASHPID/fd/"*; do
        fd="${fd##*/}"
        if ((fd > 2)); then fds+=("$fd"); fi
    done
    if ((bg)); then
        (
            for fd in "${fds[@]}"; do eval "exec $fd>&-"; done
            exec "$@"
        ) </dev/null >/dev/null 2>&1 &
    else
        (
            for fd in "${fds[@]}"; do eval "exec $fd>&-"; done
            exec "$@"
        ) </dev/null >/dev/null 2>&1
    fi
}

# wait_for DESCRIPTION COMMAND...: retry COMMAND every 0.2 s until it succeeds
# or the `up` deadline passes; then fail with the daemon log tails.
wait_for() {
    local what="$1"
    shift
    while ! "$@" >/dev/null 2>&1; do
        if ((SECONDS >= DEADLINE)); then
            fail_up "timed out (AUTOSCI_SLURM_UP_TIMEOUT=${UP_TIMEOUT}s) waiting for $what"
        fi
        sleep 0.2
    done
}

fail_up() {
    log "ERROR: $*"
    print_logs
    log "stopping what was started; logs are kept in $STATE_DIR/log"
    do_down >/dev/null 2>&1 || true
    exit 1
}

render() { # render TEMPLATE OUTPUT: replace every @NAME@ placeholder
    sed -e "s|@STATE_DIR@|$STATE_DIR|g" \
        -e "s|@CLUSTER_NAME@|$CLUSTER_NAME|g" \
        -e "s|@NODE_NAME@|$NODE_NAME|g" \
        -e "s|@SLURMCTLD_PORT@|$SLURMCTLD_PORT|g" \
        -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
        -e "s|@PAIR_CONF@|${PAIR_CONF:-}|g" \
        -e "s|@PAIR_GRES@|${PAIR_GRES:-}|g" \
        -e "s|@SLURMDBD_PORT@|$SLURMDBD_PORT|g" \
        -e "s|@MYSQL_PORT@|$MYSQL_PORT|g" \
        -e "s|@MYSQL_PASSWORD@|${MYSQL_PASSWORD:-}|g" \
        -e "s|@CPUS@|$CPUS|g" \
        -e "s|@MEM_MB@|$MEM_MB|g" \
        -e "s|@GPUS@|$GPUS|g" \
        -e "s|@GPU_FILES@|${GPU_FILES:-}|g" \
        -e "s|@JOBACCT_GATHER@|$JOBACCT_GATHER|g" \
        -e "s|@ACCOUNTING_CONF@|${ACCOUNTING_CONF:-}|g" \
        "$1" >"$2"
    if grep -q '@[A-Z_]*@' "$2"; then
        log "ERROR: unfilled placeholder in $2:"
        grep -n '@[A-Z_]*@' "$2" >&3
        exit 1
    fi
}

write_env_file() {
    cat >"$ENV_FILE" <<EOF
# Written by tests/slurm/cluster.sh up; source it to talk to the test cluster.
export SLURM_CONF=$CONF
export AUTOSCI_SLURM_ACCOUNTING=$ACCOUNTING
export AUTOSCI_SLURM_PARTITION=$CPU_PARTITION
export AUTOSCI_SLURM_GPU_PARTITION=$GPU_PARTITION
export AUTOSCI_SLURM_PAIR_PARTITION=$PAIR
EOF
}

# -------------------------------------------------------------------- up ---

start_munged() {
    # Own key and socket: independent of any system munged.
    mungekey --create --keyfile="$STATE_DIR/munge/munge.key" >/dev/null
    launch munged --socket="$STATE_DIR/munge/munge.socket" \
        --key-file="$STATE_DIR/munge/munge.key" \
        --pid-file="$(pidfile munged)" \
        --log-file="$STATE_DIR/log/munged.log" \
        --seed-file="$STATE_DIR/munge/munged.seed" ||
        fail_up "munged failed to start"
    wait_for "munged" munge -n -S "$STATE_DIR/munge/munge.socket"
    wait_for "munged pid file" daemon_alive munged
}

start_mariadb() {
    # Options chosen for a small, fast, disposable database: tiny redo log and
    # buffer pool, no binlog, no fsync per commit, TCP on 127.0.0.1 only.
    # --no-defaults: ignore /etc/mysql/*.cnf.  --user=root: mariadbd refuses
    # to run as root unless told so explicitly.
    local opts=(--no-defaults --user=root --datadir="$STATE_DIR/mysql/data"
        --innodb-log-file-size=8M --innodb-buffer-pool-size=64M --skip-log-bin)
    mariadb-install-db "${opts[@]}" --auth-root-authentication-method=socket \
        --skip-test-db >"$STATE_DIR/log/mariadb-install-db.log" 2>&1 ||
        fail_up "mariadb-install-db failed"
    # mariadbd does not daemonize: setsid detaches it from the caller's session
    # and process group (so Ctrl-C / pytest cleanup of the caller leave it be);
    # its own --pid-file is what `down` uses.
    launch --bg setsid mariadbd "${opts[@]}" \
        --socket="$STATE_DIR/mysql/mysqld.sock" \
        --pid-file="$(pidfile mariadbd)" \
        --log-error="$STATE_DIR/log/mariadb.log" \
        --bind-address=127.0.0.1 --port="$MYSQL_PORT" --skip-name-resolve \
        --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 \
        --innodb-lock-wait-timeout=900
    wait_for "MariaDB" mariadb-admin --no-defaults \
        --socket="$STATE_DIR/mysql/mysqld.sock" -u root ping
    wait_for "MariaDB pid file" daemon_alive mariadbd
    mariadb --no-defaults --socket="$STATE_DIR/mysql/mysqld.sock" -u root <<EOF ||
CREATE DATABASE slurm_acct_db;
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$MYSQL_PASSWORD';
CREATE USER 'slurm'@'localhost' IDENTIFIED BY '$MYSQL_PASSWORD';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
        fail_up "could not create the accounting database"
}

start_slurmdbd() {
    launch slurmdbd || fail_up "slurmdbd failed to start"
    # The daemonized child writes the pid file a moment after the parent exits.
    wait_for "slurmdbd pid file" daemon_alive slurmdbd
    # slurmdbd creates its tables on first start; sacctmgr answers once done.
    wait_for "slurmdbd" slurmdbd_answers
    # Register the cluster before slurmctld starts, so slurmctld finds it and
    # sends job records from the first job on.
    timeout 20 sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null ||
        fail_up "sacctmgr add cluster $CLUSTER_NAME failed"
}

slurmctld_answers() {
    daemon_alive slurmctld || fail_up "slurmctld exited during start-up"
    timeout 5 scontrol ping
}

slurmdbd_answers() {
    daemon_alive slurmdbd || fail_up "slurmdbd exited during start-up"
    timeout 10 sacctmgr -n list cluster
}

do_up() {
    resolve_state_dir
    if is_up; then
        log "already up (SLURM_CONF=$CONF); run '$0 down' first to change settings"
        if accounting_wanted && [[ ! -f "$STATE_DIR/etc/slurmdbd.conf" ]]; then
            log "WARNING: the running cluster has no accounting (no slurmdbd)"
        fi
        cat "$ENV_FILE"
        return 0
    fi
    if [[ "$(id -u)" != "0" ]]; then
        log "ERROR: must be run as root"
        exit 1
    fi
    local d
    for d in "${ALL_DAEMONS[@]}"; do
        if daemon_alive "$d"; then
            log "partially up ($d running): stopping it first"
            do_down
            break
        fi
    done
    for d in slurmctld slurmd sinfo munged mungekey munge; do
        command -v "$d" >/dev/null ||
            { log "ERROR: '$d' not found: run bash $HERE/install.sh first"; exit 1; }
    done

    DEADLINE=$((SECONDS + UP_TIMEOUT))
    ACCOUNTING=0
    if accounting_wanted; then ACCOUNTING=1; fi

    # Fresh state: remove only what this script creates (never the whole dir,
    # in case AUTOSCI_SLURM_DIR points somewhere that holds other files).
    mkdir -p "$STATE_DIR"
    rm -rf "${STATE_DIR:?}"/{etc,run,log,spool,munge,mysql,dev} "$ENV_FILE"
    mkdir -p "$STATE_DIR"/{etc,run,log,spool/slurmctld,munge,mysql,dev}
    # munged insists the socket dir be searchable by all (the key itself is 0600).
    chmod 755 "$STATE_DIR/munge"

    # Fake GPUs, each node its own: symlinks to /dev/null (Slurm accepts char devices only).
    local i n
    for n in "${NODES[@]}"; do
        mkdir -p "$STATE_DIR/dev/$n" "$STATE_DIR/spool/slurmd/$n"
        for ((i = 0; i < GPUS; i++)); do ln -s /dev/null "$STATE_DIR/dev/$n/nvidia$i"; done
    done
    GPU_FILES="$STATE_DIR/dev/$NODE_NAME/nvidia[0-$((GPUS - 1))]"
    # The second node (one line each; sed's replacement takes \ + newline as a newline).
    PAIR=""
    PAIR_CONF="# AUTOSCI_SLURM_NODES=1: no second node, no partition $PAIR_PARTITION"
    PAIR_GRES="# AUTOSCI_SLURM_NODES=1: no second node"
    if ((${#NODES[@]} > 1)); then
        PAIR="$PAIR_PARTITION"
        PAIR_CONF="NodeName=$NODE_B_NAME NodeAddr=127.0.0.1 NodeHostname=$NODE_NAME Port=$SLURMD_B_PORT \
CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:h100:$GPUS State=UNKNOWN\\
PartitionName=$PAIR_PARTITION Nodes=$NODE_NAME,$NODE_B_NAME Default=NO MaxTime=INFINITE State=UP"
        PAIR_GRES="NodeName=$NODE_B_NAME Name=gpu Type=h100 File=$STATE_DIR/dev/$NODE_B_NAME/nvidia[0-$((GPUS - 1))]"
    fi

    if [[ "$ACCOUNTING" == "1" ]]; then
        MYSQL_PASSWORD="$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
        # AccountingStoragePass: for slurmdbd connections Slurm takes the munge
        # socket from here, not from AuthInfo (it is meant for a separate
        # inter-cluster munged); without it sacct/sacctmgr use /run/munge.
        ACCOUNTING_CONF="AccountingStorageType=accounting_storage/slurmdbd\\
AccountingStorageHost=localhost\\
AccountingStoragePort=$SLURMDBD_PORT\\
AccountingStoragePass=$STATE_DIR/munge/munge.socket\\
AccountingStorageTRES=gres/gpu,gres/gpu:h100"
        JOBACCT_GATHER=jobacct_gather/linux
        (umask 077 && render "$HERE/slurmdbd.conf.in" "$STATE_DIR/etc/slurmdbd.conf")
    else
        ACCOUNTING_CONF="AccountingStorageType=accounting_storage/none"
        JOBACCT_GATHER=jobacct_gather/none
    fi
    render "$HERE/slurm.conf.in" "$CONF"
    render "$HERE/gres.conf.in" "$STATE_DIR/etc/gres.conf"
    : >"$STATE_DIR/etc/plugstack.conf"

    start_munged
    if [[ "$ACCOUNTING" == "1" ]]; then
        start_mariadb
        start_slurmdbd
    fi
    # -c: ignore saved state (job ids restart at 1); -i: ignore unreadable state.
    launch slurmctld -c -i -f "$CONF" || fail_up "slurmctld failed to start"
    wait_for "slurmctld pid file" daemon_alive slurmctld
    # Start slurmd only once slurmctld listens: a slurmd whose first
    # registration fails retries only after several seconds.
    wait_for "slurmctld to answer" slurmctld_answers
    for n in "${NODES[@]}"; do
        launch slurmd -c -N "$n" -f "$CONF" || fail_up "slurmd of node $n failed to start"
        wait_for "slurmd of node $n" daemon_alive "slurmd-$n"
    done
    for n in "${NODES[@]}"; do wait_for "node $n to be idle" node_is_idle "$n"; done

    write_env_file
    log "up in ${SECONDS}s: node(s) ${NODES[*]} idle, accounting=$ACCOUNTING, state in $STATE_DIR"
    cat "$ENV_FILE"
}

node_is_idle() {
    # Daemons can die after forking (bad config): fail fast instead of waiting.
    local d
    for d in $(expected_daemons); do
        daemon_alive "$d" || fail_up "$d exited during start-up"
    done
    [[ "$(node_state "$1")" == idle ]]
}

# ------------------------------------------------------------------ down ---

# stop_pid NAME PID: SIGTERM, wait up to 15 s, then SIGKILL.
stop_pid() {
    local name="$1" pid="$2" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 150; i++)); do
        [[ -d "/proc/$pid" ]] || return 0
        # A zombie (our own un-reaped child) counts as stopped.
        [[ "$(proc_state "$pid")" != Z ]] || return 0
        sleep 0.1
    done
    log "$name (pid $pid) ignored SIGTERM for 15 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

# slurmstepd processes of *this* cluster: found by the SLURM_CONF in their
# environment (inherited from our slurmd), never by name alone.
our_stepds() {
    local p
    for p in /proc/[0-9]*; do
        [[ "$(cat "$p/comm" 2>/dev/null)" == slurmstepd ]] || continue
        [[ "$(proc_state "${p#/proc/}")" != Z ]] || continue
        if tr '\0' '\n' 2>/dev/null <"$p/environ" | grep -qxF "SLURM_CONF=$CONF"; then
            echo "${p#/proc/}"
        fi
    done
}

# descendants PID...: every process whose ancestry includes one of PIDs.
descendants() {
    local -A children=()
    local p stat ppid
    for p in /proc/[0-9]*; do
        stat="$(cat "$p/stat" 2>/dev/null)" || continue
        stat="${stat##*) }"          # "S PPID ..." after the comm field
        ppid="${stat#* }"
        ppid="${ppid%% *}"
        children[$ppid]+=" ${p#/proc/}"
    done
    local queue=("$@") out=()
    while ((${#queue[@]})); do
        p="${queue[0]}"
        queue=("${queue[@]:1}")
        for c in ${children[$p]:-}; do
            out+=("$c")
            queue+=("$c")
        done
    done
    echo "${out[*]:-}"
}

do_down() {
    resolve_state_dir
    local any=0 d pid i
    # Cancel every job first so slurmd's job steps end cleanly.
    if daemon_alive slurmctld; then
        local jobs
        jobs="$(timeout 10 squeue -h -o '%F' 2>/dev/null | sort -u | tr '\n' ' ')" || true
        if [[ -n "${jobs// /}" ]]; then
            log "cancelling jobs: $jobs"
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                [[ -z "$(timeout 5 squeue -h -o '%i' 2>/dev/null)" ]] && break
                sleep 0.2
            done
        fi
    fi
    for ((i = ${#ALL_DAEMONS[@]} - 1; i >= 0; i--)); do
        d="${ALL_DAEMONS[$i]}"
        if pid="$(daemon_pid "$d")"; then
            any=1
            log "stopping $d (pid $pid)"
            stop_pid "$d" "$pid"
        fi
        rm -f "$(pidfile "$d")"
    done
    # Only if jobs could not be cancelled (e.g. slurmctld had died): their
    # slurmstepd and the job processes under it outlive slurmd.  Kill them
    # (and only them) outright, as Slurm would after KillWait.
    local stepds victims
    stepds="$(our_stepds)"
    if [[ -n "$stepds" ]]; then
        any=1
        # shellcheck disable=SC2086
        victims="$(descendants $stepds) $stepds"
        log "killing leftover job steps: slurmstepd pids ${stepds//$'\n'/ }, with their processes"
        # shellcheck disable=SC2086
        kill -KILL $victims 2>/dev/null || true
    fi
    rm -f "$ENV_FILE"
    if [[ "$any" == 0 ]]; then log "not running"; else log "down"; fi
}

# ---------------------------------------------------------------- status ---

do_status() {
    resolve_state_dir
    local d pid
    for d in $(expected_daemons); do
        if pid="$(daemon_pid "$d")"; then
            echo "$d: running (pid $pid)"
        else
            echo "$d: not running"
        fi
    done
    if is_up; then
        timeout 10 sinfo || true
        echo "up: SLURM_CONF=$CONF (env file: $ENV_FILE)"
        return 0
    fi
    echo "down"
    return 1
}

case "${1:-}" in
up) do_up ;;
down) do_down ;;
status) do_status ;;
env)
    resolve_state_dir
    if [[ -f "$ENV_FILE" ]]; then cat "$ENV_FILE"; else log "not up"; exit 1; fi
    ;;
*)
    echo "usage: $0 up|down|status|env" >&2
    exit 2
    ;;
esac
