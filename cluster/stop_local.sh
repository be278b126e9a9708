#!/usr/bin/env bash
# Stop a Ray cluster started with cluster/start_local.sh (idempotent: nothing running is fine).
#
#   cluster/stop_local.sh                   # `ray stop --force`: EVERY Ray process of this user here
#   cluster/stop_local.sh --temp-dir DIR    # only the cluster started with `--temp-dir DIR`
#
# The scoped form is the one to use on a machine shared with other Ray users (and in tests):
# it signals the Ray daemons whose command line names DIR/session_* (GCS, raylets, monitor,
# dashboard, log monitors) plus their descendants (agents, workers), SIGTERM first, SIGKILL
# after --grace N seconds [10]. `ray stop` has no such scope: it matches processes by name.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
RAY=${RAY:-$REPO/.venv/bin/ray}
TEMP_DIR=""
GRACE=10

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --temp-dir) TEMP_DIR=$2; shift 2 ;;
    --temp-dir=*) TEMP_DIR=${1#*=}; shift ;;
    --grace) GRACE=$2; shift 2 ;;
    --grace=*) GRACE=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "stop_local.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
say() { echo "[stop_local] $*"; }
# Alive = exists and is not a zombie (an orphan's zombie lingers where PID 1 does not reap).
is_alive() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

if [ -z "$TEMP_DIR" ]; then
  say "ray stop --force (all Ray processes of $(id -un) on this machine)"
  "$RAY" stop --force
  rm -f /tmp/ray/seem_ray_local_cluster.env
  exit 0
fi

TEMP_DIR=$(cd "$TEMP_DIR" 2>/dev/null && pwd -P || echo "$TEMP_DIR")
# Ray daemons of this cluster: their command lines name the session folder under TEMP_DIR.
roots=()
for proc in /proc/[0-9]*; do
  pid=${proc#/proc/}
  [ "$pid" = "$$" ] && continue
  cmd=$(tr '\0' ' ' <"$proc/cmdline" 2>/dev/null) || continue
  case "$cmd" in *"$TEMP_DIR/session_"*) roots+=("$pid") ;; esac
done

# Plus every descendant (dashboard/runtime-env agents and core workers are raylet children).
targets=" ${roots[*]:-} "
if [ ${#roots[@]} -gt 0 ]; then
  table=$(ps -eo pid=,ppid=)
  changed=1
  while [ $changed = 1 ]; do
    changed=0
    while read -r pid ppid; do
      case "$targets" in *" $ppid "*) case "$targets" in *" $pid "*) ;; *) targets+="$pid "; changed=1 ;; esac ;; esac
    done <<<"$table"
  done
fi
read -r -a pids <<<"$targets"

if [ ${#pids[@]} -eq 0 ]; then
  say "no Ray processes of a cluster under $TEMP_DIR: nothing to stop"
else
  say "stopping ${#pids[@]} processes of the cluster under $TEMP_DIR (pids ${pids[*]})"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  deadline=$((SECONDS + GRACE))
  while [ $SECONDS -lt "$deadline" ]; do
    alive=()
    for pid in "${pids[@]}"; do is_alive "$pid" && alive+=("$pid"); done
    [ ${#alive[@]} -eq 0 ] && break
    sleep 0.5
  done
  alive=()
  for pid in "${pids[@]}"; do is_alive "$pid" && alive+=("$pid"); done
  if [ ${#alive[@]} -gt 0 ]; then
    say "SIGKILL to ${#alive[@]} processes still alive after ${GRACE}s (pids ${alive[*]})"
    kill -KILL "${alive[@]}" 2>/dev/null || true
    for _ in $(seq 1 20); do
      left=0
      for pid in "${alive[@]}"; do is_alive "$pid" && left=1; done
      [ $left = 0 ] && break
      sleep 0.25
    done
  fi
  say "stopped"
fi
rm -f "$TEMP_DIR/seem_ray_local_cluster.env"
