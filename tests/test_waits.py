"""The session sampler's pure logic (exporter.postgres.waits): integration with a fake clock, the
schedule, the query_id check, and the wait_events config key."""

from __future__ import annotations

import pytest

from exporter.config import ConfigError, parse
from exporter.postgres.sampler import query_ids_reason, sample_sql
from exporter.postgres.waits import MAX_GAP, Integrator, Schedule, sample_timeout

pytestmark = pytest.mark.fast

LOCKED = (5, "app", "active", "Lock", "transactionid", "42", 2)      # two sessions blocked on a row
RUNNING = (5, "app", "active", None, None, "7", 1)                    # one on CPU
IDLE_TX = (5, "app", "idle in transaction", "Client", "ClientRead", "9", 1)


def test_the_first_sample_is_a_baseline_then_each_adds_the_time_since_the_previous():
    i = Integrator(1.0)
    assert i.add(100.0, [LOCKED, RUNNING, IDLE_TX]) == 0.0
    assert i.sessions == {} and i.statements == {}
    assert i.add(101.0, [LOCKED, RUNNING, IDLE_TX]) == 1.0
    assert i.add(101.5, [LOCKED]) == 0.5
    assert i.sessions == {("app", "active", "Lock", "transactionid"): 3.0, ("app", "active", "CPU", "CPU"): 1.0,
                          ("app", "idle in transaction", "Client", "ClientRead"): 1.0}


def test_per_statement_seconds_for_shown_statements_and_other_for_the_rest_active_only():
    i = Integrator(1.0)
    i.add(0.0, [])
    i.add(1.0, [LOCKED, RUNNING, IDLE_TX], shown=frozenset({(5, "42")}))
    assert i.statements == {("app", "42", "Lock"): 2.0, ("app", "other", "CPU"): 1.0}
    i.add(2.0, [(5, "app", "active", None, None, None, 1)], shown=frozenset({(5, "42")}))  # no query_id
    assert i.statements[("app", "other", "CPU")] == 2.0
    i.add(3.0, [(6, "app", "active", "Lock", "tuple", "42", 1)], shown=frozenset({(5, "42")}))  # another database's 42
    assert i.statements[("app", "other", "Lock")] == 1.0


def test_a_failure_makes_the_next_sample_a_baseline():
    i = Integrator(1.0)
    i.add(0.0, [LOCKED])
    i.failed()
    assert i.add(30.0, [LOCKED]) == 0.0  # the outage is not integrated as if the sessions were there
    assert i.sessions == {}
    assert i.add(31.0, [LOCKED]) == 1.0


def test_a_late_sample_adds_at_most_max_gap_intervals():
    i = Integrator(0.5)
    i.add(0.0, [RUNNING])
    assert i.add(10.0, [RUNNING]) == MAX_GAP * 0.5
    assert i.sessions[("app", "active", "CPU", "CPU")] == MAX_GAP * 0.5


def test_idle_sessions_other_databases_and_unknown_states_are_not_counted():
    i = Integrator(1.0)
    i.add(0.0, [])
    i.add(1.0, [(5, "app", "idle", "Client", "ClientRead", None, 50), (5, "app", "disabled", None, None, None, 1),
                (None, None, "active", None, None, None, 1), (8, "secret", "active", None, None, "1", 1)],
          wanted=lambda datname: datname != "secret")
    assert i.sessions == {} and i.statements == {}


def test_forget_drops_gone_databases_and_statements_no_longer_shown():
    i = Integrator(1.0)
    i.add(0.0, [])
    i.add(1.0, [LOCKED, RUNNING, (6, "old", "active", None, None, "1", 1)], shown=frozenset({(5, "42"), (6, "1")}))
    i.forget(databases=["app"])
    assert {k[0] for k in i.sessions} == {"app"} and {k[0] for k in i.statements} == {"app"}
    i.forget(shown_queryids=set())
    assert set(i.statements) == {("app", "other", "CPU")}


def test_schedule_counts_slots_missed_by_a_slow_sample():
    s = Schedule(1.0, 10.0)
    assert s.wait(9.5) == 0.5 and s.wait(10.0) == 0.0
    assert s.take(10.0) == 0 and s.next == 11.0
    assert s.take(11.2) == 0 and s.next == 12.0   # a little late: no slot missed
    assert s.take(14.7) == 2 and s.next == 15.0   # the slots of 12 s and 13 s were missed
    assert s.skipped == 2 and s.wait(14.8) == pytest.approx(0.2)


def test_sample_timeout_is_half_the_interval_within_bounds():
    assert sample_timeout(1.0) == 0.5 and sample_timeout(0.1) == 0.1 and sample_timeout(60.0) == 1.0


@pytest.mark.parametrize("version, setting, preload, off", [
    (130000, None, "pg_stat_statements", "needs PostgreSQL 14+"),
    (160000, "on", "", ""), (160000, "auto", "pg_stat_statements", ""),
    (160000, "auto", "", "compute_query_id is auto"), (170000, "off", "pg_stat_statements", "compute_query_id is off"),
])
def test_query_ids_reason(version, setting, preload, off):
    reason = query_ids_reason(version, setting, preload)
    assert (off in reason) and bool(reason) == bool(off)


def test_sample_sql_reads_query_id_from_14_and_is_marked():
    assert "a.query_id::text" in sample_sql(140000) and "query_id" not in sample_sql(130000)
    assert sample_sql(160000).endswith("/*application='dbperf'*/")


