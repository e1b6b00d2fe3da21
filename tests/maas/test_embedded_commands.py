"""A management command stops the embedded servers it started, and leaves those of a running ``./dev up`` alone
(issue 16, item 10: ``manage.py create_api_key`` with the platform stopped left PostgreSQL and Redis running)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from maas import embedded

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# Run by `manage.py shell -c`: the servers this command talks to, and the processes behind them.
PROBE = """
import json, os, redis
from pathlib import Path
from django.conf import settings
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("SELECT pg_backend_pid()")
redis.Redis.from_url(settings.REDIS_URL).ping()
root = Path(settings.EMBEDDED_DIR)
print(json.dumps({
    "DATABASE_URL": os.environ["DATABASE_URL"],
    "REDIS_URL": os.environ["REDIS_URL"],
    "postgres_pid": int((root / "pg" / "postmaster.pid").read_text().split()[0]),
    "redis_pid": int((root / "redis" / "redis.pid").read_text()),
}))
"""


def _manage(root: Path, *args: str) -> subprocess.CompletedProcess:
    """``manage.py`` as a user runs it with the embedded defaults: no DATABASE_URL or REDIS_URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "MAAS_", "DJANGO_"))}
    env |= {"MAAS_EMBEDDED_DIR": str(root), "MAAS_EMBEDDED_REDIS_PORT": "0"}
    return subprocess.run(
        [sys.executable, "manage.py", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180
    )


def _probe(root: Path) -> dict:
    out = _manage(root, "shell", "-c", PROBE)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _processes_of(root: Path, *pids: int) -> list[str]:
    """Living processes that are these pids or name the folder on their command line (PostgreSQL's -D)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (int(proc.name) in pids or str(root) in cmdline):
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_a_command_run_while_the_platform_is_stopped_stops_the_servers_it_started(tmp_path):
    root = tmp_path / "embedded"

    used = _probe(root)  # the command works: it started PostgreSQL and Redis for itself

    assert used["DATABASE_URL"].startswith("postgres://") and used["REDIS_URL"].startswith("redis://127.0.0.1:")
    assert _processes_of(root, used["postgres_pid"], used["redis_pid"]) == []
    assert not embedded.postgres_running(root) and not embedded.redis_running(root)

    # A command that fails (no such org; nothing migrated either) stops them as well.
    failed = _manage(root, "create_api_key", "--org", "nobody", "--name", "ci")
    assert failed.returncode != 0
    assert _processes_of(root) == [] and not embedded.redis_running(root)


def test_a_command_uses_and_leaves_the_servers_of_a_running_dev_up(tmp_path):
    root = tmp_path / "embedded"
    servers = embedded.start(root, redis_port=0, durable=False)
    embedded.write_env_file(servers)  # as quickstart (./dev up) publishes them
    try:
        used = _probe(root)

        assert (used["DATABASE_URL"], used["REDIS_URL"]) == (servers.database_url, servers.redis_url)
        assert embedded.postgres_running(root) and embedded.redis_running(root)
        assert embedded.running_environ(root) == servers.environ()
    finally:
        embedded.stop(root, delete=True)


def test_a_command_leaves_servers_it_found_running_without_a_dev_up(tmp_path):
    """Servers running from the folder with no env file (left by a killed command) are used, not stopped."""
    root = tmp_path / "embedded"
    servers = embedded.start(root, redis_port=0, durable=False)
    try:
        used = _probe(root)

        assert used["postgres_pid"] and embedded.postgres_running(root) and embedded.redis_running(root)
        assert used["REDIS_URL"] == servers.redis_url
    finally:
        embedded.stop(root, delete=True)
