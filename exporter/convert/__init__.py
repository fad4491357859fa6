"""``dbperf convert-queries``: postgres_exporter's ``queries.yaml`` (``--extend.query-path``) as a
dbperf collector file (the format of ``exporter/postgres/catalog.yaml``).

- :mod:`exporter.convert.queries` reads the file and checks its shape (bad input: one line);
- :mod:`exporter.convert.versions` turns ``runonserver`` ranges into ``server_version_num`` ranges;
- :mod:`exporter.convert.names` fixes metric and label names to Prometheus's naming rules;
- :mod:`exporter.convert.sqlwrap` wraps the SQL so each column reads as postgres_exporter read it;
- :mod:`exporter.convert.mapping` maps one namespace to one collector, naming what it cannot;
- :mod:`exporter.convert.cli` is the command.

The mapping is documented in docs/migrating-from-postgres-exporter.md.
"""
