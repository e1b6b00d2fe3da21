"""``python manage.py autoscale``: the autoscaler loop (``deployments.autoscaler``); run one or more, one leads."""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand

from deployments.autoscaler import Autoscaler


class Command(BaseCommand):
    help = "Scale autoscaled services to their demand (one leader however many run; a standby takes over)."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="take the lead, decide once for every service, exit")

    def handle(self, *args, once, **options):
        loop = Autoscaler()
        if once:
            if not loop.lead():
                self.stderr.write("another autoscaler leads; nothing done")
                return
            try:
                decisions = loop.tick()
            finally:
                loop.resign()
            changed = sum(1 for d in decisions.values() if d.reason is not None)
            self.stdout.write(f"decided for {len(decisions)} services, {changed} changed")
            return
        stopping: list[bool] = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
        loop.run(lambda: bool(stopping))
