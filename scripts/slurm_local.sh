#!/usr/bin/env bash
# A real one-node Slurm cluster on localhost, for tests and CI (Debian/Ubuntu, run as root, no systemd needed).
#
#   bash scripts/slurm_local.sh [start]   install if missing, configure, start munged/slurmctld/slurmd, verify
#   bash scripts/slurm_local.sh stop      stop the daemons started by this script
#   bash scripts/slurm_local.sh status    exit 0 when the node can run a job
#
# One node ($(hostname -s)), one partition `debug`, no cgroups, CR_CPU so 1-CPU jobs run side by side.
# State, spool, logs and pid files live under $SLURM_LOCAL_DIR (default /var/lib/slurm-local).
set -euo pipefail

BASE=${SLURM_LOCAL_DIR:-/var/lib/slurm-local}
CONF=/etc/slurm/slurm.conf
NODE=$(hostname -s)

log() { echo "[slurm_local] $*"; }

# Dump the daemon logs and give up.
die() {
  echo "[slurm_local] ERROR: $*" >&2
  for f in "$BASE"/log/slurmctld.log "$BASE"/log/slurmd.log /var/log/munge/munged.log; do
    # (the pmix lines are harmless noise from slurm-wlm-plugins, when installed)
    [[ -f $f ]] && { echo "----- tail $f" >&2; grep -v -e pmix -e 'MPI: Cannot' "$f" | tail -n 20 >&2; }
  done
  exit 1
}

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && return
  log "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

start_munge() {
  # munged refuses to run as root without --force; run it as the munge user instead.
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
  install -d -o munge -g munge -m 0711 /var/lib/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  if pid_alive /run/munge/munged.pid; then
    log "munged already running"
  else
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged || die "munged failed to start"
  fi
  munge -n | unmunge >/dev/null || die "munge round trip failed"
}

write_conf() {
  local cpus mem_mb
  cpus=$(nproc)
  # RealMemory must not exceed what slurmd sees, or the node is drained: keep 10% headroom.
  mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  install -d -m 0755 /etc/slurm "$BASE" "$BASE"/{state,spool,log,run}
  local tmp
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
# Written by scripts/slurm_local.sh: a one-node test cluster. Do not edit by hand.
ClusterName=localcluster
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire (default 120 s) is also how long a requeued job waits before it may start again.
AuthInfo=cred_expire=5
CredType=cred/munge
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups (containers): plain /proc process tracking, no task binding, no accounting.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
# Share the node CPU by CPU (memory is not a consumable resource).
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# A node that was down comes back by itself; jobs may be requeued.
ReturnToService=2
JobRequeue=1
# Short timeouts keep tests fast.
MessageTimeout=10
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  if ! cmp -s "$tmp" "$CONF"; then
    log "writing $CONF (CPUs=$cpus RealMemory=${mem_mb}M)"
    install -m 0644 "$tmp" "$CONF"
    CONF_CHANGED=1
  fi
  rm -f "$tmp"
}

start_slurm() {
  # Running daemons keep the old config: restart them when it changed.
  if [[ ${CONF_CHANGED:-0} == 1 ]]; then stop_slurm; fi
  if pid_alive "$BASE"/run/slurmctld.pid; then
    log "slurmctld already running"
  else
    log "starting slurmctld"
    /usr/sbin/slurmctld || die "slurmctld failed to start"
  fi
  if pid_alive "$BASE"/run/slurmd.pid; then
    log "slurmd already running"
  else
    log "starting slurmd"
    /usr/sbin/slurmd || die "slurmd failed to start"
  fi
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1; }

wait_ready() {
  local state=""
  log "waiting for node $NODE"
  for _ in $(seq 60); do
    state=$(node_state || true)
    case $state in
      idle|mixed|allocated|completing) log "node $NODE is $state"; return 0 ;;
      inval*) die "slurmctld rejected node $NODE (state inval): see 'Setting node' in slurmctld.log" ;;
      drain*|down*|fail*)
        # e.g. left down by an earlier run: ReturnToService=2 handles most cases, force the rest.
        scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
  done
  die "node $NODE not usable after 60 s (state: ${state:-none})"
}

verify() {
  local out
  out=$(timeout 60 srun -N1 -n1 hostname 2>&1) || die "srun failed: $out"
  log "srun -N1 -n1 hostname -> $out"
  local o=$BASE/verify.out
  rm -f "$o"
  out=$(timeout 60 sbatch --wait -D /tmp -o "$o" --wrap 'echo ok' 2>&1) || die "sbatch --wait failed: $out"
  [[ $(cat "$o" 2>/dev/null) == ok ]] || die "sbatch job output was not 'ok': $(cat "$o" 2>&1)"
  log "sbatch --wait --wrap 'echo ok' -> ${out##* } printed: $(cat "$o")"
}

stop_slurm() {
  local name pidfile
  for name in slurmd slurmctld; do
    pidfile=$BASE/run/$name.pid
    if pid_alive "$pidfile"; then
      log "stopping $name"
      kill "$(cat "$pidfile")"
      for _ in $(seq 20); do pid_alive "$pidfile" || break; sleep 0.5; done
      if pid_alive "$pidfile"; then kill -9 "$(cat "$pidfile")"; fi
    fi
    rm -f "$pidfile"
  done
}

stop_munge() {
  if pid_alive /run/munge/munged.pid; then
    log "stopping munged"
    runuser -u munge -- /usr/sbin/munged --stop >/dev/null || kill "$(cat /run/munge/munged.pid)"
  fi
}

case ${1:-start} in
  start)
    [[ $EUID -eq 0 ]] || { echo "run as root" >&2; exit 1; }
    t0=$SECONDS
    install_packages
    start_munge
    write_conf
    start_slurm
    wait_ready
    verify
    log "cluster ready in $((SECONDS - t0)) s (partition debug, node $NODE)"
    ;;
  stop)
    stop_slurm
    stop_munge
    ;;
  status)
    # Without a controller sinfo retries for a while: fail fast instead.
    pid_alive "$BASE"/run/slurmctld.pid || { echo "slurmctld is not running"; exit 1; }
    state=$(node_state) || { echo "sinfo failed"; exit 1; }
    echo "node $NODE: ${state:-unknown}"
    [[ $state =~ ^(idle|mixed|allocated|completing)$ ]]
    ;;
  *)
    echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
