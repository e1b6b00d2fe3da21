"""`manage.py register_cluster --name N --region R --kubeconfig FILE [--context C]`: onboard a GPU cluster."""

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from deployments.models import DEFAULT_PRIORITY_VALUE, AccessMode, PreemptionPolicy, Region
from deployments.services import cluster_register


class Command(BaseCommand):
    help = "Onboard a Kubernetes GPU cluster from a kubeconfig: probe it, discover GPUs, run the preflight checks."
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--region", required=True, help="region code, e.g. cn-shanghai-2")
        parser.add_argument("--kubeconfig", required=True, help="path of the kubeconfig file ('-' reads stdin)")
        parser.add_argument("--context", default=None)
        parser.add_argument("--access-mode", default=AccessMode.PROXY, choices=AccessMode.values)
        parser.add_argument("--ingress-base-url", default="")
        parser.add_argument(
            "--priority-value", type=int, default=DEFAULT_PRIORITY_VALUE, help="value of the platform's PriorityClass"
        )
        parser.add_argument("--preemption", default=PreemptionPolicy.NEVER, choices=PreemptionPolicy.values)

    def handle(
        self,
        *args,
        name,
        region,
        kubeconfig,
        context,
        access_mode,
        ingress_base_url,
        priority_value,
        preemption,
        **options,
    ):
        found = Region.objects.filter(code=region).first()
        if found is None:
            known = ", ".join(Region.objects.values_list("code", flat=True)) or "none"
            raise CommandError(f"unknown region {region!r} (known: {known})")
        try:
            text = (options.get("stdin") or sys.stdin).read() if kubeconfig == "-" else Path(kubeconfig).read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {kubeconfig}: {exc.strerror}") from None
        try:
            cluster = cluster_register(
                actor=None,
                name=name,
                region=found,
                kubeconfig=text,
                context=context,
                access_mode=access_mode,
                ingress_base_url=ingress_base_url,
                priority_value=priority_value,
                priority_preemption=preemption,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            f"cluster {cluster.name} registered in {found.code}: {cluster.server_url} "
            f"({cluster.server_version}), health {cluster.health}"
        )
        for product, entry in sorted(cluster.inventory.items()):
            self.stdout.write(f"  {product}: {entry['total']} GPUs, {entry['free']} free, {entry['nodes']} node(s)")
        for check in cluster.checks:
            mark = "ok  " if check["ok"] else "FAIL"
            self.stdout.write(f"  [{mark}] {check['key']}: {check['message']}")
            if not check["ok"] and check.get("fix"):
                self.stdout.write(f"         fix: {check['fix']}")
