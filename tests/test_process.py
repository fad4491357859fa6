"""exporter.process: the process_* and python_* families that the Prometheus client libraries'
default collectors serve (prometheus_client's, here the reference), same names, help, types and
labels, with the same values (within what changes between two reads)."""

from __future__ import annotations

import os

import pytest
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.metrics import Rendered
from exporter.process import own_families

pytestmark = pytest.mark.fast


def parsed(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_the_same_families_as_prometheus_client_with_the_same_values():
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    theirs = parsed(generate_latest(registry).decode())
    rendered = Rendered()
    rendered.add_families(own_families())
    ours = parsed(rendered.text())
    assert list(ours) == list(theirs)
    for name, family in ours.items():
        reference = theirs[name]
        assert (family.type, family.documentation) == (reference.type, reference.documentation), name
        assert [s.labels for s in family.samples] == [s.labels for s in reference.samples], name
    value = {f.samples[0].name: f.samples[0].value for f in ours.values()}
    expected = {f.samples[0].name: f.samples[0].value for f in theirs.values()}
    for name in ("process_start_time_seconds", "process_max_fds", "python_info"):
        assert value[name] == pytest.approx(expected[name], abs=0.02), name
    assert abs(value["process_open_fds"] - expected["process_open_fds"]) <= 2
    assert value["process_resident_memory_bytes"] == pytest.approx(expected["process_resident_memory_bytes"], rel=0.2)
    assert 0 < value["process_cpu_seconds_total"] <= sum(os.times()[:2]) + 0.02
    assert value["process_virtual_memory_bytes"] >= value["process_resident_memory_bytes"]
