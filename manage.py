#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import signal
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "maas.settings")
    if sys.argv[1:2] == ["genkey"]:
        # It makes the ENCRYPTION_KEYS value that production settings refuse to load without: run it without them.
        from maas.management.commands.genkey import Command

        Command().run_from_argv(sys.argv)
        return
    from maas import embedded

    # Before Django reads settings: with DATABASE_URL/REDIS_URL unset, quickstart starts the embedded servers, other
    # commands use those of a running `./dev up` or start them for themselves. What this process started, it stops.
    embedded.prepare_environment(sys.argv[1] if len(sys.argv) > 1 else None)
    if embedded.started is not None:
        # SIGTERM ends the command through the `finally` below (a command may install its own handler instead).
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        from django.core.management import execute_from_command_line

        execute_from_command_line(sys.argv)
    finally:
        embedded.stop_started()


if __name__ == "__main__":
    main()
