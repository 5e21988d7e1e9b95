#!/usr/bin/env bash
# Delete the TPU VM / pod slice (or its queued resource). Disks and the
# local state of every worker are lost; a gs:// workdir is not touched.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

QUEUED="${QUEUED:-0}"
QUEUED_RESOURCE_ID="${QUEUED_RESOURCE_ID:-}"
YES="${YES:-0}"
ASYNC="${ASYNC:-0}"

usage() {
  cat <<EOF
Usage: tpu/delete.sh [options]

Delete the TPU (all of its workers). gcloud asks for confirmation unless --yes.

Options (flag, or the environment variable in capitals):
  --queued                 QUEUED=1: delete the queued resource, and with it
                           (--force) its TPU (now: $QUEUED)
  --queued-resource-id ID  QUEUED_RESOURCE_ID (now: ${QUEUED_RESOURCE_ID:-<TPU name>})
  --yes, -y                YES=1: no confirmation prompt (gcloud --quiet) (now: $YES)
  --async                  ASYNC=1: do not wait for the deletion (now: $ASYNC)
EOF
  common_usage
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --queued) QUEUED=1 OPTSHIFT=1 ;;
    --queued-resource-id | --queued-resource-id=*)
      take_value "$@"
      QUEUED_RESOURCE_ID="$OPTVAL"
      QUEUED=1
      ;;
    --yes | -y | --quiet | -q) YES=1 OPTSHIFT=1 ;;
    --async) ASYNC=1 OPTSHIFT=1 ;;
    *)
      parse_common_opt "$@" || die "unknown option: $1 (see -h)"
      ;;
  esac
  shift "$OPTSHIFT"
done

QUEUED_RESOURCE_ID="${QUEUED_RESOURCE_ID:-$TPU_NAME}"
location_flags
flags=("${LOCATION_FLAGS[@]}")
[[ "$ASYNC" == 1 ]] && flags+=(--async)
[[ "$YES" == 1 ]] && flags+=(--quiet)

if [[ "$QUEUED" == 1 ]]; then
  run gcloud compute tpus queued-resources delete "$QUEUED_RESOURCE_ID" "${flags[@]}" --force
else
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${flags[@]}"
fi
