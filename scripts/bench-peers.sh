#!/usr/bin/env bash
# The peers of the scheduling bench (bench/peers.py), on this machine:
#   Slurm: Debian's slurm-wlm, one node with 16 CPUs and 8 GPUs as GRES, its own munged.
#   Ray Jobs: ray[default] from PyPI in its own venv (kept in ~/.cache/hatrain), a head node.
#
#   bash scripts/bench-peers.sh up      install what is missing, start both (idempotent)
#   bash scripts/bench-peers.sh down    stop what `up` started, remove its state
#   bash scripts/bench-peers.sh status  say what runs
#   bash scripts/bench-peers.sh slurm-reset   restart slurmctld with an empty queue (the bench)
#
# Everything lives under $HATRAIN_PEERS_DIR (default /var/tmp/hatrain-bench-peers): its own
# slurm.conf (reached through SLURM_CONF, /etc/slurm is left alone), munge socket and key, Ray's
# session directory, and peers.json, which tells the bench where to find them.
set -euo pipefail

RAY_VERSION=2.60.0
DIR=${HATRAIN_PEERS_DIR:-/var/tmp/hatrain-bench-peers}
RAY_VENV=${HATRAIN_RAY_VENV:-$HOME/.cache/hatrain/ray-venv-$RAY_VERSION}
SLURMCTLD_PORT=16817
SLURMD_PORT=16818
RAY_GCS_PORT=16379
RAY_DASHBOARD_PORT=18265
NODE=$(hostname -s)
SLURM=$DIR/slurm
MUNGE=$DIR/munge
export SLURM_CONF=$SLURM/slurm.conf

say() { echo "bench-peers: $*"; }
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

http_ok() {
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" \
        >/dev/null 2>&1
}

sudo_if_needed() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

install_slurm() {
    if [[ -x /usr/sbin/slurmctld && -x /usr/sbin/slurmd && -x /usr/sbin/munged ]]; then
        return
    fi
    say "installing slurm-wlm and munge (Debian packages)"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends slurm-wlm munge >/dev/null
}

install_ray() {
    if [[ -f $RAY_VENV/.installed ]]; then return; fi
    say "installing ray[default]==$RAY_VERSION into $RAY_VENV"
    [[ -x $RAY_VENV/bin/pip ]] || python3 -m venv "$RAY_VENV"
    "$RAY_VENV/bin/pip" install -q "ray[default]==$RAY_VERSION"
    touch "$RAY_VENV/.installed"
}

start_munge() {
    if alive "$MUNGE/munged.pid"; then return; fi
    mkdir -p "$MUNGE"
    if [[ ! -s $MUNGE/munge.key ]]; then
        head -c 1024 /dev/urandom >"$MUNGE/munge.key"
    fi
    chmod 755 "$MUNGE"
    chmod 600 "$MUNGE/munge.key"
    chown -R munge:munge "$MUNGE"
    # As the munge user, with a socket, key and pid file of its own: a munged the host may run
    # for a real cluster is left alone.
    runuser -u munge -- /usr/sbin/munged --socket="$MUNGE/munge.socket" \
        --key-file="$MUNGE/munge.key" --pid-file="$MUNGE/munged.pid" \
        --log-file="$MUNGE/munged.log" --seed-file="$MUNGE/munged.seed" --num-threads=4
    for _ in $(seq 100); do [[ -S $MUNGE/munge.socket ]] && return; sleep 0.1; done
    say "munged did not start: $(tail -5 "$MUNGE/munged.log")"
    exit 1
}

