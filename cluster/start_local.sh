#!/usr/bin/env bash
# Start a multi-node Ray cluster by hand, without the cluster launcher or SSH (idempotent).
#
#   cluster/start_local.sh [options]                  # head + --workers nodes on this machine
#   cluster/start_local.sh --join HEAD_IP:PORT [opts] # only worker nodes here, joining a head
#
# Options (defaults in brackets):
#   --port N            head GCS port [6379]
#   --head-cpus N       CPUs the head advertises [all]
#   --workers N         worker nodes started on this machine [1; 1 with --join]
#   --worker-cpus N     CPUs each worker node advertises [2]
#   --gpus-per-worker N GPUs per worker node, pinned with CUDA_VISIBLE_DEVICES [auto: detected
#                       when this machine runs a single node, else 0 and the head gets 0]
#   --node-ip IP        this machine's address for the other nodes [127.0.0.1; use the LAN
#                       address when other machines join. On Linux Ray swaps the loopback for
#                       the machine's own address]
#   --temp-dir DIR      Ray's temp/session root [/tmp/ray]; stop_local.sh --temp-dir DIR then
#                       stops this cluster alone. Keep it short (Unix socket paths < 108 bytes)
#   --dashboard         start the dashboard on 127.0.0.1 (`ray job submit`; needs ray[default])
#   --dashboard-port N  [8265]
# Environment: RAY (the ray CLI) [<repo>/.venv/bin/ray]; MINARI_DATASETS_PATH [<repo>/datasets],
# SEEM_RAY_RUNS and RAY_TRAIN_HEALTH_CHECK_INTERVAL_S [0.2] are exported to every node.
# Worker node i carries the custom resource seem_ray_<host>_w<i> (how reruns find it).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
RAY=${RAY:-$REPO/.venv/bin/ray}
# Ray 2.60 turns token authentication on for a head node when a token already exists
# (~/.ray/auth_token) but not for a node joining it, which then fails with InvalidAuthToken.
# Decide once, for every node this script starts.
if [ -z "${RAY_AUTH_MODE:-}" ]; then
  if [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; then
    export RAY_AUTH_MODE=token
  fi
fi
PORT=6379
HEAD_CPUS=""
WORKERS=""
WORKER_CPUS=2
GPUS_PER_WORKER=auto
NODE_IP=127.0.0.1
TEMP_DIR=""
JOIN=""
DASHBOARD=false
DASHBOARD_PORT=8265

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
need() { [ $# -ge 2 ] || { echo "start_local.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    --port) need "$@"; PORT=$2; shift 2 ;;
    --head-cpus) need "$@"; HEAD_CPUS=$2; shift 2 ;;
    --workers) need "$@"; WORKERS=$2; shift 2 ;;
    --worker-cpus) need "$@"; WORKER_CPUS=$2; shift 2 ;;
    --gpus-per-worker) need "$@"; GPUS_PER_WORKER=$2; shift 2 ;;
    --node-ip) need "$@"; NODE_IP=$2; shift 2 ;;
    --temp-dir) need "$@"; TEMP_DIR=$2; shift 2 ;;
    --join) need "$@"; JOIN=$2; shift 2 ;;
    --dashboard) DASHBOARD=true; shift ;;
    --dashboard-port) need "$@"; DASHBOARD_PORT=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "start_local.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
say() { echo "[start_local] $*"; }
die() { echo "[start_local] error: $*" >&2; exit 1; }
int() { [[ $2 =~ ^[0-9]+$ ]] || die "$1 must be a non-negative integer, got '$2'"; }

[ -x "$RAY" ] || die "no ray CLI at $RAY (run scripts/bootstrap.sh, or set RAY=/path/to/ray)"
int --port "$PORT"
int --worker-cpus "$WORKER_CPUS"
[ -z "$HEAD_CPUS" ] || int --head-cpus "$HEAD_CPUS"
WORKERS=${WORKERS:-1}
int --workers "$WORKERS"
[ "$GPUS_PER_WORKER" = auto ] || int --gpus-per-worker "$GPUS_PER_WORKER"
if [ -n "$TEMP_DIR" ]; then
  mkdir -p "$TEMP_DIR"
  TEMP_DIR=$(cd "$TEMP_DIR" && pwd -P)
fi
STATE=${TEMP_DIR:-/tmp/ray}/seem_ray_local_cluster.env
LOG=${TEMP_DIR:-/tmp/ray}/seem_ray_start_local.log
mkdir -p "$(dirname "$STATE")"

