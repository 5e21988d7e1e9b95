#!/usr/bin/env bash
# Create a Cloud TPU VM: one host (e.g. v5litepod-8) or a multi-host pod slice
# (e.g. v5litepod-64). The accelerator type alone decides which.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SPOT="${SPOT:-0}"
PREEMPTIBLE="${PREEMPTIBLE:-0}"
RESERVED="${RESERVED:-0}"
QUEUED="${QUEUED:-0}"
QUEUED_RESOURCE_ID="${QUEUED_RESOURCE_ID:-}"
VALID_UNTIL_DURATION="${VALID_UNTIL_DURATION:-}"
WAIT="${WAIT:-0}"
WAIT_POLL_SECONDS="${WAIT_POLL_SECONDS:-60}"
NETWORK="${NETWORK:-}"
SUBNETWORK="${SUBNETWORK:-}"
SERVICE_ACCOUNT="${SERVICE_ACCOUNT:-}"
SCOPES="${SCOPES:-}"
LABELS="${LABELS:-}"
ASYNC="${ASYNC:-0}"
EXTRA_FLAGS=()

usage() {
  cat <<EOF
Usage: tpu/create.sh [options] [-- EXTRA_GCLOUD_FLAGS...]

Create a TPU VM (single host) or a TPU pod slice (several hosts, "workers").
The accelerator type decides: v5litepod-8 is one host, v5litepod-64 a slice.
Does nothing if a TPU (or queued resource) with that name already exists.

Options (flag, or the environment variable in capitals):
  --accelerator-type TYPE  ACCELERATOR_TYPE  (now: $ACCELERATOR_TYPE)
  --version VERSION        RUNTIME_VERSION, the TPU software version
                           (now: ${RUNTIME_VERSION:-<derived>}; derived from the type:
                            v6e-* v2-alpha-tpuv6e, v5p-* v2-alpha-tpuv5,
                            v5litepod-* v2-alpha-tpuv5-lite, else tpu-ubuntu2204-base)
  --spot                   SPOT=1: Spot VM (cheaper, can be preempted)  (now: $SPOT)
  --preemptible            PREEMPTIBLE=1: legacy preemptible TPU        (now: $PREEMPTIBLE)
  --reserved               RESERVED=1: use your reservation             (now: $RESERVED)
  --queued                 QUEUED=1: request through a queued resource
                           (waits in Google's queue for capacity)       (now: $QUEUED)
  --queued-resource-id ID  QUEUED_RESOURCE_ID (now: ${QUEUED_RESOURCE_ID:-<TPU name>})
  --valid-until-duration D VALID_UNTIL_DURATION, queued only, e.g. 6h (now: ${VALID_UNTIL_DURATION:-<none>})
  --wait                   WAIT=1: with --queued, poll until ACTIVE     (now: $WAIT)
  --network NET            NETWORK      (now: ${NETWORK:-<default>})
  --subnetwork SUBNET      SUBNETWORK   (now: ${SUBNETWORK:-<default>})
  --service-account SA     SERVICE_ACCOUNT (now: ${SERVICE_ACCOUNT:-<default>})
  --scopes SCOPES          SCOPES, e.g. https://www.googleapis.com/auth/cloud-platform
                           (now: ${SCOPES:-<default>})
  --labels K=V,...         LABELS       (now: ${LABELS:-<none>})
  --async                  ASYNC=1: return before the TPU is ready      (now: $ASYNC)
  -- FLAGS...              anything else, passed to gcloud as is
EOF
  common_usage
  cat <<'EOF'

Examples:
  tpu/create.sh --name my-v5e --zone us-west4-a --accelerator-type v5litepod-8
  tpu/create.sh --name my-pod --accelerator-type v5litepod-64 --spot
  tpu/create.sh --name my-pod --accelerator-type v5litepod-64 --spot --queued --wait
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --accelerator-type | --accelerator-type=*)
      take_value "$@"
      ACCELERATOR_TYPE="$OPTVAL"
      ;;
    --version | --version=* | --runtime-version | --runtime-version=*)
      take_value "$@"
      RUNTIME_VERSION="$OPTVAL"
      ;;
    --spot) SPOT=1 OPTSHIFT=1 ;;
    --preemptible) PREEMPTIBLE=1 OPTSHIFT=1 ;;
    --reserved) RESERVED=1 OPTSHIFT=1 ;;
    --queued) QUEUED=1 OPTSHIFT=1 ;;
    --queued-resource-id | --queued-resource-id=*)
      take_value "$@"
      QUEUED_RESOURCE_ID="$OPTVAL"
      ;;
    --valid-until-duration | --valid-until-duration=*)
      take_value "$@"
      VALID_UNTIL_DURATION="$OPTVAL"
      ;;
    --wait) WAIT=1 OPTSHIFT=1 ;;
    --network | --network=*)
      take_value "$@"
      NETWORK="$OPTVAL"
      ;;
    --subnetwork | --subnetwork=*)
      take_value "$@"
      SUBNETWORK="$OPTVAL"
      ;;
    --service-account | --service-account=*)
      take_value "$@"
      SERVICE_ACCOUNT="$OPTVAL"
      ;;
    --scopes | --scopes=*)
      take_value "$@"
      SCOPES="$OPTVAL"
      ;;
    --labels | --labels=*)
      take_value "$@"
      LABELS="$OPTVAL"
      ;;
    --async) ASYNC=1 OPTSHIFT=1 ;;
    --)
      shift
      EXTRA_FLAGS+=("$@")
      break
      ;;
    *)
      parse_common_opt "$@" || die "unknown option: $1 (see -h)"
      ;;
  esac
  shift "$OPTSHIFT"
