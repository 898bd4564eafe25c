"""The scripts' own arithmetic, checked against hand-computed answers (the scripts are run as a user runs them)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    """Import ``scripts/NAME.py`` as a module (in process: no interpreter start per test)."""
    spec = importlib.util.spec_from_file_location(f"_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _eval_file(path: Path, mean: float, ci95: float, shot: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"mean": mean, "ci95": ci95, "n_episodes": 1000, "n_way": 5, "n_shot": shot,
                                "n_query": 50, "n_aug_support": 5, "protocol": "paper", "manifest_hash": "x"}))


def test_aggregate_table1_gives_mean_and_sample_std_over_seeds(tmp_path, capsys):
    # 1-shot 50, 52, 54 %: mean 52, deviations -2, 0, 2 -> sum of squares 8 / (3 - 1) = 4 -> std 2.
    # 5-shot 70, 70, 73 %: mean 71, deviations -1, -1, 2 -> 6 / 2 = 3 -> std sqrt(3) = 1.7320...
    for seed, one, five in [(1, 0.50, 0.70), (2, 0.52, 0.70), (10, 0.54, 0.73)]:
        _eval_file(tmp_path / f"seed{seed}" / "eval_1shot.json", one, 0.008, 1)
        _eval_file(tmp_path / f"seed{seed}" / "eval_5shot.json", five, 0.006, 5)
    (tmp_path / "seedling").mkdir()  # not a seed folder: ignored
    assert _script("aggregate_table1").main([str(tmp_path), "--label", "ours"]) == 0
    out = capsys.readouterr().out
    table = json.loads((tmp_path / "table1.json").read_text())
    assert table["seeds"] == [1, 2, 10]  # numeric order, not "1, 10, 2"
    one, five = table["settings"]["5-way 1-shot"], table["settings"]["5-way 5-shot"]
    assert math.isclose(one["mean"], 52.0) and math.isclose(one["std"], 2.0)
    assert math.isclose(five["mean"], 71.0) and math.isclose(five["std"], math.sqrt(3))
    assert [r["ci95"] for r in one["runs"]] == [0.8, 0.8, 0.8]
    assert "| ours | 52.00 ± 2.00 | 71.00 ± 1.73 |" in out
    assert "| seed 10 | 54.00 ± 0.80 (95% CI) | 73.00 ± 0.60 (95% CI) |" in out
    assert (tmp_path / "table1.md").read_text() == out


def test_aggregate_table1_names_a_missing_result_in_one_line(tmp_path):
    _eval_file(tmp_path / "seed1" / "eval_1shot.json", 0.5, 0.01, 1)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as e:  # SystemExit(str): Python prints the one line and exits 1
        _script("aggregate_table1").main([str(tmp_path)])
    message = str(e.value.code)
    assert "\n" not in message and "seed1/eval_5shot.json is missing" in message
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_gpu_bench_projects_the_full_search_from_the_candidates_a_killed_child_scored(tmp_path, monkeypatch):
    """A search child killed at the budget: the projection is its checkpoint's scoring seconds (finished stages and
    the stage under way) over its candidates, times the 500 candidates of mini5 (3.0 s / 6 = 0.5 s -> 250 s)."""
    gpu_bench = _script("gpu_bench")
    assert gpu_bench.MINI5_CANDIDATES == 18 * 27 + 14 == 500  # 6 rounds of 18 edges x (7..2 ops), + 2 x (3 + 4)
    monkeypatch.setenv("GPU_BENCH_TMP", str(tmp_path))
    import torch

    def killed_child(checkpoint: dict) -> dict:
        """part_full on a child that writes ``checkpoint`` as the search would, then runs past the budget."""
        monkeypatch.setattr(gpu_bench, "_FULL_CHILD",
                            "import json, time\njson.dump(" + repr(checkpoint).replace("{", "{{").replace("}", "}}")
                            + ", open({ckpt!r}, 'w'))\ntime.sleep(60)\n")
        return gpu_bench.part_full(torch.device("cpu"), quick=False, budget=1.0)

    # killed in the first stage: 6 of its candidates in 3.0 s
    got = killed_child({"rounds": [], "wall_time": 0.0,
                        "partial": {"stage": "round0", "seconds": 3.0, "scores": [[0, 0, o, {}] for o in range(6)]}})
    assert not got["finished"] and not got["measured"] and got["stages_done"] == 0
    assert got["candidates_scored"] == 6
    assert got["seconds_per_candidate"] == pytest.approx(0.5)
    assert got["search_seconds"] == pytest.approx(250.0)
    # one finished stage of 4 candidates in 2.0 s, then 2 of the next in 1.0 s: the same 6 in 3.0 s
    got = killed_child({"rounds": [{"candidates": [{}] * 4}], "wall_time": 2.0,
                        "partial": {"stage": "round1", "seconds": 1.0, "scores": [[0, 0, 1, {}], [0, 0, 2, {}]]}})
    assert got["stages_done"] == 1 and got["candidates_done"] == 4 and got["candidates_scored"] == 6
    assert got["search_seconds"] == pytest.approx(250.0)
