#!/usr/bin/env bash
# Start one gin experiment on ALL workers of a TPU VM / pod slice at once
# (gcloud ... ssh --worker=all), detached with nohup, one log file per worker.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WORKDIR="${WORKDIR:-}"
RUN_NAME="${RUN_NAME:-}"
FORWARD_ENV="${FORWARD_ENV:-LIBTPU_INIT_ARGS XLA_FLAGS}"
STARTUP_CHECK_SECONDS="${STARTUP_CHECK_SECONDS:-10}"
GIN_FILES=()
MAIN_ARGS=()
ENV_ASSIGNMENTS=()

usage() {
  cat <<EOF
Usage: tpu/launch.sh --gin_file FILE [--gin_file FILE...] --workdir DIR
                     [--gin.NAME=VALUE...] [options] [-- MORE_MAIN_ARGS...]

Runs on every worker, simultaneously:
  cd \$REMOTE_DIR && nohup \$VENV_DIR/bin/python -m swirl_jax.main \\
      --gin_file=FILE... --workdir=DIR --gin.NAME=VALUE...
On a pod slice each worker is one JAX process; jax.distributed.initialize()
finds the others by itself, so every worker must run the same command.
Logs go to \$LOG_ROOT/RUN_NAME/worker-<N>.log on each worker.

Options (flag, or the environment variable in capitals):
  --gin_file FILE        gin file, relative to the repo root (repeatable; required)
  --workdir DIR          WORKDIR: checkpoints, metrics (required; now: ${WORKDIR:-<unset>})
                         Use gs://BUCKET/PATH on a pod slice: all workers must
                         see the same directory. Relaunching with the same
                         workdir resumes from its latest checkpoint. A relative
                         local path is taken under the workers' \$HOME.
  --gin.NAME=VALUE       gin binding, passed through as is (repeatable)
  --run-name NAME        RUN_NAME, names the log folder (now: ${RUN_NAME:-<gin name>-<UTC time>})
  --env NAME=VALUE       environment variable for the job (repeatable)
  FORWARD_ENV            local variables copied to the job when set here
                         (now: ${FORWARD_ENV:-<none>})
  STARTUP_CHECK_SECONDS  after starting, wait this long and report a job that
                         died at once (now: $STARTUP_CHECK_SECONDS)
  -- ARGS...             more arguments for swirl_jax.main, passed as is
  REMOTE_DIR, VENV_DIR, LOG_ROOT  paths on the workers (now: $REMOTE_DIR, $VENV_DIR, $LOG_ROOT)
EOF
  common_usage
  cat <<'EOF'

Example:
  tpu/launch.sh --name my-pod --gin_file gin_configs/experiments/swirl_gsm8k_gemma2_27b_tpu.gin \
      --workdir gs://my-bucket/swirl/run1 \
      --gin.CHECKPOINT="'hf:/mnt/gemma-2-27b-it'" \
      --env LIBTPU_INIT_ARGS=--xla_tpu_enable_async_collective_fusion=true
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --gin_file | --gin_file=* | --gin-file | --gin-file=*)
      take_value "$@"
      GIN_FILES+=("$OPTVAL")
      ;;
    --workdir | --workdir=*)
      take_value "$@"
      WORKDIR="$OPTVAL"
      ;;
    --run-name | --run-name=* | --run_name | --run_name=*)
      take_value "$@"
      RUN_NAME="$OPTVAL"
      ;;
    --env | --env=*)
      take_value "$@"
      [[ "$OPTVAL" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env wants NAME=VALUE, got '$OPTVAL'"
      ENV_ASSIGNMENTS+=("$OPTVAL")
      ;;
    --gin.*=*)
      MAIN_ARGS+=("$1")
      OPTSHIFT=1
      ;;
    --gin.*) die "write gin bindings as one word: $1=VALUE" ;;
    --)
      shift
      MAIN_ARGS+=("$@")
      break
      ;;
    *)
      parse_common_opt "$@" || die "unknown option: $1 (see -h)"
      ;;
  esac
  shift "$OPTSHIFT"
done

