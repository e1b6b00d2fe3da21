"""Real servers for tests: uvicorn serving ``maas.asgi:application`` on the test database, in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
from django.conf import settings
from django.db import connection

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_database_url() -> str:
    """The URL of the database this test run uses (``test_<name>``), for subprocesses."""
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    host = db["HOST"] or "127.0.0.1"
    if host.startswith("/"):  # embedded PostgreSQL listens on a socket folder
        from urllib.parse import quote

        host = quote(host, safe="")
        return f"postgres://{auth}@{host}/{db['NAME']}"
    return f"postgres://{auth}@{host}:{db['PORT'] or 5432}/{db['NAME']}"


@contextmanager
def run_asgi(
    *,
    env: dict | None = None,
    ready_path: str = "/accounts/login/",
    ready_status: int | None = None,
    extra_args: tuple[str, ...] = (),
    with_process: bool = False,
):
    """uvicorn on a free port against the test database; yields its base URL once ``ready_path`` answers (with
    ``with_process``: the URL and the server's ``Popen``, for a test that kills it)."""
    port = free_port()
    full_env = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "DJANGO_SETTINGS_MODULE": "maas.settings_test",
        **(env or {}),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "maas.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            *extra_args,
        ],
        cwd=REPO,
        env=full_env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status = httpx.get(url + ready_path, timeout=1).status_code
                if ready_status is None or status == ready_status:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the ASGI server did not start")
            time.sleep(0.1)
        yield (url, process) if with_process else url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
