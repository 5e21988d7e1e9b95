#!/usr/bin/env bash
# Copy this repository to every worker of a TPU VM / pod slice and install
# swirl_jax plus jax[tpu] into a virtual environment there. Safe to re-run:
# the code is replaced, the venv is kept and pip runs only when setup.py,
# constraints.txt, the extras or the JAX version changed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

jax_version_from_setup_py() {
  local v=""
  if [[ -f "$REPO_ROOT/setup.py" ]]; then
    v="$(sed -n 's/.*"jax==\([0-9][0-9.]*\)".*/\1/p' "$REPO_ROOT/setup.py" | head -n 1)"
  fi
  printf '%s\n' "${v:-0.10.2}"
}

SOURCE="${SOURCE:-head}"
EXTRAS="${EXTRAS:-data}"
JAX_VERSION="${JAX_VERSION:-$(jax_version_from_setup_py)}"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
USE_CONSTRAINTS="${USE_CONSTRAINTS:-1}"
REINSTALL="${REINSTALL:-0}"
FORCE="${FORCE:-0}"
VERIFY="${VERIFY:-0}"
REMOTE_TARBALL="swirl_jax-src.tar.gz"

usage() {
  cat <<EOF
Usage: tpu/setup.sh [options]

Copy the repository to ALL workers (scp --worker=all) and, on each of them,
create a venv and install swirl_jax[EXTRAS] and jax[tpu]==JAX_VERSION.
Idempotent: re-run it after every code change (the venv is reused).

Options (flag, or the environment variable in capitals):
  --source head|worktree   SOURCE (now: $SOURCE)
                           head: \`git archive HEAD\` (committed code only)
                           worktree: the working tree as it is: tracked and
                           untracked files that .gitignore does not exclude
  --extras LIST            EXTRAS, pip extras of swirl_jax, "" for none (now: ${EXTRAS:-<none>})
  --jax-version V          JAX_VERSION, from setup.py   (now: $JAX_VERSION)
  --python-version V       PYTHON_VERSION for the venv  (now: $PYTHON_VERSION)
                           (if the image lacks it, uv installs a standalone one)
  --no-constraints         USE_CONSTRAINTS=0: do not pin with constraints.txt (now: $USE_CONSTRAINTS)
  --reinstall              REINSTALL=1: run pip even if nothing changed  (now: $REINSTALL)
  --force                  FORCE=1: replace the code even while a job runs (now: $FORCE)
  --verify                 VERIFY=1: afterwards run jax.device_count() on all workers (now: $VERIFY)
  REMOTE_DIR  code on the workers, under \$HOME unless absolute (now: $REMOTE_DIR)
  VENV_DIR    venv on the workers                             (now: $VENV_DIR)
EOF
  common_usage
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --source | --source=*)
      take_value "$@"
      SOURCE="$OPTVAL"
      ;;
    --extras | --extras=*)
      take_value "$@"
      EXTRAS="$OPTVAL"
      ;;
    --jax-version | --jax-version=*)
      take_value "$@"
      JAX_VERSION="$OPTVAL"
      ;;
    --python-version | --python-version=*)
      take_value "$@"
      PYTHON_VERSION="$OPTVAL"
      ;;
    --no-constraints) USE_CONSTRAINTS=0 OPTSHIFT=1 ;;
    --reinstall) REINSTALL=1 OPTSHIFT=1 ;;
    --force) FORCE=1 OPTSHIFT=1 ;;
    --verify) VERIFY=1 OPTSHIFT=1 ;;
    *)
      parse_common_opt "$@" || die "unknown option: $1 (see -h)"
      ;;
  esac
  shift "$OPTSHIFT"
done

case "$SOURCE" in
  head | worktree) ;;
  *) die "--source must be head or worktree, not '$SOURCE'" ;;
esac

# 1. Package the code locally.
if [[ "$DRY_RUN" == 1 ]]; then
  tarball="${TMPDIR:-/tmp}/swirl_jax-XXXXXX/src.tar.gz"
else
  tmpdir="$(mktemp -d)"
  trap 'rm -rf "$tmpdir"' EXIT
  tarball="$tmpdir/src.tar.gz"
fi

if [[ "$SOURCE" == head ]]; then
  [[ -e "$REPO_ROOT/.git" ]] || die "$REPO_ROOT is not a git checkout; use --source worktree"
  if [[ "$DRY_RUN" != 1 ]] &&
    [[ -n "$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    warn "uncommitted changes are NOT copied with --source head (use --source worktree)"
  fi
  run git -C "$REPO_ROOT" archive --format=tar.gz -o "$tarball" HEAD
elif [[ -e "$REPO_ROOT/.git" ]]; then
  # Tracked files plus untracked ones that .gitignore does not exclude.
  list_files() {
    git -C "$REPO_ROOT" ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do
        if [[ -e "$REPO_ROOT/$f" ]]; then printf '%s\0' "$f"; fi
      done
  }
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%s\n' "git -C $(quote_arg "$REPO_ROOT") ls-files -z --cached --others --exclude-standard | tar -C $(quote_arg "$REPO_ROOT") --null -T - -czf $(quote_arg "$tarball")"
  else
    list_files | tar -C "$REPO_ROOT" --null -T - -czf "$tarball"
  fi
else
  run tar -C "$REPO_ROOT" -czf "$tarball" --exclude=./.git --exclude=./.venv \
    --exclude=./runs --exclude=./tpu_logs --exclude=__pycache__ \
    --exclude='*.egg-info' --exclude=.pytest_cache .
fi

# 2. Copy it to every worker (lands in the remote $HOME).
tpu_scp all "$tarball" "$TPU_NAME:$REMOTE_TARBALL"

# 3. Unpack, create the venv, install.
script="$(remote_script "TARBALL=$REMOTE_TARBALL" "EXTRAS=$EXTRAS" \
  "JAX_VERSION=$JAX_VERSION" "PYTHON_VERSION=$PYTHON_VERSION" \
  "USE_CONSTRAINTS=$USE_CONSTRAINTS" "REINSTALL=$REINSTALL" "FORCE=$FORCE" \
  "LIBTPU_URL=$LIBTPU_RELEASES_URL" <<'EOF'
if pid="$(job_pid)" && [ "$FORCE" != 1 ]; then
  say "a swirl_jax job (pid $pid) is running; stop it (tpu/stop.sh) or pass --force"
  exit 1
fi
# Code: unpack beside, then swap, so a failed unpack leaves the old copy.
rm -rf "$REMOTE_DIR.new" "$REMOTE_DIR.old"
mkdir -p "$REMOTE_DIR.new"
tar -xzf "$TARBALL" -C "$REMOTE_DIR.new"
if [ -d "$REMOTE_DIR" ]; then mv "$REMOTE_DIR" "$REMOTE_DIR.old"; fi
mv "$REMOTE_DIR.new" "$REMOTE_DIR"
rm -rf "$REMOTE_DIR.old" "$TARBALL"
say "code in $REMOTE_DIR"

# Python: keep the venv if it has the wanted version; else build it from
# pythonX.Y on the image or, failing that, a uv-managed standalone Python.
venv_ok() {
  [ -x "$VENV_DIR/bin/python" ] && PYV="$PYTHON_VERSION" "$VENV_DIR/bin/python" -c \
    'import os, sys; sys.exit("%d.%d" % sys.version_info[:2] != os.environ["PYV"])'
}
if ! venv_ok; then
  rm -rf "$VENV_DIR"
  if command -v "python$PYTHON_VERSION" >/dev/null 2>&1 &&
    "python$PYTHON_VERSION" -m venv "$VENV_DIR" >/dev/null 2>&1; then
    say "venv from system python$PYTHON_VERSION"
  else
    rm -rf "$VENV_DIR"
    export PATH="$HOME/.local/bin:$PATH"
    if ! command -v uv >/dev/null 2>&1; then
      say "installing uv to get Python $PYTHON_VERSION"
      curl -LsSf https://astral.sh/uv/install.sh |
        env UV_NO_MODIFY_PATH=1 INSTALLER_NO_MODIFY_PATH=1 sh
    fi
    uv venv --seed --python "$PYTHON_VERSION" "$VENV_DIR"
    say "venv from uv-managed Python $PYTHON_VERSION"
  fi
fi
PY="$VENV_DIR/bin/python"

# Packages: pip only when the inputs changed.
cflags=()
if [ "$USE_CONSTRAINTS" = 1 ] && [ -f "$REMOTE_DIR/constraints.txt" ]; then
  cflags=(-c "$REMOTE_DIR/constraints.txt")
fi
spec="$REMOTE_DIR"
if [ -n "$EXTRAS" ]; then spec="$REMOTE_DIR[$EXTRAS]"; fi
stamp="$VENV_DIR/.swirl_jax_installed"
want="$(cat "$REMOTE_DIR/setup.py" "$REMOTE_DIR/constraints.txt" 2>/dev/null |
  sha256sum | cut -d' ' -f1) extras=$EXTRAS jax=$JAX_VERSION constraints=$USE_CONSTRAINTS"
if [ "$REINSTALL" = 1 ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  say "pip install (takes a few minutes)"
  "$PY" -m pip install --quiet --upgrade pip setuptools wheel
  "$PY" -m pip install --quiet "${cflags[@]}" -e "$spec"
  "$PY" -m pip install --quiet "${cflags[@]}" "jax[tpu]==$JAX_VERSION" -f "$LIBTPU_URL"
  printf '%s\n' "$want" >"$stamp"
else
  say "packages up to date; re-registering the editable install"
  "$PY" -m pip install --quiet --no-deps -e "$REMOTE_DIR"
fi
"$PY" -c 'import jax, swirl_jax; print("jax", jax.__version__, "ok")' | sed "s/^/[worker $WID] /"
EOF
)"
tpu_ssh all "$script"

# 4. Optional check: every worker must start at once on a pod slice.
if [[ "$VERIFY" == 1 ]]; then
  verify="$(remote_script <<'EOF'
"$VENV_DIR/bin/python" - <<'PYEOF' 2>&1 | sed "s/^/[worker $WID] /"
import jax
try:
    jax.distributed.initialize()  # as swirl_jax.main does
except Exception as e:  # e.g. some single-host setups
    print("jax.distributed.initialize() skipped:", e)
print("process", jax.process_index(), "of", jax.process_count(),
      "| local devices", jax.local_device_count(),
      "| global devices", jax.device_count(), jax.devices()[0].device_kind)
PYEOF
EOF
)"
  tpu_ssh all "$verify"
fi

log ""
log "Setup done on $TPU_NAME. Next: tpu/launch.sh --name $TPU_NAME --gin_file gin_configs/experiments/X.gin --workdir gs://BUCKET/runs/X"
