"""The service timeline and the deploy form in zh-Hans: stored messages, reasons, statuses and kinds translated when
shown, in the reader's language whatever language wrote them, with plurals that follow the count."""

import pytest
from django.urls import reverse
from django.utils import translation

from deployments.events import meter_set, status_set
from deployments.models import EventKind, ServiceStatus
from deployments.services import service_create, service_scale
from deployments.texts import REASONS, TIMELINE
from tests.deployments.helpers import qwen
from tests.support.text import visible_text

pytestmark = pytest.mark.django_db


def test_a_timeline_message_is_stored_once_and_read_in_each_language(org, alice, catalog, kube_cluster, region):
    with translation.override("zh-hans"):  # written during a Chinese request: still stored as a code and in English
        service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="s1", instances=2)
    created = service.events.get(reason="Created")
    assert created.message_code == "created" and created.message.startswith("2 instances of Qwen2.5-7B-Instruct on")
    with translation.override("zh-hans"):
        assert created.message_text.startswith("2 个 Qwen2.5-7B-Instruct 实例，位于 gpu-a")
        assert (created.get_kind_display(), created.status_label, created.reason_label) == (
            "状态变更",
            "等待中",
            "已创建",
        )
    with translation.override("en"):
        assert created.message_text == created.message and created.reason_label == "Created"


def test_plurals_follow_the_count(org, alice, catalog, kube_cluster, region):
    service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="s1")
    with translation.override("en"):
        assert str(TIMELINE("billable", n=1)) == "1 billable instance"
        assert str(TIMELINE("billable", n=3)) == "3 billable instances"
        assert str(TIMELINE("scaled", a=2, n=1)) == "2 → 1 instance"
    service_scale(service=service, actor=alice, instances=4)
    assert service.events.get(kind=EventKind.SCALE).message == "1 → 4 instances"


def test_an_unknown_code_falls_back_to_the_stored_english(org, alice, catalog, kube_cluster, region):
    service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="s1")
    event = service.events.get(reason="Created")
    event.message_code = "gone-in-a-later-version"
    with translation.override("zh-hans"):
        assert event.message_text == event.message


def test_every_reason_the_platform_writes_has_a_label():
    written = {"Created", "Scaled", "ScaleRequested", "StartRequested", "StopRequested", "DeleteRequested"}
    written |= {"ClusterDrained", "Overdrawn", "NoProgress", "ClusterUnreachable", "ProcessRestarted", "Unschedulable"}
    assert written <= set(REASONS)
    with translation.override("zh-hans"):
        assert all(str(label) != code for code, label in REASONS.items())


ENGLISH_TIMELINE = [
    "Status change",
    "Billable instances",
    "billable instance",
    "Pending",
    "Running",
    "Created",
    "ScaleRequested",
    "instances",
    "without progress",
    "Scaling",
]


def test_the_service_page_shows_its_timeline_in_chinese(alice_client, org, alice, catalog, kube_cluster, region):
    service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="s1")
    with translation.override("en"):  # a reconcile pass in the worker, in the worker's language
        status_set(service=service, status=ServiceStatus.RUNNING)
        meter_set(service=service, instances=1)
        service.save()
    service_scale(service=service, actor=alice, instances=3)
    service.refresh_from_db()
    status_set(
        service=service,
        status=ServiceStatus.SCALING,
        reason="NoProgress",
        message=TIMELINE("no_progress_unexplained", status=ServiceStatus.SCALING, n=16),
    )
    service.save()
    page = alice_client.get(
        reverse("deployments:service-detail", args=[service.pk]), HTTP_ACCEPT_LANGUAGE="zh-hans"
    ).content.decode()
    visible = visible_text(page)
    assert "状态变更" in visible and "计费实例数" in visible and "1 个计费实例" in visible
    assert "1 → 3 个实例" in visible and "已请求扩缩容" in visible and "已处于“扩缩容中” 16 分钟且无进展" in visible
    assert [word for word in ENGLISH_TIMELINE if word in visible] == []


def test_the_deploy_form_says_billing_mode_and_total(alice_client, catalog, kube_cluster):
    url = reverse("deployments:service-new", args=["qwen2.5-7b-instruct"])
    page = alice_client.get(url, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "计费方式" in page and "合计" in page and "总数" not in page
    assert "费用中心" not in page.split('<main id="main"')[1]  # the nav's Billing, not the form's billing mode
