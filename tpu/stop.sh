#!/usr/bin/env bash
# Stop the swirl_jax job on all workers: SIGTERM first (the trainer saves a
# checkpoint and exits), SIGKILL for whatever is left after a grace period.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

GRACE_SECONDS="${GRACE_SECONDS:-300}"
WORKERS="${WORKERS:-all}"

usage() {
  cat <<EOF
Usage: tpu/stop.sh [options]

On every worker: send SIGTERM to the job started by tpu/launch.sh (the
trainer then saves a checkpoint and exits), wait up to GRACE_SECONDS, then
SIGKILL its whole process group. Workers without a running job are skipped.

Options (flag, or the environment variable in capitals):
  --grace SECONDS   GRACE_SECONDS to wait after SIGTERM (now: $GRACE_SECONDS)
  --now             SIGKILL at once, no checkpoint (GRACE_SECONDS=0)
  --worker W        WORKERS: "all" or one index (now: $WORKERS)
EOF
  common_usage
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --grace | --grace=*)
      take_value "$@"
      GRACE_SECONDS="$OPTVAL"
      ;;
    --now | --kill) GRACE_SECONDS=0 OPTSHIFT=1 ;;
    --worker | --worker=*)
      take_value "$@"
      WORKERS="$OPTVAL"
      ;;
    *)
      parse_common_opt "$@" || die "unknown option: $1 (see -h)"
      ;;
  esac
  shift "$OPTSHIFT"
done

[[ "$GRACE_SECONDS" =~ ^[0-9]+$ ]] || die "--grace wants seconds, got '$GRACE_SECONDS'"

script="$(remote_script "GRACE_SECONDS=$GRACE_SECONDS" <<'EOF'
if ! pid="$(job_pid)"; then
  say "no swirl_jax job running"
  rm -f "$PID_FILE"
  exit 0
fi
if [ "$GRACE_SECONDS" -gt 0 ]; then
  say "SIGTERM to pid $pid; waiting up to ${GRACE_SECONDS}s for the checkpoint"
  kill -TERM "$pid" 2>/dev/null || true
  waited=0
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$GRACE_SECONDS" ]; do
    sleep 1
    waited=$((waited + 1))
  done
fi
if kill -0 "$pid" 2>/dev/null; then
  say "SIGKILL to process group $pid"
fi
# The job leads its own process group (setsid): clear out its children too.
kill -KILL -- "-$pid" 2>/dev/null || true
kill -KILL "$pid" 2>/dev/null || true
rm -f "$PID_FILE"
# A killed libtpu can leave its lock behind; the next launch would trip on it.
rm -f /tmp/libtpu_lockfile 2>/dev/null || true
say "stopped"
EOF
)"
tpu_ssh "$WORKERS" "$script"
