"""The /api/ OpenAPI schema matches the API: schemathesis drives every operation from the served schema.

The run is in process (Django's WSGI handler on the test database), bounded (few examples per operation, no
shrinking) and reproducible (a fixed seed, derandomized), so CI sees the same requests every time. It runs twice:
with an owner's ``sk-`` key that has the ``manage`` scope, so that writes reach the services, and with no
credentials at all. Any 5xx, an undocumented status code or content type, a body or a header that does not match its
schema fails the test.
"""

from __future__ import annotations

import zlib
from decimal import Decimal

import pytest
import schemathesis
import yaml
from django.core.exceptions import ValidationError
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from billing.models import EntryKind, TopUp
from billing.services.ledger import ledger_post
from catalog.models import CatalogModel
from deployments.services import local_cluster_create
from maas.urls import V1_DOCUMENT
from tenancy.services import apikey_create
from tests.factories import RegionFactory, ServiceFactory

pytestmark = pytest.mark.django_db

SEED = 20260115
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
]


def run_config(*, max_examples: int) -> SchemathesisConfig:
    """Bounded and seeded: the same requests on every run; the checks above and nothing else."""
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {
                "mode": "all",
                "max-examples": max_examples,
                "deterministic": True,
                "no-shrink": True,
                "with-security-parameters": False,
                "database": "none",
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        }
    )


HYPOTHESIS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    """Django's WSGI handler closes the connection after each request; the test transaction needs it (as Client)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def _world(org, alice, catalog):
    """A region with room to deploy, and ledger rows and a top-up to list (a null service among them)."""
    local_cluster_create(name="local", region=RegionFactory(code="cn-shanghai-2"))
    ledger_post(org=org, kind=EntryKind.ADJUSTMENT, amount=Decimal("100"), key="openapi:grant", description="grant")
    TopUp.objects.create(org=org, amount=Decimal("50.00"), currency="CNY", payment_intent_id="pi_openapi")


# The schema as served (generating it reads no table); the operations run against the same handler.
schema = schemathesis.openapi.from_wsgi(
    "/api/schema/?format=json", get_wsgi_application(), config=run_config(max_examples=15)
)


@pytest.fixture
def manage_key(org, alice):
    _key, raw = apikey_create(org=org, actor=alice, name="schemathesis", manage=True)
    return raw


@pytest.fixture
def owned_service(org, catalog):
    return ServiceFactory(org=org, name="fuzzed", catalog_model=CatalogModel.objects.get(slug="qwen2.5-7b-instruct"))


@schema.parametrize()
@HYPOTHESIS
def test_api_matches_its_schema_with_a_manage_key(case, manage_key, owned_service):
    # Half of the generated service ids (chosen by the id itself, so a run is reproducible) become the org's real
    # service, so that scale, stop, start and delete change something and answer with its body.
    generated = (case.path_parameters or {}).get("id")
    if case.path.startswith("/api/services/{id}") and isinstance(generated, str) and zlib.crc32(generated.encode()) % 2:
        case.path_parameters["id"] = str(owned_service.id)
    case.call_and_validate(headers={"Authorization": f"Bearer {manage_key}"})


@schema.parametrize()
@HYPOTHESIS
def test_api_matches_its_schema_without_credentials(case):
    case.call_and_validate()


def test_a_model_slug_keeps_its_dots(client):
    model = CatalogModel.objects.get(slug="qwen2.5-7b-instruct")
    model.full_clean()  # the field's validator is the one pattern of slugs, dots included
    model.slug = "Qwen 2.5"
    with pytest.raises(ValidationError) as caught:
        model.full_clean()
    assert list(caught.value.message_dict) == ["slug"]
    assert client.get("/api/catalog/models/qwen2.5-7b-instruct/").json()["slug"] == "qwen2.5-7b-instruct"


def test_an_unrouted_api_path_is_a_json_404(client):
    response = client.get("/api/catalog/models/Not A Slug/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_the_v1_document_is_served(client):
    response = client.get("/api/schema/v1/")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/yaml")
    served = yaml.safe_load(b"".join(response.streaming_content))
    assert served == yaml.safe_load(V1_DOCUMENT.read_text())
    assert set(served["paths"]) == {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/v1/models/{model}",
    }
