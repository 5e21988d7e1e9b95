# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables set here are used by the sourcing scripts
# Shared defaults and helpers for the tpu/*.sh scripts. Sourced, not executed.
#
# Every setting comes from a command-line flag or, failing that, from the
# environment variable of the same name, or from the default below.

if [[ -n "${_SWIRL_TPU_COMMON_LOADED:-}" ]]; then
  return 0
fi
_SWIRL_TPU_COMMON_LOADED=1

# Empty arrays under `set -u` need bash >= 4.4 (macOS ships 3.2: brew install bash).
if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  printf 'ERROR: these scripts need bash >= 4.4, this is %s\n' "$BASH_VERSION" >&2
  exit 1
fi

TPU_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$TPU_SCRIPTS_DIR/.." && pwd)"

# --- Cloud resource settings -------------------------------------------------
# PROJECT empty: use gcloud's configured project (`gcloud config set project`).
PROJECT="${PROJECT:-}"
ZONE="${ZONE:-${CLOUDSDK_COMPUTE_ZONE:-us-west4-a}}"
TPU_NAME="${TPU_NAME:-swirl-jax}"
# v5litepod-8 is one host with 8 chips; v5litepod-16 and up are pod slices.
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v5litepod-8}"
# RUNTIME_VERSION empty: derived from ACCELERATOR_TYPE (default_runtime_version).
RUNTIME_VERSION="${RUNTIME_VERSION:-}"
DRY_RUN="${DRY_RUN:-0}"
# Extra flags for every `gcloud ... tpu-vm ssh/scp`, split on spaces,
# e.g. "--internal-ip" or "--strict-host-key-checking=no".
SSH_FLAGS="${SSH_FLAGS:-}"

# --- Paths on the TPU workers (relative paths are under the remote $HOME) ----
REMOTE_DIR="${REMOTE_DIR:-swirl_jax}"
VENV_DIR="${VENV_DIR:-swirl_jax_venv}"
LOG_ROOT="${LOG_ROOT:-swirl_jax_logs}"

LIBTPU_RELEASES_URL="https://storage.googleapis.com/jax-releases/libtpu_releases.html"

# --- Messages ------------------------------------------------------------------
log() { printf '%s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
  printf 'ERROR: %s\n' "$*" >&2
  exit 1
}

# Quote one argument for display so the printed line can be pasted into a shell.
# Plain words stay bare; anything else is single-quoted (newlines kept as is).
# A --flag=value word prints as --flag='value'.
quote_arg() {
  local s="$1" q="'" prefix=""
  if [[ "$s" =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    prefix="${BASH_REMATCH[1]}"
    s="${BASH_REMATCH[2]}"
  fi
  if [[ -n "$s" && "$s" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s%s' "$prefix" "$s"
  else
    printf "%s'%s'" "$prefix" "${s//$q/$q\\$q$q}"
  fi
}

quote_cmd() {
  local out="" a
  for a in "$@"; do
    out+="${out:+ }$(quote_arg "$a")"
  done
  printf '%s\n' "$out"
}

# run CMD ARGS...: print and run, or with DRY_RUN=1 only print (to stdout).
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    quote_cmd "$@"
    return 0
  fi
  printf '+ %s' "$(quote_cmd "$@")" >&2
  printf '\n' >&2
  "$@"
}

# --- Option parsing ------------------------------------------------------------
# take_value "$@": value of the option in $1 (`--opt=value` or `--opt value`);
# sets OPTVAL and OPTSHIFT (how many words to shift).
OPTVAL=""
OPTSHIFT=1
take_value() {
  case "$1" in
    --*=*)
      OPTVAL="${1#*=}"
      OPTSHIFT=1
      ;;
    *)
      [[ $# -ge 2 ]] || die "option $1 needs a value (see -h)"
      OPTVAL="$2"
      OPTSHIFT=2
      ;;
  esac
}

# parse_common_opt "$@": handles the options every script accepts. Returns 1
# when $1 is not one of them; otherwise sets OPTSHIFT.
parse_common_opt() {
  case "$1" in
    --name | --name=* | --tpu | --tpu=* | --tpu-name | --tpu-name=*)
      take_value "$@"
      TPU_NAME="$OPTVAL"
      ;;
    --zone | --zone=*)
      take_value "$@"
      ZONE="$OPTVAL"
      ;;
    --project | --project=*)
      take_value "$@"
      PROJECT="$OPTVAL"
      ;;
    --dry-run | -n)
      DRY_RUN=1
      OPTSHIFT=1
      ;;
    *) return 1 ;;
  esac
  return 0
}

