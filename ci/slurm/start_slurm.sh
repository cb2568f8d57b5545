#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine, for CI and local tests.
#
#   bash ci/slurm/start_slurm.sh     # install if needed, start, wait until idle
#
# It installs the Debian packages slurm-wlm and munge when they are missing,
# writes slurm.conf into a state directory (CALEX_SLURM_STATE, default
# /tmp/calex-slurm) and links /etc/slurm/slurm.conf to it: the srun that the
# Snakemake jobstep plugin starts inside each job drops SLURM_CONF from its
# environment, so SLURM's default path must hold the config.  An existing
# /etc/slurm/slurm.conf that this script did not link is never replaced.
# Then it starts munged, slurmctld and slurmd by hand, in that order (there is
# no systemd here).
# No accounting daemon: the Snakemake profile asks the plugin for squeue-based
# status checks, which need MinJobAge >= 3 x slurm-init-seconds-before-status-checks.
# Running it again while the cluster is up is a no-op.  Any failure prints one
# line starting with "start_slurm.sh: error:" and exits non-zero.
# Stop with ci/slurm/stop_slurm.sh.
set -euo pipefail

STATE="${CALEX_SLURM_STATE:-/tmp/calex-slurm}"
CONF="$STATE/slurm.conf"
ETC_CONF=/etc/slurm/slurm.conf
WAIT_SECONDS="${CALEX_SLURM_WAIT_SECONDS:-60}"
# Seconds SLURM keeps a finished job visible to squeue; the profile's
# slurm-init-seconds-before-status-checks (10) times 3 must stay below it.
MIN_JOB_AGE=300

die() {
  echo "start_slurm.sh: error: $*" >&2
  exit 1
}

# True when the pid in file $1 names a live process.
alive() {
  [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

# Print the state of the single node, or nothing when slurmctld does not answer.
node_state() {
  timeout -k 2 10 sinfo -h -o %T 2>/dev/null | head -n 1 || true
}

if [[ "$(readlink "$ETC_CONF" 2>/dev/null)" == "$CONF" ]] && command -v sinfo >/dev/null 2>&1; then
  case "$(node_state)" in
    idle* | mixed* | allocated* | completing*)
      echo "start_slurm.sh: SLURM already running ($CONF)"
      exit 0
      ;;
  esac
fi

# --- packages ----------------------------------------------------------------
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
  || ! command -v sinfo >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  [[ "$(id -u)" == 0 ]] || die "slurm-wlm/munge missing and not root: run 'apt-get install slurm-wlm munge' as root"
  echo "start_slurm.sh: installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  timeout -k 10 300 apt-get update -qq >"/tmp/calex-slurm-apt.log" 2>&1 \
    || die "apt-get update failed (see /tmp/calex-slurm-apt.log)"
  timeout -k 10 600 apt-get install -y -qq --no-install-recommends slurm-wlm munge \
    >>"/tmp/calex-slurm-apt.log" 2>&1 \
    || die "apt-get install slurm-wlm munge failed (see /tmp/calex-slurm-apt.log)"
fi
[[ "$(id -u)" == 0 ]] || die "the daemons must be started as root (run: sudo bash $0)"
id slurm >/dev/null 2>&1 || die "user 'slurm' missing: reinstall the slurm-wlm package"
id munge >/dev/null 2>&1 || die "user 'munge' missing: reinstall the munge package"

# --- state directory -----------------------------------------------------------
mkdir -p "$STATE/ctld" "$STATE/slurmd" "$STATE/log" "$STATE/run"
chown slurm:slurm "$STATE/ctld" "$STATE/log" "$STATE/run"
chmod 755 "$STATE" "$STATE/log" "$STATE/run"

# --- munge -------------------------------------------------------------------
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
chmod 755 /run/munge
chmod 700 /etc/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  if command -v mungekey >/dev/null 2>&1; then
    runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --force \
    || die "munged did not start (see /var/log/munge/munged.log)"
  touch "$STATE/run/munged.ours"
  for _ in $(seq 1 20); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.25
  done
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 \
    || die "munge credentials do not round-trip (see /var/log/munge/munged.log)"
fi

# --- slurm.conf ----------------------------------------------------------------
HOST="$(hostname -s)"
# slurmd -C prints "NodeName=... CPUs=... RealMemory=...": keep the topology and
# leave 10% of the memory for the system so the node is never drained for low memory.
NODE_LINE="$(slurmd -C | head -n 1)"
[[ "$NODE_LINE" == NodeName=* ]] || die "slurmd -C printed no node line"
MEM="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")"
NODE_LINE="$(sed "s/RealMemory=[0-9]*/RealMemory=$((MEM * 9 / 10))/" <<<"$NODE_LINE")"

cat >"$CONF" <<EOF
# Written by ci/slurm/start_slurm.sh: a one-node cluster without accounting.
ClusterName=calex
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
# No cgroups in this container: track processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job would claim all node memory and jobs would run one by one.
DefMemPerCPU=1000
ReturnToService=2
MinJobAge=$MIN_JOB_AGE
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=60
${NODE_LINE% UpTime=*} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=main Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
EOF
chmod 644 "$CONF"
if [[ -e "$ETC_CONF" || -L "$ETC_CONF" ]] && [[ "$(readlink "$ETC_CONF" 2>/dev/null)" != "$CONF" ]]; then
  die "$ETC_CONF is not a link to $CONF: another SLURM config is installed (stop that cluster, or set CALEX_SLURM_STATE to its state folder)"
fi
mkdir -p "$(dirname "$ETC_CONF")"
ln -sfn "$CONF" "$ETC_CONF"

# --- daemons -------------------------------------------------------------------
if ! alive "$STATE/run/slurmctld.pid"; then
  /usr/sbin/slurmctld -f "$CONF" >>"$STATE/log/slurmctld.start" 2>&1 \
    || die "slurmctld did not start (see $STATE/log/slurmctld.log)"
fi
if ! alive "$STATE/run/slurmd.pid"; then
  /usr/sbin/slurmd -f "$CONF" >>"$STATE/log/slurmd.start" 2>&1 \
    || die "slurmd did not start (see $STATE/log/slurmd.log)"
fi

# --- wait until the node takes jobs --------------------------------------------
state=""
for _ in $(seq 1 "$WAIT_SECONDS"); do
  state="$(node_state)"
  case "$state" in
    idle* | mixed* | allocated*)
      echo "start_slurm.sh: SLURM is up: node $HOST is $state ($ETC_CONF -> $CONF)"
      exit 0
      ;;
    down* | drain*)
      # A node that registered after a restart may need a nudge back to service.
      timeout -k 2 10 scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
      ;;
  esac
  sleep 1
done
die "node $HOST not idle after ${WAIT_SECONDS}s (state '${state:-no answer}'; see $STATE/log/slurmctld.log and $STATE/log/slurmd.log)"
