"""The console on a phone (390×844): the header stays one line with a menu button that opens the navigation, and the
playground's "View code" dialog keeps its long lines inside the screen (they scroll in their box)."""

import pytest

from tests.browser.conftest import watch_csp
from tests.browser.test_console_browser import _sign_in
from tests.playground.conftest import PUBLIC_SLUG, make_service

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def phone(browser):
    context = browser.new_context(locale="en-US", viewport=PHONE, is_mobile=True, has_touch=True)
    refused = watch_csp(context)
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()
    assert refused == []


def _page_fits(page) -> bool:
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


def test_header_is_one_line_with_a_menu_that_opens(phone, live_server, alice, org):
    _sign_in(phone, live_server.url, alice)
    phone.goto(f"{live_server.url}/billing/")
    header = phone.locator("header.topbar")
    toggle = header.get_by_role("button", name="Menu")
    assert toggle.is_visible() and toggle.get_attribute("aria-expanded") == "false"
    # One line: the brand and the button, the navigation folded away.
    assert header.bounding_box()["height"] <= 64
    usage = header.get_by_role("link", name="Usage")
    assert not usage.is_visible()
    assert _page_fits(phone)

    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "true"
    assert usage.is_visible() and header.locator("#org-select").is_visible()
    assert _page_fits(phone)
    with phone.expect_navigation():
        usage.click()
    assert phone.url.endswith("/billing/usage/")
    # A new page starts folded again, and the button closes what it opened.
    toggle = phone.locator("header.topbar").get_by_role("button", name="Menu")
    assert toggle.get_attribute("aria-expanded") == "false"
    toggle.click()
    toggle.click()
    assert not phone.locator("header.topbar").get_by_role("link", name="Billing").is_visible()
    assert _page_fits(phone)


def test_wide_screens_show_the_navigation_without_the_button(page, live_server, alice, org):
    _sign_in(page, live_server.url, alice)
    page.goto(f"{live_server.url}/billing/")
    header = page.locator("header.topbar")
    assert not header.get_by_role("button", name="Menu").is_visible()
    assert header.get_by_role("link", name="Usage").is_visible() and header.locator("#org-select").is_visible()
    assert header.bounding_box()["height"] <= 64


def test_code_dialog_keeps_long_lines_inside_the_screen(phone, live_server, alice, org, catalog, public_org, region):
    make_service(org=public_org, slug=PUBLIC_SLUG, name="qwen-small", region=region)
    _sign_in(phone, live_server.url, alice)
    phone.goto(f"{live_server.url}/playground/?model=public/{PUBLIC_SLUG}")
    phone.fill("#pg-input", "A long prompt that makes a long line in every snippet: " + "word " * 40)
    phone.click("#pg-code-open")
    dialog = phone.locator("#pg-code")
    code = dialog.locator(".pg-snippet:not([hidden]) pre")
    code.wait_for()
    assert _page_fits(phone)
    assert dialog.locator(".pg-snippet >> visible=true").count() == 1  # one language at a time
    box, viewport = dialog.bounding_box(), phone.viewport_size
    assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
    pre = code.bounding_box()
    assert pre["x"] >= 0 and pre["x"] + pre["width"] <= viewport["width"]
    # The long lines wrap inside the box: nothing runs off its right edge, nothing to scroll sideways to find.
    assert code.evaluate("p => p.scrollWidth <= p.clientWidth")
    assert "word word" in code.inner_text()
    # The copy button sits above the code, not over its first line.
    copy = dialog.locator(".pg-snippet:not([hidden]) .pg-copy")
    assert copy.is_visible() and copy.bounding_box()["y"] + copy.bounding_box()["height"] <= pre["y"]
    dialog.get_by_role("tab", name="Python").click()
    python = dialog.locator("[data-snippet=python]")
    assert python.is_visible() and dialog.locator(".pg-snippet >> visible=true").count() == 1
    dialog.get_by_role("button", name="Close").click()
    assert not dialog.is_visible()
