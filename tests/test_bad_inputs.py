"""The bad-input catalogue: every command and the Python API, fed what a user gets wrong.

Each CLI case runs the real console entry point (:func:`metantk_zoo.cli.main`) in process and asserts the error
contract: the exit code (1 for a user error, 2 for a usage error), exactly one ``Error:`` line on stderr naming the
problem (no traceback), and *nothing changed*: a finished search run, a finished training run and every file the
cases point at (corrupt copies, foreign folders, files) hash the same before and after the refused command.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metantk_zoo.cli import main
from tests._finished_runs import (  # noqa: F401  (session fixtures)
    META_TRAIN_FLAGS,
    NANO_SEARCH_FLAGS,
    NANO_TRAIN_FLAGS,
    RANDOM_SEARCH_FLAGS,
    TINY_DATA,
    before_first_checkpoint,
    copy_run,
    finished_meta,
    finished_search,
    finished_train,
    tree_hash,
)

GOOD_CELL = "[('skip_connect', 0), ('max_pool_3x3BN', 1)]"
GOOD_NORMAL = f"[{GOOD_CELL}, [('skip_connect', 0), ('skip_connect', 2)], [('skip_connect', 1), ('skip_connect', 3)]]"


def _genotype(normal: str = GOOD_NORMAL) -> str:
    return f"Genotype(normal={normal}, normal_concat=[2, 3, 4], reduce={GOOD_NORMAL}, reduce_concat=[2, 3, 4])"


UNKNOWN_OP = _genotype(GOOD_NORMAL.replace("'max_pool_3x3BN', 1", "'laser_beam_7x7', 1"))
INDEX_OUT_OF_RANGE = _genotype(GOOD_NORMAL.replace("('skip_connect', 3)", "('skip_connect', 9)"))
NO_GPU = "cuda:99" if torch.cuda.is_available() else "cuda"


class _Pickled:
    """A pickle that would create a file if anything ever unpickled it."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