done

resolve_runtime_version
QUEUED_RESOURCE_ID="${QUEUED_RESOURCE_ID:-$TPU_NAME}"

if [[ "$SPOT" == 1 && "$PREEMPTIBLE" == 1 ]]; then
  die "--spot and --preemptible are exclusive; prefer --spot"
fi
if [[ "$QUEUED" == 1 && "$PREEMPTIBLE" == 1 ]]; then
  die "queued resources take --spot, not --preemptible"
fi
if [[ "$QUEUED" != 1 && -n "$VALID_UNTIL_DURATION" ]]; then
  die "--valid-until-duration needs --queued"
fi

location_flags
flags=("${LOCATION_FLAGS[@]}" "--accelerator-type=$ACCELERATOR_TYPE")
[[ "$SPOT" == 1 ]] && flags+=(--spot)
[[ "$RESERVED" == 1 ]] && flags+=(--reserved)
[[ -n "$NETWORK" ]] && flags+=("--network=$NETWORK")
[[ -n "$SUBNETWORK" ]] && flags+=("--subnetwork=$SUBNETWORK")
[[ -n "$SERVICE_ACCOUNT" ]] && flags+=("--service-account=$SERVICE_ACCOUNT")
[[ -n "$SCOPES" ]] && flags+=("--scopes=$SCOPES")
[[ -n "$LABELS" ]] && flags+=("--labels=$LABELS")
[[ "$ASYNC" == 1 ]] && flags+=(--async)

# Idempotence: leave an existing TPU alone (needs gcloud, so not in dry runs).
if [[ "$DRY_RUN" != 1 ]]; then
  if [[ "$QUEUED" == 1 ]]; then
    if state="$(gcloud compute tpus queued-resources describe "$QUEUED_RESOURCE_ID" \
      "${LOCATION_FLAGS[@]}" --format='value(state.state)' 2>/dev/null)"; then
      log "Queued resource $QUEUED_RESOURCE_ID already exists (state: ${state:-?}); not creating it."
      exit 0
    fi
  elif state="$(gcloud compute tpus tpu-vm describe "$TPU_NAME" "${LOCATION_FLAGS[@]}" \
    --format='value(state)' 2>/dev/null)"; then
    log "TPU $TPU_NAME already exists in $ZONE (state: ${state:-?}); not creating it."
    log "If it was preempted (state PREEMPTED), delete it first: tpu/delete.sh --name $TPU_NAME"
    exit 0
  fi
fi

if [[ "$QUEUED" == 1 ]]; then
  qr_flags=("--node-id=$TPU_NAME" "${flags[@]}" "--runtime-version=$RUNTIME_VERSION")
  [[ -n "$VALID_UNTIL_DURATION" ]] && qr_flags+=("--valid-until-duration=$VALID_UNTIL_DURATION")
  run gcloud compute tpus queued-resources create "$QUEUED_RESOURCE_ID" \
    "${qr_flags[@]}" "${EXTRA_FLAGS[@]}"
  if [[ "$WAIT" == 1 ]]; then
    if [[ "$DRY_RUN" == 1 ]]; then
      quote_cmd gcloud compute tpus queued-resources describe "$QUEUED_RESOURCE_ID" \
        "${LOCATION_FLAGS[@]}" "--format=value(state.state)"
      log "(dry run: would poll the line above every ${WAIT_POLL_SECONDS}s until ACTIVE)"
    else
      log "Waiting for queued resource $QUEUED_RESOURCE_ID to become ACTIVE (Ctrl-C stops waiting, not the request)..."
      while true; do
        state="$(gcloud compute tpus queued-resources describe "$QUEUED_RESOURCE_ID" \
          "${LOCATION_FLAGS[@]}" --format='value(state.state)')"
        log "$(date -u +%H:%M:%S) state: $state"
        case "$state" in
          ACTIVE) break ;;
          FAILED | SUSPENDED) die "queued resource $QUEUED_RESOURCE_ID is $state" ;;
        esac
        sleep "$WAIT_POLL_SECONDS"
      done
    fi
  else
    log "Queued. Check with: gcloud compute tpus queued-resources describe $QUEUED_RESOURCE_ID --zone=$ZONE"
  fi
else
  [[ "$PREEMPTIBLE" == 1 ]] && flags+=(--preemptible)
  run gcloud compute tpus tpu-vm create "$TPU_NAME" "${flags[@]}" \
    "--version=$RUNTIME_VERSION" "${EXTRA_FLAGS[@]}"
fi

log ""
log "Next: tpu/setup.sh --name $TPU_NAME --zone $ZONE${PROJECT:+ --project $PROJECT}"
