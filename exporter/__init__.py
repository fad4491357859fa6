"""dbperf: PostgreSQL performance monitoring, the Prometheus way."""

__version__ = "0.1.0"
