"""docker/entrypoint.sh, outside Docker (issue #12, item 2): with a recording `nexus-backup`
stub on PATH for its argument and environment logic, and once for real against the throwaway
cluster, as an unprivileged user, up to /health and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.config import Settings
from api.main import create_app
from tests.conftest import ROOT, App, ServerOutput, free_port
from tests.deploy.files import ENTRYPOINT, SECRET_SETTINGS

UNPRIVILEGED = 10001  # the image's user


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    call: dict[str, Any] | None  # what the nexus-backup stub was run with, if it was


class Stubs:
    """A bin folder with a recording `nexus-backup` and an `id` that reports a chosen uid."""

    def __init__(self, folder: Path) -> None:
        self.bin = folder / "bin"
        self.bin.mkdir()
        self.record = folder / "call.json"
        stub = self.bin / "nexus-backup"
        stub.write_text(
            f"#!{sys.executable}\n"
            "import json, os, sys\n"
            "with open(os.environ['STUB_RECORD'], 'w') as out:\n"
            "    json.dump({'argv': sys.argv[1:], 'env': dict(os.environ),"
            " 'pid': os.getpid()}, out)\n"
        )
        stub.chmod(0o755)
        fake_id = self.bin / "id"
        fake_id.write_text('#!/bin/sh\n[ "$1" = -u ] && echo "$STUB_UID"\n')
        fake_id.chmod(0o755)

    def env(self, uid: int, **extra: str) -> dict[str, str]:
        return {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "STUB_RECORD": str(self.record),
            "STUB_UID": str(uid),
            **extra,
        }

    def run(self, *args: str, uid: int = UNPRIVILEGED, **env: str) -> Result:
        self.record.unlink(missing_ok=True)
        process = subprocess.Popen(
            [str(ENTRYPOINT), *args],
            env=self.env(uid, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        stdout, stderr = process.communicate(timeout=60)
        call = json.loads(self.record.read_text()) if self.record.exists() else None
        if call is not None:
            # exec, not a child: the server gets tini's SIGTERM itself.
            assert call["pid"] == process.pid, "the entrypoint must exec nexus-backup"
        return Result(process.returncode, stdout, stderr, call)


@pytest.fixture
def stubs(tmp_path: Path) -> Stubs:
    return Stubs(tmp_path)


def test_no_arguments_serve_on_all_interfaces_in_production(stubs: Stubs) -> None:
    result = stubs.run()
    assert result.returncode == 0, result.stderr
    assert result.call is not None
    assert result.call["argv"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert result.call["env"]["NEXUS_ENV"] == "production"


def test_serve_takes_port_and_extra_options(stubs: Stubs) -> None:
    result = stubs.run("serve", "--port", "9001", PORT="8123")
    assert result.call is not None
    # click takes the last --port: an explicit option wins over PORT.
    assert result.call["argv"] == ["serve", "--host", "0.0.0.0", "--port", "8123", "--port", "9001"]


def test_an_explicit_nexus_env_is_kept(stubs: Stubs) -> None:
    result = stubs.run("serve", NEXUS_ENV="development")
    assert result.call is not None
    assert result.call["env"]["NEXUS_ENV"] == "development"


@pytest.mark.parametrize(
    "args",
    [
        ["backup", "nightly"],
        ["restore", "gk-nexus-backup-20261126-020000", "--yes"],
        ["list", "--json"],
        ["--version"],
        ["users", "create", "--email", "a@example.com", "--role", "OWNER"],
    ],
)
def test_other_commands_pass_through_to_nexus_backup(stubs: Stubs, args: list[str]) -> None:
    result = stubs.run(*args)
    assert result.returncode == 0, result.stderr
    assert result.call is not None
    assert result.call["argv"] == args
    assert result.call["env"]["NEXUS_ENV"] == "production"


def test_the_program_name_may_be_given(stubs: Stubs) -> None:
    result = stubs.run("nexus-backup", "backup", "nightly")
    assert result.call is not None
    assert result.call["argv"] == ["backup", "nightly"]


def test_the_command_exit_status_is_the_entrypoint_s(stubs: Stubs) -> None:
    stub = stubs.bin / "nexus-backup"
    stub.write_text("#!/bin/sh\necho 'nexus-backup: error: refused' >&2\nexit 3\n")
    result = stubs.run("backup", "nightly")
    assert result.returncode == 3
    assert result.stderr == "nexus-backup: error: refused\n"


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_a_shell_passes_through(stubs: Stubs, shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"no {shell} here")
    result = stubs.run(shell, "-c", 'echo "shell as $NEXUS_ENV"')
    assert result.returncode == 0, result.stderr
    assert result.stdout == "shell as production\n"
    assert result.call is None


def test_root_is_refused_in_one_line(stubs: Stubs) -> None:
    for args in ([], ["backup", "nightly"], ["sh"]):
        result = stubs.run(*args, uid=0)
        assert result.returncode == 1
        assert result.call is None, "nothing may run as root"
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith("nexus-backup entrypoint: refusing to run as root")


def test_real_root_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can check the real `id -u`; the stubbed uid 0 is covered above")
    result = subprocess.run(
        [str(ENTRYPOINT), "sh", "-c", "echo ran"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "ran" not in result.stdout
    assert "refusing to run as root" in result.stderr


@pytest.mark.parametrize("name", SECRET_SETTINGS)
def test_every_secret_setting_can_come_from_a_file(stubs: Stubs, tmp_path: Path, name: str) -> None:
    secret = tmp_path / "secret"
    # Contents are taken verbatim (nothing is evaluated); only trailing newlines go.
    value = "postgresql://u:p%40ss@db:5432/app $(touch pwned) `id` ${HOME} 'q\" \\n end"
    secret.write_text(value + "\n\n")
    result = stubs.run("backup", **{f"{name}_FILE": str(secret)})
    assert result.returncode == 0, result.stderr
    assert result.call is not None
    assert result.call["env"][name] == value
    assert f"{name}_FILE" not in result.call["env"]
    assert not (Path.cwd() / "pwned").exists()


def test_the_file_variants_cover_every_secret_setting() -> None:
    # The entrypoint's list is api/config.py's SecretStr fields, no more, no fewer.
    text = ENTRYPOINT.read_text(encoding="utf-8")
    start = text.index('SECRET_VARS="') + len('SECRET_VARS="')
    listed = text[start : text.index('"', start)].split()
    assert sorted(listed) == SECRET_SETTINGS
    assert {name.upper() for name, f in Settings.model_fields.items()} >= set(listed)


def test_a_multiline_secret_keeps_its_inner_newlines(stubs: Stubs, tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("line one\nline two\n")
    result = stubs.run("serve", NOTIFY_SMTP_PASSWORD_FILE=str(secret))
    assert result.call is not None
    assert result.call["env"]["NOTIFY_SMTP_PASSWORD"] == "line one\nline two"


def test_a_variable_and_its_file_together_are_refused(stubs: Stubs, tmp_path: Path) -> None:
    secret = tmp_path / "jwt"
    secret.write_text("x" * 40)
    result = stubs.run(NEXUS_JWT_SECRET="y" * 40, NEXUS_JWT_SECRET_FILE=str(secret))
    assert result.returncode == 1
    assert result.call is None
    assert result.stderr == (
        "nexus-backup entrypoint: both NEXUS_JWT_SECRET and NEXUS_JWT_SECRET_FILE are set: "
        "set only one of them\n"
    )


def test_an_empty_variable_beside_its_file_is_unset(stubs: Stubs, tmp_path: Path) -> None:
    # The compose file passes every variable, empty when unused: empty means not set.
    secret = tmp_path / "url"
    secret.write_text("https://hooks.example.com/x")
    result = stubs.run(NOTIFY_WEBHOOK_URL="", NOTIFY_WEBHOOK_URL_FILE=str(secret))
    assert result.call is not None
    assert result.call["env"]["NOTIFY_WEBHOOK_URL"] == "https://hooks.example.com/x"


def test_a_missing_secret_file_is_refused(stubs: Stubs, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = stubs.run(DATABASE_URL_FILE=str(missing))
    assert result.returncode == 1
    assert result.call is None
    assert result.stderr == (
        f"nexus-backup entrypoint: DATABASE_URL_FILE={missing} is not a readable file\n"
    )


def test_unrelated_file_variables_are_left_alone(stubs: Stubs) -> None:
    result = stubs.run("list", LOG_FILE="/tmp/x", PGPASSFILE="/tmp/y")
    assert result.call is not None
    assert result.call["env"]["LOG_FILE"] == "/tmp/x"
    assert "LOG" not in result.call["env"]


# -- for real: the service itself, from the entrypoint ------------------------------------------


def _as_image_user() -> dict[str, Any]:
    """Popen arguments that run a process as the image's user when the tests run as root."""
    if os.geteuid() != 0:
        return {}
    return {"user": UNPRIVILEGED, "group": UNPRIVILEGED, "extra_groups": []}


