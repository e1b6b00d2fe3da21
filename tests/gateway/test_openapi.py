"""The hand-written /v1 OpenAPI document (gateway/openapi.yaml) matches the running gateway.

schemathesis sends generated requests to a real gateway (uvicorn serving ``maas.asgi:application`` on the test
database) whose model is served by an engine simulator: no 5xx, and every answer, success or refusal, has a
documented status, content type, headers and body (refusals in OpenAI's error shape). Bounded and reproducible as
tests/maas/test_openapi.py: a fixed seed, derandomized, few examples per operation, no shrinking.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

import gateway

pytestmark = pytest.mark.django_db(transaction=True)

DOCUMENT = Path(gateway.__file__).parent / "openapi.yaml"
MODEL = "public/tiny-chat"
EXAMPLE = "public/qwen2.5-7b-instruct"  # the document's example model id
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
]

schema = schemathesis.openapi.from_path(
    DOCUMENT,
    config=SchemathesisConfig.from_dict(
        {
            "seed": 20260115,
            "generation": {
                "mode": "all",
                "max-examples": 15,
                "deterministic": True,
                "no-shrink": True,
                "with-security-parameters": False,
                "database": "none",
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        }
    ),
)
HYPOTHESIS = settings(
    deadline=None, derandomize=True, database=None, print_blob=False, suppress_health_check=list(HealthCheck)
)


@pytest.fixture
def simulator():
    """A fast replica with a short context, so that a generated ``max_tokens`` is refused at once, not streamed."""
    from simulator import run_simulator

    with run_simulator(served_model_names=("public/qwen-small",), ttft_ms=1, itl_ms=0, max_model_len=256) as url:
        yield url


def _served(model_id: object) -> object:
    """The document's example id, and half of the generated ones (chosen by the id itself, so that a run is
    reproducible), become the served model: valid requests reach the replica and come back as completions, streams
    and embeddings; the other ids are unknown models."""
    if model_id == EXAMPLE or (isinstance(model_id, str) and zlib.crc32(model_id.encode()) % 2):
        return MODEL
    return model_id


def _aim_at_the_real_model(case) -> None:
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = _served(case.body["model"])
    if "model" in (case.path_parameters or {}):
        case.path_parameters["model"] = _served(case.path_parameters["model"])


@schema.parametrize()
@HYPOTHESIS
def test_v1_matches_its_document_with_a_key(case, gateway_url, api_key, public_model):
    _aim_at_the_real_model(case)
    case.call_and_validate(base_url=gateway_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)


@schema.parametrize()
@HYPOTHESIS
def test_v1_matches_its_document_without_a_key(case, gateway_url):
    case.call_and_validate(base_url=gateway_url, timeout=10)