write_slurm_conf() {
    mkdir -p "$SLURM/state" "$SLURM/spool" "$SLURM/gpu"
    # The GPUs are GRES backed by character devices like /dev/null: slurmd only needs a device
    # node per GPU to hand out, and nothing here uses it. Where mknod is not allowed (a
    # container without CAP_MKNOD), a link to /dev/null does the same.
    for i in 0 1 2 3 4 5 6 7; do
        [[ -c $SLURM/gpu/nvidia$i ]] || mknod "$SLURM/gpu/nvidia$i" c 1 3 2>/dev/null ||
            ln -sf /dev/null "$SLURM/gpu/nvidia$i"
    done
    cat >"$SLURM/gres.conf" <<EOF
AutoDetect=off
NodeName=$NODE Name=gpu File=$SLURM/gpu/nvidia[0-7]
EOF
    cat >"$SLURM/slurm.conf" <<EOF
ClusterName=hatrain-bench
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE/munge.socket
StateSaveLocation=$SLURM/state
SlurmdSpoolDir=$SLURM/spool
SlurmctldPidFile=$SLURM/slurmctld.pid
SlurmdPidFile=$SLURM/slurmd.pid
SlurmctldLogFile=$SLURM/slurmctld.log
SlurmdLogFile=$SLURM/slurmd.log
# Tuned to schedule promptly. batch_sched_delay=0: a batch job is scheduled in slurmctld's next
# background pass (about once a second) instead of up to 3 s later (the default; submit -> start
# took 2.95-2.99 s with it). sched_min_interval=0: no throttle between scheduling passes.
# default_queue_depth=10000: a pass looks at the whole queue of the bench. Logging at error only.
SlurmctldDebug=error
SlurmdDebug=error
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,default_queue_depth=10000
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
# Room for the bench's 10,000 held jobs (default 10,000 in all); ended jobs leave memory after 2 s.
MaxJobCount=100000
MinJobAge=2
KillWait=5
# No cgroups (none are delegated in a container), no accounting: the least work per job.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
# 16 CPUs on any machine, so that a burst of 10 one-CPU jobs fits as it does for the others.
SlurmdParameters=config_overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=16 RealMemory=16000 Gres=gpu:8 State=UNKNOWN
PartitionName=bench Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start_slurm() {
    write_slurm_conf
    if ! alive "$SLURM/slurmctld.pid"; then
        /usr/sbin/slurmctld -i
    fi
    if ! alive "$SLURM/slurmd.pid"; then
        /usr/sbin/slurmd -N "$NODE"
    fi
    wait_slurm_idle
}

# slurmctld again from a clean state (-c): no job, an empty queue; slurmd stays.
reset_slurm() {
    stop_pid_file "$SLURM/slurmctld.pid"
    /usr/sbin/slurmctld -c -i
    wait_slurm_idle
}

wait_slurm_idle() {
    for _ in $(seq 300); do
        if [[ $(sinfo -h -N -o %t 2>/dev/null) == idle ]]; then return; fi
        sleep 0.2
    done
    say "slurm did not come up: $(sinfo -N 2>&1 | tail -2) $(tail -5 "$SLURM/slurmctld.log")"
    exit 1
}

start_ray() {
    if alive "$DIR/ray/ray.pid" &&
        http_ok "http://127.0.0.1:$RAY_DASHBOARD_PORT/api/version"; then
        return
    fi
    mkdir -p "$DIR/ray"
    # `ray start --block` in a session of its own: `down` ends that session's processes by id
    # instead of `ray stop`, which ends every Ray process on the machine.
    setsid "$RAY_VENV/bin/ray" start --head --block --disable-usage-stats \
        --port=$RAY_GCS_PORT --dashboard-host=127.0.0.1 --dashboard-port=$RAY_DASHBOARD_PORT \
        --include-dashboard=true --num-cpus=16 --num-gpus=8 \
        --min-worker-port=20002 --max-worker-port=29999 \
        --object-store-memory=200000000 --temp-dir="$DIR/ray/tmp" \
        >"$DIR/ray/ray.log" 2>&1 </dev/null &
    echo $! >"$DIR/ray/ray.pid"
    for _ in $(seq 600); do
        if http_ok "http://127.0.0.1:$RAY_DASHBOARD_PORT/api/jobs/"; then
            return
        fi
        if ! alive "$DIR/ray/ray.pid"; then break; fi
        sleep 0.2
    done
    say "ray did not come up: $(tail -20 "$DIR/ray/ray.log")"
    exit 1
}

write_peers_json() {
    cat >"$DIR/peers.json" <<EOF
{
  "slurm_conf": "$SLURM_CONF",
  "slurm_version": "$(sinfo -V | awk '{print $2}')",
  "ray_address": "http://127.0.0.1:$RAY_DASHBOARD_PORT",
  "ray_python": "$RAY_VENV/bin/python",
  "ray_version": "$RAY_VERSION"
}
EOF
}

stop_pid_file() {
    local file=$1
    if alive "$file"; then
        local pid
        pid=$(cat "$file")
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

# The processes of session $1, from /proc (field 6 of stat, after the command's name).
session_pids() {
    local stat line fields
    for stat in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$stat" || continue
        read -ra fields <<<"${line##*) }"
        if [[ ${fields[3]} == "$1" ]]; then
            line=${stat#/proc/}
            echo "${line%/stat}"
        fi
    done
}

# `ray start --block` stops the processes it started when it gets SIGTERM; whatever is left of its
# session (workers have process groups of their own, not sessions) is ended by pid.
stop_ray() {
    local file=$DIR/ray/ray.pid
    [[ -f $file ]] || return 0
    local sid
    sid=$(cat "$file")
    if alive "$file"; then
        "$RAY_VENV/bin/python" - "http://127.0.0.1:$RAY_DASHBOARD_PORT" <<'PY' || true
import sys
from ray.job_submission import JobSubmissionClient
client = JobSubmissionClient(sys.argv[1])
for job in client.list_jobs():
    if not job.status.is_terminal() and job.submission_id:
        client.stop_job(job.submission_id)
PY
        kill -TERM "$sid"
        for _ in $(seq 150); do kill -0 "$sid" 2>/dev/null || break; sleep 0.1; done
    fi
    for pid in $(session_pids "$sid"); do kill -KILL "$pid" 2>/dev/null || true; done
    rm -f "$file"
}

down() {
    if [[ -f $SLURM_CONF ]] && alive "$SLURM/slurmctld.pid"; then
        scancel --full --partition=bench 2>/dev/null || true
    fi
    stop_pid_file "$SLURM/slurmd.pid"
    stop_pid_file "$SLURM/slurmctld.pid"
    stop_ray
    stop_pid_file "$MUNGE/munged.pid"
    rm -rf "$DIR"
    say "down"
}

status() {
    for name in "$MUNGE/munged.pid" "$SLURM/slurmctld.pid" "$SLURM/slurmd.pid" "$DIR/ray/ray.pid"; do
        if alive "$name"; then echo "$(basename "$name" .pid): running"; else
            echo "$(basename "$name" .pid): stopped"; fi
    done
}

case ${1:-} in
up)
    install_slurm
    install_ray
    mkdir -p "$DIR"
    start_munge
    start_slurm
    start_ray
    write_peers_json
    say "up: Slurm $(sinfo -V | awk '{print $2}') ($SLURM_CONF), Ray $RAY_VERSION ($DIR/peers.json)"
    ;;
down) down ;;
slurm-reset) reset_slurm ;;
status) status ;;
*)
    echo "usage: $0 up|down|status|slurm-reset" >&2
    exit 2
    ;;
esac
