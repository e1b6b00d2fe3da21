"""The marketplace in a real browser: htmx filters update in place and land in the URL; both languages."""

import pytest
from django.core.management import call_command

from tests.browser.conftest import watch_csp

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def synced(transactional_db):
    call_command("sync_catalog", verbosity=0)


def test_filters_update_results_in_place_and_the_url(page, live_server, synced):
    page.goto(f"{live_server.url}/models/")
    assert page.locator(".model-card").count() == 12  # first page
    page.select_option("#task", "embedding")
    page.wait_for_url("**task=embedding**")
    page.wait_for_function("document.querySelectorAll('.model-card').length === 1")
    assert "BGE-M3" in page.locator("#results").inner_text()
    # the filter form itself was not re-rendered (htmx swapped only the results)
    assert page.locator("#task").input_value() == "embedding"

    page.fill("#q", "qwen")
    page.select_option("#task", "")
    page.wait_for_url("**q=qwen**")
    page.wait_for_function("[...document.querySelectorAll('.card-title')].every(e => /Qwen/.test(e.textContent))")

    page.goto(f"{live_server.url}/models/?publisher=deepseek-ai&sort=name")
    titles = page.locator(".card-title").all_inner_texts()
    assert titles == sorted(titles) and all("DeepSeek" in t for t in titles)

    page.locator(".card-link").first.click()
    page.wait_for_url("**/models/deepseek-**/")
    assert "No public API" in page.locator("main").inner_text()  # none of them has a public service here


def test_chinese_by_browser_language_and_switch_to_english(browser, live_server, synced):
    context = browser.new_context(locale="zh-CN", extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    refused = watch_csp(context)
    page = context.new_page()
    page.goto(f"{live_server.url}/models/")
    assert page.locator("h1").inner_text() == "模型广场"
    assert "个模型" in page.locator(".result-count").inner_text()
    page.select_option("#lang-select", "en")
    page.wait_for_load_state("load")
    page.wait_for_function("document.querySelector('h1').textContent === 'Model marketplace'")
    assert page.locator("html").get_attribute("lang") == "en"
    context.close()
    assert refused == []


def test_pagination_and_history(page, live_server, synced):
    page.goto(f"{live_server.url}/models/")
    page.get_by_role("link", name="Next →").click()
    page.wait_for_url("**page=2**")
    page.wait_for_function("document.querySelectorAll('.model-card').length === 2")
    page.go_back()
    page.wait_for_function("document.querySelectorAll('.model-card').length === 12")


def test_a_model_page_shows_a_snippet_only_while_its_public_api_can_be_called(page, live_server, synced):
    from catalog.models import CatalogModel
    from deployments.models import PUBLIC_NAMESPACE, ServiceStatus
    from tests.factories import OrganizationFactory, ReplicaFactory, ServiceFactory

    platform = OrganizationFactory(name="Platform", namespace=PUBLIC_NAMESPACE)
    service = ServiceFactory(
        org=platform, catalog_model=CatalogModel.objects.get(slug="qwen3-8b"), name="q8", status=ServiceStatus.STARTING
    )
    page.goto(f"{live_server.url}/models/llama-3.1-8b-instruct/")
    main = page.locator("main")
    assert main.locator("[data-public-api]").inner_text() == "No public API"
    assert main.locator("pre.code").count() == 0 and "curl" not in main.inner_text()
    assert page.get_by_role("link", name="Try in playground").count() == 0

    page.goto(f"{live_server.url}/models/qwen3-8b/")
    assert main.locator("[data-public-api]").inner_text() == "Public API starting"
    assert main.locator("pre.code").count() == 0 and "503" in main.inner_text()

    ReplicaFactory(service=service, ready=True)
    type(service).objects.filter(pk=service.pk).update(status=ServiceStatus.RUNNING)
    page.reload()
    assert main.locator("[data-public-api]").inner_text() == "Public API available"
    assert "public/qwen3-8b" in main.locator("#api-snippet").inner_text()
    assert page.get_by_role("link", name="Try in playground").count() == 1