# What every Ray process (and so every trial) of this cluster sees.
export MINARI_DATASETS_PATH=${MINARI_DATASETS_PATH:-$REPO/datasets}
case "$MINARI_DATASETS_PATH" in /*) ;; *) MINARI_DATASETS_PATH=$(pwd -P)/$MINARI_DATASETS_PATH ;; esac
export RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=${RAY_TRAIN_HEALTH_CHECK_INTERVAL_S:-0.2}
export RAY_USAGE_STATS_ENABLED=${RAY_USAGE_STATS_ENABLED:-0}
[ -z "${SEEM_RAY_RUNS:-}" ] || export SEEM_RAY_RUNS

common=(--disable-usage-stats)
[ -z "$TEMP_DIR" ] || common+=(--temp-dir="$TEMP_DIR")

run_ray() {  # ray start with its chatter in $LOG, shown only on failure
  echo "+ $RAY $*" >>"$LOG"
  if ! "$RAY" "$@" >>"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    die "'ray $1 ${2:-}' failed (full log: $LOG)"
  fi
}
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

if [ -n "$JOIN" ]; then
  ADDRESS=$JOIN
  local_nodes=$WORKERS
else
  ADDRESS=$NODE_IP:$PORT
  local_nodes=$((WORKERS + 1))
  if port_open "$NODE_IP" "$PORT"; then
    say "head: something already listens on $ADDRESS; assuming it is our Ray head (left as is)"
  else
    head=(start --head --node-ip-address="$NODE_IP" --port="$PORT" --dashboard-host=127.0.0.1)
    if [ "$DASHBOARD" = true ]; then
      head+=(--include-dashboard=true --dashboard-port="$DASHBOARD_PORT")
    else
      head+=(--include-dashboard=false)
    fi
    [ -z "$HEAD_CPUS" ] || head+=(--num-cpus="$HEAD_CPUS")
    # Several nodes on one machine would each count every GPU: they go to the workers.
    [ "$WORKERS" -gt 0 ] && head+=(--num-gpus=0)
    run_ray "${head[@]}" "${common[@]}"
    say "head: started at $ADDRESS (CPUs ${HEAD_CPUS:-all}, dashboard $DASHBOARD, temp dir ${TEMP_DIR:-/tmp/ray})"
  fi
fi

host=$(hostname -s 2>/dev/null || echo host)
host=${host//[^A-Za-z0-9_]/_}
# A live raylet of this cluster (same temp root) that advertises the resource = already running.
has_node() {
  local proc cmd
  for proc in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' <"$proc/cmdline" 2>/dev/null) || continue
    case "$cmd" in
      *raylet*"${TEMP_DIR:-/tmp/ray}/session_"*) ;;
      *) continue ;;
    esac
    case "$cmd" in *static_resource_list=*"$1",*) return 0 ;; esac
  done
  return 1
}
for i in $(seq 1 "$WORKERS"); do
  name=seem_ray_${host}_w$i
  if has_node "$name"; then
    say "worker $i: already running here (resource $name), left as is"
    continue
  fi
  args=(start --address="$ADDRESS" --node-ip-address="$NODE_IP" --num-cpus="$WORKER_CPUS"
        --resources="{\"$name\": 1}")
  gpus=$GPUS_PER_WORKER
  [ "$gpus" = auto ] && [ "$local_nodes" -gt 1 ] && gpus=0
  if [ "$gpus" != auto ]; then
    args+=(--num-gpus="$gpus")
    if [ "$gpus" -gt 0 ]; then
      first=$(((i - 1) * gpus))
      ids=$(seq -s, "$first" $((first + gpus - 1)))
      CUDA_VISIBLE_DEVICES=$ids run_ray "${args[@]}" "${common[@]}"
      say "worker $i: joined $ADDRESS ($WORKER_CPUS CPUs, GPUs $ids, resource $name)"
      continue
    fi
  fi
  run_ray "${args[@]}" "${common[@]}"
  say "worker $i: joined $ADDRESS ($WORKER_CPUS CPUs, GPUs ${gpus/auto/detected}, resource $name)"
done

printf 'RAY_ADDRESS=%s\nTEMP_DIR=%s\nMINARI_DATASETS_PATH=%s\n' \
  "$ADDRESS" "${TEMP_DIR:-/tmp/ray}" "$MINARI_DATASETS_PATH" >"$STATE"
say "cluster address $ADDRESS (state: $STATE)"
say "status:  $RAY status --address=$ADDRESS"
say "sweep:   $REPO/.venv/bin/python $REPO/seem_ray/tune.py --address $ADDRESS --config tune_configs/smoke.yaml"
if [ -n "$TEMP_DIR" ]; then
  say "stop:    $REPO/cluster/stop_local.sh --temp-dir $TEMP_DIR"
else
  say "stop:    $REPO/cluster/stop_local.sh"
fi
