"""``metantk-zoo data prepare/info/verify`` through the console entry point."""

from __future__ import annotations

import json

import pytest

from metantk_zoo.cli import main
from tests._data_helpers import SMALL_SYNTHETIC


def _run(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err


def test_data_help(capsys):
    for argv in (["data", "--help"], ["data", "prepare", "--help"], ["data", "info", "--help"],
                 ["data", "verify", "--help"]):
        code, out, _ = _run(capsys, argv)
        assert code == 0 and "Usage" in out


def test_data_info_prints_splits(capsys):
    code, out, _ = _run(capsys, ["data", "info", SMALL_SYNTHETIC])
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:]}
    assert rows == {"train": ["64", "768", "12"], "val": ["16", "192", "12"], "test": ["20", "240", "12"]}
    code, out, _ = _run(capsys, ["data", "info", SMALL_SYNTHETIC, "--json"])
    assert json.loads(out)["splits"]["val"]["images"] == 192


def test_data_verify_synthetic(capsys):
    code, out, _ = _run(capsys, ["data", "verify", SMALL_SYNTHETIC])
    assert code == 0 and "matches synthetic" in out
    code, out, err = _run(capsys, ["data", "verify", SMALL_SYNTHETIC, "--benchmark", "mini_imagenet"])
    assert code == 1
    assert "FAIL  images per class: expected 600, found [12]" in out
    assert err.count("\n") == 1 and "does not match mini_imagenet" in err


def test_data_prepare_then_refuse_existing_output(capsys, tmp_path):
    out_dir = tmp_path / "prepared"
    code, out, _ = _run(capsys, ["data", "prepare", SMALL_SYNTHETIC, "--out", str(out_dir)])
    assert code == 0 and out.strip() == str(out_dir)
    assert json.loads((out_dir / "fewshot.json").read_text())["splits"]["test"] == {"classes": 20, "images": 240}
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = _run(capsys, ["data", "prepare", SMALL_SYNTHETIC, "--out", str(out_dir)])
    assert code == 1 and "exists; pass --overwrite" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_data_unknown_spec_is_one_line(capsys):
    code, _, err = _run(capsys, ["data", "info", "nope"])
    assert code == 1 and err.startswith("Error: dataset spec 'nope'") and err.count("\n") == 1
