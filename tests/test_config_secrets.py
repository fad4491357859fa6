"""A config is checked without its secrets; serve still needs them. The example config starts clean
(no source a plain PostgreSQL lacks), and its commented-out pipelines example stays valid."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import ROOT
from exporter.config import ConfigError, load, parse

pytestmark = pytest.mark.fast

EXAMPLE = ROOT / "config.example.yaml"


def test_unset_dsn_env_is_an_error_naming_file_key_target_and_variable():
    with pytest.raises(ConfigError) as err:
        parse({"targets": [{"name": "main", "dsn_env": "PG_DSN"}]}, source="dbperf.yaml", env={})
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("dbperf.yaml: targets[0].dsn_env: ")
    assert "target 'main'" in message and "PG_DSN" in message


def test_unset_dsn_env_is_no_error_when_checking_without_secrets():
    config = parse({"targets": [{"name": "main", "dsn_env": "PG_DSN"},
                                {"name": "other", "dsn": "host=db dbname=app"}]},
                   source="dbperf.yaml", env={}, secrets=False)
    main, other = config.targets
    assert main.dsn == "" and main.dsn_from == "environment variable PG_DSN"
    assert main.dsn_missing.startswith("dbperf.yaml: targets[0].dsn_env: target 'main': ")
    assert "PG_DSN" in main.dsn_missing
    assert other.dsn_missing == "" and other.dsn == "host=db dbname=app"
    assert config.missing_secrets == [main.dsn_missing]


def test_missing_dsn_file_is_no_error_when_checking_without_secrets(tmp_path):
    path = tmp_path / "dbperf.yaml"
    path.write_text("targets:\n  - name: db1\n    dsn_file: secret.dsn\n")
    with pytest.raises(ConfigError) as err:
        load(str(path), env={})
    assert "targets[0].dsn_file: target 'db1': cannot read the DSN file" in str(err.value)
    config = load(str(path), env={}, secrets=False)
    [line] = config.missing_secrets
    assert line == str(err.value) and str(tmp_path / "secret.dsn") in line


def test_a_secret_that_is_there_is_still_checked():
    with pytest.raises(ConfigError) as err:
        parse({"targets": [{"name": "main", "dsn_env": "PG_DSN"}]}, source="c.yaml",
              env={"PG_DSN": "host=x password=Secret123 junk"}, secrets=False)
    assert "cannot be parsed" in str(err.value) and "Secret123" not in str(err.value)


def test_a_pgbouncer_target_without_its_secret_is_checked_too():
    config = parse({"targets": [{"name": "pool", "kind": "pgbouncer", "dsn_env": "BOUNCER_DSN"}]},
                   source="c.yaml", env={}, secrets=False)
    assert "target 'pool'" in config.targets[0].dsn_missing and "BOUNCER_DSN" in config.targets[0].dsn_missing


def test_command_line_errors_have_no_file():
    exc = ConfigError("", "--config", "no configuration given")
    assert str(exc) == "--config: no configuration given" and exc.on_command_line
    exc = ConfigError("dbperf.yaml", "listen", "must be HOST:PORT")
    assert str(exc) == "dbperf.yaml: listen: must be HOST:PORT" and not exc.on_command_line


def test_example_config_enables_no_pipelines_source():
    config = load(str(EXAMPLE), env={}, secrets=False)
    for target in config.targets:
        assert target.pipelines is None
        assert not target.collector("pipelines", False).enabled


def test_example_config_commented_pipelines_block_is_valid_when_uncommented():
    """The documented example under `# pipelines:` parses once its `# ` are removed."""
    lines = EXAMPLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.fullmatch(r" +# pipelines:", line))
    indent = lines[start].index("#")
    block = []
    for line in lines[start:]:
        if not line.startswith(" " * indent + "#") or (block and not line.startswith(" " * indent + "#  ")):
            break
        block.append(line[:indent] + line[indent + 2:])
    text = "\n".join(block)
    pipelines = yaml.safe_load(text)["pipelines"]
    assert {s["type"] for s in pipelines["sources"]} == {"table", "airflow"}
    config = parse({"targets": [{"name": "main", "dsn": "host=db", "pipelines": pipelines}]}, source="example")
    assert config.targets[0].pipelines is not None
    assert config.targets[0].collector("pipelines", False).enabled
