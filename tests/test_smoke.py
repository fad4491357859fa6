"""The exporter end to end over HTTP on the throwaway cluster: every default collector succeeds."""

from conftest import SECOND_DB, make_config, promtool_check_metrics
import pytest

pytestmark = pytest.mark.pg


def test_every_default_collector_succeeds_and_output_passes_promtool(pg, serve):
    served = serve(make_config(pg))
    samples = served.metrics()
    assert samples.value("pg_up", target="main") == 1
    failed = [s.labels for s in samples.series("dbperf_collector_success") if s.value != 1]
    assert not failed, f"collectors failed: {failed}"
    # database-scoped collectors ran on both databases
    assert samples.value("dbperf_collector_success", collector="tables", datname=SECOND_DB) == 1
    assert samples.value("dbperf_collector_success", collector="tables", datname="postgres") == 1
    assert promtool_check_metrics(samples.text) == ""


def test_probe_serves_one_target_without_host_metrics(pg, serve):
    served = serve(make_config(pg))
    samples = served.metrics("/probe?target=main")
    assert samples.value("pg_up", target="main") == 1
    assert not samples.has("host_cpus")
    status, body = served.get("/probe?target=nope")
    assert status == 404 and "unknown target 'nope'" in body and "main" in body


def test_streamed_response_has_exact_length_with_non_ascii_labels(pg):
    from conftest import Served
    from exporter.collector import Collector
    from exporter.metrics import Family
    from exporter.registry import all_collectors
    from exporter.server import Exporter

    class Unicode(Collector):
        def collect(self, conn, ctx, timeout):
            (_, rows), = conn.query("SELECT 'café ✓ ' || repeat('x', 300000) AS q", timeout)
            fam = Family("test_unicode_info", "gauge", "test", ("query",))
            fam.add((rows[0][0],), 1)
            return [fam]

    served = Served(Exporter(make_config(pg), collectors=all_collectors() + (Unicode(name="unicode"),)))
    try:
        import urllib.request

        with urllib.request.urlopen(served.url + "/probe?target=main", timeout=30) as response:
            body = response.read()
            assert int(response.headers["Content-Length"]) == len(body)
        from conftest import Samples

        sample = Samples(body.decode()).series("test_unicode_info")[0]
        assert sample.labels["query"].startswith("café ✓ xxx") and len(sample.labels["query"]) == 300007
    finally:
        served.close()