common_usage() {
  cat <<EOF

Common options (flag, or the environment variable in capitals):
  --name NAME        TPU_NAME: the TPU VM / slice         (now: $TPU_NAME)
  --zone ZONE        ZONE                                 (now: $ZONE)
  --project PROJECT  PROJECT; empty = gcloud's configured  (now: ${PROJECT:-<gcloud config>})
  --dry-run, -n      DRY_RUN=1: print the commands instead of running them
  -h, --help         this message
  SSH_FLAGS          extra flags for tpu-vm ssh/scp, e.g. "--internal-ip" (now: ${SSH_FLAGS:-<none>})
EOF
}

# --- gcloud helpers ------------------------------------------------------------
# Flags that locate the TPU: --zone and, if set, --project.
location_flags() {
  LOCATION_FLAGS=("--zone=$ZONE")
  if [[ -n "$PROJECT" ]]; then
    LOCATION_FLAGS+=("--project=$PROJECT")
  fi
}

ssh_extra_flags() {
  SSH_EXTRA=()
  if [[ -n "$SSH_FLAGS" ]]; then
    read -r -a SSH_EXTRA <<<"$SSH_FLAGS"
  fi
}

# tpu_ssh WORKER SCRIPT: run SCRIPT (bash text) on WORKER ("all" or an index).
tpu_ssh() {
  local worker="$1" script="$2"
  location_flags
  ssh_extra_flags
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${LOCATION_FLAGS[@]}" \
    "--worker=$worker" "${SSH_EXTRA[@]}" "--command=$script"
}

# tpu_scp WORKER ARGS...: gcloud compute tpus tpu-vm scp ARGS on WORKER.
tpu_scp() {
  local worker="$1"
  shift
  location_flags
  ssh_extra_flags
  run gcloud compute tpus tpu-vm scp "$@" "${LOCATION_FLAGS[@]}" \
    "--worker=$worker" "${SSH_EXTRA[@]}"
}

# Number of VMs (workers) in the slice, from `describe`; NUM_WORKERS overrides.
num_workers() {
  if [[ -n "${NUM_WORKERS:-}" ]]; then
    printf '%s\n' "$NUM_WORKERS"
    return 0
  fi
  location_flags
  local ips
  ips="$(gcloud compute tpus tpu-vm describe "$TPU_NAME" "${LOCATION_FLAGS[@]}" \
    --format='value(networkEndpoints[].ipAddress)')" ||
    die "could not describe TPU $TPU_NAME in $ZONE"
  ips="${ips//,/;}"
  local -a parts
  IFS=';' read -r -a parts <<<"$ips"
  [[ ${#parts[@]} -gt 0 ]] || die "TPU $TPU_NAME reports no workers"
  printf '%s\n' "${#parts[@]}"
}

# The TPU software version that Google recommends for JAX on each generation.
default_runtime_version() {
  case "$1" in
    v6e-*) printf '%s\n' "v2-alpha-tpuv6e" ;;
    v5p-*) printf '%s\n' "v2-alpha-tpuv5" ;;
    v5litepod-* | v5e-*) printf '%s\n' "v2-alpha-tpuv5-lite" ;;
    *) printf '%s\n' "tpu-ubuntu2204-base" ;;
  esac
}

resolve_runtime_version() {
  if [[ -z "$RUNTIME_VERSION" ]]; then
    RUNTIME_VERSION="$(default_runtime_version "$ACCELERATOR_TYPE")"
  fi
}

# --- Building scripts that run on the workers ----------------------------------
# remote_vars NAME=VALUE...: bash assignments, each value quoted with %q.
remote_vars() {
  local kv
  for kv in "$@"; do
    printf '%s=%q\n' "${kv%%=*}" "${kv#*=}"
  done
}

# remote_array NAME VALUES...: a bash array assignment.
remote_array() {
  local name="$1" v
  shift
  printf '%s=(' "$name"
  for v in "$@"; do
    printf ' %q' "$v"
  done
  printf ' )\n'
}

# Shared prologue of every remote script: strict mode, absolute paths, the
# worker index (from the TPU VM metadata server) and the job-liveness test.
remote_prelude() {
  cat <<'EOF'
set -euo pipefail
cd "$HOME"
abs_path() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$HOME" "$1" ;; esac; }
REMOTE_DIR="$(abs_path "$REMOTE_DIR")"
VENV_DIR="$(abs_path "$VENV_DIR")"
LOG_ROOT="$(abs_path "$LOG_ROOT")"
WID="$(curl -fsS -m 5 -H 'Metadata-Flavor: Google' \
  http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number \
  2>/dev/null || hostname)"
say() { printf '[worker %s] %s\n' "$WID" "$*"; }
PID_FILE="$LOG_ROOT/job.pid"
job_pid() {
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'swirl_jax[.]main' || return 1
  printf '%s\n' "$pid"
}
EOF
}

# remote_script NAME=VALUE... <<'EOF' BODY EOF: variables + prelude + body.
remote_script() {
  remote_vars "REMOTE_DIR=$REMOTE_DIR" "VENV_DIR=$VENV_DIR" "LOG_ROOT=$LOG_ROOT" "$@"
  remote_prelude
  cat
}
