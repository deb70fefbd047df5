"""A throwaway local PostgreSQL cluster for ``make run`` and the test suite.

Layout under ``data_dir``::

    data/          PGDATA
    run/           unix socket directory
    password       superuser password (mode 0600)
    port           last TCP port used, reused on restart when free
    postgres.log   server log

``initdb``, ``pg_ctl`` and ``postgres`` refuse to run as root, so when this process is root
those commands run as the ``postgres`` OS user (via ``runuser``) and ``data_dir`` itself is
owned by that user.  Every parent directory of ``data_dir`` must then be searchable by
``postgres`` (for example ``/tmp/<name>`` or ``<repo>/.data/pg`` work, but pytest's
``/tmp/pytest-of-root`` is mode 0700 and does not); ``start()`` checks this up front.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

SUPERUSER = "nexus"
SERVICE_USER = "postgres"
HOST = "127.0.0.1"

_PG_LIB = Path("/usr/lib/postgresql")
_CONF_NAME = "nexus_local.conf"
_SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_TIMEOUT_S = 60


def find_bin_dir() -> Path:
    """Return the newest ``/usr/lib/postgresql/*/bin`` holding ``initdb``, else its PATH dir."""
    candidates: list[tuple[tuple[int, ...], Path]] = []
    for initdb in _PG_LIB.glob("*/bin/initdb"):
        version = initdb.parent.parent.name
        key = tuple(int(part) for part in version.split(".") if part.isdigit())
        candidates.append((key, initdb.parent))
    if candidates:
        return max(candidates)[1]
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError(
        "PostgreSQL server binaries not found (no initdb in /usr/lib/postgresql/*/bin or on "
        "PATH). Install them, e.g. `apt-get install postgresql`, or pass bin_dir=..."
    )


