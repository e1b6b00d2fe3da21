"""Marketplace pages: search, filters, sort and paging (full page and htmx fragment), detail, both languages."""

import pytest
from django.urls import reverse

MARKET = reverse("catalog:marketplace")


def slugs_in(response) -> list[str]:
    return [m.slug for m in response.context["page"].object_list]


@pytest.mark.django_db
def test_marketplace_lists_cards_with_prices_and_context(client, catalog, django_assert_max_num_queries):
    with django_assert_max_num_queries(5):  # the page's public API states are one query, however many cards
        response = client.get(MARKET)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Qwen2.5 7B Instruct" in html
    assert "¥0.0005" in html and "¥0.001" in html  # input / output per 1K tokens
    assert "128K" in html  # DeepSeek context length label
    assert response.context["page"].paginator.count >= 12


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params, must_have, must_not_have",
    [
        ({"task": "embedding"}, ["bge-m3"], ["qwen2.5-7b-instruct"]),
        ({"task": "vision"}, ["qwen2.5-vl-7b-instruct"], ["bge-m3"]),
        ({"publisher": "deepseek-ai"}, ["deepseek-v3", "deepseek-r1"], ["qwen3-8b"]),
        ({"size": "xlarge"}, ["deepseek-v3", "deepseek-r1"], ["qwen2.5-72b-instruct-awq"]),
        ({"size": "large"}, ["qwen2.5-72b-instruct-awq"], ["deepseek-v3", "qwen3-8b"]),
        ({"q": "llama"}, ["llama-3.1-8b-instruct"], ["qwen3-8b"]),
        ({"q": "向量"}, ["bge-m3"], ["deepseek-v3"]),  # Chinese description search
        ({"task": "reasoning", "publisher": "Qwen"}, ["qwen3-8b", "qwen3-32b"], ["deepseek-r1"]),
    ],
)
def test_filters(client, catalog, params, must_have, must_not_have):
    found = slugs_in(client.get(MARKET, params))
    assert set(must_have) <= set(found), found
    assert not set(must_not_have) & set(found)


@pytest.mark.django_db
def test_sort_by_price_and_context(client, catalog):
    by_price = client.get(MARKET, {"sort": "price"}).context["page"].object_list
    prices = [m.input_price_per_1k for m in by_price]
    assert prices == sorted(prices)
    by_context = slugs_in(client.get(MARKET, {"sort": "context"}))
    assert by_context[0] in {
        "deepseek-v3",
        "deepseek-r1",
        "deepseek-r1-distill-qwen-32b",
        "glm-4-9b-chat",
        "llama-3.1-8b-instruct",
    }