[[ ${#GIN_FILES[@]} -gt 0 ]] || die "--gin_file is required (see -h)"
[[ -n "$WORKDIR" ]] || die "--workdir is required (see -h); gs://BUCKET/PATH on pod slices"

for f in "${GIN_FILES[@]}"; do
  if [[ "$f" != /* && ! -f "$REPO_ROOT/$f" ]]; then
    warn "$f is not in this checkout; it must exist in the copy on the workers"
  fi
done
if [[ "$WORKDIR" != gs://* ]]; then
  warn "workdir $WORKDIR is local to each worker. Fine on one host; on a pod slice use gs:// so that all workers share checkpoints."
fi

if [[ -z "$RUN_NAME" ]]; then
  first="$(basename "${GIN_FILES[0]}")"
  RUN_NAME="${first%.gin}-$(date -u +%Y%m%d-%H%M%S)"
fi
[[ "$RUN_NAME" =~ ^[A-Za-z0-9._-]+$ ]] || die "run name may hold only letters, digits, . _ -: '$RUN_NAME'"

gin_args=()
for f in "${GIN_FILES[@]}"; do
  gin_args+=("--gin_file=$f")
done

envs=("PYTHONUNBUFFERED=1")
for name in $FORWARD_ENV; do
  if [[ -n "${!name:-}" ]]; then
    envs+=("$name=${!name}")
  fi
done
envs+=("${ENV_ASSIGNMENTS[@]}")

script="$(
  remote_array GIN_ARGS "${gin_args[@]}"
  remote_array EXTRA_ARGS "${MAIN_ARGS[@]}"
  remote_array ENVS "${envs[@]}"
  remote_script "WORKDIR=$WORKDIR" "RUN_NAME=$RUN_NAME" \
    "STARTUP_CHECK_SECONDS=$STARTUP_CHECK_SECONDS" <<'EOF'
if pid="$(job_pid)"; then
  say "a swirl_jax job (pid $pid) is already running; stop it first (tpu/stop.sh)"
  exit 1
fi
if [ ! -x "$VENV_DIR/bin/python" ] || [ ! -d "$REMOTE_DIR" ]; then
  say "no install at $REMOTE_DIR / $VENV_DIR; run tpu/setup.sh first"
  exit 1
fi
mkdir -p "$LOG_ROOT/$RUN_NAME"
LOG="$LOG_ROOT/$RUN_NAME/worker-$WID.log"
# A relative local workdir goes under $HOME, not into the code copy that
# tpu/setup.sh replaces.
case "$WORKDIR" in
  /* | *://*) ;;
  *) WORKDIR="$HOME/$WORKDIR" ;;
esac
cd "$REMOTE_DIR"
CMD=("$VENV_DIR/bin/python" -u -m swirl_jax.main "${GIN_ARGS[@]}" "--workdir=$WORKDIR" "${EXTRA_ARGS[@]}")
{
  printf '# %s worker %s on %s\n# cd %q &&' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$WID" "$(hostname)" "$REMOTE_DIR"
  printf ' %q' env "${ENVS[@]}" "${CMD[@]}"
  printf '\n'
} >>"$LOG"
nohup setsid env "${ENVS[@]}" "${CMD[@]}" >>"$LOG" 2>&1 </dev/null &
pid=$!
printf '%s\n' "$pid" >"$PID_FILE"
printf '%s\n' "$RUN_NAME" >"$LOG_ROOT/LATEST"
sleep "$STARTUP_CHECK_SECONDS"
if ! kill -0 "$pid" 2>/dev/null; then
  say "the job exited within ${STARTUP_CHECK_SECONDS}s; end of $LOG:"
  tail -n 30 "$LOG" | sed "s/^/[worker $WID] /"
  exit 1
fi
say "running, pid $pid, log $LOG"
EOF
)"

tpu_ssh all "$script" || {
  log ""
  log "The launch failed on at least one worker (see above). On a pod slice the"
  log "others may now wait for it forever: run tpu/stop.sh --name $TPU_NAME, fix, relaunch."
  exit 1
}

loc="--name $TPU_NAME --zone $ZONE${PROJECT:+ --project $PROJECT}"
log ""
if [[ "$DRY_RUN" == 1 ]]; then
  log "Dry run: nothing was started. Once launched, run $RUN_NAME could be watched with:"
else
  log "Launched run $RUN_NAME on all workers of $TPU_NAME (workdir $WORKDIR)."
fi
log "Follow all workers:   tpu/logs.sh $loc --follow        (Ctrl-C stops following, not the job)"
log "Worker 0 only:        gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE${PROJECT:+ --project=$PROJECT} --worker=0 --command='tail -F $LOG_ROOT/$RUN_NAME/worker-0.log'"
log "Copy logs here:       tpu/logs.sh $loc --fetch"
log "Stop (checkpoints):   tpu/stop.sh $loc"
