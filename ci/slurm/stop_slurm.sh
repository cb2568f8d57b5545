#!/usr/bin/env bash
# Stop the single-node SLURM cluster that ci/slurm/start_slurm.sh started.
#
# Stops slurmd, slurmctld and (only if start_slurm.sh started it) munged, in
# that order, by the PIDs in their pidfiles; never by process name.  It then
# removes the /etc/slurm/slurm.conf link if it points to our state.  Stopping a
# cluster that is not running is a no-op.  Set CALEX_SLURM_PURGE=1 to also delete
# the state directory (CALEX_SLURM_STATE, default /tmp/calex-slurm).
set -euo pipefail

STATE="${CALEX_SLURM_STATE:-/tmp/calex-slurm}"
status=0

# Send TERM to the pid in file $2 (daemon name $1), wait up to 15 s, then KILL.
stop_pidfile() {
  local name="$1" pidfile="$2" pid
  [[ -s "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  if kill -0 "$pid" 2>/dev/null; then
    echo "stop_slurm.sh: error: $name (pid $pid) is still running" >&2
    status=1
  else
    echo "stop_slurm.sh: stopped $name (pid $pid)"
    rm -f "$pidfile"
  fi
}

stop_pidfile slurmd "$STATE/run/slurmd.pid"
stop_pidfile slurmctld "$STATE/run/slurmctld.pid"
if [[ -f "$STATE/run/munged.ours" ]]; then
  stop_pidfile munged /run/munge/munged.pid
  [[ $status -ne 0 ]] || rm -f "$STATE/run/munged.ours"
fi

# Remove the /etc/slurm/slurm.conf link only when it is ours.
if [[ $status -eq 0 && "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" == "$STATE/slurm.conf" ]]; then
  rm -f /etc/slurm/slurm.conf
fi

if [[ $status -eq 0 && "${CALEX_SLURM_PURGE:-0}" == 1 ]]; then
  rm -rf "$STATE"
  echo "stop_slurm.sh: removed $STATE"
fi
exit "$status"
