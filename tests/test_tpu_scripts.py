"""Checks for the Cloud TPU helper scripts in tpu/.

The scripts drive `gcloud`, which is not available (or wanted) in tests, so:
  * every script must parse (`bash -n`) and pass shellcheck (when installed);
  * `-h` prints usage and exits 0;
  * `--dry-run` prints the exact gcloud command lines and runs nothing: a fake
    `gcloud` (and `git`) that fails loudly is first on PATH to prove it;
  * the bash that launch/stop/logs/setup send to the workers is executed here
    against a fake $HOME, fake venv python and fake metadata server (`curl`),
    which checks the quoting of gin arguments end to end.
"""

import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TPU_DIR = REPO / "tpu"
SCRIPTS = ["create.sh", "setup.sh", "launch.sh", "logs.sh", "stop.sh", "delete.sh"]
ALL_FILES = ["common.sh"] + SCRIPTS

# Variables the scripts read; cleared so the host environment cannot leak in.
SCRIPT_ENV_VARS = [
    "PROJECT", "ZONE", "CLOUDSDK_COMPUTE_ZONE", "TPU_NAME", "ACCELERATOR_TYPE",
    "RUNTIME_VERSION", "DRY_RUN", "SSH_FLAGS", "REMOTE_DIR", "VENV_DIR",
    "LOG_ROOT", "SPOT", "PREEMPTIBLE", "RESERVED", "QUEUED",
    "QUEUED_RESOURCE_ID", "VALID_UNTIL_DURATION", "WAIT", "NETWORK",
    "SUBNETWORK", "SERVICE_ACCOUNT", "SCOPES", "LABELS", "ASYNC", "SOURCE",
    "EXTRAS", "JAX_VERSION", "PYTHON_VERSION", "USE_CONSTRAINTS", "REINSTALL",
    "FORCE", "VERIFY", "WORKDIR", "RUN_NAME", "FORWARD_ENV",
    "STARTUP_CHECK_SECONDS", "LIBTPU_INIT_ARGS", "XLA_FLAGS", "TAIL_LINES",
    "WORKERS", "DEST", "NUM_WORKERS", "GRACE_SECONDS", "YES",
]

LOCATION = ["--zone=us-west4-a", "--project=test-proj"]
LIBTPU_URL = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"



def _setup_py_jax_version():
    m = re.search(r'"jax==([0-9.]+)"', (REPO / "setup.py").read_text())
    return m.group(1) if m else "0.10.2"


