#!/usr/bin/env bash
# Make sure a single-node Slurm cluster answers on this host; idempotent.
#
# Installs Debian's slurm-wlm + munge when missing, writes slurm.conf/gres.conf for one node
# (this host) with two fake GPUs (character devices /dev/nvidia0-1, major 195: Slurm's gres needs a
# File= to register them, and hands out CUDA_VISIBLE_DEVICES from their index), starts munged,
# slurmctld and slurmd as plain daemons (no systemd) and waits until the node is idle.
# Rerunning it on a cluster that is up and configured as below does nothing; a changed config
# restarts the daemons. Written for root on Debian bookworm.
#
# Memory is a consumable resource (CR_Core_Memory, 512 MB per CPU unless `--mem` says) and its
# limit is enforced by jobacct_gather's OverMemoryKill (a 1 s sampler: slurmstepd kills the step
# and logs "exceeded memory limit"), not by task/cgroup: this machine (gVisor) has no writable
# cgroup hierarchy for slurmd, and CI gives no guarantee of one.
#
# Env: SCHEDCTL_SLURM_WAIT_S (default 60), SCHEDCTL_SLURM_CPUS (CPUs the node offers; default 8:
#      jobs are tests that mostly wait, so the node is oversubscribed on purpose).
set -euo pipefail

WAIT_S="${SCHEDCTL_SLURM_WAIT_S:-60}"
CPUS="${SCHEDCTL_SLURM_CPUS:-8}"
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
NODE="$(hostname -s)"

log() { printf 'ensure-slurm: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
        [[ -f $f ]] && { log "last lines of $f:"; tail -n 15 "$f" >&2; }
    done
    exit 1
}

source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1; }

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null && return 0
    apt_install slurm-wlm munge
}

write_config() {
    # Returns 0 when a file changed (the daemons must then restart).
    local changed=1 mem_mb
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
    local conf
    conf=$(cat <<EOF
# Written by schedctl scripts/ensure-slurm.sh: a single-node cluster for the test suite.
ClusterName=schedctl
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
GresTypes=gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem_mb Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)
    local gres="Name=gpu File=/dev/nvidia[0-1]"
    if [[ "$(cat "$CONF_DIR/slurm.conf" 2>/dev/null)" != "$conf" ]]; then
        printf '%s\n' "$conf" >"$CONF_DIR/slurm.conf"
        changed=0
    fi
    if [[ "$(cat "$CONF_DIR/gres.conf" 2>/dev/null)" != "$gres" ]]; then
        printf '%s\n' "$gres" >"$CONF_DIR/gres.conf"
        changed=0
    fi
    for i in 0 1; do
        [[ -c /dev/nvidia$i ]] || mknod "/dev/nvidia$i" c 195 "$i" || die "mknod /dev/nvidia$i failed"
    done
    return $changed
}

pid_running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_daemon() {
    local pidfile=$1
    pid_running "$pidfile" || return 0
    local pid
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

start_munge() {
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --keyfile /etc/munge/munge.key || die "mungekey --create failed"
        chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    fi
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    log "starting munged"
    # --force: a stale socket from a dead munged is no reason to refuse.
    su -s /bin/sh munge -c "munged --force" || die "munged did not start"
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munge does not answer"
}

main() {
    install_packages
    local changed=1
    write_config && changed=0
    start_munge
    if [[ $changed -eq 0 ]]; then
        log "configuration written; (re)starting slurmctld and slurmd"
        stop_daemon /run/slurmd.pid
        stop_daemon /run/slurmctld.pid
    fi
    if ! pid_running /run/slurmctld.pid; then
        log "starting slurmctld"
        slurmctld || die "slurmctld did not start"
    fi
    if ! pid_running /run/slurmd.pid; then
        log "starting slurmd"
        slurmd || die "slurmd did not start"
    fi
    local deadline=$((SECONDS + WAIT_S)) state=""
    while ((SECONDS < deadline)); do
        state=$(node_state)
        case "$state" in
            idle | mixed | allocated | completing)
                log "node $NODE is $state ($(sinfo --version))"
                return 0 ;;
            down* | drain* | fail*)
                scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    die "node $NODE not idle within ${WAIT_S}s (state: ${state:-unknown}; $(scontrol show node "$NODE" 2>&1 | grep -o 'Reason=.*' || true))"
}

main "$@"
