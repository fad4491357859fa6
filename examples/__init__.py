"""Example applications for exporter.instrument."""
