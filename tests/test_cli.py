"""The CLI through Typer's runner: help, version, models, and the one-line error contract."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

import metantk_zoo
from metantk_zoo.cli import app, main
from metantk_zoo.cli._options import ConfigOption

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"metantk-zoo {metantk_zoo.__version__}"


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "models" in result.stdout


def test_models_table_and_json():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name", "cells", "params", "macs", "source"]
    row = next(line for line in lines if line.startswith("metantk_metanas_cell5 "))
    assert row.split()[1:4] == ["5", "2,005,216", "2.04G"]
    rows = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["metantk_cell8"]["params"] == 3181072 and by_name["metantk_cell8"]["cells"] == 8


def test_unknown_option_is_a_usage_error():
    result = runner.invoke(app, ["models", "--bogus"])
    assert result.exit_code == 2


def test_library_errors_become_one_line(capsys, monkeypatch):
    from metantk_zoo.cli import models as models_cli
    from metantk_zoo.errors import GenotypeError

    def boom():
        raise GenotypeError("reduce cell, node 2: unknown op 'x'")

    monkeypatch.setattr(models_cli, "zoo_table", boom)
    with pytest.raises(SystemExit) as exit_info:
        main(["models"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == "Error: reduce cell, node 2: unknown op 'x'"


def _config_app():
    demo = typer.Typer()

    @demo.command()
    def go(config: ConfigOption = None, epochs: int = 3, lr: float = 0.1, name: str = "x"):
        typer.echo(json.dumps(dict(epochs=epochs, lr=lr, name=name)))

    @demo.command()
    def other():
        pass

    return demo


def test_config_file_sets_defaults_and_flags_override(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"config": {"epochs": 9, "lr": 0.5}}))  # run-directory wrapper form
    demo = _config_app()
    assert json.loads(runner.invoke(demo, ["go", "--config", str(cfg)]).stdout) == {"epochs": 9, "lr": 0.5,
                                                                                   "name": "x"}
    out = runner.invoke(demo, ["go", "--epochs", "2", "--config", str(cfg)]).stdout
    assert json.loads(out) == {"epochs": 2, "lr": 0.5, "name": "x"}


def test_config_file_errors_are_usage_errors(tmp_path):
    demo = _config_app()
    bad_key = tmp_path / "bad.json"
    bad_key.write_text(json.dumps({"epoch": 9}))
    result = runner.invoke(demo, ["go", "--config", str(bad_key)])
    assert result.exit_code == 2 and "unknown key(s) epoch" in result.output
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    result = runner.invoke(demo, ["go", "--config", str(broken)])
    assert result.exit_code == 2 and "not valid JSON" in result.output
    result = runner.invoke(demo, ["go", "--config", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "config file not found" in result.output
