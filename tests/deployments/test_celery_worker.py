"""A real Celery worker (subprocess) picks up the reconcile enqueued on commit and brings a service to Running."""

import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings

from deployments.drivers import local
from deployments.models import Replica, Service, ServiceStatus
from deployments.services import service_create
from tests.deployments.helpers import meters, qwen
from tests.support.servers import subprocess_database_url

# The worker and this test talk over their own Redis database so no other worker on the machine takes the tasks.
TEST_REDIS_DB = 11


@pytest.fixture
def celery_broker():
    from maas.celery import app

    base = settings.REDIS_URL.rsplit("/", 1)[0] if settings.REDIS_URL.count("/") > 2 else settings.REDIS_URL
    url = f"{base}/{TEST_REDIS_DB}"
    saved = app.conf.broker_url
    _reset_pools(app)
    app.conf.broker_url = url
    yield url
    _reset_pools(app)
    app.conf.broker_url = saved


def _reset_pools(app):
    # kombu keeps producer pools in a process-wide registry keyed by connection; closing them without clearing
    # that registry leaves later tests a closed pool ("Acquire on closed pool").
    import kombu.pools

    app.pool.force_close_all()
    kombu.pools.reset()
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def worker(celery_broker, transactional_db):
    env = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "REDIS_URL": celery_broker,
        "DJANGO_SETTINGS_MODULE": "maas.settings_test",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "maas",
            "worker",
            "--pool",
            "solo",
            "-l",
            "WARNING",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ],
        env=env,
        cwd=str(settings.BASE_DIR),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.slow
def test_worker_converges_an_enqueued_reconcile(worker, org, alice, catalog, local_cluster, region):
    service = service_create(
        org=org, actor=alice, catalog_model=qwen("qwen2-0.5b-instruct"), region=region, name="via-worker"
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            service.refresh_from_db()
            if service.status == ServiceStatus.RUNNING or worker.poll() is not None:
                break
            time.sleep(0.3)
        assert worker.poll() is None, worker.stdout.read().decode()[-2000:]
        assert service.status == ServiceStatus.RUNNING, service.status
        assert Replica.objects.get(service=service).ready
        assert meters(service) == [1]
    finally:
        local.stop_all(Service.objects.get(pk=service.pk))