@pytest.fixture(scope="module")
def world(finished_search, finished_train, finished_meta, tmp_path_factory):  # noqa: F811
    """Everything the cases point at: finished runs, corrupt copies of them, runs killed before their first
    checkpoint, an export, a demo, a file, a foreign folder, datasets."""
    from metantk_zoo.pipeline import export_to_folder
    from metantk_zoo.utils.rundir import MARKER

    root = tmp_path_factory.mktemp("catalogue")
    w = {"search": finished_search, "train": finished_train, "meta": finished_meta, "root": root}
    (root / "afile").write_text("a regular file\n")
    w["under_file"] = root / "afile" / "run"
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("\\section{Do not delete}\n")
    w["foreign"] = foreign
    (root / "empty_dataset").mkdir()
    w["empty_dataset"] = root / "empty_dataset"
    bad_parquet = root / "bad_parquet"
    bad_parquet.mkdir()
    (bad_parquet / "train.parquet").write_bytes(b"PAR1 this is not a parquet file PAR1")
    w["bad_parquet"] = bad_parquet
    images = root / "corrupt_images" / "train"
    for c in ("a", "b"):
        (images / c).mkdir(parents=True)
        for i in range(2):
            (images / c / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    w["corrupt_images"] = root / "corrupt_images"
    # corrupt copies of the finished training run
    t = finished_train
    w["trunc_config"] = copy_run(t, root / "trunc_config")
    text = (w["trunc_config"] / "config.json").read_text()
    (w["trunc_config"] / "config.json").write_text(text[: len(text) // 2])
    w["trunc_model_json"] = copy_run(t, root / "trunc_model_json")
    (w["trunc_model_json"] / "model.json").write_text('{"architecture": "metantk_na')
    w["bad_weights"] = copy_run(t, root / "bad_weights")
    data = (w["bad_weights"] / "model.safetensors").read_bytes()
    (w["bad_weights"] / "model.safetensors").write_bytes(data[: len(data) // 3])
    w["bad_ckpt"] = copy_run(t, root / "bad_ckpt")
    ck = w["bad_ckpt"] / "checkpoints" / "last.safetensors"
    ck.write_bytes(ck.read_bytes()[:100])
    (w["bad_ckpt"] / "model.safetensors").unlink()  # an unfinished run: --resume must read the checkpoint
    # search runs with a checkpoint of another search, and a corrupt one
    w["other_ckpt"] = copy_run(finished_search, root / "other_ckpt")
    config = json.loads((finished_search / "config.json").read_text())["config"]
    cfg = {k: v for k, v in config.items() if k not in ("preset", "dataset", "seed", "device", "backend",
                                                        "share_inputs")}
    (w["other_ckpt"] / "checkpoints").mkdir()
    (w["other_ckpt"] / "checkpoints" / "search.json").write_text(json.dumps(
        {"version": 1, "config": {**cfg, "ops": cfg["ops"].split(",")}, "seed": 12345, "alive": [], "rounds": []}))
    w["bad_search_ckpt"] = copy_run(finished_search, root / "bad_search_ckpt")
    (w["bad_search_ckpt"] / "checkpoints").mkdir()
    (w["bad_search_ckpt"] / "checkpoints" / "search.json").write_text('{"version": 1, "alive": [[')
    # a Hub-layout folder with pickled weights only
    pickled = root / "pickled_repo"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"architecture": "metantk_nano", "num_classes": 0}))
    (pickled / "pytorch_model.bin").write_bytes(pickle.dumps(_Pickled(root / "UNPICKLED")))
    w["pickled"] = pickled
    w["pwned"] = root / "PWNED"
    # runs killed before their first checkpoint: config.json (and model.json) only; one killed even before that
    w["search_early"] = before_first_checkpoint(finished_search, root / "search_early")
    w["train_early"] = before_first_checkpoint(finished_train, root / "train_early")
    w["meta_early"] = before_first_checkpoint(finished_meta, root / "meta_early")
    w["train_spec_only"] = before_first_checkpoint(finished_train, root / "train_spec_only",
                                                   keep=(MARKER, "model.json"))
    # an export, an unfinished demo, a results file of eval --out
    export_to_folder(finished_train, root / "export", repo_id="org/nano")
    w["export"] = root / "export"
    demo = root / "demo"
    demo.mkdir()
    (demo / MARKER).write_text(json.dumps({"kind": "demo", "version": "0"}))
    (demo / "demo.json").write_text(json.dumps({"settings": {
        "dataset": "synthetic:size=32", "seed": 0, "epochs": 10, "init_channels": 16, "num_cells": 3, "episodes": 300,
        "n_query": 15, "image_size": 32, "device": "cpu"}, "done": {}}))
    w["demo"] = demo
    # configs
    (root / "unknown_key.json").write_text(json.dumps({"channels": 4, "warp_factor": 9}))
    (root / "wrong_type.json").write_text(json.dumps({"precision": "three"}))
    (root / "not_json.json").write_text("{channels: 4")
    return w


def _cases():
    """(id, argv builder, exit code, words the error line must contain (lower case))."""
    s, t = "search", "train"

    def out_new(w):
        return str(w["root"] / "never_created")

    return [
        # -------------------------------------------------------------- genotypes
        ("genotype-unknown-op", lambda w: [t, "--model", UNKNOWN_OP, "--dataset", TINY_DATA, "--out", out_new(w)],
         1, ["laser_beam_7x7"]),
        ("genotype-index-out-of-range", lambda w: [t, "--model", INDEX_OUT_OF_RANGE, "--dataset", TINY_DATA,
                                                   "--out", out_new(w)], 1, ["9"]),
        ("genotype-code-injection-train", lambda w: [t, "--model", f"__import__('os').system('touch {w['pwned']}')",
                                                     "--dataset", TINY_DATA, "--out", out_new(w)], 1, ["genotype"]),
        ("genotype-code-injection-card", lambda w: ["card", f"Genotype(normal=__import__('os').system('touch "
                                                    f"{w['pwned']}'))", "--out", out_new(w)], 1, []),
        ("genotype-truncated", lambda w: ["card", "Genotype(normal=[[('skip_connect', 0)", "--out", out_new(w)],
         1, []),
        ("model-unknown-name", lambda w: [t, "--model", "resnet_9000", "--dataset", TINY_DATA, "--out", out_new(w)],
         1, ["resnet_9000"]),
        # -------------------------------------------------------------- datasets
        ("dataset-missing", lambda w: ["eval", "metantk_nano", "--dataset", str(w["root"] / "no_such_data"),
                                       "--episodes", "2"], 1, ["no_such_data"]),
        ("dataset-empty-folder", lambda w: ["eval", "metantk_nano", "--dataset", str(w["empty_dataset"]),
                                            "--episodes", "2"], 1, ["empty_dataset"]),
        ("dataset-corrupt-parquet", lambda w: ["data", "info", str(w["bad_parquet"])], 1, ["parquet"]),
        ("dataset-corrupt-images", lambda w: [s, *NANO_SEARCH_FLAGS[:2], "--dataset", str(w["corrupt_images"]),
                                              *NANO_SEARCH_FLAGS[4:], "--out", out_new(w)], 1, ["image"]),
        ("dataset-too-few-classes", lambda w: ["eval", "metantk_nano", "--dataset", TINY_DATA, "--n-way", "5",
                                               "--episodes", "2", "--device", "cpu"], 1, ["5"]),
        ("dataset-prepare-missing-source", lambda w: ["data", "prepare", str(w["root"] / "no_such_source"),
                                                      "--out", out_new(w)], 1, ["no_such_source"]),
        ("dataset-search-too-few-classes", lambda w: [s, *NANO_SEARCH_FLAGS, "--n-way", "7", "--out", out_new(w)],
         1, ["7"]),
        # -------------------------------------------------------------- run directories
        ("run-truncated-config", lambda w: [t, *NANO_TRAIN_FLAGS, "--epochs", "2", "--resume",
                                            "--out", str(w["trunc_config"])], 1, ["config.json"]),
        ("run-truncated-model-json", lambda w: ["eval", str(w["trunc_model_json"]), "--dataset", TINY_DATA,
                                                "--episodes", "2"], 1, ["model.json"]),
        ("run-corrupt-weights", lambda w: ["eval", str(w["bad_weights"]), "--dataset", TINY_DATA, "--episodes",
                                           "2"], 1, ["model.safetensors"]),
        ("run-corrupt-weights-export", lambda w: ["push", str(w["bad_weights"]), "--repo", "org/x", "--dry-run",
                                                  "--local-dir", out_new(w)], 1, ["model.safetensors"]),
        ("run-corrupt-checkpoint", lambda w: [t, *NANO_TRAIN_FLAGS, "--epochs", "2", "--resume",
                                              "--out", str(w["bad_ckpt"])], 1, ["last.safetensors"]),
        ("run-checkpoint-of-another-search", lambda w: [s, *RANDOM_SEARCH_FLAGS, "--resume",
                                                        "--out", str(w["other_ckpt"])], 1, ["another search"]),
        ("run-corrupt-search-checkpoint", lambda w: [s, *RANDOM_SEARCH_FLAGS, "--resume",
                                                     "--out", str(w["bad_search_ckpt"])], 1, ["search.json"]),
        ("run-resume-other-settings-search", lambda w: [s, *RANDOM_SEARCH_FLAGS, "--seed", "7", "--resume",
                                                        "--out", str(w["search"])], 1, ["seed"]),
        ("run-resume-other-settings-train", lambda w: [t, *NANO_TRAIN_FLAGS, "--epochs", "5", "--resume",
                                                       "--out", str(w["train"])], 1, ["epochs"]),
        ("run-resume-before-first-checkpoint-search", lambda w: [s, *RANDOM_SEARCH_FLAGS, "--seed", "7", "--resume",
                                                                 "--out", str(w["search_early"])], 1, ["seed"]),
        ("run-resume-before-first-checkpoint-train", lambda w: [t, *NANO_TRAIN_FLAGS, "--epochs", "3", "--resume",
                                                                "--out", str(w["train_early"])], 1, ["epochs"]),
        ("run-resume-before-first-checkpoint-meta", lambda w: [t, *META_TRAIN_FLAGS, "--set", "n_query=3",
                                                               "--resume", "--out", str(w["meta_early"])],
         1, ["n_query"]),
        ("run-resume-before-first-checkpoint-other-method", lambda w: [t, *META_TRAIN_FLAGS[2:], "--method", "anil",
                                                                       "--resume", "--out", str(w["meta_early"])],
         1, ["method"]),
        ("run-resume-before-config-other-model", lambda w: [t, *NANO_TRAIN_FLAGS, "--init-channels", "8",
                                                            "--resume", "--out", str(w["train_spec_only"])],
         1, ["another model", "model_args"]),
        ("run-card-corrupt-model-json", lambda w: ["card", str(w["trunc_model_json"]), "--out", out_new(w)],
         1, ["model.json"]),
        # -------------------------------------------------------------- overwrite policy
        ("policy-train-into-search-run", lambda w: [t, *NANO_TRAIN_FLAGS, "--out", str(w["search"])],
         1, ["search run", "not a train run"]),
        ("policy-search-into-train-run", lambda w: [s, *NANO_SEARCH_FLAGS, "--out", str(w["train"])],
         1, ["train run", "not a search run"]),
        ("policy-search-again-without-resume", lambda w: [s, *NANO_SEARCH_FLAGS, "--out", str(w["search"])],
         1, ["already holds", "--resume", "--overwrite"]),
        ("policy-train-again-without-resume", lambda w: [t, *NANO_TRAIN_FLAGS, "--out", str(w["train"])],
         1, ["already holds", "--resume"]),
        ("policy-resume-a-foreign-folder", lambda w: [t, *NANO_TRAIN_FLAGS, "--resume", "--out", str(w["foreign"])],
         1, ["did not write"]),
        ("policy-overwrite-a-foreign-folder", lambda w: [s, *NANO_SEARCH_FLAGS, "--overwrite",
                                                         "--out", str(w["foreign"])], 1, ["--overwrite only"]),
        ("policy-prepare-overwrite-a-foreign-folder", lambda w: ["data", "prepare", TINY_DATA, "--overwrite",
                                                                 "--out", str(w["foreign"])], 1, ["--overwrite only"]),
        ("policy-prepare-overwrite-a-run", lambda w: ["data", "prepare", TINY_DATA, "--overwrite",
                                                      "--out", str(w["train"])], 1, ["not a prepared dataset"]),
        ("policy-resume-and-overwrite", lambda w: [t, *NANO_TRAIN_FLAGS, "--resume", "--overwrite",
                                                   "--out", str(w["train"])], 1, ["exclude each other"]),
        ("policy-export-into-non-empty", lambda w: ["push", str(w["train"]), "--repo", "org/x", "--dry-run",
                                                    "--local-dir", str(w["foreign"])], 1, ["not empty"]),
        ("policy-export-overwrite-a-foreign-folder", lambda w: ["push", str(w["train"]), "--repo", "org/x",
                                                                "--local-dir", str(w["foreign"]), "--overwrite"],
         1, ["--overwrite only"]),
        ("policy-export-again-without-overwrite", lambda w: ["push", str(w["train"]), "--repo", "org/x",
                                                             "--local-dir", str(w["export"])],
         1, ["exists", "pass --overwrite"]),
        ("policy-export-into-a-run", lambda w: ["push", str(w["train"]), "--repo", "org/x", "--local-dir",
                                                str(w["search"])], 1, ["search run", "not an export run"]),
        ("policy-export-overwrite-without-local-dir", lambda w: ["push", str(w["train"]), "--repo", "org/x",
                                                                 "--overwrite"], 2, []),
        ("policy-demo-into-a-foreign-folder", lambda w: ["demo", "--out", str(w["foreign"]), "--device", "cpu"],
         1, ["did not write"]),
        ("policy-demo-into-a-train-run", lambda w: ["demo", "--out", str(w["train"]), "--device", "cpu"],
         1, ["train run", "not a demo run"]),
        ("policy-demo-overwrite-a-foreign-folder", lambda w: ["demo", "--out", str(w["foreign"]), "--overwrite",
                                                              "--device", "cpu"], 1, ["--overwrite only"]),
        ("policy-demo-again-without-resume", lambda w: ["demo", "--out", str(w["demo"]), "--device", "cpu"],
         1, ["already holds a demo run", "--resume", "--overwrite"]),
        ("policy-demo-resume-and-overwrite", lambda w: ["demo", "--out", str(w["demo"]), "--resume", "--overwrite",
                                                        "--device", "cpu"], 1, ["exclude each other"]),
        ("run-resume-other-settings-demo", lambda w: ["demo", "--out", str(w["demo"]), "--resume", "--epochs", "3",
                                                      "--device", "cpu"], 1, ["other settings", "epochs"]),
        ("policy-eval-out-a-foreign-file", lambda w: ["eval", "metantk_nano", "--dataset", TINY_DATA, "--episodes",
                                                      "2", "--out", str(w["root"] / "afile")],
         1, ["not a results file", "merge into"]),
        ("policy-eval-out-overwrite-a-foreign-file", lambda w: ["eval", "metantk_nano", "--dataset", TINY_DATA,
                                                                "--episodes", "2", "--overwrite",
                                                                "--out", str(w["root"] / "afile")],
         1, ["not a results file", "will not replace"]),
        ("policy-eval-out-a-folder", lambda w: ["eval", "metantk_nano", "--dataset", TINY_DATA, "--episodes", "2",
                                                "--out", str(w["foreign"])], 1, ["is a folder", "results file"]),
        ("policy-eval-out-a-run-config", lambda w: ["eval", "metantk_nano", "--dataset", TINY_DATA, "--episodes",
                                                    "2", "--out", str(w["train"] / "config.json")],
         1, ["not a results file"]),
        ("out-under-a-file-eval", lambda w: ["eval", "metantk_nano", "--dataset", TINY_DATA, "--episodes", "2",
                                             "--out", str(w["under_file"])], 1, ["a file"]),
        # -------------------------------------------------------------- Hub ids (offline)
        ("hub-malformed-id-eval", lambda w: ["eval", "hf-hub:not a repo!", "--dataset", TINY_DATA], 1,
         ["repository id"]),
        ("hub-missing-repo-offline", lambda w: ["eval", "hf-hub:org/no_such_model", "--dataset", TINY_DATA], 1,
         ["org/no_such_model"]),
        ("hub-malformed-id-pull", lambda w: ["pull", "../../etc/passwd"], 1, ["repository id"]),
        ("hub-missing-repo-pull", lambda w: ["pull", "org/no_such_model"], 1, ["org/no_such_model"]),
        ("hub-malformed-id-push", lambda w: ["push", str(w["train"]), "--repo", "no slash", "--dry-run",
                                             "--local-dir", out_new(w)], 1, ["repository id"]),
        ("hub-local-dir-missing", lambda w: ["eval", f"local-dir:{w['root'] / 'nope'}", "--dataset", TINY_DATA],
         1, ["nope"]),
        ("hub-local-dir-pickle-only", lambda w: ["eval", f"local-dir:{w['pickled']}", "--dataset", TINY_DATA],
         1, ["model.safetensors"]),
        ("hub-timm-missing-weights", lambda w: ["eval", "metantk_cell5", "--pretrained", "--dataset", TINY_DATA],
         1, ["pretrained"]),
        # -------------------------------------------------------------- configs
        ("config-unknown-key", lambda w: [s, "--config", str(w["root"] / "unknown_key.json"), *NANO_SEARCH_FLAGS,
                                          "--out", out_new(w)], 2, []),
        ("config-wrong-type", lambda w: [s, "--config", str(w["root"] / "wrong_type.json"), *NANO_SEARCH_FLAGS,
                                         "--out", out_new(w)], 2, []),
        ("config-not-json", lambda w: [s, "--config", str(w["root"] / "not_json.json"), *NANO_SEARCH_FLAGS,
                                       "--out", out_new(w)], 2, []),
        ("config-missing-file", lambda w: [s, "--config", str(w["root"] / "nope.json"), *NANO_SEARCH_FLAGS,
                                           "--out", out_new(w)], 2, []),
        ("config-set-unknown-field", lambda w: [t, *NANO_TRAIN_FLAGS, "--set", "warp_factor=9", "--out",
                                                out_new(w)], 1, ["warp_factor"]),
        ("config-set-wrong-type", lambda w: [t, *NANO_TRAIN_FLAGS, "--set", "lr=fast", "--out", out_new(w)],
         1, ["lr"]),
        ("config-unknown-preset", lambda w: [s, *NANO_SEARCH_FLAGS[2:], "--preset", "mini9", "--out", out_new(w)],
         1, ["mini9"]),
        ("config-unknown-method", lambda w: [t, *NANO_TRAIN_FLAGS, "--method", "telepathy", "--out", out_new(w)],
         2, []),
        ("config-unknown-protocol", lambda w: ["eval", "metantk_nano", "--dataset", TINY_DATA, "--protocol",
                                               "vibes"], 2, []),
        ("usage-unknown-option", lambda w: [s, *NANO_SEARCH_FLAGS, "--warp", "--out", out_new(w)], 2, []),
        ("usage-not-a-number", lambda w: [t, *NANO_TRAIN_FLAGS, "--epochs", "many", "--out", out_new(w)], 2, []),
        # -------------------------------------------------------------- counts
        ("count-epochs-negative", lambda w: [t, *NANO_TRAIN_FLAGS, "--epochs", "-1", "--out", out_new(w)],
         1, ["epochs"]),
        ("count-batch-size-zero", lambda w: [t, *NANO_TRAIN_FLAGS, "--set", "batch_size=0", "--out", out_new(w)],
         1, ["batch_size"]),
        ("count-episodes-zero", lambda w: ["eval", "metantk_nano", "--dataset", TINY_DATA, "--episodes", "0"],
         1, ["episodes"]),
        ("count-n-shot-zero", lambda w: ["eval", "metantk_nano", "--dataset", TINY_DATA, "--n-shot", "0"],
         1, ["shot"]),
        ("count-n-way-larger-than-split", lambda w: ["eval", "metantk_nano", "--dataset", TINY_DATA, "--n-way",
                                                     "50", "--episodes", "2", "--split", "train"], 1, ["50"]),
        ("count-repeats-zero", lambda w: [s, *NANO_SEARCH_FLAGS, "--repeats", "0", "--out", out_new(w)],
         1, ["repeats"]),
        ("count-search-cells-too-few", lambda w: [s, *NANO_SEARCH_FLAGS, "--num-cells", "2", "--out", out_new(w)],
         1, ["num_cells"]),
        ("count-train-cells-too-few", lambda w: [t, *NANO_TRAIN_FLAGS, "--num-cells", "2", "--out", out_new(w)],
         1, ["num_cells"]),
        # -------------------------------------------------------------- devices
        ("device-absent-search", lambda w: [s, *NANO_SEARCH_FLAGS, "--device", NO_GPU, "--out", out_new(w)],
         1, ["--device"]),
        ("device-absent-train", lambda w: [t, *NANO_TRAIN_FLAGS, "--device", NO_GPU, "--out", out_new(w)],
         1, ["--device"]),
        ("device-absent-train-resume", lambda w: [t, *NANO_TRAIN_FLAGS, "--epochs", "2", "--device", NO_GPU,
                                                  "--resume", "--out", str(w["train"])], 1, ["--device"]),
        ("device-nonsense", lambda w: ["eval", "metantk_nano", "--dataset", TINY_DATA, "--device", "tpu"],
         1, ["tpu"]),
        ("device-cuda-graph-on-cpu", lambda w: [s, *NANO_SEARCH_FLAGS, "--device", "cpu", "--kernel-graph",
                                                "cuda-graph", "--out", out_new(w)], 1, ["cuda-graph", "found cpu"]),
        ("kernel-graph-unknown", lambda w: [s, *NANO_SEARCH_FLAGS, "--kernel-graph", "jit", "--out", out_new(w)],
         1, ["kernel_graph", "'jit'"]),
        # -------------------------------------------------------------- output paths
        ("out-under-a-file-search", lambda w: [s, *NANO_SEARCH_FLAGS, "--out", str(w["under_file"])],
         1, ["a file"]),
        ("out-under-a-file-train", lambda w: [t, *NANO_TRAIN_FLAGS, "--out", str(w["under_file"])], 1, ["a file"]),
        ("out-under-a-file-prepare", lambda w: ["data", "prepare", TINY_DATA, "--out", str(w["under_file"])],
         1, ["a file"]),
        ("out-under-a-file-card", lambda w: ["card", "metantk_cell5", "--out", str(w["under_file"])], 1, ["a file"]),
        ("policy-card-into-a-foreign-folder", lambda w: ["card", "metantk_cell5", "--out", str(w["foreign"])],
         1, ["did not write"]),
        ("policy-card-into-a-run", lambda w: ["card", "metantk_cell5", "--out", str(w["train"])],
         1, ["train run", "not a card run"]),
        ("out-is-a-file-train", lambda w: [t, *NANO_TRAIN_FLAGS, "--out", str(w["root"] / "afile")],
         1, ["a file"]),
    ]


CASES = _cases()


def _snapshot(w) -> dict[str, str]:
    return {"search": tree_hash(w["search"]), "train": tree_hash(w["train"]), "meta": tree_hash(w["meta"]),
            "root": tree_hash(w["root"])}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_one_line_and_changes_nothing(case, world, capsys, monkeypatch):
    name, argv_fn, code, words = case
    monkeypatch.delenv("METANTK_DEBUG", raising=False)
    argv = argv_fn(world)
    before = _snapshot(world)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == code, f"{name}: exit {exit_info.value.code}, stderr:\n{err}"
    assert "Traceback" not in err
    if code == 1:
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("Error: ")]
        # one error line, last; other lines can only be a library's progress bar drawn before the refusal
        assert len(errors) == 1 and lines[-1] == errors[0], f"{name}: expected one error line, got:\n{err}"
        assert "internal error" not in errors[0], errors[0]
        for word in words:
            assert word.lower() in errors[0].lower(), f"{name}: {word!r} not in {errors[0]!r}"
    assert _snapshot(world) == before, f"{name}: files changed"
    assert not (world["root"] / "never_created").exists()
    assert not world["pwned"].exists() and not (world["root"] / "UNPICKLED").exists()


# ------------------------------------------------------------------------------------------------ outside the CLI
def test_catalogue_size():
    assert len(CASES) + len(API_CASES) + 3 >= 40  # + the Hub-server, traceback and manifest tests below


def _api_cases():
    from metantk_zoo import pipeline
    from metantk_zoo.errors import CheckpointError, ConfigError, GenotypeError, HubError
    from metantk_zoo.genotype import Genotype
    from metantk_zoo.nas import SearchConfig

    return [
        ("api-genotype-injection", lambda w: Genotype.parse("__import__('os').system('true')"), GenotypeError),
        ("api-search-config-zero-repeats", lambda w: SearchConfig(repeats=0), ConfigError),
        ("api-train-into-search-run", lambda w: pipeline.run_train("metantk_nano", TINY_DATA, w["search"],
                                                                   device="cpu"), ConfigError),
        ("api-search-into-train-run", lambda w: pipeline.run_search("tiny", TINY_DATA, w["train"], device="cpu"),
         ConfigError),
        ("api-load-backbone-missing-hub-repo", lambda w: pipeline.load_backbone("hf-hub:org/no_such_model"),
         HubError),
        ("api-load-backbone-corrupt-weights", lambda w: pipeline.load_backbone(str(w["bad_weights"])),
         CheckpointError),
    ]


API_CASES = [c[0] for c in _api_cases()]


@pytest.mark.parametrize("index", range(len(API_CASES)), ids=API_CASES)
def test_python_api_raises_the_package_errors_and_changes_nothing(index, world):
    name, fn, exc = _api_cases()[index]
    before = _snapshot(world)
    with pytest.raises(exc) as info:
        fn(world)
    assert "\n" not in str(info.value)
    assert _snapshot(world) == before


def test_hf_hub_repo_with_only_pickled_weights_is_refused(local_hub, world, tmp_path, monkeypatch, capsys):
    """A Hub repository holding only ``pytorch_model.bin`` is refused with one line and never unpickled."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from tests.hub_server import patch_client

    patch_client(monkeypatch, local_hub, tmp_path / "cache")
    HfApi().create_repo("org/pickled", exist_ok=True)
    HfApi().create_commit("org/pickled", [
        CommitOperationAdd("config.json", (world["pickled"] / "config.json").read_bytes()),
        CommitOperationAdd("pytorch_model.bin", (world["pickled"] / "pytorch_model.bin").read_bytes()),
    ], commit_message="pickled weights only")
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "hf-hub:org/pickled", "--dataset", TINY_DATA])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ") and sum(line.startswith("Error: ") for line in lines) == 1, err
    assert "model.safetensors" in err and "pickle" in err
    assert not (world["root"] / "UNPICKLED").exists()


def test_debug_shows_the_traceback(world, monkeypatch):
    monkeypatch.setenv("METANTK_DEBUG", "1")
    from metantk_zoo.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["train", *NANO_TRAIN_FLAGS, "--out", str(world["search"])])


def test_malformed_manifest_setting_does_not_break_import_or_version(tmp_path):
    bad = tmp_path / "manifests"
    bad.mkdir()
    (bad / "broken.json").write_text("{not json")
    env = {**os.environ, "METANTK_HUB_MANIFESTS": f"{bad}{os.pathsep}{tmp_path / 'missing'}"}
    done = subprocess.run([sys.executable, "-m", "metantk_zoo", "--version"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("metantk-zoo ")
    assert "Traceback" not in done.stderr and "METANTK_HUB_MANIFESTS" in done.stderr
