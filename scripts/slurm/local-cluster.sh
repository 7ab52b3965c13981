#!/usr/bin/env bash
# Start or stop a single-node Slurm cluster on localhost (munged, slurmctld, slurmd run directly,
# no systemd), everything under STATE_DIR. Used by the Slurm tests; handy for trying the job scripts.
#
#   scripts/slurm/local-cluster.sh start STATE_DIR   # prints: export SLURM_CONF=STATE_DIR/slurm.conf
#   scripts/slurm/local-cluster.sh stop  STATE_DIR   # stops every daemon by the pid in its pid file
#
# Env: SLURM_CPUS (default: all cores), SLURMCTLD_PORT (6817), SLURMD_PORT (6818).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cmd="${1:-}"
state="${2:-}"
if [[ -z "$cmd" || -z "$state" ]]; then
    echo "usage: $0 start|stop STATE_DIR" >&2
    exit 2
fi
mkdir -p "$state"
state="$(cd "$state" && pwd)"
conf="$state/slurm.conf"
sbin() { command -v "$1" 2>/dev/null || { [[ -x "/usr/sbin/$1" ]] && echo "/usr/sbin/$1"; } || { echo "$1 is not installed (apt-get install slurmctld slurmd munge)" >&2; exit 3; }; }

alive() {  # a pid that exists and is not a zombie
    local pid="$1" st
    [[ -r "/proc/$pid/stat" ]] || return 1
    st="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo Z)"
    [[ "$st" != "Z" && "$st" != "X" ]]
}

stop_one() {
    local pidfile="$1" pid i
    [[ -s "$pidfile" ]] || return 0
    pid="$(tr -dc '0-9' < "$pidfile")"
    [[ -n "$pid" ]] || return 0
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
        if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$pidfile"
}

case "$cmd" in
start)
    munged="$(sbin munged)"; slurmctld="$(sbin slurmctld)"; slurmd="$(sbin slurmd)"
    cpus="${SLURM_CPUS:-$(nproc)}"
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
    mkdir -p "$state/munge" "$state/ctld" "$state/spool"
    chmod 755 "$state" "$state/munge"   # jobs of other users must reach the munge socket
    if [[ ! -s "$state/munge/munge.key" ]]; then
        head -c 1024 /dev/urandom > "$state/munge/munge.key"
        chmod 400 "$state/munge/munge.key"
    fi
    sed -e "s#@STATE@#$state#g" -e "s#@USER@#$(id -un)#g" -e "s#@CPUS@#$cpus#g" -e "s#@MEM_MB@#$mem_mb#g" \
        -e "s#@CTLD_PORT@#${SLURMCTLD_PORT:-6817}#g" -e "s#@SLURMD_PORT@#${SLURMD_PORT:-6818}#g" \
        "$here/slurm.conf.template" > "$conf"
    # --force: munged refuses to run as root otherwise (CI runs as root).
    "$munged" --force --key-file "$state/munge/munge.key" --socket "$state/munge/munge.socket.2" \
        --pid-file "$state/munged.pid" --log-file "$state/munged.log" --seed-file "$state/munge/munge.seed"
    SLURM_CONF="$conf" "$slurmctld" -f "$conf"
    SLURM_CONF="$conf" "$slurmd" -f "$conf" -N localhost
    for i in $(seq 1 300); do
        st="$(SLURM_CONF="$conf" sinfo -h -o %T 2>/dev/null | head -1 || true)"
        [[ "$st" == "idle" ]] && break
        sleep 0.1
    done
    if [[ "$st" != "idle" ]]; then
        echo "the local Slurm did not become idle (state: ${st:-none}); logs in $state" >&2
        tail -5 "$state/slurmctld.log" "$state/slurmd.log" >&2 || true
        exit 1
    fi
    echo "export SLURM_CONF=$conf"
    ;;
stop)
    stop_one "$state/slurmd.pid"
    stop_one "$state/slurmctld.pid"
    stop_one "$state/munged.pid"
    ;;
*)
    echo "usage: $0 start|stop STATE_DIR" >&2
    exit 2
    ;;
esac
