"""The driver protocol: one place picks a cluster's driver; driver errors carry a timeline reason and retryability."""

import io

import pytest
from django.core.management import call_command

from deployments.drivers import ClusterUnavailable, DriverError, driver_for
from deployments.drivers.kube import KubeError
from deployments.drivers.kube.driver import KubeDriver
from deployments.drivers.local.driver import LocalDriver


@pytest.mark.django_db
def test_each_cluster_gets_the_driver_its_kind_names(kube_cluster, local_cluster):
    assert isinstance(driver_for(kube_cluster), KubeDriver) and driver_for(kube_cluster).has_kubeconfig
    assert isinstance(driver_for(local_cluster), LocalDriver) and not driver_for(local_cluster).has_kubeconfig
    assert driver_for(local_cluster).replica_access(local_cluster) == ({}, True, None)


def test_kube_errors_are_driver_errors_with_a_timeline_reason():
    error = KubeError("unauthorized", "the API server rejected the credentials")
    assert isinstance(error, DriverError) and not error.retryable
    assert (error.reason, error.message, str(error)) == (
        "ClusterUnauthorized",
        "the API server rejected the credentials",
        "the API server rejected the credentials",
    )
    assert (
        KubeError("server_error", "boom").retryable and KubeError("server_error", "boom").reason == "ClusterServerError"
    )
    unavailable = ClusterUnavailable("NoCluster", "the service has no cluster")
    assert (unavailable.reason, unavailable.retryable) == ("NoCluster", False)


@pytest.mark.django_db
def test_the_event_kind_migration_changes_no_table():
    out = io.StringIO()
    call_command("sqlmigrate", "deployments", "0003", stdout=out)
    statements = [line for line in out.getvalue().splitlines() if line.strip() and not line.startswith("--")]
    assert statements == ["BEGIN;", "COMMIT;"] and "(no-op)" in out.getvalue()
