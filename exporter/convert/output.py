"""The converted collectors as a collector file: YAML in catalog.yaml's layout (SQL as literal
blocks, one metric per line), deterministic, and written whole or not at all."""

from __future__ import annotations

import os

import yaml

from exporter.atomicfile import write_atomic

from exporter.secrets import one_line


class _Flow(dict):
    """A mapping written on one line: ``{name: ..., column: ..., type: ..., help: ...}``."""


class _FlowList(list):
    pass


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:  # the same SQL in several queries is written out each time
        return True


def _text(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)
_Dumper.add_representer(_Flow, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v.items(), flow_style=True))
_Dumper.add_representer(_FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def render(collectors: dict, source: str) -> str:
    for spec in collectors.values():
        for query in spec["queries"]:
            query["labels"] = _FlowList(query["labels"])
            query["metrics"] = [_Flow(m) for m in query["metrics"]]
    header = (f"# dbperf collector file, converted by `dbperf convert-queries` from the postgres_exporter\n"
              f"# queries file {one_line(source, 200)}.\n"
              "# Each query's SQL is kept verbatim inside a SELECT that reads its columns as postgres_exporter\n"
              "# did (timestamps as Unix seconds, numbers in text, NULL labels as ''): see\n"
              "# docs/migrating-from-postgres-exporter.md. The format is exporter/postgres/catalog.yaml's.\n")
    body = yaml.dump({"collectors": collectors}, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     width=10_000, default_flow_style=False)
    return header + body


def write(path: str, text: str) -> None:
    """``text`` into ``path``, replaced whole, with the permissions the umask gives; OSError."""
    umask = os.umask(0)
    os.umask(umask)
    write_atomic(path, text, mode=0o666 & ~umask)
