#!/bin/bash
# A real single-node SLURM cluster on loopback for tests (Debian 12: slurmctld + slurmd + munge, no systemd,
# no accounting database: gpuface reads completeness from the corpus folder, not from sacct).
#
#   bash scripts/slurm_local.sh up      # install packages if missing (apt), write config, start daemons (~15 s)
#   bash scripts/slurm_local.sh down    # cancel jobs, stop the daemons by PID, remove the config it wrote
#
# Everything lives under $SLURM_LOCAL_ROOT (default /tmp/gpuface-slurm); /etc/slurm/slurm.conf is written only if
# absent or written by this script (Debian packages slurm-wlm and munge; loopback only).
set -euo pipefail
ROOT=${SLURM_LOCAL_ROOT:-/tmp/gpuface-slurm}
CPUS=${SLURM_LOCAL_CPUS:-$(nproc)}
MEM_MB=${SLURM_LOCAL_MEM_MB:-$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) * 3 / 4 / 1024 ))}
HOST=$(hostname)
CONF=/etc/slurm/slurm.conf
MARK="# written by gpuface scripts/slurm_local.sh"
SOCK=$ROOT/munge/munge.socket.2

die() { echo "slurm_local: $*" >&2; exit 1; }

stop_pid() {  # stop_pid NAME PIDFILE
  [ -f "$2" ] || return 0
  start-stop-daemon --stop --quiet --pidfile "$2" --retry TERM/20/KILL/5 >/dev/null 2>&1 || true
  rm -f "$2"
}

down() {
  if command -v squeue >/dev/null && scontrol ping >/dev/null 2>&1; then
    scancel --quiet --user=root >/dev/null 2>&1 || true
    sleep 1
  fi
  stop_pid slurmd "$ROOT/run/slurmd.pid"
  stop_pid slurmctld "$ROOT/run/slurmctld.pid"
  stop_pid munged "$ROOT/run/munged.pid"
  if [ -f "$CONF" ] && grep -q "$MARK" "$CONF"; then rm -f "$CONF"; fi
  rm -rf "$ROOT"
}

up() {
  [ "$(id -u)" = 0 ] || die "needs root (daemons run as root, config in /etc/slurm)"
  getent hosts "$HOST" | grep -q '^127\.' || die "hostname $HOST must resolve to 127.x (srun binds to it)"
  if scontrol ping 2>/dev/null | grep -q UP && [ -f "$CONF" ] && grep -q "$MARK" "$CONF"; then
    echo "slurm_local: already up"; return 0
  fi
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
      || ! command -v sbatch >/dev/null; then
    [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurmctld slurmd slurm-client munge >/dev/null || die "apt-get install failed"
  fi
  if [ -f "$CONF" ] && ! grep -q "$MARK" "$CONF"; then die "$CONF exists and was not written by this script"; fi
  for port in 6817 6818; do
    if ss -ltn 2>/dev/null | grep -q "127.0.0.1:$port "; then die "port $port is taken"; fi
  done
  mkdir -p "$ROOT"/{munge,run,log,state,spool} /etc/slurm
  chown munge: "$ROOT/munge"; chmod 755 "$ROOT/munge"
  [ -f "$ROOT/munge/munge.key" ] || mungekey -c -k "$ROOT/munge/munge.key"
  chown munge: "$ROOT/munge/munge.key"; chmod 600 "$ROOT/munge/munge.key"
  start-stop-daemon --start --quiet --background --make-pidfile --pidfile "$ROOT/run/munged.pid" --chdir / \
    --output "$ROOT/log/munged.out" --exec /usr/sbin/munged --chuid munge:munge -- -F \
    --key-file="$ROOT/munge/munge.key" --socket="$SOCK" --pid-file="$ROOT/munge/munged.pid" \
    --seed-file="$ROOT/munge/munged.seed" --log-file="$ROOT/log/munged.log"
  for _ in $(seq 50); do munge -n -S "$SOCK" 2>/dev/null | unmunge -S "$SOCK" >/dev/null 2>&1 && break; sleep 0.1; done
  cat > "$CONF" <<CONF
$MARK (loopback-only test cluster, root=$ROOT)
ClusterName=gpufaceci
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmdParameters=config_overrides
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool/slurmd.%n
SlurmctldPidFile=$ROOT/run/slurmctld.self.pid
SlurmdPidFile=$ROOT/run/slurmd.%n.self.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$ROOT/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
SchedulerType=sched/backfill
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=600
NodeName=$HOST NodeAddr=127.0.0.1 NodeHostname=$HOST Port=6818 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  mkdir -p "$ROOT/spool/slurmd.$HOST"
  start-stop-daemon --start --quiet --background --make-pidfile --pidfile "$ROOT/run/slurmctld.pid" --chdir / \
    --output "$ROOT/log/slurmctld.out" --exec /usr/sbin/slurmctld -- -D -i
  for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
  scontrol ping 2>/dev/null | grep -q UP || die "slurmctld did not come up (see $ROOT/log)"
  start-stop-daemon --start --quiet --background --make-pidfile --pidfile "$ROOT/run/slurmd.pid" --chdir / \
    --output "$ROOT/log/slurmd.out" --exec /usr/sbin/slurmd -- -D -N "$HOST"
  for _ in $(seq 150); do
    state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)
    case "$state" in idle*|mix*|alloc*) echo "slurm_local: up ($HOST, $CPUS CPUs)"; return 0;; esac
    sleep 0.2
  done
  die "slurmd did not become idle (state: ${state:-none}; see $ROOT/log)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