def test_wait_events_config_key():
    config = parse({"targets": [{"name": "a", "dsn": "host=x", "wait_events": {"interval": "250ms"}}]})
    assert config.targets[0].wait_events.interval == 0.25
    assert parse({"targets": [{"name": "a", "dsn": "host=x"}]}).targets[0].wait_events.interval == 1.0
    with pytest.raises(ConfigError, match=r"targets\[0\]\.wait_events\.interval: .*100ms"):
        parse({"targets": [{"name": "a", "dsn": "host=x", "wait_events": {"interval": "10ms"}}]})
    with pytest.raises(ConfigError, match=r"targets\[0\]\.wait_events\.enabled: unknown key"):
        parse({"targets": [{"name": "a", "dsn": "host=x", "wait_events": {"enabled": True}}]})


def test_routes_add_the_samples_seconds_untagged_as_empty_and_past_the_cap_as_other():
    i = Integrator(1.0, max_routes=2)
    i.add_routes(0.0, [("app", "/a", "CPU")])  # a baseline sample added nothing
    assert i.routes == {}
    i.add_routes(1.0, [("app", "/a", "CPU"), ("app", "/a", "Lock"), ("app", None, None), ("app", "/b", "IO")])
    i.add_routes(0.5, [("app", "/c", "CPU"), ("app", "/a", "CPU")])  # a third route: over the cap
    assert i.routes == {("app", "/a", "CPU"): 1.5, ("app", "/a", "Lock"): 1.0, ("app", "", "CPU"): 1.0,
                        ("app", "/b", "IO"): 1.0, ("app", "other", "CPU"): 0.5}
    i.forget(databases=["other_db"])
    assert i.routes_snapshot() == {}


def test_the_samples_and_wait_events_config_keys():
    target = parse({"targets": [{"name": "m", "dsn": "host=x", "wait_events": {"max_routes": 5},
                                 "samples": {"redact": False, "limit": 0, "max_age": "5m"}}]}, source="c").targets[0]
    assert target.wait_events.max_routes == 5
    assert (target.samples.redact, target.samples.limit, target.samples.max_age) == (False, 0, 300.0)
    for section, message in [({"wait_events": {"max_routes": 0}}, "targets[0].wait_events.max_routes"),
                             ({"samples": {"redact": "no"}}, "targets[0].samples.redact"),
                             ({"samples": {"limit": 10**6}}, "targets[0].samples.limit"),
                             ({"samples": {"max_age": "0s"}}, "targets[0].samples.max_age"),
                             ({"samples": {"text": 1}}, "targets[0].samples.text")]:
        with pytest.raises(ConfigError) as err:
            parse({"targets": [{"name": "m", "dsn": "host=x", **section}]}, source="c")
        assert message in str(err.value) and "\n" not in str(err.value)


def test_route_statements_fold_past_the_cap_and_sum_to_the_tagged_route_time():
    i = Integrator(1.0, max_routes=2, max_route_statements=2)
    shown = frozenset({(1, "q1"), (1, "q2"), (1, "q3")})
    i.add_routes(1.0, [("app", "/a", "CPU", 1, "q1"), ("app", "/a", "Lock", 1, "q1"), ("app", None, None, 1, "q1"),
                       ("app", "/b", "IO", 1, "q9"), ("app", "/b", "IO", 1, None)], shown)
    i.add_routes(0.5, [("app", "/b", "CPU", 1, "q2"), ("app", "/a", "CPU", 1, "q3"), ("app", "/c", "CPU", 1, "q1")],
                 shown)
    # q9 not shown, None without a query_id: "other"; (/a, q3) is a third pair past the cap: (/a, other);
    # /c is a third route (past max_routes): its pair is ("other", q1), also past the cap
    assert i.route_statements_snapshot() == {("app", "/a", "q1"): 2.0, ("app", "/b", "other"): 2.0,
                                             ("app", "/b", "q2"): 0.5, ("app", "/a", "other"): 0.5,
                                             ("app", "other", "other"): 0.5}
    per_route = {}
    for (datname, route, _), seconds in i.routes_snapshot().items():
        if route:
            per_route[datname, route] = per_route.get((datname, route), 0.0) + seconds
    summed = {}
    for (datname, route, _), seconds in i.route_statements_snapshot().items():
        summed[datname, route] = summed.get((datname, route), 0.0) + seconds
    assert summed == per_route  # untagged sessions left out, nothing lost to the folds
    i.forget(shown_queryids={"q2"})  # q1 no longer shown: its series goes, and its room under the cap
    assert ("app", "/a", "q1") not in i.route_statements_snapshot() and i.route_pairs == {("app", "/b", "q2")}
    i.add_routes(1.0, [("app", "/a", "CPU", 1, "q3")], shown)
    assert i.route_statements_snapshot()[("app", "/a", "q3")] == 1.0
    i.forget(databases=["other_db"])
    assert i.route_statements_snapshot() == {} and i.route_pairs == set()


def test_the_max_route_statements_key():
    target = parse({"targets": [{"name": "m", "dsn": "host=x", "wait_events": {"max_route_statements": 7}}]},
                   source="c").targets[0]
    assert target.wait_events.max_route_statements == 7
    assert parse({"targets": [{"name": "m", "dsn": "host=x"}]}).targets[0].wait_events.max_route_statements == 500
    with pytest.raises(ConfigError) as err:
        parse({"targets": [{"name": "m", "dsn": "host=x", "wait_events": {"max_route_statements": 0}}]}, source="c")
    assert "targets[0].wait_events.max_route_statements" in str(err.value) and "\n" not in str(err.value)
