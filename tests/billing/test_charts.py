from decimal import Decimal


def test_chart_axis_labels_keep_small_amounts_visible():
    from core.charts import bar_chart

    svg = str(bar_chart([("11-20", Decimal("0")), ("11-21", Decimal("0.000047"))], title="spend"))
    # the axis runs 0 … 0.00005 in quarters; none of the ticks above zero may read "0"
    assert ">0.0000125<" in svg and ">0.00005<" in svg


def test_usage_period_select_shows_the_default_window():
    from metering.forms import UsageFilterForm

    html = str(UsageFilterForm()["days"])
    assert 'value="7" selected' in html
