"""Deploy form with the live price, service pages and actions, tenant walls, query counts on list pages."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from billing.models import BillingAccount
from billing.services import ledger_adjust
from deployments.models import EventKind, Service, ServiceStatus
from deployments.services import service_create
from tests.deployments.helpers import H100, meters, qwen

pytestmark = pytest.mark.django_db
NEW = reverse("deployments:service-new", args=["qwen2.5-7b-instruct"])
PRICE = reverse("deployments:service-price", args=["qwen2.5-7b-instruct"])


def test_model_page_shows_deploy_and_nav_shows_services(alice_client, catalog):
    page = alice_client.get(reverse("catalog:model-detail", args=["qwen2.5-7b-instruct"])).content.decode()
    assert f'href="{NEW}"' in page
    assert f'href="{reverse("deployments:services")}"' in page


def test_deploy_form_lists_fitting_regions_and_the_price(alice_client, catalog, kube_cluster):
    response = alice_client.get(NEW)
    assert response.status_code == 200
    assert response.context["form"].fields["region"].choices == [("cn-shanghai-2", "Shanghai 2 · cn-shanghai-2")]
    html = response.content.decode()
    assert "¥3.52" in html and H100 in html  # 1× H100 at the default 3.52 per GPU-hour


def test_live_price_fragment_follows_the_instance_count(alice_client, catalog, kube_cluster):
    response = alice_client.get(
        PRICE, {"region": "cn-shanghai-2", "instances": "3", "billing_mode": "payg"}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert "<html" not in html and "¥10.56" in html  # 3 × 3.52
    monthly = alice_client.get(
        PRICE, {"region": "cn-shanghai-2", "instances": "2", "billing_mode": "subscription"}
    ).content.decode()
    assert "¥3,548.16" in monthly  # 2 × 3.52 × 720 × 0.7
    nothing = alice_client.get(PRICE, {"region": "cn-shanghai-2", "instances": "abc"}).content.decode()
    assert "Pick a region" in nothing


def test_deploy_creates_the_service_and_redirects(alice_client, alice, org, catalog, kube_cluster):
    ledger_adjust(org=org, amount=Decimal("1000"), reason="test funds", actor=None)  # 142 hours of 2 × 3.52
    response = alice_client.post(
        NEW, {"name": "my-qwen", "region": "cn-shanghai-2", "instances": "2", "billing_mode": "payg"}
    )
    service = Service.objects.get(org=org, name="my-qwen")
    assert response.status_code == 302 and response.url == reverse("deployments:service-detail", args=[service.pk])
    assert (service.model_id, service.instances, service.status, service.cluster) == (
        "acme/my-qwen",
        2,
        "Pending",
        kube_cluster,
    )
    assert service.hourly_price == Decimal("3.52") and service.created_by == alice
    page = alice_client.get(response.url).content.decode()
    assert "acme/my-qwen" in page and "Pending" in page


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "My_Qwen"}, "Lowercase letters"),
        ({"instances": "0"}, "Enter a whole number of instances from 1 to 32."),
        ({"region": "mars-1"}, "Select a valid choice"),
    ],
)
def test_deploy_form_rejects_bad_input(alice_client, catalog, kube_cluster, data, message):
    payload = {"name": "ok-name", "region": "cn-shanghai-2", "instances": "1", "billing_mode": "payg", **data}
    response = alice_client.post(NEW, payload)
    assert response.status_code == 200 and message in response.content.decode()
    assert not Service.objects.exists()


def test_duplicate_name_and_no_capacity_are_form_errors(alice_client, org, alice, catalog, kube_cluster, region):
    service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="taken")
    ledger_adjust(org=org, amount=Decimal("10000"), reason="test funds", actor=None)
    dup = alice_client.post(NEW, {"name": "taken", "region": "cn-shanghai-2", "instances": "1", "billing_mode": "payg"})
    assert "already has a service named" in dup.content.decode()
    big = alice_client.post(NEW, {"name": "big", "region": "cn-shanghai-2", "instances": "20", "billing_mode": "payg"})
    assert "no variant of Qwen2.5-7B-Instruct fits cn-shanghai-2" in big.content.decode()
    assert Service.objects.count() == 1


def test_scale_preview_shows_the_new_hourly_price_and_the_difference(
    alice_client, org, alice, catalog, kube_cluster, region
):
    service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="s1")
    url = reverse("deployments:service-scale", args=[service.pk])
    preview = alice_client.get(url, {"instances": "4"}, HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in preview
    assert "¥14.08 / hour" in preview and "+¥10.56 / hour" in preview  # 4 × 3.52, and 3 more than now
    down = alice_client.get(url, {"instances": "1", "confirmed": "False"}, HTTP_HX_REQUEST="true").content.decode()
    assert "¥3.52 / hour" in down


def test_apply_asks_for_confirmation_with_the_price_before_scaling(
    alice_client, org, alice, catalog, kube_cluster, region
):
    service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="s1")
    url = reverse("deployments:service-scale", args=[service.pk])
    confirm = alice_client.post(url, {"instances": "4"})
    html = confirm.content.decode()
    assert confirm.status_code == 200 and "<html" in html
    assert "¥14.08 / hour" in html and "+¥10.56 / hour" in html and 'name="confirmed" value="1"' in html
    service.refresh_from_db()
    assert service.instances == 1 and service.generation == 1  # nothing changed yet
    alice_client.post(url, {"instances": "4", "confirmed": "1"})
    service.refresh_from_db()
    assert service.instances == 4 and service.generation == 2
    assert service.events.filter(kind=EventKind.SCALE, message="1 → 4 instances").exists()


@pytest.mark.parametrize("count", ["0", "50", "two", ""])
def test_an_invalid_count_is_shown_in_the_service_page_with_the_allowed_range(
    alice_client, org, alice, catalog, kube_cluster, region, count
):
    service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="s1")
    url = reverse("deployments:service-scale", args=[service.pk])
    for data in ({"instances": count}, {"instances": count, "confirmed": "1"}):
        response = alice_client.post(url, data)
        html = response.content.decode()
        assert response.status_code == 200 and "<html" in html and 'id="service-status"' in html
        assert "Enter a whole number of instances from 1 to 32." in html
    fragment = alice_client.get(url, {"instances": count}, HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment and "from 1 to 32" in fragment
    service.refresh_from_db()
    assert service.instances == 1 and service.generation == 1


def test_a_subscription_service_previews_the_month_and_what_is_charged_now(
    alice_client, org, alice, catalog, kube_cluster, region
):
    ledger_adjust(org=org, amount=Decimal("10000"), reason="test funds", actor=None)
    service = service_create(
        org=org, actor=alice, catalog_model=qwen(), region=region, name="s1", billing_mode="subscription"
    )
    url = reverse("deployments:service-scale", args=[service.pk])
    # Frozen: the prorated addition is shown and charged at the same second.
    with time_machine.travel(timezone.now() + timedelta(days=3), tick=False):
        _preview_confirm_and_charge(alice_client, org, url)


def _preview_confirm_and_charge(alice_client, org, url):
    preview = alice_client.get(url, {"instances": "2"}, HTTP_HX_REQUEST="true").content.decode()
    assert "¥3,548.16 / month" in preview and "+¥1,774.08 / month" in preview  # 2 × 3.52 × 720 × 0.7
    assert "is charged when you confirm" in preview
    confirm = alice_client.post(url, {"instances": "2"}).content.decode()
    due = re.search(r"Charged now</dt><dd>(¥[\d,.]+)", confirm)
    assert due is not None
    balance = BillingAccount.objects.get(org=org).balance
    alice_client.post(url, {"instances": "2", "confirmed": "1"})
    charged = balance - BillingAccount.objects.get(org=org).balance
    assert due.group(1) == f"¥{charged:,.2f}" and charged > 0  # what was shown is what was charged


@pytest.mark.parametrize(
    "balance, says",
    [
        ("0", "does not pay for any running time of this service"),
        ("50", "pays for about 14 hours of this service, less than 24 hours"),  # 50 / 3.52
    ],
)
def test_a_deploy_the_balance_pays_for_less_than_a_day_is_warned_and_confirmed(
    alice_client, org, catalog, kube_cluster, balance, says
):
    if balance != "0":
        ledger_adjust(org=org, amount=Decimal(balance), reason="test funds", actor=None)
    data = {"region": "cn-shanghai-2", "instances": "1", "billing_mode": "payg"}
    live = alice_client.get(PRICE, data, HTTP_HX_REQUEST="true").content.decode()
    assert says in live and "grace period of 24 hours" in live  # before submitting
    asked = alice_client.post(NEW, {"name": "low", **data}).content.decode()
    assert says in asked and "Deploy anyway" in asked and 'name="confirmed" value="1"' in asked
    assert not Service.objects.exists()
    response = alice_client.post(NEW, {"name": "low", **data, "confirmed": "1"})
    assert response.status_code == 302 and Service.objects.filter(org=org, name="low").exists()


def test_a_deploy_the_balance_pays_for_a_day_is_not_warned(alice_client, org, catalog, kube_cluster):
    ledger_adjust(org=org, amount=Decimal("84.48"), reason="test funds", actor=None)  # 24 × 3.52
    data = {"region": "cn-shanghai-2", "instances": "1", "billing_mode": "payg"}
    assert "balance-warning" not in alice_client.get(PRICE, data, HTTP_HX_REQUEST="true").content.decode()
    assert "balance-warning" in alice_client.get(PRICE, {**data, "instances": "2"}).content.decode()
    response = alice_client.post(NEW, {"name": "ok", **data})
    assert response.status_code == 302


def test_the_scale_confirmation_warns_when_the_balance_runs_out_soon(
    alice_client, org, alice, catalog, kube_cluster, region
):
    service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="s1")
    url = reverse("deployments:service-scale", args=[service.pk])
    html = alice_client.post(url, {"instances": "2"}).content.decode()
    assert "does not pay for any running time" in html and "pay-as-you-go services are stopped" in html


def test_stop_start_delete_from_the_console(alice_client, org, alice, catalog, kube_cluster, region):
    service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="s1")
    alice_client.post(reverse("deployments:service-stop", args=[service.pk]))
    service.refresh_from_db()
    assert (service.desired_running, service.status) == (False, ServiceStatus.STOPPING)
    alice_client.post(reverse("deployments:service-start", args=[service.pk]))
    service.refresh_from_db()
    assert (service.desired_running, service.status) == (True, ServiceStatus.PENDING)
    response = alice_client.post(reverse("deployments:service-delete", args=[service.pk]))
    service.refresh_from_db()
    assert response.url == reverse("deployments:services") and service.status == ServiceStatus.DELETING


def test_tenant_walls_in_the_console(
    alice_client, bob_client, charlie_client, org, alice, catalog, kube_cluster, region
):
    service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="private")
    detail = reverse("deployments:service-detail", args=[service.pk])
    assert bob_client.get(detail).status_code == 200  # a member sees the org's services
    assert charlie_client.get(detail).status_code == 404
    for name in ("service-stop", "service-start", "service-delete", "service-scale"):
        response = charlie_client.post(reverse(f"deployments:{name}", args=[service.pk]), {"instances": "2"})
        assert response.status_code == 404
    assert "private" not in charlie_client.get(reverse("deployments:services")).content.decode()
    service.refresh_from_db()
    assert service.status == ServiceStatus.PENDING and service.instances == 1


def test_services_list_query_count_is_pinned(
    alice_client, org, alice, catalog, kube_cluster, region, django_assert_max_num_queries
):
    for i in range(6):
        service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name=f"svc-{i}")
    with django_assert_max_num_queries(9):
        response = alice_client.get(reverse("deployments:services"))
    assert response.content.decode().count("acme/svc-") == 6


def test_clusters_list_query_count_is_pinned(admin_client, kube_cluster, django_assert_max_num_queries):
    with django_assert_max_num_queries(8):
        assert admin_client.get(reverse("deployments:clusters")).status_code == 200


def test_drain_stops_services_and_writes_meter_zero(admin_client, org, alice, catalog, kube_cluster, region):
    service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="s1")
    Service.objects.filter(pk=service.pk).update(billed_instances=1)
    admin_client.post(reverse("deployments:cluster-action", args=[kube_cluster.pk, "drain"]))
    service.refresh_from_db()
    kube_cluster.refresh_from_db()
    assert kube_cluster.cordoned and not service.desired_running and service.status_reason == "ClusterDrained"
    assert meters(service) == [0]


def test_status_and_events_panels_refresh_as_fragments(alice_client, org, alice, catalog, kube_cluster, region):
    service = service_create(org=org, actor=alice, catalog_model=qwen(), region=region, name="s2")
    url = reverse("deployments:service-detail", args=[service.pk])
    events = alice_client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="service-events").content.decode()
    assert "<html" not in events and "Created" in events and "Scale" not in events
    alice_client.post(reverse("deployments:service-stop", args=[service.pk]))
    events = alice_client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="service-events").content.decode()
    assert "StopRequested" in events
    status = alice_client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="service-status").content.decode()
    assert "<html" not in status and "Stopping" in status
