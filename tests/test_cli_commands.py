"""Every command through the CLI: --help with examples, one bad input each (one-line error, non-zero exit),
and the demo's resume after an interruption."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from metantk_zoo.cli import app, main

runner = CliRunner()
COMMANDS = [["models"], ["search"], ["train"], ["eval"], ["card"], ["push"], ["pull"], ["demo"],
            ["data", "prepare"], ["data", "info"], ["data", "verify"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    if command != ["models"]:
        assert "Example" in result.output


def _one_line_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code not in (0, None)
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err  # one error line, last on stderr
    assert "Traceback" not in err
    return errors[0]


SMALL = "synthetic:size=16,per_class=8,classes=20"


def test_unknown_preset(capsys, tmp_path):
    line = _one_line_error(capsys, ["search", "--preset", "mini9", "--dataset", SMALL, "--out", str(tmp_path / "s")])
    assert "unknown search preset 'mini9'" in line and "mini5" in line


def test_missing_run_directory(capsys, tmp_path):
    line = _one_line_error(capsys, ["card", str(tmp_path / "no_such_run"), "--out", str(tmp_path / "c")])
    assert "no_such_run" in line


def test_malformed_genotype(capsys, tmp_path):
    line = _one_line_error(capsys, ["train", "--model", "Genotype(normal=[[('sep_conv_3x3', 0)", "--dataset", SMALL,
                                    "--out", str(tmp_path / "t")])
    assert "malformed genotype text" in line
    assert not (tmp_path / "t").exists()


def test_dataset_that_cannot_serve_the_episodes(capsys):
    line = _one_line_error(capsys, ["eval", "metantk_nano", "--dataset", SMALL, "--n-way", "10", "--episodes", "2",
                                    "--image-size", "16"])
    assert "10-way" in line and "4" in line  # the 20-class benchmark has 4 test classes


def test_unknown_dataset(capsys, tmp_path):
    line = _one_line_error(capsys, ["data", "info", str(tmp_path / "nowhere")])
    assert "nowhere" in line


def test_demo_resumes_after_an_interruption(tmp_path, monkeypatch, capsys):
    """A demo stopped part-way (here: the random-cell training dies) continues with --resume: finished stages are
    skipped, not redone, and the run completes."""
    from metantk_zoo import pipeline
    from metantk_zoo.nas.config import PRESETS

    # the demo searches with the tiny preset; two candidate ops and fewer patches make it ~3x faster
    monkeypatch.setitem(PRESETS, "tiny", dataclasses.replace(PRESETS["tiny"], ops=("skip_connect", "max_pool_3x3BN"),
                                                            region_patches=50))
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--dataset", "synthetic:size=16,per_class=8,classes=40", "--epochs", "1",
            "--init-channels", "4", "--num-cells", "3", "--episodes", "4", "--n-query", "2", "--image-size", "16"]
    real_train = pipeline.run_train
    calls = []

    def dying_train(**kwargs):
        calls.append(kwargs["out"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the process were killed during the second training
        return real_train(**kwargs)

    monkeypatch.setattr(pipeline, "run_train", dying_train)
    with pytest.raises(SystemExit) as interrupted:
        main(args)
    assert interrupted.value.code == 130  # Ctrl-C / SIGINT convention
    state = json.loads((out / pipeline.DEMO_STATE_FILE).read_text())
    assert list(state["done"]) == ["search", "random", "train-search"]
    genotype_file = out / "search" / "genotype.json"
    stamp = genotype_file.stat().st_mtime_ns

    monkeypatch.setattr(pipeline, "run_train", real_train)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # without --resume the existing run is protected
        main(args)
    assert exit_info.value.code == 1 and "pass --resume" in capsys.readouterr().err
    with pytest.raises(SystemExit) as finished:
        main([*args, "--resume"])
    assert finished.value.code == 0
    captured = capsys.readouterr()
    assert "[demo] search: done earlier, skipped" in captured.err
    assert "[demo] train-search: done earlier, skipped" in captured.err
    assert genotype_file.stat().st_mtime_ns == stamp  # the search was not redone
    state = json.loads((out / pipeline.DEMO_STATE_FILE).read_text())
    assert list(state["done"]) == list(pipeline.DEMO_STAGES)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["export"]["logits_equal"] is True
    assert set(summary["results"]) == {"search", "random", "untrained"}
    assert "MetaNTK-NAS (tiny)" in captured.out and "random cell" in captured.out and "untrained" in captured.out
