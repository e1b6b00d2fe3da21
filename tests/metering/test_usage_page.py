"""The usage page reads as the user's own numbers: every group named, mistyped ids grouped rather than offered as
filters, one colour per series, the running day named, and the charts' text at a readable size."""

import re

import pytest

from core import charts
from tests.billing.conftest import make_usage
from tests.factories import CatalogModelFactory

pytestmark = pytest.mark.django_db

LEGEND_ITEM = re.compile(r'<span class="legend-item">(?:(?!</span>).)*?fill="(#[0-9a-f]{6})"/></svg>(.*?)</span>')


def _legend(page: str) -> list[tuple[str, str]]:
    """(colour, name) of each model entry of the first chart's legend."""
    first = page.split('<div class="legend">', 1)[1].split("</div>", 1)[0]
    return LEGEND_ITEM.findall(first)


def _model_options(page: str) -> list[str]:
    select = re.search(r'<select name="model"[^>]*>(.*?)</select>', page, re.S)
    assert select is not None
    return re.findall(r'<option value="([^"]*)"', select.group(1))


@pytest.fixture
def public_model(db):
    return CatalogModelFactory()


@pytest.fixture
def refused(org, public_model):
    """Real usage of one model, requests refused before a model was named, and two mistyped ids."""
    make_usage(org, public_model, prompt=100, completion=20)
    for _ in range(2):
        make_usage(org, None, model_id="", status="error", public=False, prompt=0, completion=0)
    for model_id in ("public/gtp-4o", "public/gtp-4o", "acme/lama"):
        make_usage(org, None, model_id=model_id, status="error", public=False, prompt=0, completion=0)


def test_requests_without_a_model_are_a_named_group(alice_client, refused):
    page = alice_client.get("/billing/usage/").content.decode()
    assert "<code></code>" not in page
    assert "(no model: refused before routing)" in page
    names = [name for _colour, name in _legend(page)]
    assert all(name.strip() for name in names) and "(no model: refused before routing)" in names


def test_mistyped_ids_are_grouped_and_never_offered_as_filters(alice_client, refused, public_model):
    page = alice_client.get("/billing/usage/").content.decode()
    assert _model_options(page) == ["", f"public/{public_model.slug}"]
    # One row for them, naming what was tried (the most tried first).
    assert page.count("(unknown model ids)") >= 2  # the table and the legend
    assert "Ids tried: <code>public/gtp-4o</code>, <code>acme/lama</code>" in page
    assert "<code>public/gtp-4o</code></td>" not in page
    # A mistyped id is not a filter: asking for it shows all models, as any unknown choice does.
    filtered = alice_client.get("/billing/usage/?model=public/gtp-4o").content.decode()
    assert "Select a valid choice" in filtered


def test_unknown_group_uses_the_ids_that_never_resolved(alice_client, org, public_model):
    # An id that was served once is a model, even when later requests naming it were refused (it was deleted).
    make_usage(org, public_model)
    make_usage(org, None, model_id=f"public/{public_model.slug}", status="error", public=False)
    page = alice_client.get("/billing/usage/").content.decode()
    assert "(unknown model ids)" not in page


def test_each_model_has_its_own_colour_and_the_rest_fold_into_other(alice_client, org):
    models = [CatalogModelFactory() for _ in range(charts.MAX_SERIES + 2)]
    for n, model in enumerate(models):
        for _ in range(len(models) - n):  # distinct counts: the most used are kept
            make_usage(org, model)
    page = alice_client.get("/billing/usage/?days=7").content.decode()
    legend = _legend(page)
    assert len(legend) == charts.MAX_SERIES
    colours = [colour for colour, _name in legend]
    assert len(set(colours)) == len(colours)
    assert legend[-1] == (charts.OTHER_COLOUR, "Other models")
    assert [name for _c, name in legend[:-1]] == [f"public/{m.slug}" for m in models[: charts.MAX_SERIES - 1]]
    # The table still lists every model.
    assert all(f"<code>public/{m.slug}</code>" in page for m in models)


def test_running_day_and_hour_are_labelled(alice_client, org, public_model):
    make_usage(org, public_model)
    week = alice_client.get("/billing/usage/?days=7").content.decode()
    assert week.count('class="tick tick-current"') == 4 and ">today</text>" in week
    day = alice_client.get("/billing/usage/?days=1").content.decode()
    assert ">now</text>" in day
    chinese = alice_client.get("/billing/usage/?days=7", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert ">今天</text>" in chinese


def test_todays_bar_on_the_billing_overview_is_labelled_partial(alice_client, org):
    page = alice_client.get("/billing/").content.decode()
    assert page.count('class="bar bar-current"') == 1 and ">today</text>" in page
    assert "(so far): 0</title>" in page


def test_chart_text_is_never_scaled_down():
    html = str(charts.line_chart(["a", "b"], [charts.Series("m", [1.0, 2.0])], title="t"))
    # No viewBox: the browser draws user units as CSS pixels, whatever the panel's width.
    assert "viewBox" not in html.split('class="legend"')[0].split("legend-swatch")[0]
    sizes = {int(size) for size in re.findall(r'font-size="(\d+)"', html)}
    assert sizes and min(sizes) >= 12