def _python_for_the_image_user() -> str:
    """An interpreter of this Python version that the image's user may execute (a venv under
    root's 0700 home is not one)."""
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, shutil.which(minor, path="/usr/local/bin:/usr/bin")):
        if candidate is None:
            continue
        try:
            subprocess.run([candidate, "-c", ""], check=True, timeout=60, **_as_image_user())
        except (OSError, subprocess.CalledProcessError):
            continue
        return candidate
    pytest.skip(f"no {minor} that uid {UNPRIVILEGED} may execute")


@pytest.fixture
def image_like(app: App) -> Iterator[tuple[Path, Path, Path, Path]]:
    """(bin, home, uploads, backups) as in the image: `nexus-backup` is docker/nexus-backup and
    `python` an interpreter the image's user can run, with the package on PYTHONPATH; the
    folders belong to that user, outside pytest's 0700 tmp folders."""
    root = Path(tempfile.mkdtemp(prefix="nexus-entrypoint-"))
    try:
        folders = [root / name for name in ("bin", "home", "uploads", "backups")]
        bin_dir, home, uploads, backups = folders
        for folder in (bin_dir, home, backups):
            folder.mkdir()
        shutil.copytree(app.uploads, uploads)
        (bin_dir / "python").symlink_to(_python_for_the_image_user())
        shutil.copy(ROOT / "docker" / "nexus-backup", bin_dir / "nexus-backup")
        if os.geteuid() == 0:
            for folder, _, files in os.walk(root):
                os.chown(folder, UNPRIVILEGED, UNPRIVILEGED)
                for name in files:
                    os.chown(os.path.join(folder, name), UNPRIVILEGED, UNPRIVILEGED)
        yield bin_dir, home, uploads, backups
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _has_route(path: str) -> bool:
    app = create_app(Settings(_env_file=None))  # type: ignore[call-arg]
    return any(getattr(route, "path", None) == path for route in app.routes)


