#!/usr/bin/env bash
# Launch a mindkit command on several processes with MindSpore's msrun (MindFormers' launcher interface).
#
#   bash scripts/msrun_launcher.sh CMD
#   bash scripts/msrun_launcher.sh CMD WORKER_NUM
#   bash scripts/msrun_launcher.sh CMD WORKER_NUM MASTER_PORT LOG_DIR JOIN CLUSTER_TIME_OUT
#   bash scripts/msrun_launcher.sh CMD WORKER_NUM LOCAL_WORKER MASTER_ADDR MASTER_PORT NODE_RANK LOG_DIR JOIN CLUSTER_TIME_OUT
#
# CMD is the script and its arguments as one string, without "python", e.g.
#   "run_mindformer.py --config configs/x.yaml --use_parallel True --predict_data 'a prompt with spaces'"
# It is split like a shell command line (quotes respected) but never evaluated, so prompts stay intact.
# Defaults: 8 workers, 8 local, 127.0.0.1, port 8118, node rank 0, output/msrun_log, join False, timeout 7200.
# WORKER_NUM=1 runs the command directly in this process.
set -euo pipefail

usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 1
}

WORKER_NUM=8; LOCAL_WORKER=8; MASTER_ADDR=127.0.0.1; MASTER_PORT=8118; NODE_RANK=0
LOG_DIR=output/msrun_log; JOIN=False; CLUSTER_TIME_OUT=7200
case $# in
  1) ;;
  2) WORKER_NUM=$2; LOCAL_WORKER=$2 ;;
  6) WORKER_NUM=$2; LOCAL_WORKER=$2; MASTER_PORT=$3; LOG_DIR=$4; JOIN=$5; CLUSTER_TIME_OUT=$6 ;;
  9) WORKER_NUM=$2; LOCAL_WORKER=$3; MASTER_ADDR=$4; MASTER_PORT=$5; NODE_RANK=$6; LOG_DIR=$7; JOIN=$8
     CLUSTER_TIME_OUT=$9 ;;
  *) echo "error: expected 1, 2, 6 or 9 arguments, got $#" >&2; usage ;;
esac
for v in WORKER_NUM LOCAL_WORKER MASTER_PORT NODE_RANK CLUSTER_TIME_OUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "error: $v must be a whole number, got '${!v}'" >&2; usage; }
done
[[ $JOIN =~ ^(True|False)$ ]] || { echo "error: JOIN must be True or False, got '$JOIN'" >&2; usage; }
(( LOCAL_WORKER <= WORKER_NUM )) || { echo "error: LOCAL_WORKER ($LOCAL_WORKER) > WORKER_NUM ($WORKER_NUM)" >&2; exit 1; }

PY=${PYTHON:-python3}
# Split CMD into words the way a shell would (quotes respected), without running anything in it.
mapfile -d '' ARGS < <("$PY" -c 'import shlex, sys; sys.stdout.write("".join(a + "\0" for a in shlex.split(sys.argv[1])))' "$1")
[[ ${#ARGS[@]} -gt 0 ]] || { echo "error: CMD is empty" >&2; usage; }
[[ ${ARGS[0]} =~ ^python[0-9.]*$ ]] && ARGS=("${ARGS[@]:1}")   # tolerate a leading "python"

if (( WORKER_NUM == 1 )); then
  exec "$PY" "${ARGS[@]}"
fi
mkdir -p "$LOG_DIR"
echo "msrun: $WORKER_NUM workers ($LOCAL_WORKER here), master $MASTER_ADDR:$MASTER_PORT, logs in $LOG_DIR" >&2
exec msrun --worker_num="$WORKER_NUM" --local_worker_num="$LOCAL_WORKER" --master_addr="$MASTER_ADDR" \
  --master_port="$MASTER_PORT" --node_rank="$NODE_RANK" --log_dir="$LOG_DIR" --join="$JOIN" \
  --cluster_time_out="$CLUSTER_TIME_OUT" "${ARGS[@]}"
