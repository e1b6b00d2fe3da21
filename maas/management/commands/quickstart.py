"""Start the whole platform locally: servers (embedded unless DATABASE_URL/REDIS_URL are set), schema, catalog,
demo data, then the ASGI web server, the usage ingester, a Celery worker and Celery beat. Ctrl-C stops everything
it started.

The console's log is quiet by default: its processes log warnings and errors only (uvicorn's per-request and start-up
lines, Celery's line per periodic task run are INFO). ``--verbose`` (``./dev up --verbose``) logs INFO again; a
``LOG_LEVEL`` set in the environment wins over both.

The embedded servers are started by ``manage.py`` before settings are read (``maas.embedded.prepare_environment``),
so this command owns them: its children inherit their URLs, and it stops them when it ends.
"""

import os
import signal
import subprocess
import sys
import time
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from maas import embedded
from maas.management.commands.seed_demo import ADMIN_EMAIL, DEMO_EMAIL, DEMO_PASSWORD


class Command(BaseCommand):
    help = "Install schema, catalog and demo data, then run web + ingester + worker + beat until interrupted."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-serve", action="store_true", help="Prepare everything, start no process.")
        parser.add_argument(
            "--verbose", action="store_true", help="Log INFO lines too (each periodic task run, each server start)."
        )

    def handle(self, *args: Any, host: str, port: int, no_serve: bool, verbose: bool, **options: Any) -> None:
        try:
            self.prepare()
            if not no_serve:
                self.serve(host, port, verbose=verbose)
        finally:
            if embedded.stop_started():
                self.stdout.write("embedded servers stopped")

    def prepare(self) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        call_command("sync_catalog")
        call_command("seed_demo")
        for extra in getattr(settings, "QUICKSTART_STEPS", []):
            call_command(extra)

    @staticmethod
    def log_level(*, verbose: bool) -> str:
        """The processes' log level: ``LOG_LEVEL`` when set, else INFO with ``--verbose`` and WARNING without."""
        return os.environ.get("LOG_LEVEL") or ("INFO" if verbose else "WARNING")

    def process_commands(self, host: str, port: int, *, verbose: bool) -> list[list[str]]:
        """The command lines of the web server, the Celery worker and beat, the usage ingester and the autoscaler."""
        py, level = sys.executable, self.log_level(verbose=verbose)
        return [
            [
                py,
                "-m",
                "uvicorn",
                "maas.asgi:application",
                "--host",
                host,
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                level.lower(),
                "--timeout-graceful-shutdown",
                "5",
            ],
            [py, "-m", "celery", "-A", "maas", "worker", "-l", level, "--concurrency", "2", "-Q", "celery"],
            [
                py,
                "-m",
                "celery",
                "-A",
                "maas",
                "beat",
                "-l",
                level,
                "-s",
                str(settings.EMBEDDED_DIR / "celerybeat-schedule"),
            ],
            # The usage ingester: records leave Redis for PostgreSQL within about a second (beat's 5-second task is
            # only the fallback when no ingester runs).
            [py, "manage.py", "ingest_usage"],
            # The autoscaler: scales autoscaled services to their demand, wakes Idle ones on a request.
            [py, "manage.py", "autoscale"],
        ]

    def process_env(self, host: str, port: int, *, verbose: bool) -> dict[str, str]:
        """Their environment: this one, with the site's URL and the log level (settings' LOGGING reads LOG_LEVEL)."""
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "maas.settings"),
            "SITE_URL": f"http://{host}:{port}",
            "LOG_LEVEL": self.log_level(verbose=verbose),
        }

    def serve(self, host: str, port: int, *, verbose: bool = False) -> None:
        env = self.process_env(host, port, verbose=verbose)
        procs = [
            subprocess.Popen(command, env=env, cwd=settings.BASE_DIR)
            for command in self.process_commands(host, port, verbose=verbose)
        ]
        url = f"http://{host}:{port}/"
        servers = "external"
        if settings.EMBEDDED:
            servers = (
                f"embedded PostgreSQL + Redis under {settings.EMBEDDED_DIR}; "
                f"other terminals: `python manage.py ...` uses them, or `set -a; . {settings.EMBEDDED_DIR}/env`"
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"\n  MaaS is running at {url}\n"
                f"  log in as {DEMO_EMAIL} or (platform admin) {ADMIN_EMAIL}, password {DEMO_PASSWORD}\n"
                f"  servers: {servers}\n"
                f"  Ctrl-C stops everything.\n"
            )
        )
        stopping = False

        def stop(*_args: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping and all(p.poll() is None for p in procs):
                time.sleep(0.5)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
            from deployments.drivers.local import stop_machine_processes

            stopped = stop_machine_processes()
            if stopped:
                self.stdout.write(f"stopped {stopped} local engine process(es)")
