#!/usr/bin/env bash
# Stop the test cluster that start.sh started in STATE_DIR: cancel its jobs,
# then stop slurmd, slurmctld and munged by the pid files in STATE_DIR.
# Harmless when nothing is running. Leaves the state dir (logs, job state) in
# place; `rm -rf STATE_DIR` after stopping for a clean slate.
#
#   bash slurm/testcluster/stop.sh [STATE_DIR]     # default ${ZOO_SLURM_DIR:-/tmp/zoo-slurm}
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

STATE_DIR=${1:-${ZOO_SLURM_DIR:-/tmp/zoo-slurm}}
if [ ! -d "$STATE_DIR" ]; then
    echo "stop.sh: $STATE_DIR does not exist: nothing to stop" >&2
    exit 0
fi
STATE_DIR=$(cd "$STATE_DIR" && pwd -P)

if [ "$(id -u)" -ne 0 ]; then
    # The daemons run as root (munged as munge): signalling them needs root.
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -n bash "$0" "$STATE_DIR"
    fi
    echo "stop.sh: must run as root (or with sudo available)" >&2
    exit 1
fi

RUN_DIR=$STATE_DIR/run
MUNGE_DIR=$STATE_DIR/munge
export SLURM_CONF=$STATE_DIR/slurm.conf

log() { echo "stop.sh: $*" >&2; }

# Same lock as start.sh, so a stop never interleaves with a start.
exec 9>"$STATE_DIR/.lock"
flock 9

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# stop_all PIDFILE:NAME...: SIGTERM to all at once (each takes 1-2 s to shut
# down), wait up to 10 s, then SIGKILL whatever is left.
stop_all() {
    local spec pids=() pid
    for spec in "$@"; do
        if alive "${spec%%:*}" "${spec##*:}"; then
            pid=$(cat "${spec%%:*}")
            log "stopping ${spec##*:} (pid $pid)"
            kill "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
        rm -f "${spec%%:*}"
    done
    [ "${#pids[@]}" -gt 0 ] || return 0
    for _ in $(seq 100); do
        kill -0 "${pids[@]}" 2>/dev/null || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    done
}

# Cancel this cluster's jobs first: their slurmstepd processes would outlive slurmd.
if alive "$RUN_DIR/slurmctld.pid" slurmctld && [ -f "$SLURM_CONF" ]; then
    if [ -n "$(squeue -h -o %i 2>/dev/null | head -n 1)" ]; then
        log "cancelling jobs"
        scancel --partition=debug 2>/dev/null || true
        # KillWait is 5 s in our slurm.conf; give jobs a little longer to end.
        for _ in $(seq 40); do
            [ -z "$(squeue -h -o %i 2>/dev/null | head -n 1)" ] && break
            sleep 0.25
        done
    fi
fi

stop_all "$RUN_DIR/slurmd.pid:slurmd" "$RUN_DIR/slurmctld.pid:slurmctld" "$MUNGE_DIR/munged.pid:munged"
rm -f "$MUNGE_DIR/munge.socket.2" "$MUNGE_DIR/munge.socket.2.lock"
log "stopped (state kept in $STATE_DIR)"
