#!/usr/bin/env bash
# A single-node Slurm on this machine, for testing the study's Slurm executor against the real thing.
#
#   scripts/slurm_local.sh up       install slurm-wlm + munge if missing (apt, as root), write a minimal
#                                   slurm.conf, start munged, slurmctld and slurmd, wait until the node is idle
#   scripts/slurm_local.sh down     stop the daemons this script started (by their pid files)
#   scripts/slurm_local.sh status   exit 0 when the node answers and is idle or busy
#
# Idempotent: `up` on a running one returns at once, `down` on a stopped one does nothing. Debian or
# Ubuntu, as root. It refuses to overwrite a slurm.conf it did not write (a real cluster's).
# One node (this host, all its CPUs, reached on 127.0.0.1 whether or not the host name resolves),
# one partition `cpu`, no accounting, no cgroups (proctrack/linuxproc), a 2 s scheduler interval
# and a 5 s KillWait. (Slurm still holds a requeued job about two minutes before it may start
# again; `scontrol update JobId=<id> StartTime=now` lifts that.) Environment:
# SLURM_LOCAL_PARTITION (default cpu).
set -euo pipefail

PARTITION=${SLURM_LOCAL_PARTITION:-cpu}
CONF=/etc/slurm/slurm.conf
MARK="# written by scripts/slurm_local.sh"
STATE=/var/spool/slurm-local
LOGS=/var/log/slurm-local
HOST=$(hostname -s)

log() { echo "slurm_local: $*" >&2; }
die() { log "$*"; exit 1; }

node_state() { sinfo -h -N -o %T 2>/dev/null | head -n1 || true; }

running() {  # our daemons' pids are alive
    local f
    for f in "$STATE/munged.pid" "$STATE/slurmctld.pid" "$STATE/slurmd.pid"; do
        [[ -s $f ]] && kill -0 "$(cat "$f")" 2>/dev/null || return 1
    done
}

install() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return 0
    [[ $(id -u) == 0 ]] || die "slurm-wlm/munge are not installed and this is not root; install them or run as root"
    command -v apt-get >/dev/null || die "slurm-wlm/munge are not installed and there is no apt-get"
    log "installing slurm-wlm munge (apt)"
    local t0=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    log "installed in $((SECONDS - t0)) s"
}

write_conf() {
    if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; refusing to touch a real cluster's configuration"
    fi
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$LOGS"
    local cpus
    cpus=$(slurmd -C 2>/dev/null | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -n1)
    cpus=${cpus:-$(nproc)}
    cat >"$CONF.tmp" <<EOF
$MARK: one node, no accounting
ClusterName=anira-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=2,sched_min_interval=100000
KillWait=5
MinJobAge=60
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

up() {
    if running && [[ $(node_state) =~ ^(idle|mixed|allocated) ]]; then
        log "already up ($(node_state))"
        return 0
    fi
    install
    [[ $(id -u) == 0 ]] || die "starting the daemons needs root"
    write_conf
    local t0=$SECONDS
    if ! { [[ -s $STATE/munged.pid ]] && kill -0 "$(cat "$STATE/munged.pid")" 2>/dev/null; }; then
        mkdir -p /run/munge /var/lib/munge /var/log/munge
        chown munge:munge /run/munge /var/lib/munge /var/log/munge
        [[ -s /etc/munge/munge.key ]] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none;
                                          chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
        runuser -u munge -- /usr/sbin/munged
        pgrep -u munge -n -x munged >"$STATE/munged.pid"
    fi
    # -c: a fresh controller state each time (no jobs left from an earlier bring-up)
    [[ -s $STATE/slurmctld.pid ]] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null || slurmctld -c
    [[ -s $STATE/slurmd.pid ]] && kill -0 "$(cat "$STATE/slurmd.pid")" 2>/dev/null || slurmd
    local deadline=$((SECONDS + 90)) st
    while :; do
        st=$(node_state)
        [[ $st =~ ^(idle|mixed|allocated) ]] && break
        if [[ $st =~ ^(down|drain) ]]; then scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true; fi
        ((SECONDS < deadline)) || die "the node did not become idle in 90 s (state: ${st:-no answer}); see $LOGS"
        sleep 1
    done
    log "up in $((SECONDS - t0)) s: node $HOST ($st), partition $PARTITION"
}

down() {
    local name f pid
    for name in slurmd slurmctld munged; do
        f=$STATE/$name.pid
        [[ -s $f ]] || continue
        pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        fi
        rm -f "$f"
    done
    log "down"
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) running && [[ $(node_state) =~ ^(idle|mixed|allocated) ]] ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
