"""exporter.registry: collectors are made per exporter and target (they keep per-target state), the
names known per kind, and the kinds behind one interface."""

from __future__ import annotations

import pytest

from exporter.config import parse
from exporter.kind import KINDS, Kind, kind_of
from exporter.registry import all_collectors, collector_names, collectors_for, known_collectors
from exporter.server import Exporter

pytestmark = pytest.mark.fast

CONFIG = {"targets": [{"name": "main", "dsn": "host=127.0.0.1 port=1", "pipelines": {"sources": [{"type": "table"}]}},
                      {"name": "other", "dsn": "host=127.0.0.1 port=1"},
                      {"name": "bouncer", "kind": "pgbouncer", "dsn": "host=127.0.0.1 port=1"}]}


def stateful(scraper) -> dict:
    return {c.name: c for c in scraper.collectors if c.name in ("statements", "pipelines")}


def test_two_exporters_with_a_target_of_the_same_name_share_no_collector_state():
    first, second = Exporter(parse(CONFIG)), Exporter(parse(CONFIG))
    try:
        a, b = stateful(first.scrapers["main"]), stateful(second.scrapers["main"])
        assert set(a) == set(b) == {"statements", "pipelines"}
        assert a["statements"].state is not b["statements"].state
        assert a["pipelines"].states is not b["pipelines"].states
        a["statements"].state.previous = {("db", "user", "1"): ()}
        a["pipelines"].states[("db", "runs")] = object()
        assert b["statements"].state.previous is None and not b["pipelines"].states
        # nor do two targets of one exporter: no collector object is shared anywhere
        objects = [id(c) for e in (first, second) for s in e.scrapers.values() for c in s.collectors]
        assert len(objects) == len(set(objects))
    finally:
        first.close()
        second.close()


def test_collectors_for_a_target_follow_its_kind():
    config = parse(CONFIG)
    main, _, bouncer = config.targets
    assert [c.name for c in collectors_for(bouncer, config)] == ["pgbouncer"]
    names = [c.name for c in collectors_for(main, config)]
    assert names == [c.name for c in all_collectors()] and "statements" in names and "pgbouncer" not in names
    assert collector_names("pgbouncer") == {"pgbouncer"}
    assert collector_names("postgres") == frozenset(names) == {c.name for c in known_collectors("postgres", config)}


def test_a_tuple_of_collectors_serves_one_postgresql_target_only():
    with pytest.raises(ValueError, match="per-target state"):
        Exporter(parse(CONFIG), collectors=all_collectors())


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_has_the_whole_interface(name):
    kind = kind_of(name)
    assert isinstance(kind, Kind) and kind.name == name
    assert kind.up_metric.endswith("_up") and kind.up_help and kind.probe_sql
    made, again = kind.collectors(), kind.collectors()
    assert made and not {id(c) for c in made} & {id(c) for c in again}
