"""The /api/services management API: sk- keys and sessions, tenant scoping, actions, OpenAPI schema."""

import pytest

from deployments.models import Service, ServiceStatus
from tenancy.services import apikey_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(org, alice):
    from rest_framework.test import APIClient

    _key, raw = apikey_create(org=org, actor=alice, name="ci", manage=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def rival_api(other_org, charlie):
    from rest_framework.test import APIClient

    _key, raw = apikey_create(org=other_org, actor=charlie, name="rival", manage=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def create(client, **extra):
    body = {"name": "api-qwen", "model": "qwen2.5-7b-instruct", "region": "cn-shanghai-2", "instances": 2, **extra}
    return client.post("/api/services/", body, format="json")


def test_create_list_retrieve_with_an_sk_key(api, org, catalog, kube_cluster):
    response = create(api)
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["model_id"], body["instances"], body["status"], body["hourly_price"]) == (
        "acme/api-qwen",
        2,
        "Pending",
        "3.520000",
    )
    listing = api.get("/api/services/").json()
    assert [s["name"] for s in listing["results"]] == ["api-qwen"]
    assert api.get(f"/api/services/{body['id']}/").json()["model"] == "qwen2.5-7b-instruct"


def test_scale_stop_start_delete(api, catalog, kube_cluster):
    sid = create(api).json()["id"]
    assert api.post(f"/api/services/{sid}/scale/", {"instances": 3}, format="json").json()["instances"] == 3
    assert api.post(f"/api/services/{sid}/stop/").json()["running"] is False
    assert api.post(f"/api/services/{sid}/start/").json()["running"] is True
    deleted = api.delete(f"/api/services/{sid}/")
    assert deleted.status_code == 202 and deleted.json()["status"] == "Deleting"
    assert api.post(f"/api/services/{sid}/scale/", {"instances": 1}, format="json").status_code == 409


def test_bad_requests_are_precise(api, catalog, kube_cluster):
    assert create(api, model="no-such-model").json() == {
        "detail": "unknown model 'no-such-model'",
        "code": "invalid",
        "field": "model",
    }
    assert create(api, region="mars-1").json()["field"] == "region"
    # A malformed or blank field is refused by the serializer, in DRF's field map, the same way every time.
    assert create(api, name="Bad_Name").json() == {
        "name": [
            "Lowercase letters, digits and hyphens; start with a letter, end with a letter or digit; "
            "at most 40 characters."
        ]
    }
    assert create(api, name="").json() == create(api, name="  ").json() == {"name": ["This field may not be blank."]}
    assert list(create(api, model="").json()) == list(create(api, model="Qwen 2.5").json()) == ["model"]
    assert create(api, instances=0).status_code == 400
    big = create(api, instances=20)
    assert big.status_code == 400 and big.json()["code"] == "no_capacity"
    create(api)
    assert create(api).json()["code"] == "duplicate"
    assert Service.objects.count() == 1


def test_another_orgs_service_is_a_404(api, rival_api, charlie_client, catalog, kube_cluster):
    sid = create(api).json()["id"]
    assert rival_api.get(f"/api/services/{sid}/").status_code == 404
    assert rival_api.post(f"/api/services/{sid}/stop/").status_code == 404
    assert rival_api.delete(f"/api/services/{sid}/").status_code == 404
    assert rival_api.get("/api/services/").json()["results"] == []
    assert charlie_client.get(f"/api/services/{sid}/").status_code == 404  # session auth, outsider
    assert Service.objects.get(pk=sid).status == ServiceStatus.PENDING


def test_session_auth_and_anonymous(alice_client, client, catalog, kube_cluster):
    response = alice_client.post(
        "/api/services/",
        {"name": "sess", "model": "qwen2.5-7b-instruct", "region": "cn-shanghai-2"},
        content_type="application/json",
    )
    assert response.status_code == 201
    assert client.get("/api/services/").status_code in (401, 403)


def test_list_query_count_is_pinned(api, org, catalog, kube_cluster, django_assert_max_num_queries):
    for i in range(5):
        create(api, name=f"s{i}", instances=1)
    with django_assert_max_num_queries(6):
        assert len(api.get("/api/services/").json()["results"]) == 5


def test_services_are_in_the_openapi_schema(client):
    schema = client.get("/api/schema/").content.decode()
    for path in (
        "/api/services/",
        "/api/services/{id}/scale/",
        "/api/services/{id}/stop/",
        "/api/services/{id}/start/",
    ):
        assert path in schema
