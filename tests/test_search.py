"""Search: ranking rules, determinism, kill-and-resume equality, torchrun equality, baselines, bad input."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _search_helpers import nano_config, nano_source

import metantk_zoo.nas.loop as search_mod
from metantk_zoo.errors import CheckpointError, ConfigError, DatasetError
from metantk_zoo.genotype import Genotype
from metantk_zoo.nas import PRESETS, SearchConfig, SearchResult, rank_candidates, round_sig, search


def test_round_sig():
    assert round_sig(0.012345) == pytest.approx(0.0123)
    assert round_sig(-1234.5) == pytest.approx(-1230.0)
    assert round_sig(0.0) == 0.0 and math.isnan(round_sig(math.nan))


def test_rank_candidates_follows_the_reference_rules():
    # ΔC descending, ΔR ascending. 0.1231 and 0.1234 share a sort key (0.123), so the stable sort keeps the
    # iteration order and 0.1231 ranks first; ranks differ because the unrounded values differ.
    d_c = [0.1231, 0.1234, 0.5, 0.5, -0.2]
    d_r = [0.0, 0.01, 0.01, 0.02, -0.1]
    order, rank_c, rank_r, total = rank_candidates(d_c, d_r)
    assert rank_c == [1, 2, 0, 0, 3]  # the 0.5 tie shares dense rank 0
    assert rank_r == [1, 2, 2, 3, 0]
    assert total == [2, 4, 2, 3, 3]
    assert order == [2, 0, 3, 4, 1]  # equal totals keep the ΔC order: candidate 2 (ΔC 0.5) before candidate 0
    order, rank_c, _, _ = rank_candidates([math.nan, 0.1], [0.0, 0.0])
    assert order == [1, 0]  # a non-finite score is the least prunable


def _interrupt_after(monkeypatch, n_calls: int):
    real = search_mod._Scorer.score
    calls = {"n": 0}

    def score(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n_calls:
            raise KeyboardInterrupt("killed")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(search_mod._Scorer, "score", score)


@pytest.fixture(scope="module")
def nano_result(tmp_path_factory) -> SearchResult:
    return search(nano_source(), nano_config(), seed=3, show_progress=False)


def test_kill_and_resume_gives_the_uninterrupted_result(tmp_path, monkeypatch, nano_result):
    ckpt = tmp_path / "ckpt.json"
    _interrupt_after(monkeypatch, 40)  # round 0 has 36 candidates, normal node 1 three: killed in node 2
    with pytest.raises(KeyboardInterrupt):
        search(nano_source(), nano_config(), seed=3, checkpoint=ckpt, show_progress=False)
    saved = json.loads(ckpt.read_text())
    assert [r["name"] for r in saved["rounds"]] == ["round0", "group-normal-node1"]  # killed in node 2
    monkeypatch.undo()
    resumed = search(nano_source(), nano_config(), seed=3, checkpoint=ckpt, resume=True, show_progress=False)
    assert resumed.genotype == nano_result.genotype
    assert resumed.rounds == nano_result.rounds  # same seed, same data: identical tables, hence deterministic
    assert resumed.data_fingerprint == nano_result.data_fingerprint
    # the result is a valid genotype whose node 0 reads the two cell inputs (§2.4)
    g = Genotype.from_dict(resumed.to_dict()["genotype"])
    assert [i for _, i in g.normal[0]] == [0, 1] and [i for _, i in g.reduce[0]] == [0, 1]
    assert [r["name"] for r in resumed.rounds][:2] == ["round0", "group-normal-node1"]
    assert SearchResult.from_dict(json.loads(json.dumps(resumed.to_dict()))).genotype == g
    with pytest.raises(CheckpointError, match="another search"):
        search(nano_source(), nano_config(), seed=4, checkpoint=ckpt, resume=True, show_progress=False)


def test_a_search_killed_mid_stage_resumes_without_rescoring_its_finished_candidates(tmp_path, monkeypatch,
                                                                                      nano_result):
    """Killed after 20 of round 0's 36 candidates: the checkpoint holds those 20, and the resumed search scores only
    the other 16 and the 14 of the edge groups (30 calls, not 50), with the uninterrupted result."""
    ckpt = tmp_path / "ckpt.json"
    monkeypatch.setattr(search_mod, "PARTIAL_SAVE_EVERY_S", 0.0)  # save after every candidate
    _interrupt_after(monkeypatch, 20)
    with pytest.raises(KeyboardInterrupt):
        search(nano_source(), nano_config(), seed=3, checkpoint=ckpt, show_progress=False)
    saved = json.loads(ckpt.read_text())
    assert saved["rounds"] == [] and saved["partial"]["stage"] == "round0"
    first20 = [(c, e, o) for c in range(2) for e in range(9) for o in (1, 2)][:20]  # the stage's order (op 0: none)
    assert [tuple(s[:3]) for s in saved["partial"]["scores"]] == first20
    uninterrupted = {(r["cell"], r["edge"], r["op"]): r for r in nano_result.rounds[0]["candidates"]}
    for c, e, o, row in saved["partial"]["scores"]:
        named = (search_mod.CELLS[c], e, nano_config().space[o])
        assert row["cond"] == uninterrupted[named]["cond"] and row["regions"] == uninterrupted[named]["regions"]

    monkeypatch.undo()
    real, calls = search_mod._Scorer.score, []
    monkeypatch.setattr(search_mod._Scorer, "score", lambda self, stage, key, *a: calls.append((stage, key))
                        or real(self, stage, key, *a))
    resumed = search(nano_source(), nano_config(), seed=3, checkpoint=ckpt, resume=True, show_progress=False)
    assert len(calls) == 16 + 14
    assert [k for st, k in calls if st == "round0"] == [(c, e, o) for c in range(2) for e in range(9)
                                                        for o in (1, 2)][20:]
    assert resumed.rounds == nano_result.rounds and resumed.genotype == nano_result.genotype
    assert resumed.data_fingerprint == nano_result.data_fingerprint
    assert "partial" not in json.loads(ckpt.read_text())  # the finished stage replaced it


def test_partial_stage_reads_back_non_finite_scores_and_names_a_malformed_one(tmp_path):
    got = search_mod._load_partial({"stage": "round0", "seconds": 2, "seen": [3, 1], "scores": [
        [1, 4, 0, {"cond_origin": ["inf"], "cond": [2.5], "regions": [7], "nonfinite": True}]]}, "c.json")
    assert got["scores"] == {(1, 4, 0): {"cond_origin": [math.inf], "cond": [2.5], "regions": [7], "nonfinite": True}}
    assert got["seconds"] == 2.0 and got["stage"] == "round0"
    with pytest.raises(CheckpointError, match="c.json: malformed unfinished stage"):
        search_mod._load_partial({"stage": "round0", "scores": []}, "c.json")


def test_round_table_is_complete_and_prunes_one_op_per_edge(nano_result):
    r0 = nano_result.rounds[0]["candidates"]
    assert len(r0) == 2 * 9 * 2
    assert all({"delta_cond", "delta_regions", "rank_cond", "rank_regions", "total", "pruned"} <= set(r) for r in r0)
    per_edge = {}
    for r in r0:
        per_edge.setdefault((r["cell"], r["edge"]), []).append(r["pruned"])
    assert all(sum(v) == 1 for v in per_edge.values())
    # shared protocol: one unpruned kernel per round and repeat, the same for every candidate
    assert len({r["cond_origin"][0] for r in r0}) == 1
    assert len({r["cond"][0] for r in r0}) > 1
    groups = [s for s in nano_result.rounds if s["stage"] == "group"]
    assert sum(len(s["candidates"]) for s in groups) == 14
    assert all(sum(not c["pruned"] for c in s["candidates"]) == 2 for s in groups)


def test_seed_changes_the_draws():
    data = search_mod._Data(nano_source(), nano_config(), torch.device("cpu"))
    a = data.meta_batch(search_mod._rng(0, "kernel-batch", "round0", 0))
    b = data.meta_batch(search_mod._rng(1, "kernel-batch", "round0", 0))
    assert a.shape == (8, 3, 8, 8) and not torch.equal(a, b)


def test_reference_protocol_recomputes_the_unpruned_kernel_per_candidate():
    cfg = nano_config(protocol="reference")
    data = search_mod._Data(nano_source(), cfg, torch.device("cpu"))
    scorer = search_mod._Scorer(cfg, 0, data, torch.device("cpu"), "hook")
    scorer.start_stage("round0")
    alive = search_mod.initial_alive(3)
    rows = []
    for key in [(0, 0, 1), (0, 0, 2)]:
        cand = alive.clone()
        cand[key] = False
        rows.append(scorer.score("round0", key, cand, alive, alive))
    assert rows[0]["cond_origin"] != rows[1]["cond_origin"]  # new meta-batch and head per candidate
    assert rows[0]["regions_origin"] != [] and rows[0]["cond"] != rows[1]["cond"]


@pytest.mark.parametrize("shared_head", [False, True])
def test_shared_head_option_is_what_separates_an_unchanged_candidate_from_its_origin(shared_head):
    cfg = nano_config(shared_head=shared_head, method="metantk-only")
    data = search_mod._Data(nano_source(), cfg, torch.device("cpu"))
    scorer = search_mod._Scorer(cfg, 0, data, torch.device("cpu"), "hook")
    scorer.start_stage("round0")
    alive = search_mod.initial_alive(3)
    row = scorer.score("round0", (0, 0, 1), alive, alive, alive)  # a "candidate" that removes nothing
    # same weights and meta-batch: only the random head differs, unless it is shared
    assert (row["cond"] == row["cond_origin"]) is shared_head


def test_resized_image_cache_changes_no_input(monkeypatch):
    """Region patches and plain batches come from images resized once per search; drawing them with the cache
    cold, warm, or switched off gives the same tensors (a resize does not depend on the batch)."""
    cfg = nano_config(resolution=8, region_patches=40, region_batches=2, ntk_batch=12)
    source = nano_source(size=21)

    def draws(data):
        g = torch.Generator().manual_seed(5)
        return [*data.patch_batches(g), data.plain_batch(g), *data.patch_batches(g)]

    cached = search_mod._Data(source, cfg, torch.device("cpu"))
    cold, warm = draws(cached), draws(cached)  # the second pass reads every image from the cache
    assert bool(cached._have_resized.all())
    monkeypatch.setattr(search_mod, "RESIZED_CACHE_BYTES", 0)
    uncached = search_mod._Data(source, cfg, torch.device("cpu"))
    plain = draws(uncached)
    assert uncached._resized is None and uncached.seen == cached.seen
    for a, b, c in zip(cold, warm, plain, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_random_baseline_is_seeded_and_valid():
    a = search(nano_source(), nano_config(method="random", ops=PRESETS["mini5"].ops), seed=1, show_progress=False)
    b = search(nano_source(), nano_config(method="random", ops=PRESETS["mini5"].ops), seed=1, show_progress=False)
    c = search(nano_source(), nano_config(method="random", ops=PRESETS["mini5"].ops), seed=2, show_progress=False)
    assert a.genotype == b.genotype != c.genotype
    assert isinstance(a.genotype, Genotype) and a.rounds == []


def test_non_finite_kernel_is_reported_and_handled_as_the_reference(monkeypatch, caplog):
    real = search_mod.empirical_ntk

    def ntk(model, x, **kw):
        out = real(model, x, **kw)
        if not model.body.alive[0, 0, 1]:  # the candidate without normal edge 0's skip_connect
            out = {k: torch.full_like(v, math.nan) for k, v in out.items()}
        return out

    monkeypatch.setattr(search_mod, "empirical_ntk", ntk)
    cfg = nano_config(method="metantk-only")
    with caplog.at_level(logging.WARNING, logger="metantk_zoo.nas.loop"):
        res = search(nano_source(), cfg, seed=0, show_progress=False)
    bad = [r for r in res.rounds[0]["candidates"] if r["nonfinite"]]
    assert [(b["cell"], b["edge"], b["op"]) for b in bad] == [("normal", 0, "skip_connect")]
    assert bad[0]["cond"] == [1e5]
    assert "non-finite kernel for candidate normal edge 0 op skip_connect" in caplog.text


def test_bad_input_gets_clear_errors():
    with pytest.raises(ConfigError, match="unknown search preset 'mini6'; known presets: mini5"):
        SearchConfig.preset("mini6")
    with pytest.raises(DatasetError, match="needs 5 classes with at least 2 images.*has 3 such"):
        search(nano_source(n_classes=3), nano_config(n_way=5), seed=0, show_progress=False)
    with pytest.raises(ConfigError, match="kernel must be one of maml, anil"):
        nano_config(kernel="reptile")
    with pytest.raises(ConfigError, match="unknown search config field"):
        SearchConfig.from_dict({"chanels": 4})
    with pytest.raises(ConfigError, match="ops must be distinct"):
        nano_config(ops=("sep_conv_7x7",))
    assert SearchConfig(inner_lr_time=1000).inner_lr_time == math.inf  # the reference's tau >= 1000 rule


def test_presets_carry_the_published_kernel_settings():
    assert (PRESETS["mini5"].kernel, PRESETS["mini5"].inner_lr_time, PRESETS["mini5"].reg_coef) == ("maml", math.inf,
                                                                                                    1e-3)
    assert (PRESETS["mini8"].kernel, PRESETS["mini8"].inner_lr_time, PRESETS["mini8"].reg_coef) == ("anil", 1.0, 1e-5)
    assert (PRESETS["tiered8"].kernel, PRESETS["tiered8"].inner_lr_time, PRESETS["tiered8"].num_cells) == (
        "anil", math.inf, 8)
    assert PRESETS["tiered5"].num_classes == 351 and PRESETS["mini5"].channels == 48


def test_paper_presets_use_the_reference_protocol():
    """The four presets named after the paper's scripts draw a fresh meta-batch and recompute the unpruned kernel for
    every candidate and repeat, as the reference does (method-facts §6); only the CPU preset uses ``shared``."""
    assert {name: cfg.protocol for name, cfg in PRESETS.items()} == {
        "mini5": "reference", "mini8": "reference", "tiered5": "reference", "tiered8": "reference", "tiny": "shared"}
    assert SearchConfig.preset("mini5", protocol="shared").protocol == "shared"  # still an option


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tenas", "regions-only", "metantk-only"])
def test_baselines_run_and_zero_the_unused_score(method):
    res = search(nano_source(), nano_config(method=method), seed=0, show_progress=False)
    r0 = res.rounds[0]["candidates"]
    if method == "regions-only":
        assert all(r["delta_cond"] == 0 and r["rank_cond"] == 0 for r in r0)
    if method == "metantk-only":
        assert all(r["delta_regions"] == 0 and r["rank_regions"] == 0 for r in r0)
    if method == "tenas":
        assert len({r["cond_origin"][0] for r in r0}) == 1 and all(r["regions"] for r in r0)


@pytest.mark.slow
def test_torchrun_two_processes_equal_a_single_process(tmp_path, nano_result):
    out = tmp_path / "dist.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           str(Path(__file__).with_name("_search_dist.py")), str(out)]
    subprocess.run(cmd, check=True, env=env, timeout=600)
    got = json.loads(out.read_text())
    assert got["world_size"] == 2
    assert Genotype.from_dict(got["genotype"]) == nano_result.genotype
    assert got["rounds"] == json.loads(json.dumps(nano_result.rounds))


# ------------------------------------------------------------------------------------------------------- CLI
def test_cli_search_plumbing_writes_the_run_directory(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import metantk_zoo.nas
    import metantk_zoo.pipeline as pipeline
    from metantk_zoo.cli import app
    from metantk_zoo.models.genotypes import NAMED
    from metantk_zoo.utils.rundir import read_model_spec

    calls = []

    def fake_search(source, cfg, *, seed, device, checkpoint, resume, backend, share_inputs, candidate_batch=None,
                    kernel_graph="eager"):
        calls.append((cfg, seed, device, Path(checkpoint).name, resume, (backend, share_inputs, kernel_graph),
                      len(source.labels)))
        return SearchResult(NAMED["mini5_a"], cfg, seed, [{"stage": "round", "name": "round0", "candidates": []}])

    monkeypatch.setattr(pipeline, "load_search_source", lambda spec, res: (nano_source(), 64))
    monkeypatch.setattr(metantk_zoo.nas, "search", fake_search)
    out = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(app, ["search", "--preset", "tiny", "--dataset", "synthetic:size=32", "--out", str(out),
                              "--seed", "5", "--channels", "8", "--ops", "skip_connect,conv_3x3", "--json"])
    assert res.exit_code == 0, res.output
    cfg, seed, device, ckpt, resume, backend, n = calls[-1]
    assert (cfg.channels, cfg.ops, cfg.repeats, seed, device, ckpt, resume, backend, n) == (
        8, ("skip_connect", "conv_3x3"), 1, 5, "cpu", "search.json", False, ("hook", True, "eager"), 24)
    assert json.loads(res.stdout)["genotype"] == NAMED["mini5_a"].to_dict()
    assert Genotype.from_dict(json.loads((out / "genotype.json").read_text())) == NAMED["mini5_a"]
    assert json.loads((out / "search.json").read_text())["preset"] == "tiny"
    spec = read_model_spec(out)
    assert spec["architecture"] == "metantk_cell" and spec["model_args"]["num_cells"] == 3
    assert spec["num_classes"] == 64
    # a saved config.json loads first and flags override it
    res = runner.invoke(app, ["search", "--config", str(out / "config.json"), "--out", str(tmp_path / "run2"),
                              "--repeats", "2", "--resume", "--no-share-inputs",
                              "--kernel-graph", "fx"])
    assert res.exit_code == 0, res.output
    cfg, seed, _, _, resume, engine, _ = calls[-1]
    assert (cfg.channels, cfg.ops, cfg.repeats, seed, resume) == (8, ("skip_connect", "conv_3x3"), 2, 5, True)
    assert engine == ("hook", False, "fx")


def test_cli_search_bad_preset_is_one_line_error(tmp_path, capsys):
    from metantk_zoo.cli import main

    with pytest.raises(SystemExit) as e:
        main(["search", "--preset", "mini6", "--dataset", "synthetic", "--out", str(tmp_path)])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown search preset 'mini6'; known presets: mini5, mini8" in err


def test_share_inputs_changes_no_score_beyond_float_rounding():
    """The engine's shared ReLU/pool evaluation scores every candidate as the plain per-op network does."""
    cfg = nano_config()
    rows = {}
    for share in (False, True):
        data = search_mod._Data(nano_source(), cfg, torch.device("cpu"))
        scorer = search_mod._Scorer(cfg, 0, data, torch.device("cpu"), "hook", share_inputs=share)
        assert scorer.kernel_net.share_inputs is share and scorer.thin.share_inputs is share
        scorer.start_stage("round0")
        alive = search_mod.initial_alive(3)
        rows[share] = []
        for key in [(0, 0, 1), (1, 3, 2)]:
            cand = alive.clone()
            cand[key] = False
            rows[share].append(scorer.score("round0", key, cand, alive, alive))
    for plain, shared in zip(rows[False], rows[True], strict=True):
        assert plain["regions"] == shared["regions"] and plain["regions_origin"] == shared["regions_origin"]
        for k in ("cond", "cond_origin"):
            assert plain[k] == pytest.approx(shared[k], rel=1e-4)
        assert plain["cond"] != plain["cond_origin"]
