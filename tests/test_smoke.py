"""The exporter end to end over HTTP on the throwaway cluster: every default collector succeeds."""

from conftest import SECOND_DB, make_config, promtool_check_metrics


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