def test_the_entrypoint_serves_and_stops_on_sigterm(
    app: App, image_like: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    bin_dir, home, uploads, backups = image_like
    jwt = home / "jwt"
    jwt.write_text(os.urandom(32).hex() + "\n")
    if os.geteuid() == 0:
        os.chown(jwt, UNPRIVILEGED, UNPRIVILEGED)
    jwt.chmod(0o600)
    port = free_port()
    settings = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in app.env().items() if key not in settings}
    env.update(
        PATH=f"{bin_dir}:/usr/bin:/bin",
        PYTHONPATH=os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]]),
        HOME=str(home),
        PORT=str(port),
        PYTHONUNBUFFERED="1",
        DATABASE_URL=app.url,
        UPLOADS_DIR=str(uploads),
        BACKUP_DIR=str(backups),
        APP_VERSION="1.0.0",
        NEXUS_JWT_SECRET_FILE=str(jwt),
        SCHEDULER_ENABLED="false",
    )
    process = subprocess.Popen(
        [str(ENTRYPOINT)],
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        **_as_image_user(),
    )
    assert process.stdout is not None
    output = ServerOutput(process.stdout, tmp_path / "server.log")
    try:
        output.wait_for("Uvicorn running on")
        # entrypoint -> exec docker/nexus-backup -> exec python: one process, the server.
        command = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")[:-1]
        assert command[1:4] == [b"-m", b"api", b"serve"], command
        assert command[-4:] == [b"--host", b"0.0.0.0", b"--port", str(port).encode()]
        owner = os.stat(f"/proc/{process.pid}").st_uid
        assert owner == (UNPRIVILEGED if os.geteuid() == 0 else os.geteuid())
        base = f"http://127.0.0.1:{port}"
        health = httpx.get(f"{base}/health", timeout=10)
        assert health.status_code == 200, health.text
        if _has_route("/health/live"):
            live = httpx.get(f"{base}/health/live", timeout=10)
            assert live.status_code == 200, live.text
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down, then re-raises the signal it caught: the status is SIGTERM's
        # (tini reports 143), as Docker expects of a stopped container.
        assert process.wait(timeout=45) in (0, -signal.SIGTERM), output.log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        output.close()
    log = output.log.read_text()
    assert "Application shutdown complete" in log, log
    assert "Finished server process" in log, log
    assert "Traceback" not in log, log