def quote_ident(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _conninfo_value(value: str) -> str:
    """Quote a value for a libpq ``key=value`` connection string."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _conf_string(value: str) -> str:
    """Quote a string value for postgresql.conf."""
    return "'" + value.replace("'", "''") + "'"


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # postgres binds with SO_REUSEADDR too, so TIME_WAIT leftovers don't count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def _clean_env() -> dict[str, str]:
    """The current environment without PG* variables, which would redirect our tools."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


class LocalCluster:
    """A private PostgreSQL cluster under ``data_dir``, listening on 127.0.0.1 only."""

    def __init__(
        self, data_dir: Path, *, port: int | None = None, bin_dir: Path | None = None
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.pgdata = self.data_dir / "data"
        self.run_dir = self.data_dir / "run"
        self.password_file = self.data_dir / "password"
        self.port_file = self.data_dir / "port"
        self.log_file = self.data_dir / "postgres.log"
        self.bin_dir = Path(bin_dir) if bin_dir is not None else find_bin_dir()
        self._requested_port = port
        self._port: int | None = port
        self._password: str | None = None
        self._service: pwd.struct_passwd | None = None  # set when running as root

    # -- public API -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Initialise (first time) and start the cluster; reuse it if already running."""
        self._prepare_dirs()
        if not self._initialised():
            self._initdb()
        if self._is_running():
            running = self._running_port()
            if self._requested_port is not None and running != self._requested_port:
                raise RuntimeError(
                    f"cluster in {self.data_dir} is already running on port {running}, "
                    f"not the requested port {self._requested_port}"
                )
            self._port = running
            self._wait_ready(
                "the server was already running according to postmaster.pid; if it crashed, "
                "wait for its leftover processes to exit (or kill them) and start again"
            )
        else:
            self._start_server()
            self._wait_ready()

    def stop(self) -> None:
        """Stop the cluster (fast shutdown); does nothing if it is not running."""
        if not self._initialised() or not self._is_running():
            return
        proc = self._run_service(
            [
                self.bin("pg_ctl"),
                "stop",
                "-D",
                self.pgdata,
                "-m",
                "fast",
                "-w",
                "-t",
                str(_TIMEOUT_S),
            ]
        )
        if proc.returncode != 0 and self._is_running():
            raise self._error("pg_ctl stop", proc)

    @property
    def port(self) -> int:
        """TCP port of the cluster (known once started)."""
        if self._port is None:
            if not (self._initialised() and self._is_running()):
                raise RuntimeError(f"cluster in {self.data_dir} is not started; call start()")
            self._port = self._running_port()
        return self._port

    @property
    def password(self) -> str:
        """Password of the ``nexus`` superuser."""
        if self._password is None:
            try:
                self._password = self.password_file.read_text().strip()
            except FileNotFoundError:
                raise RuntimeError(
                    f"no password file at {self.password_file}; call start() first"
                ) from None
        return self._password

    def url(self, database: str = "postgres") -> str:
        """``postgresql://`` URL for ``database`` as the ``nexus`` superuser."""
        return (
            f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}@{HOST}:{self.port}/"
            f"{quote(database, safe='')}"
        )

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create database ``name`` (optionally from ``template``) and return its URL."""
        sql = f"CREATE DATABASE {quote_ident(name)}"
        if template is not None:
            sql += f" TEMPLATE {quote_ident(template)}"
        self.psql("postgres", sql + ";")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its sessions."""
        self.psql("postgres", f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE);")

    def psql(self, database: str, sql: str) -> str:
        """Run ``sql`` with psql against ``database`` and return its unaligned output."""
        conninfo = (
            f"host={HOST} port={self.port} user={SUPERUSER} "
            f"dbname={_conninfo_value(database)} connect_timeout=10"
        )
        env = _clean_env()
        env["PGPASSWORD"] = self.password
        psql = str(self.bin("psql"))
        cmd = [psql, "-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", conninfo, "-f", "-"]
        proc = subprocess.run(
            cmd,
            input=sql,
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=_TIMEOUT_S * 5,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"psql on database {database!r} failed (exit {proc.returncode}): "
                f"{proc.stderr.strip()}"
            )
        return proc.stdout

    def bin(self, name: str) -> Path:
        """Path of PostgreSQL binary ``name`` (e.g. ``pg_dump``) in ``bin_dir``."""
        path = self.bin_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{name} not found in {self.bin_dir}")
        return path

    # -- setup ------------------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        """Create data_dir and run/, hand them to the service user, check it can reach them."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        socket_path = self.run_dir / ".s.PGSQL.65535"
        if len(str(socket_path)) > _SOCKET_PATH_MAX:
            raise RuntimeError(
                f"socket path {socket_path} is longer than {_SOCKET_PATH_MAX} characters; "
                "use a shorter data_dir"
            )
        self.data_dir.chmod(0o700)
        if os.geteuid() != 0:
            return
        try:
            self._service = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            raise RuntimeError(
                f"running as root but there is no {SERVICE_USER!r} OS user to run PostgreSQL "
                "as (install the postgresql package, or run as a normal user)"
            ) from None
        for path in (
            self.data_dir,
            self.run_dir,
            self.password_file,
            self.port_file,
            self.log_file,
        ):
            self._chown(path)
        probe = self._run_service(["test", "-w", self.data_dir, "-a", "-x", self.data_dir])
        if probe.returncode != 0:
            raise RuntimeError(
                f"the {SERVICE_USER!r} OS user cannot reach {self.data_dir}: every parent "
                f"directory must be searchable by it (o+x). Put the cluster under a directory "
                f"such as /tmp/<name> or <repo>/.data/pg instead of a mode-0700 tree like "
                f"/tmp/pytest-of-root"
            )

    def _chown(self, path: Path) -> None:
        if self._service is not None and path.exists():
            os.chown(path, self._service.pw_uid, self._service.pw_gid)

    def _initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").is_file()

    def _ensure_password(self) -> None:
        """Create the password file (0600) with a random password unless it exists."""
        if self.password_file.exists():
            self.password_file.chmod(0o600)
            return
        password = secrets.token_urlsafe(24)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        self.password_file.chmod(0o600)
        self._chown(self.password_file)
        self._password = password

    def _initdb(self) -> None:
        self._ensure_password()
        proc = self._run_service(
            [
                self.bin("initdb"),
                "-D",
                self.pgdata,
                "-U",
                SUPERUSER,
                f"--pwfile={self.password_file}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ]
        )
        if proc.returncode != 0:
            raise self._error("initdb", proc)
        # Our settings live in a file of their own, rewritten on each start.
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(f"\ninclude_if_exists = {_conf_string(_CONF_NAME)}\n")

    # -- running ----------------------------------------------------------------------------

    def _is_running(self) -> bool:
        proc = self._run_service([self.bin("pg_ctl"), "status", "-D", self.pgdata])
        return proc.returncode == 0

    def _running_port(self) -> int:
        """Port of the running server, from line 4 of postmaster.pid."""
        lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        return int(lines[3])

    def _choose_port(self, avoid: set[int]) -> int:
        if self._requested_port is not None:
            return self._requested_port
        try:
            remembered = int(self.port_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            remembered = 0
        if remembered and remembered not in avoid and _port_is_free(remembered):
            return remembered
        return _free_port()

    def _write_server_conf(self, port: int) -> None:
        path = self.pgdata / _CONF_NAME
        path.write_text(
            "# Written by nexus_dev.cluster.LocalCluster on every start; edits are lost.\n"
            f"listen_addresses = {_conf_string(HOST)}\n"
            f"port = {port}\n"
            f"unix_socket_directories = {_conf_string(str(self.run_dir))}\n"
            "fsync = on\n"
        )
        self._chown(path)

    def _start_server(self) -> None:
        """Start with pg_ctl; retry on another port if an auto-picked one was taken."""
        tried: set[int] = set()
        while True:
            port = self._choose_port(tried)
            tried.add(port)
            self._write_server_conf(port)
            log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            proc = self._run_service(
                [
                    self.bin("pg_ctl"),
                    "start",
                    "-D",
                    self.pgdata,
                    "-l",
                    self.log_file,
                    "-w",
                    "-t",
                    str(_TIMEOUT_S),
                ]
            )
            if proc.returncode == 0:
                self._port = port
                self.port_file.write_text(f"{port}\n")
                self._chown(self.port_file)
                return
            new_log = self._read_log(log_offset)
            port_taken = "could not bind" in new_log or "already in use" in new_log
            if self._requested_port is None and port_taken and len(tried) < 3:
                continue
            raise self._error(f"pg_ctl start on port {port}", proc)

    def _wait_ready(self, hint: str = "") -> None:
        """Wait until the server accepts TCP connections."""
        deadline = time.monotonic() + _TIMEOUT_S
        cmd = [
            str(self.bin("pg_isready")),
            "-q",
            "-h",
            HOST,
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            "-t",
            "5",
        ]
        while True:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=_clean_env(), check=False
            )
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                what = f"waiting for connections on {HOST}:{self.port}"
                raise self._error(f"{what} ({hint})" if hint else what, proc)
            time.sleep(0.2)

    # -- helpers ----------------------------------------------------------------------------

    def _run_service(self, cmd: Sequence[str | Path]) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` as the cluster's OS user (``postgres`` when we are root)."""
        args = [str(arg) for arg in cmd]
        if os.geteuid() == 0:
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            args = [runuser, "-u", SERVICE_USER, "--", *args]
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            env=_clean_env(),
            cwd=self.data_dir,
            check=False,
            timeout=_TIMEOUT_S * 2,
        )

    def _read_log(self, offset: int = 0) -> str:
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _error(self, what: str, proc: subprocess.CompletedProcess[str]) -> RuntimeError:
        """Build an error naming the failed step, its output and the log's tail."""
        output = "\n".join(part.strip() for part in (proc.stdout, proc.stderr) if part.strip())
        tail = "\n".join(self._read_log().splitlines()[-30:]) or "(empty)"
        return RuntimeError(
            f"{what} failed (exit {proc.returncode}) for cluster in {self.data_dir}\n"
            f"{output}\n--- tail of {self.log_file}:\n{tail}"
        )
