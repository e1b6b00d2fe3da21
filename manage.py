#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "maas.settings")
    if sys.argv[1:2] == ["genkey"]:
        # It makes the ENCRYPTION_KEYS value that production settings refuse to load without: run it without them.
        from maas.management.commands.genkey import Command

        Command().run_from_argv(sys.argv)
        return
    from maas import embedded

    # Before Django reads settings: quickstart starts the embedded servers when DATABASE_URL/REDIS_URL are unset,
    # other commands use those of a running `./dev up`.
    embedded.prepare_environment(sys.argv[1] if len(sys.argv) > 1 else None)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
