"""README stays true: its metrics reference is what the code emits, and CI runs its test command."""

import re

from conftest import ROOT
from exporter.docs import README, readme_section, reference
import pytest

pytestmark = pytest.mark.pg


def test_metrics_reference_in_readme_matches_the_code():
    assert readme_section(README.read_text()) == reference(), "run: python -m exporter.docs --write"


@pytest.mark.fast
def test_ci_runs_the_test_command_printed_in_readme():
    readme = README.read_text()
    commands = re.findall(r"^(\./scripts/\S+)\s+#", readme, flags=re.M)
    assert commands[:2] == ["./scripts/demo", "./scripts/test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\n./scripts/test\n" in ci


def test_every_family_served_is_documented(pg, serve):
    from conftest import make_config

    served = serve(make_config(pg))
    documented = set(re.findall(r"^\| `([a-z_:]+)`", readme_section(README.read_text()), flags=re.M))
    families = served.metrics().families.values()
    served_names = {f.name + '_total' if f.type == 'counter' else f.name for f in families}
    undocumented = sorted(n for n in served_names - documented
                          if not n.startswith(("pg_settings_", "process_", "python_")))
    assert not undocumented, f"served but not in the README reference: {undocumented}"
