"""The exposition renderer: escaping, value formats, label strings and histograms."""

from decimal import Decimal

from conftest import Samples, promtool_check_metrics
from exporter.metrics import Family, Rendered, format_value, label_pairs
import pytest

pytestmark = pytest.mark.fast


def render(*families, const=""):
    rendered = Rendered()
    rendered.add_families(families, const)
    return rendered.text()


@pytest.mark.prom  # promtool reads the text
def test_label_values_are_escaped_and_parse_back():
    fam = Family("x_info", "gauge", "help with \\ and\nnewline", ("query",))
    fam.add(('SELECT "a" \\ b\nFROM t',), 1)
    text = render(fam, const='target="m"')
    sample = Samples(text).series("x_info")[0]
    assert sample.labels == {"target": "m", "query": 'SELECT "a" \\ b\nFROM t'}
    assert promtool_check_metrics(text) == ""


def test_values_of_every_type():
    assert [format_value(v) for v in (True, False, 3, 2.5, 4.0, float("inf"), float("nan"), None)] == \
        ["1", "0", "3", "2.5", "4", "+Inf", "NaN", "NaN"]
    fam = Family("y", "gauge", "h", ("a",))
    for v in (Decimal("1700000000.123456"), Decimal("1E+3"), 7, 0.25):
        fam.add((str(v),), v)
    values = [s.value for s in Samples(render(fam)).series("y")]
    assert values == [1700000000.123456, 1000.0, 7.0, 0.25]


def test_prerendered_label_strings_equal_tuples():
    a = Family("z_total", "counter", "h", ("db", "rel"))
    b = Family("z_total", "counter", "h", ("db", "rel"))
    a.add(("d", 'r"1'), 5)
    b.add(label_pairs(("db", "rel"), ("d", 'r"1')), 5)
    assert render(a, const='target="t"') == render(b, const='target="t"')
    assert render(a) == render(b)


@pytest.mark.prom  # promtool reads the text
def test_histogram_and_merge_under_one_header():
    fam = Family("lat_seconds", "histogram", "h", ("db",))
    fam.add_histogram(("a",), [(0.1, 2), (1.0, 5), (float("inf"), 6)], 3.5)
    first, second = Rendered(), Rendered()
    first.add_families([fam], 'target="one"')
    second.add_families([fam], 'target="two"')
    first.merge(second)
    text = first.text()
    assert text.count("# TYPE lat_seconds histogram") == 1
    samples = Samples(text)
    assert samples.value("lat_seconds_bucket", target="two", db="a", le="1.0") == 5
    assert samples.value("lat_seconds_count", target="one", db="a") == 6
    assert promtool_check_metrics(text) == ""


def test_columns_render_like_samples_and_skip_none():
    a = Family("c_total", "counter", "h", ("db",))
    b = Family("c_total", "counter", "h", ("db",))
    for db, v in (("x", 1), ("y", None), ("z", Decimal("2.5"))):
        if v is not None:
            a.add((db,), v)
    b.columns.append(([label_pairs(("db",), (db,)) for db in "xyz"], [1, None, Decimal("2.5")]))
    assert render(a, const='target="t"') == render(b, const='target="t"')
    assert render(a) == render(b)
    no_labels = Family("d", "gauge", "h")
    no_labels.columns.append(([""], [3.0]))
    assert render(no_labels) == "# HELP d h\n# TYPE d gauge\nd 3.0\n"
    assert render(no_labels, const='target="t"').endswith('d{target="t"} 3.0\n')
