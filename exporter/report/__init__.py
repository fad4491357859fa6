"""Performance reports from Prometheus's HTTP API (``dbperf report``; docs/reports.md)."""