@pytest.fixture
def fake_bin(tmp_path):
    """A bin/ with gcloud and git that record the call and fail loudly."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    marker = tmp_path / "FORBIDDEN_CALLS"
    for tool in ("gcloud", "git"):
        path = bin_dir / tool
        path.write_text(
            "#!/bin/sh\n"
            f'echo "{tool} $*" >> "{marker}"\n'
            f'echo "FAKE {tool.upper()} WAS CALLED: $*" >&2\n'
            "exit 97\n")
        path.chmod(0o755)
    return bin_dir, marker


def script_env(fake_bin_dir, **overrides):
    env = {k: v for k, v in os.environ.items() if k not in SCRIPT_ENV_VARS}
    env["PATH"] = f"{fake_bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(TPU_NAME="test-tpu", ZONE="us-west4-a", PROJECT="test-proj")
    env.update(overrides)
    return env


def run_script(name, *args, env, cwd=None, timeout=60):
    return subprocess.run(
        ["bash", str(TPU_DIR / name), *args], capture_output=True, text=True,
        env=env, cwd=cwd or REPO, timeout=timeout, check=False)


def parse_commands(stdout):
    """Split dry-run output into argv lists (quoted args may span lines)."""
    commands, buf = [], ""
    for line in stdout.splitlines(keepends=True):
        buf += line
        try:
            argv = shlex.split(buf)
        except ValueError:  # an open quote: the command goes on
            continue
        if argv:
            commands.append(argv)
        buf = ""
    assert not buf.strip(), f"unterminated output: {buf!r}"
    return commands


def dry_run(name, *args, fake_bin, **env_overrides):
    bin_dir, marker = fake_bin
    env = script_env(bin_dir, **env_overrides)
    proc = run_script(name, "--dry-run", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists(), f"a dry run called: {marker.read_text()}"
    assert "FAKE" not in proc.stderr
    return parse_commands(proc.stdout), proc


def gcloud_commands(commands):
    return [c for c in commands if c and c[0] == "gcloud"]


def remote_command(argv):
    """The --command=... payload of a gcloud tpu-vm ssh argv."""
    payload = [a for a in argv if a.startswith("--command=")]
    assert len(payload) == 1, argv
    return payload[0][len("--command="):]


# --- Static checks -------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_FILES)
def test_bash_syntax(name):
    proc = subprocess.run(["bash", "-n", str(TPU_DIR / name)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    proc = subprocess.run(["shellcheck", "-x", *ALL_FILES], cwd=TPU_DIR,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_are_executable(name):
    assert os.access(TPU_DIR / name, os.X_OK), f"chmod +x tpu/{name}"


@pytest.mark.parametrize("name", SCRIPTS)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_prints_usage(name, flag, fake_bin):
    bin_dir, marker = fake_bin
    proc = run_script(name, flag, env=script_env(bin_dir))
    assert proc.returncode == 0, proc.stderr
    assert f"Usage: tpu/{name}" in proc.stdout
    assert "--dry-run" in proc.stdout
    assert "(now: test-tpu)" in proc.stdout  # defaults/current values shown
    assert not marker.exists()


@pytest.mark.parametrize("name", SCRIPTS)
def test_unknown_option_fails(name, fake_bin):
    bin_dir, marker = fake_bin
    proc = run_script(name, "--no-such-option", env=script_env(bin_dir))
    assert proc.returncode != 0
    assert "unknown option" in proc.stderr
    assert not marker.exists()


# --- create.sh -------------------------------------------------------------------

def test_create_single_host(fake_bin):
    commands, _ = dry_run("create.sh", fake_bin=fake_bin,
                          ACCELERATOR_TYPE="v5litepod-8")
    assert commands == [[
        "gcloud", "compute", "tpus", "tpu-vm", "create", "test-tpu", *LOCATION,
        "--accelerator-type=v5litepod-8", "--version=v2-alpha-tpuv5-lite"]]


def test_create_pod_slice_spot_from_flags(fake_bin):
    commands, _ = dry_run(
        "create.sh", "--name", "pod", "--zone=us-central1-a", "--project", "p2",
        "--accelerator-type", "v5litepod-64", "--spot", fake_bin=fake_bin)
    assert commands == [[
        "gcloud", "compute", "tpus", "tpu-vm", "create", "pod",
        "--zone=us-central1-a", "--project=p2",
        "--accelerator-type=v5litepod-64", "--spot",
        "--version=v2-alpha-tpuv5-lite"]]


def test_create_without_project_uses_gcloud_config(fake_bin):
    commands, _ = dry_run("create.sh", fake_bin=fake_bin, PROJECT="")
    assert not any(a.startswith("--project") for a in commands[0])


@pytest.mark.parametrize("accel,runtime", [
    ("v6e-8", "v2-alpha-tpuv6e"),
    ("v5p-8", "v2-alpha-tpuv5"),
    ("v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v4-32", "tpu-ubuntu2204-base"),
])
def test_create_runtime_version_follows_accelerator(accel, runtime, fake_bin):
    commands, _ = dry_run("create.sh", "--accelerator-type", accel,
                          fake_bin=fake_bin)
    assert f"--version={runtime}" in commands[0]


def test_create_explicit_version_and_preemptible(fake_bin):
    commands, _ = dry_run("create.sh", "--preemptible", fake_bin=fake_bin,
                          RUNTIME_VERSION="tpu-ubuntu2204-base")
    assert "--preemptible" in commands[0]
    assert "--version=tpu-ubuntu2204-base" in commands[0]


def test_create_queued_resource(fake_bin):
    commands, _ = dry_run(
        "create.sh", "--queued", "--spot", "--accelerator-type=v5litepod-64",
        "--valid-until-duration=6h", "--", "--description=swirl",
        fake_bin=fake_bin)
    assert commands == [[
        "gcloud", "compute", "tpus", "queued-resources", "create", "test-tpu",
        "--node-id=test-tpu", *LOCATION, "--accelerator-type=v5litepod-64",
        "--spot", "--runtime-version=v2-alpha-tpuv5-lite",
        "--valid-until-duration=6h", "--description=swirl"]]


def test_create_queued_wait_prints_poll_command(fake_bin):
    commands, _ = dry_run("create.sh", "--queued", "--wait",
                          "--queued-resource-id", "qr1", fake_bin=fake_bin)
    assert commands[0][:6] == [
        "gcloud", "compute", "tpus", "queued-resources", "create", "qr1"]
    assert commands[1][:6] == [
        "gcloud", "compute", "tpus", "queued-resources", "describe", "qr1"]
    assert "--format=value(state.state)" in commands[1]


@pytest.mark.parametrize("args", [
    ["--queued", "--preemptible"],
    ["--spot", "--preemptible"],
    ["--valid-until-duration=1h"],
])
def test_create_rejects_bad_combinations(args, fake_bin):
    bin_dir, marker = fake_bin
    proc = run_script("create.sh", "--dry-run", *args, env=script_env(bin_dir))
    assert proc.returncode != 0
    assert "ERROR" in proc.stderr
    assert not marker.exists()


# --- setup.sh --------------------------------------------------------------------

@pytest.mark.skipif(not (REPO / ".git").exists(), reason="not a git checkout")
def test_setup_dry_run_head(fake_bin):
    commands, _ = dry_run("setup.sh", fake_bin=fake_bin)
    assert len(commands) == 3, commands
    archive, scp, ssh = commands
    assert archive[:4] == ["git", "-C", str(REPO), "archive"]
    assert archive[-1] == "HEAD"
    tarball = archive[archive.index("-o") + 1]
    assert scp == ["gcloud", "compute", "tpus", "tpu-vm", "scp", tarball,
                   "test-tpu:swirl_jax-src.tar.gz", *LOCATION, "--worker=all"]
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "test-tpu"]
    assert "--worker=all" in ssh
    script = remote_command(ssh)
    jax_version = _setup_py_jax_version()
    assert f"JAX_VERSION={jax_version}\n" in script
    assert "EXTRAS=data\n" in script
    assert f"LIBTPU_URL={LIBTPU_URL}\n" in script
    assert '"jax[tpu]==$JAX_VERSION" -f "$LIBTPU_URL"' in script
    assert '-e "$spec"' in script and 'spec="$REMOTE_DIR[$EXTRAS]"' in script


def test_setup_dry_run_worktree_and_verify(fake_bin):
    commands, proc = dry_run("setup.sh", "--source", "worktree", "--verify",
                             "--extras=", "--jax-version", "0.10.2",
                             fake_bin=fake_bin)
    # packaging line, scp, install ssh, verify ssh
    assert len(commands) == 4, proc.stdout
    assert "tar" in commands[0]
    gc = gcloud_commands(commands)
    assert [c[4] for c in gc] == ["scp", "ssh", "ssh"]
    assert all("--worker=all" in c for c in gc)
    assert "EXTRAS=''\n" in remote_command(gc[1])
    assert "jax.distributed.initialize()" in remote_command(gc[2])


def test_setup_rejects_bad_source(fake_bin):
    bin_dir, _ = fake_bin
    proc = run_script("setup.sh", "-n", "--source", "svn", env=script_env(bin_dir))
    assert proc.returncode != 0


# --- launch.sh -------------------------------------------------------------------

LAUNCH_ARGS = [
    "--gin_file", "gin_configs/experiments/X.gin",
    "--gin_file=gin_configs/models/extra.gin",
    "--workdir", "gs://bucket/runs/x",
    "--gin.train.num_steps=10",
    "--gin.model.name='gemma 2b'",
    "--env", "FOO=a b",
    "--run-name", "x-run",
    "--", "--extra_flag", "two words",
]
EXPECTED_MAIN_ARGS = [
    "-u", "-m", "swirl_jax.main",
    "--gin_file=gin_configs/experiments/X.gin",
    "--gin_file=gin_configs/models/extra.gin",
    "--workdir=gs://bucket/runs/x",
    "--gin.train.num_steps=10",
    "--gin.model.name='gemma 2b'",
    "--extra_flag", "two words",
]


def test_launch_dry_run_ssh_all_workers(fake_bin):
    commands, proc = dry_run("launch.sh", *LAUNCH_ARGS, fake_bin=fake_bin,
                             LIBTPU_INIT_ARGS="--xla_x=true --xla_y=1")
    assert len(commands) == 1, commands
    ssh = commands[0]
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "test-tpu"]
    assert "--worker=all" in ssh
    for flag in LOCATION:
        assert flag in ssh
    script = remote_command(ssh)
    assert "nohup setsid env" in script
    assert "-m swirl_jax.main" in script
    assert "--gin.train.num_steps=10" in script
    assert "WORKDIR=gs://bucket/runs/x\n" in script
    assert "LIBTPU_INIT_ARGS=--xla_x=true\\ --xla_y=1" in script  # forwarded
    assert "tpu/logs.sh" in proc.stderr  # how to follow the logs


@pytest.mark.parametrize("args,message", [
    (["--workdir", "gs://b/x"], "--gin_file is required"),
    (["--gin_file", "a.gin"], "--workdir is required"),
    (["--gin_file", "a.gin", "--workdir", "w", "--gin.x", "1"], "one word"),
    (["--gin_file", "a.gin", "--workdir", "w", "--env", "1BAD"], "NAME=VALUE"),
])
def test_launch_argument_errors(args, message, fake_bin):
    bin_dir, marker = fake_bin
    proc = run_script("launch.sh", "-n", *args, env=script_env(bin_dir))
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not marker.exists()


def test_launch_warns_on_local_workdir(fake_bin):
    _, proc = dry_run("launch.sh", "--gin_file", "a.gin", "--workdir",
                      "/tmp/w", fake_bin=fake_bin)
    assert "gs://" in proc.stderr


# --- logs.sh, stop.sh, delete.sh -------------------------------------------------

def test_logs_dry_run_tail_and_follow(fake_bin):
    commands, _ = dry_run("logs.sh", fake_bin=fake_bin)
    assert len(commands) == 1 and "--worker=all" in commands[0]
    assert "tail -n" in remote_command(commands[0])
    commands, _ = dry_run("logs.sh", "--follow", "--worker", "2", "--lines=5",
                          fake_bin=fake_bin)
    assert "--worker=2" in commands[0]
    assert "FOLLOW=1\n" in remote_command(commands[0])


def test_logs_dry_run_fetch(fake_bin):
    commands, _ = dry_run("logs.sh", "--fetch", "--dest", "out", "--run", "r1",
                          fake_bin=fake_bin, NUM_WORKERS="3")
    assert commands[0] == ["mkdir", "-p", "out"]
    scps = commands[1:]
    assert [c[:5] for c in scps] == [
        ["gcloud", "compute", "tpus", "tpu-vm", "scp"]] * 3
    for i, c in enumerate(scps):
        assert c[5:8] == ["--recurse", "test-tpu:swirl_jax_logs/r1", "out/"]
        assert f"--worker={i}" in c


def test_stop_dry_run(fake_bin):
    commands, _ = dry_run("stop.sh", "--grace", "60", fake_bin=fake_bin)
    assert len(commands) == 1 and "--worker=all" in commands[0]
    script = remote_command(commands[0])
    assert "GRACE_SECONDS=60\n" in script and "kill -TERM" in script


def test_delete_dry_run(fake_bin):
    commands, _ = dry_run("delete.sh", fake_bin=fake_bin)
    assert commands == [[
        "gcloud", "compute", "tpus", "tpu-vm", "delete", "test-tpu", *LOCATION]]
    commands, _ = dry_run("delete.sh", "--queued", "--yes", "--async",
                          fake_bin=fake_bin)
    assert commands == [[
        "gcloud", "compute", "tpus", "queued-resources", "delete", "test-tpu",
        *LOCATION, "--async", "--quiet", "--force"]]


# --- The remote scripts, executed locally ----------------------------------------

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("setsid") is None,
    reason="remote scripts target Linux TPU VMs (/proc, setsid)")


@pytest.fixture
def fake_worker(tmp_path):
    """A fake worker: $HOME with a code dir and venv, a metadata `curl`."""
    home = tmp_path / "home"
    (home / "swirl_jax").mkdir(parents=True)
    (home / "swirl_jax_venv" / "bin").mkdir(parents=True)
    bin_dir = tmp_path / "workerbin"
    bin_dir.mkdir()
    curl = bin_dir / "curl"
    curl.write_text("#!/bin/sh\necho 2\n")  # agent-worker-number
    curl.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in SCRIPT_ENV_VARS}
    env.update(HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{env['PATH']}")
    started = []
    yield home, env, started
    for pid in started:  # only processes this test started
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_remote(script, env, timeout=60):
    return subprocess.run(["bash", "-c", script], capture_output=True,
                          text=True, env=env, timeout=timeout, check=False)


@linux_only
def test_launch_logs_stop_remote_scripts(fake_bin, fake_worker):
    home, worker_env, started = fake_worker
    python = home / "swirl_jax_venv" / "bin" / "python"
    python.write_text(
        "#!/bin/bash\n"
        'for a in "$@"; do printf "<%s>\\n" "$a"; done > "$HOME/argv.txt"\n'
        'printf "FOO=%s\\nPWD=%s\\n" "$FOO" "$PWD" >> "$HOME/argv.txt"\n'
        'echo "training step 1"\n'
        "trap 'echo saving checkpoint; exit 0' TERM\n"
        "while true; do sleep 0.1; done\n")
    python.chmod(0o755)

    commands, _ = dry_run("launch.sh", *LAUNCH_ARGS, fake_bin=fake_bin,
                          STARTUP_CHECK_SECONDS="1")
    launch = remote_command(commands[0])
    proc = run_remote(launch, worker_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[worker 2] running, pid" in proc.stdout
    pid = int((home / "swirl_jax_logs" / "job.pid").read_text())
    started.append(pid)

    lines = (home / "argv.txt").read_text().splitlines()
    assert lines[:len(EXPECTED_MAIN_ARGS)] == [f"<{a}>" for a in EXPECTED_MAIN_ARGS]
    assert "FOO=a b" in lines
    assert f"PWD={home / 'swirl_jax'}" in lines
    assert (home / "swirl_jax_logs" / "LATEST").read_text().strip() == "x-run"
    log_file = home / "swirl_jax_logs" / "x-run" / "worker-2.log"
    assert "training step 1" in log_file.read_text()

    # A second launch on a busy worker refuses.
    proc = run_remote(launch, worker_env)
    assert proc.returncode == 1 and "already running" in proc.stdout

    commands, _ = dry_run("logs.sh", "--lines", "5", fake_bin=fake_bin)
    proc = run_remote(remote_command(commands[0]), worker_env)
    assert proc.returncode == 0, proc.stderr
    assert "[worker 2] training step 1" in proc.stdout
    assert "job running" in proc.stdout

    commands, _ = dry_run("stop.sh", "--grace", "20", fake_bin=fake_bin)
    stop = remote_command(commands[0])
    proc = run_remote(stop, worker_env)
    assert proc.returncode == 0, proc.stderr
    assert "SIGTERM" in proc.stdout and "stopped" in proc.stdout
    deadline = time.time() + 10
    while time.time() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}") or \
        "Z" in pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert "saving checkpoint" in log_file.read_text()  # SIGTERM reached it
    assert not (home / "swirl_jax_logs" / "job.pid").exists()

    proc = run_remote(stop, worker_env)  # idempotent
    assert proc.returncode == 0 and "no swirl_jax job running" in proc.stdout


@linux_only
def test_launch_puts_relative_workdir_under_home(fake_bin, fake_worker):
    home, worker_env, _ = fake_worker
    python = home / "swirl_jax_venv" / "bin" / "python"
    python.write_text('#!/bin/sh\necho "$@" > "$HOME/argv.txt"\n')
    python.chmod(0o755)
    commands, _ = dry_run("launch.sh", "--gin_file", "a.gin", "--workdir",
                          "runs/x", fake_bin=fake_bin, STARTUP_CHECK_SECONDS="1")
    proc = run_remote(remote_command(commands[0]), worker_env)
    assert proc.returncode == 1  # the fake exits at once; that is reported
    assert (home / "argv.txt").read_text().split() == [
        "-u", "-m", "swirl_jax.main", "--gin_file=a.gin", f"--workdir={home}/runs/x"]


@linux_only
def test_launch_reports_a_job_that_dies_at_once(fake_bin, fake_worker):
    home, worker_env, _ = fake_worker
    python = home / "swirl_jax_venv" / "bin" / "python"
    python.write_text("#!/bin/sh\necho 'gin: unknown binding' >&2\nexit 3\n")
    python.chmod(0o755)
    commands, _ = dry_run("launch.sh", "--gin_file", "a.gin", "--workdir",
                          "gs://b/w", fake_bin=fake_bin,
                          STARTUP_CHECK_SECONDS="1")
    proc = run_remote(remote_command(commands[0]), worker_env)
    assert proc.returncode == 1
    assert "[worker 2] gin: unknown binding" in proc.stdout


@linux_only
def test_setup_remote_script_installs_then_skips(fake_bin, fake_worker, tmp_path):
    home, worker_env, _ = fake_worker
    python = home / "swirl_jax_venv" / "bin" / "python"
    python.write_text(
        '#!/bin/sh\necho "$*" >> "$HOME/pip_calls.txt"\nexit 0\n')  # venv_ok: 0
    python.chmod(0o755)
    src = tmp_path / "src"
    src.mkdir()
    (src / "setup.py").write_text("# setup\n")
    (src / "constraints.txt").write_text("jax==0.10.2\n")
    (src / "new_file.py").write_text("x = 1\n")
    (home / "swirl_jax" / "stale_file.py").write_text("old\n")

    def upload():
        with tarfile.open(home / "swirl_jax-src.tar.gz", "w:gz") as tar:
            for p in src.iterdir():
                tar.add(p, arcname=p.name)

    commands, _ = dry_run("setup.sh", "--source", "worktree",
                          "--jax-version", "0.10.2", fake_bin=fake_bin)
    script = remote_command(gcloud_commands(commands)[1])

    upload()
    proc = run_remote(script, worker_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code = home / "swirl_jax"
    assert (code / "new_file.py").exists() and not (code / "stale_file.py").exists()
    assert not (home / "swirl_jax-src.tar.gz").exists()
    calls = (home / "pip_calls.txt").read_text()
    assert f"-m pip install --quiet -c {code}/constraints.txt -e {code}[data]" in calls
    assert (f"-m pip install --quiet -c {code}/constraints.txt "
            f"jax[tpu]==0.10.2 -f {LIBTPU_URL}") in calls
    assert (home / "swirl_jax_venv" / ".swirl_jax_installed").exists()

    # Second run: nothing changed, so no dependency install.
    (home / "pip_calls.txt").unlink()
    upload()
    proc = run_remote(script, worker_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "packages up to date" in proc.stdout
    calls = (home / "pip_calls.txt").read_text()
    assert "jax[tpu]" not in calls and "--no-deps -e" in calls


# --- Real (non-dry) runs against a recording gcloud --------------------------------

@pytest.fixture
def recording_gcloud(tmp_path):
    """A gcloud that records its argv; `describe` reports 3 workers and
    `scp` keeps a copy of the uploaded tarball."""
    bin_dir = tmp_path / "recbin"
    bin_dir.mkdir()
    calls = tmp_path / "gcloud_calls.txt"
    upload = tmp_path / "uploaded.tar.gz"
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(
        "#!/bin/bash\n"
        'line="$*"\n'
        f'printf "%s\\n" "${{line//$\'\\n\'/ }}" >> "{calls}"\n'
        'case "$*" in\n'
        '  *" describe "*) echo "10.0.0.1;10.0.0.2;10.0.0.3" ;;\n'
        f'  *" tpu-vm scp "*.tar.gz*) cp "$5" "{upload}" ;;\n'
        "esac\n"
        "exit 0\n")
    gcloud.chmod(0o755)
    return bin_dir, calls, upload


def test_setup_real_run_outside_git(recording_gcloud, tmp_path):
    """No .git: --source worktree falls back to a plain tar of the tree."""
    bin_dir, calls, upload = recording_gcloud
    repo = tmp_path / "repo"
    shutil.copytree(TPU_DIR, repo / "tpu")
    shutil.copy(REPO / "setup.py", repo / "setup.py")
    (repo / "pkg").mkdir()
    (repo / "pkg" / "mod.py").write_text("x = 1\n")
    (repo / "runs").mkdir()
    (repo / "runs" / "big.ckpt").write_text("not shipped\n")
    env = script_env(bin_dir)
    proc = subprocess.run(["bash", str(repo / "tpu" / "setup.sh"), "--source", "worktree"],
                          capture_output=True, text=True, env=env, cwd=repo,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    recorded = calls.read_text().splitlines()
    assert [c.split()[:4] for c in recorded] == [
        ["compute", "tpus", "tpu-vm", "scp"], ["compute", "tpus", "tpu-vm", "ssh"]]
    assert all("--worker=all" in c for c in recorded)
    with tarfile.open(upload) as tar:
        names = {n.lstrip("./") for n in tar.getnames()}
    assert "pkg/mod.py" in names and "setup.py" in names
    assert not any(n.startswith("runs") for n in names)


def test_logs_fetch_asks_gcloud_for_the_worker_count(recording_gcloud, tmp_path):
    bin_dir, calls, _ = recording_gcloud
    proc = run_script("logs.sh", "--fetch", "--dest", str(tmp_path / "logs"),
                      env=script_env(bin_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    recorded = calls.read_text().splitlines()
    assert "describe test-tpu" in recorded[0]
    assert "--format=value(networkEndpoints[].ipAddress)" in recorded[0]
    scps = recorded[1:]
    assert len(scps) == 3
    for i, c in enumerate(scps):
        assert f"--worker={i}" in c and "test-tpu:swirl_jax_logs" in c
