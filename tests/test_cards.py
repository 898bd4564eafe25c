"""Genotype cards: content, cost counting, diagrams, the committed cards/ folder and the `card` command."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from PIL import Image

from metantk_zoo.errors import GenotypeError
from metantk_zoo.hub import cards
from metantk_zoo.hub.cards import diagrams
from metantk_zoo.models.complexity import complexity, count_macs, zoo_table
from metantk_zoo.models.genotypes import NAMED

ROOT = Path(__file__).resolve().parents[1]


def test_macs_are_counted_by_hand_on_a_tiny_net():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),
                              torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 10))
    # conv: 4*4*8 outputs x 3*3*3; depthwise: 4*4*8 x 1*3*3; linear: 128 x 10
    assert count_macs(net, (1, 3, 4, 4)) == 128 * 27 + 128 * 9 + 1280


def test_complexity_matches_the_registry_and_table_1():
    rows = {r["num_cells"]: r for r in complexity(NAMED["metanas_in_v2"])}
    assert rows[5]["params"] == 2_005_236 - 20 and rows[8]["params"] == 3_530_916 - 20  # Table 1, minus 20 dummies
    assert rows[5]["macs"] < rows[8]["macs"]
    table = {r["name"]: r["params"] for r in zoo_table()}
    assert rows[5]["params"] == table["metantk_metanas_cell5"] and rows[8]["params"] == table["metantk_metanas_cell8"]


def test_card_of_a_zoo_name_has_both_notations_cost_and_provenance():
    data = cards.card_data("metantk_cell5")
    assert data.name == "mini5_a" and data.architectures == ["metantk_cell5", "metantk_mini5_a"]
    md = cards.render_markdown(data, svg="cells.svg")
    assert NAMED["mini5_a"].to_darts() in md and NAMED["mini5_a"].to_json() in md
    assert "![normal and reduction cells of mini5_a](cells.svg)" in md
    assert "| 5 | 48 | 1,760,800 |" in md and "script_mini_5cell.sh, example (1)" in md
    assert "Few-shot results" not in md  # no results, no table


@pytest.mark.parametrize("form", ["darts", "json", "file", "genotype"])
def test_card_accepts_every_genotype_form(tmp_path, form):
    g = NAMED["tiered8_c"]
    (tmp_path / "genotype.json").write_text(g.to_json())
    source = {"darts": g.to_darts(), "json": g.to_json(), "file": str(tmp_path / "genotype.json"), "genotype": g}[form]
    data = cards.card_data(source, with_complexity=False)
    assert data.genotype == g and data.architectures == ["metantk_tiered8_c"]


def test_card_of_a_search_run_shows_provenance_and_results(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    g = NAMED["mini5_b"]
    (run / "genotype.json").write_text(g.to_json())
    (run / "search.json").write_text(json.dumps({"seed": 3, "wall_time": 81.25, "device": "cuda:0",
                                                 "data_fingerprint": "c0ffee" * 10, "config": {"kernel": "anil"}}))
    (run / "config.json").write_text(json.dumps({"preset": "tiny"}))
    (run / "eval.json").write_text(json.dumps([{"protocol": "rfs", "n_way": 5, "n_shot": 5, "n_query": 15,
                                                "n_episodes": 600, "mean": 0.7, "ci95": 0.0123, "dataset": "synthetic",
                                                "ci_formula": "1.96 * std / sqrt(n)"}]))
    data = cards.card_data(run, with_complexity=False)
    assert data.provenance == {"kind": "search", "run": "run", "preset": "tiny", "seed": 3,
                               "data_fingerprint": "c0ffee" * 10, "search_time_s": 81.25, "device": "cuda:0",
                               "kernel": "anil"}
    md = cards.render_markdown(data)
    assert "| synthetic | - | rfs | 5-way 5-shot, 15 queries | 600 | 70.00 | ± 1.23 |" in md
    assert "Confidence interval: 1.96 * std / sqrt(n)." in md and "81.2 s" in md


def test_card_rejects_what_is_not_a_genotype():
    with pytest.raises(GenotypeError, match="neither a zoo name"):
        cards.card_data("metantk_does_not_exist")
    with pytest.raises(GenotypeError, match="no fixed genotype"):
        cards.card_data("metantk_cell")


def test_diagrams_draw_every_edge():
    g = NAMED["tiered5_a"]
    svg = cards.cell_diagram_svg(g, "tiered5_a")
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert sorted(t for t in texts if t in diagrams._OP_COLOURS) == sorted(g.ops)  # 12 labelled edges
    png = Image.open(io.BytesIO(cards.cell_diagram_png(g, "tiered5_a")))
    assert png.size == (2 * 640 * 2, (330 + 30) * 2) and png.mode == "RGB"
    assert len(png.getcolors(1 << 20)) > 10  # drawn, not blank


def test_committed_cards_are_up_to_date():
    """Fails when cards/ differs from what the code renders: run `python scripts/make_cards.py`."""
    rendered = cards.render_cards_folder()
    committed = {p.relative_to(ROOT / "cards").as_posix() for p in (ROOT / "cards").rglob("*") if p.is_file()}
    assert committed == set(rendered), "cards/ has missing or extra files: run python scripts/make_cards.py"
    for name, data in rendered.items():
        on_disk = (ROOT / "cards" / name).read_bytes()
        if name.endswith(".png"):  # font rasterisation may differ across Pillow/FreeType builds: compare geometry
            assert Image.open(io.BytesIO(on_disk)).size == Image.open(io.BytesIO(data)).size, name
        else:
            assert on_disk == data, f"cards/{name} is out of date: run python scripts/make_cards.py"


def test_card_command_writes_the_four_files(tmp_path):
    from typer.testing import CliRunner

    from metantk_zoo.cli import app

    result = CliRunner().invoke(app, ["card", "metantk_metanas_cell8", "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    from metantk_zoo.utils.rundir import MARKER

    # the four card files, and the marker that lets a later `card --overwrite` remove this folder (and no other)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted([*cards.CARD_FILES, MARKER])
    card = json.loads((tmp_path / "c" / "card.json").read_text())
    assert card["name"] == "metanas_in_v2" and card["genotype"] == NAMED["metanas_in_v2"].to_dict()
    assert [r["num_cells"] for r in card["complexity"]] == [5, 8]
