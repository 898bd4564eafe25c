"""Standard JSON only: every JSON file a search, a training run, a card and an export write parses under RFC 8259
(no NaN, no Infinity); non-finite values are the strings "inf"/"-inf"/"nan", which the readers accept, and old
files holding the bare Infinity token still read."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from metantk_zoo.utils.io import as_float, dumps_json, encode_nonfinite, read_json, write_json
from tests._finished_runs import finished_search, finished_train, scored_search, strict_json  # noqa: F401


def _json_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl"))


def _parse_all(folder: Path) -> int:
    files = _json_files(folder)
    for path in files:
        text = path.read_text()
        if path.suffix == ".jsonl":
            for line in text.splitlines():
                strict_json(line)
        else:
            strict_json(text)
    return len(files)


def test_encoding_of_non_finite_values_round_trips():
    obj = {"tau": math.inf, "low": -math.inf, "score": math.nan, "ok": 1.5, "nested": [math.inf, {"x": 2}]}
    text = dumps_json(obj)
    assert strict_json(text) == {"tau": "inf", "low": "-inf", "score": "nan", "ok": 1.5, "nested": ["inf", {"x": 2}]}
    assert as_float("inf") == math.inf and as_float("-inf") == -math.inf and math.isnan(as_float("nan"))
    assert as_float("Infinity") == math.inf and as_float("relu") == "relu" and as_float(3) == 3
    assert encode_nonfinite((1.0, math.inf)) == [1.0, "inf"]
    with pytest.raises(ValueError):  # the strict parser used below does reject the old tokens
        strict_json('{"tau": Infinity}')


def test_old_files_with_infinity_still_read(tmp_path):
    from metantk_zoo.nas import SearchConfig

    old = tmp_path / "config.json"
    old.write_text('{"inner_lr_time": Infinity, "reg_coef": 0.001}')
    data = read_json(old)
    assert data["inner_lr_time"] == math.inf
    new = tmp_path / "new.json"
    write_json(new, {"inner_lr_time": math.inf})
    assert strict_json(new.read_text()) == {"inner_lr_time": "inf"}
    # the reader of search configs accepts both spellings
    base = SearchConfig().to_dict()
    assert SearchConfig.from_dict({**base, "inner_lr_time": "inf"}).inner_lr_time == math.inf
    assert SearchConfig.from_dict({**base, "inner_lr_time": read_json(old)["inner_lr_time"]}).inner_lr_time == math.inf


def test_every_json_file_of_a_search_training_card_and_export_is_standard(finished_search, finished_train,  # noqa: F811
                                                                          tmp_path):
    """Default suite: the baseline search (every record of a search run), a training run, a card and an export."""
    _check_all(finished_search, finished_train, tmp_path, scored=False)


@pytest.mark.slow
def test_every_json_file_of_a_scored_search_is_standard(scored_search, finished_train, tmp_path):  # noqa: F811
    """With a scored MetaNTK-NAS search: its checkpoint, rounds and scores (tau = inf) are standard JSON too."""
    _check_all(scored_search, finished_train, tmp_path, scored=True)


def _check_all(finished_search, finished_train, tmp_path, scored):  # noqa: F811
    from metantk_zoo.pipeline import export_and_check, write_genotype_card

    n_search = _parse_all(finished_search)
    config = json.loads((finished_search / "config.json").read_text())["config"]
    assert config["inner_lr_time"] == "inf"  # tau = inf of the tiny preset, encoded
    if scored:
        ckpt = json.loads((finished_search / "checkpoints" / "search.json").read_text())
        assert ckpt["config"]["inner_lr_time"] == "inf"
        assert json.loads((finished_search / "search.json").read_text())["rounds"]
    n_train = _parse_all(finished_train)
    write_genotype_card(finished_train, tmp_path / "card")
    n_card = _parse_all(tmp_path / "card")
    export = export_and_check(finished_train, tmp_path / "export")
    assert export["logits_equal"]
    n_export = _parse_all(tmp_path / "export")
    # the training checkpoint's JSON metadata, too
    from safetensors import safe_open

    with safe_open(str(finished_train / "checkpoints" / "last.safetensors"), framework="pt") as f:
        strict_json(f.metadata()["metantk_checkpoint"])
    print(f"strict JSON parse: search {n_search}, training {n_train}, card {n_card}, export {n_export} files")
    assert n_search >= 5 and n_train >= 4 and n_card >= 1 and n_export >= 3, (n_search, n_train, n_card, n_export)