@pytest.mark.django_db
def test_htmx_request_gets_only_the_results_fragment(client, catalog):
    response = client.get(MARKET, {"task": "embedding"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert "<html" not in html and 'id="filters"' not in html
    assert "BGE-M3" in html and "Qwen2.5 7B" not in html


@pytest.mark.django_db
def test_pagination_keeps_filters_in_links(client, catalog):
    first = client.get(MARKET)
    assert first.context["page"].has_next()
    second = client.get(MARKET, {"page": 2})
    assert set(slugs_in(first)).isdisjoint(slugs_in(second))
    filtered = client.get(MARKET, {"publisher": "Qwen", "page": 1})
    assert filtered.context["page"].paginator.count > 0
    html = client.get(MARKET, {"sort": "name"}).content.decode()
    assert "?sort=name&page=2" in html


@pytest.mark.django_db
def test_garbage_params_are_ignored_not_errors(client, catalog):
    response = client.get(MARKET, {"task": "<script>", "size": "huge", "sort": "drop table", "page": "zzz"})
    assert response.status_code == 200
    assert response.context["query"].task == "" and response.context["query"].sort == "updated"


@pytest.mark.django_db
def test_detail_page_shows_specs_variants_and_public_id(client, catalog):
    response = client.get(reverse("catalog:model-detail", args=["deepseek-v3"]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "not offered as a public API" in html and "public/deepseek-v3" not in html  # no public service here
    assert "16 × 80 GB" in html  # multi-node variant
    assert "deepseek-ai/DeepSeek-V3" in html
    assert client.get(reverse("catalog:model-detail", args=["no-such-model"])).status_code == 404


@pytest.mark.django_db
def test_chinese_console(client, catalog):
    response = client.get(MARKET, HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9")
    html = response.content.decode()
    assert 'lang="zh-hans"' in html
    assert "模型广场" in html
    assert "智源 BGE-M3" in html  # descriptions follow the language
    english = client.get(MARKET, HTTP_ACCEPT_LANGUAGE="en-US").content.decode()
    assert "Model marketplace" in english and "模型广场" not in english


@pytest.mark.django_db
def test_language_switch_is_remembered(client, catalog):
    response = client.post(reverse("set_language"), {"language": "zh-hans", "next": MARKET})
    assert response.status_code == 302
    assert "模型广场" in client.get(MARKET, HTTP_ACCEPT_LANGUAGE="en").content.decode()


@pytest.mark.django_db
def test_unbuilt_features_are_not_linked_for_visitors(client, catalog):
    html = client.get(MARKET).content.decode()
    assert reverse("apikeys") not in html  # needs login


@pytest.mark.django_db
def test_catalog_api_list_filter_and_detail(client, catalog):
    data = client.get("/api/catalog/models/", {"task": "embedding"}).json()
    assert [m["slug"] for m in data["results"]] == ["bge-m3"]
    detail = client.get("/api/catalog/models/qwen2.5-7b-instruct/").json()
    assert detail["public_model_id"] == "public/qwen2.5-7b-instruct"
    assert detail["input_price_per_1k"] == "0.000500"
    assert detail["variants"][0]["runtime"] == "vllm"
    assert client.get("/api/catalog/models/nope/").status_code == 404


@pytest.mark.django_db
def test_openapi_schema_and_docs(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/catalog/models/" in schema.content
    assert client.get("/api/docs/").status_code == 200


@pytest.mark.django_db
def test_api_routes_answer_with_and_without_trailing_slash(client, catalog):
    assert client.get("/api/catalog/models").status_code == 200
    assert client.get("/api/catalog/models/bge-m3").status_code == 200


@pytest.fixture
def public_services(catalog):
    """Public services of the shipped catalog: qwen3-8b serving, qwen2.5-7b-instruct starting, bge-m3 serving,
    deepseek-v3 stopped; every other model has none."""
    from catalog.models import CatalogModel
    from deployments.models import PUBLIC_NAMESPACE, ServiceStatus
    from tests.factories import OrganizationFactory, ReplicaFactory, ServiceFactory

    platform = OrganizationFactory(name="Platform", namespace=PUBLIC_NAMESPACE)

    def service(slug, status, ready):
        svc = ServiceFactory(org=platform, catalog_model=CatalogModel.objects.get(slug=slug), name=slug, status=status)
        ReplicaFactory(service=svc, ready=ready)

    service("qwen3-8b", ServiceStatus.RUNNING, True)
    service("bge-m3", ServiceStatus.RUNNING, True)
    service("qwen2.5-7b-instruct", ServiceStatus.STARTING, False)
    service("deepseek-v3", ServiceStatus.STOPPED, False)


def _detail(client, slug):
    response = client.get(reverse("catalog:model-detail", args=[slug]))
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.django_db
def test_model_pages_say_truthfully_whether_the_public_api_can_be_called(client, public_services):
    serving = _detail(client, "qwen3-8b")
    assert 'data-public-api="available"' in serving and "Public API available" in serving
    assert 'id="api-snippet"' in serving and "/v1/chat/completions" in serving
    assert "?model=public/qwen3-8b" in serving.replace("%2F", "/")  # Try in playground

    starting = _detail(client, "qwen2.5-7b-instruct")
    assert 'data-public-api="starting"' in starting and "503" in starting and "Retry-After" in starting
    assert 'id="api-snippet"' not in starting and "curl" not in starting and "Try in playground" not in starting

    for slug in ("deepseek-v3", "llama-3.1-8b-instruct"):  # stopped, and never deployed publicly
        html = _detail(client, slug)
        assert 'data-public-api="not-offered"' in html and "not offered as a public API" in html
        assert "curl" not in html and "Try in playground" not in html and "Deploy" in html


@pytest.mark.django_db
def test_an_embedding_models_snippet_calls_the_embeddings_endpoint_and_offers_no_chat(client, public_services):
    html = _detail(client, "bge-m3")
    assert 'data-public-api="available"' in html and "/v1/embeddings" in html and '"input"' in html
    assert "/v1/chat/completions" not in html and "Try in playground" not in html


@pytest.mark.django_db
def test_marketplace_cards_show_each_models_public_api_state(client, public_services):
    states, html = {}, ""
    for page in (1, 2):
        response = client.get(MARKET, {"sort": "name", "page": page})
        states.update({m.slug: m.public_api for m in response.context["page"].object_list})
        html += response.content.decode()
    assert states["qwen3-8b"] == "available" and states["bge-m3"] == "available"
    assert states["qwen2.5-7b-instruct"] == "starting" and states["deepseek-v3"] == "not-offered"
    assert sum(1 for state in states.values() if state == "not-offered") == 14 - 3
    assert html.count('data-public-api="') == 14
    assert "Public API available" in html and "Public API starting" in html and "No public API" in html


@pytest.mark.django_db
def test_a_model_at_zero_instances_wakes_on_its_first_request_and_keeps_its_snippet(client, public_services):
    from catalog.models import CatalogModel
    from deployments.models import PUBLIC_NAMESPACE, ScalingMode, ServiceStatus
    from tenancy.models import Organization
    from tests.factories import ServiceFactory

    ServiceFactory(
        org=Organization.objects.get(namespace=PUBLIC_NAMESPACE),
        catalog_model=CatalogModel.objects.get(slug="qwen3-32b"),
        name="qwen3-32b",
        status=ServiceStatus.IDLE,
        scaling_mode=ScalingMode.AUTOSCALE,
        min_instances=0,
        instances=0,
    )
    html = _detail(client, "qwen3-32b")
    assert 'data-public-api="idle"' in html and "Public API wakes on first request" in html
    assert "data-wakes-on-request" in html and "it wakes on the first request" in html
    assert 'id="api-snippet"' in html and "/v1/chat/completions" in html
    assert "?model=public/qwen3-32b" in html.replace("%2F", "/")  # Try in playground: the request wakes it
    response = client.get(MARKET, {"q": "qwen3-32b"})
    assert 'data-public-api="idle"' in response.content.decode()
