#!/usr/bin/env bash
# Show or collect the per-worker logs of a run started by tpu/launch.sh.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

MODE="tail"
TAIL_LINES="${TAIL_LINES:-50}"
RUN_NAME="${RUN_NAME:-}"
WORKERS="${WORKERS:-all}"
DEST="${DEST:-}"

usage() {
  cat <<EOF
Usage: tpu/logs.sh [--follow | --fetch] [options]

Default: print the last TAIL_LINES lines of every worker's log, each line
prefixed with [worker N]. Logs live on the workers in
\$LOG_ROOT/RUN_NAME/worker-N.log (LOG_ROOT now: $LOG_ROOT).

Options (flag, or the environment variable in capitals):
  --follow, -f        keep following (tail -F) on all workers; Ctrl-C ends it
  --fetch             copy the log files here, one worker at a time (scp)
  --lines N           TAIL_LINES to show first       (now: $TAIL_LINES)
  --run NAME          RUN_NAME; default the latest run on each worker (now: ${RUN_NAME:-<latest>})
  --worker W          WORKERS: "all" or one index, for show/follow (now: $WORKERS)
  --dest DIR          DEST for --fetch (now: ${DEST:-tpu_logs/<TPU name>})
  NUM_WORKERS         workers to fetch from; default: asked from gcloud describe
                      (now: ${NUM_WORKERS:-<ask gcloud>})
EOF
  common_usage
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --follow | -f) MODE=follow OPTSHIFT=1 ;;
    --fetch) MODE=fetch OPTSHIFT=1 ;;
    --tail) MODE=tail OPTSHIFT=1 ;;
    --lines | --lines=*)
      take_value "$@"
      TAIL_LINES="$OPTVAL"
      ;;
    --run | --run=* | --run-name | --run-name=*)
      take_value "$@"
      RUN_NAME="$OPTVAL"
      ;;
    --worker | --worker=*)
      take_value "$@"
      WORKERS="$OPTVAL"
      ;;
    --dest | --dest=*)
      take_value "$@"
      DEST="$OPTVAL"
      ;;
    *)
      parse_common_opt "$@" || die "unknown option: $1 (see -h)"
      ;;
  esac
  shift "$OPTSHIFT"
done

[[ "$TAIL_LINES" =~ ^[0-9]+$ ]] || die "--lines wants a number, got '$TAIL_LINES'"
[[ -z "$RUN_NAME" || "$RUN_NAME" =~ ^[A-Za-z0-9._-]+$ ]] || die "bad run name '$RUN_NAME'"

if [[ "$MODE" == fetch ]]; then
  DEST="${DEST:-tpu_logs/$TPU_NAME}"
  src="$LOG_ROOT${RUN_NAME:+/$RUN_NAME}"
  if [[ "$DRY_RUN" == 1 ]]; then
    if [[ -z "${NUM_WORKERS:-}" ]]; then
      location_flags
      quote_cmd gcloud compute tpus tpu-vm describe "$TPU_NAME" "${LOCATION_FLAGS[@]}" \
        "--format=value(networkEndpoints[].ipAddress)"
      log "(dry run: NUM_WORKERS unset; the line above counts the workers; showing worker 0)"
    fi
    n="${NUM_WORKERS:-1}"
  else
    n="$(num_workers)"
  fi
  run mkdir -p "$DEST"
  # Each worker holds only its own worker-N.log, so the copies merge cleanly.
  for ((i = 0; i < n; i++)); do
    tpu_scp "$i" --recurse "$TPU_NAME:$src" "$DEST/"
  done
  log "Logs of $n worker(s) are under $DEST/$(basename "$src")/"
  exit 0
fi

follow=0
[[ "$MODE" == follow ]] && follow=1
script="$(remote_script "RUN_NAME=$RUN_NAME" "TAIL_LINES=$TAIL_LINES" "FOLLOW=$follow" <<'EOF'
run="${RUN_NAME:-$(cat "$LOG_ROOT/LATEST" 2>/dev/null || true)}"
if [ -z "$run" ]; then say "no runs under $LOG_ROOT"; exit 0; fi
f="$LOG_ROOT/$run/worker-$WID.log"
if [ ! -f "$f" ]; then say "no log $f"; exit 0; fi
state="not running"
if pid="$(job_pid)"; then state="job running (pid $pid)"; fi
say "== $f ($state)"
if [ "$FOLLOW" = 1 ]; then
  tail -n "$TAIL_LINES" -F "$f" | sed -u "s/^/[worker $WID] /"
else
  tail -n "$TAIL_LINES" "$f" | sed "s/^/[worker $WID] /"
fi
EOF
)"
tpu_ssh "$WORKERS" "$script"
