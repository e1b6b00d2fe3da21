"""A Chinese console in an English browser (as the issue's tester had it): the timeline, the ledger, its date filters
and the account page's time zone, read as the browser shows them."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import Client

from billing import services as billing
from billing.models import EntryKind
from catalog.models import CatalogModel
from deployments.events import event_record, meter_set, status_set
from deployments.models import EventKind, Service, ServiceStatus
from deployments.texts import TIMELINE
from tests.billing.conftest import make_usage
from tests.factories import ServiceFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
ENGLISH = ["Status change", "Billable instances", "billable instance", "Running", "Scaling", "Created", "Token usage"]


def _sign_in_in_chinese(page, url: str, user) -> None:
    client = Client()
    client.force_login(user)
    page.context.add_cookies(
        [
            {"name": "sessionid", "value": client.cookies["sessionid"].value, "url": url},
            {"name": settings.LANGUAGE_COOKIE_NAME, "value": "zh-hans", "url": url},
        ]
    )


def test_timeline_ledger_and_dates_in_chinese_in_an_english_browser(page, live_server, alice, org, catalog):
    model = CatalogModel.objects.get(slug="qwen2.5-7b-instruct")
    service = ServiceFactory(org=org, name="tz", catalog_model=model, status=ServiceStatus.PENDING)
    service = Service.objects.get(pk=service.pk)
    event_record(
        service=service,
        kind=EventKind.STATUS,
        status="Pending",
        reason="Created",
        message=TIMELINE("created", n=1, model=model.name, cluster="gpu-a", gpus=1, product="H100"),
    )
    status_set(service=service, status=ServiceStatus.RUNNING)
    meter_set(service=service, instances=2)
    service.save()
    billing.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("100"), key="topup")
    make_usage(org, model)
    billing.usage_charge_pending()
    _sign_in_in_chinese(page, live_server.url, alice)

    page.goto(f"{live_server.url}/services/{service.pk}/")
    timeline = page.locator("#service-events").inner_text()
    assert "状态变更" in timeline and "2 个计费实例" in timeline and "已创建" in timeline and "运行中" in timeline
    assert [word for word in ENGLISH if word in timeline] == []

    page.goto(f"{live_server.url}/billing/ledger/")
    assert "Token 用量：1 次请求" in page.locator("#ledger-table").inner_text()
    start = page.locator("input[name=start]")
    assert start.get_attribute("type") == "text" and start.get_attribute("placeholder") == "年-月-日"
    start.fill("2026-01-01")
    assert start.input_value() == "2026-01-01"


def test_the_time_zone_chosen_on_the_account_page_changes_the_times_shown(page, live_server, alice, org, catalog):
    service = ServiceFactory(org=org, name="tz")
    event = event_record(service=service, kind=EventKind.STATUS, status="Running")
    event.created_at = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)
    event.save(update_fields=["created_at"])
    _sign_in_in_chinese(page, live_server.url, alice)

    page.goto(f"{live_server.url}/services/{service.pk}/")
    assert "2026-03-01 20:30:05" in page.locator("#service-events").inner_text()  # Asia/Shanghai, the default
    page.goto(f"{live_server.url}/account/")
    assert page.locator("select[name=time_zone] option:checked").inner_text() == "平台默认（Asia/Shanghai）"
    page.select_option("select[name=time_zone]", "Europe/London")
    page.get_by_role("button", name="保存").click()
    page.wait_for_url(f"{live_server.url}/account/")
    assert "设置已保存" in page.locator(".messages").inner_text()
    page.goto(f"{live_server.url}/services/{service.pk}/")
    assert "2026-03-01 12:30:05" in page.locator("#service-events").inner_text()  # GMT
