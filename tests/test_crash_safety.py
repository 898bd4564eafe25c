"""Crash-safe records: kill -9 at random moments, a full disk, a cross-device rename, torn metrics lines, and file
modes that honour the umask.

After a kill a run directory is either its previous complete state or its new complete state; ``--resume`` (or,
for ``data prepare`` and an export, running the command again) ends with exactly what an uninterrupted run writes.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metantk_zoo.cli import main
from metantk_zoo.utils.io import (
    DiskFullError,
    make_staging_dir,
    read_jsonl,
    repair_jsonl,
    write_json,
)
from tests._finished_runs import (  # noqa: F401  (session fixtures)
    CLOCK_FIELDS,
    META_TRAIN_FLAGS,
    NANO_SEARCH_FLAGS,
    NANO_TRAIN_FLAGS,
    TINY_DATA,
    copy_run,
    finished_meta,
    finished_search,
    finished_train,
    scored_search,
    tree_hash,
)

# one thread in process too: resumed runs are compared bitwise with the finished runs, built with one thread
pytestmark = pytest.mark.usefixtures("one_thread")


def _cli(args: list[str], **kw) -> subprocess.Popen:
    # one thread, as the in-process finished runs it is compared with (float reductions depend on the thread count)
    env = {**os.environ, "METANTK_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "metantk_zoo", "-q", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, **kw)


def _kill_when(proc: subprocess.Popen, ready, delay: float, timeout: float = 600) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after ``ready()`` first holds; False if it finished first."""
    start = time.time()
    while not ready():
        if proc.poll() is not None or time.time() - start > timeout:
            return False
        time.sleep(0.05)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def _without_clocks(obj):
    if isinstance(obj, dict):
        return {k: _without_clocks(v) for k, v in obj.items() if k not in CLOCK_FIELDS}
    if isinstance(obj, list):
        return [_without_clocks(v) for v in obj]
    return obj


def _search_result(run: Path) -> dict:
    return {"genotype": json.loads((run / "genotype.json").read_text()),
            "search": _without_clocks(json.loads((run / "search.json").read_text())),
            "model": json.loads((run / "model.json").read_text()),
            "metrics": (run / "metrics.jsonl").read_text()}


def _same_weights(a: Path, b: Path) -> None:
    """Same tensors, bit for bit, and the same metadata (safetensors does not fix the metadata's key order)."""
    import torch
    from safetensors import safe_open

    with safe_open(str(a), framework="pt") as fa, safe_open(str(b), framework="pt") as fb:
        assert fa.metadata() == fb.metadata()
        assert sorted(fa.keys()) == sorted(fb.keys())
        differ = [k for k in fa.keys() if not torch.equal(fa.get_tensor(k), fb.get_tensor(k))]
    assert not differ, differ[:5]


def _loads_or_is_incomplete(run: Path) -> None:
    """A killed run directory is either incomplete (no model.json: resume it) or loads."""
    from metantk_zoo.utils.rundir import is_run_dir, read_model_spec

    for p in run.rglob("*.json"):
        json.loads(p.read_text())  # never a torn JSON file
    if is_run_dir(run):
        read_model_spec(run)


# ------------------------------------------------------------------------------------------------ kill -9
#: the nano MetaNTK-NAS search (5 stages, a checkpoint after each, about 3 s of scoring): the first kill point runs
#: in the default suite
SEARCH_KILLS = [pytest.param(0.0, id="first-checkpoint"),
                pytest.param(random.Random(17).uniform(0.5, 6.0), id="random-later", marks=pytest.mark.slow)]


@pytest.mark.parametrize("delay", SEARCH_KILLS)
def test_search_killed_then_resumed_equals_the_uninterrupted_search(delay, scored_search, tmp_path):  # noqa: F811
    out = tmp_path / "search"
    proc = _cli(["search", *NANO_SEARCH_FLAGS, "--out", str(out)])
    killed = _kill_when(proc, lambda: (out / "checkpoints" / "search.json").exists(), delay)
    assert killed, "the search finished before the kill; nothing was tested"
    _loads_or_is_incomplete(out)
    with pytest.raises(SystemExit) as e:
        main(["-q", "search", *NANO_SEARCH_FLAGS, "--resume", "--out", str(out)])
    assert e.value.code == 0
    assert _search_result(out) == _search_result(scored_search)


TRAIN_KILLS = [pytest.param(0.0, id="after-epoch-1-checkpoint"),
               pytest.param(random.Random(5).uniform(0.0, 2.0), id="random-later", marks=pytest.mark.slow)]


@pytest.mark.parametrize("delay", TRAIN_KILLS)
def test_training_killed_then_resumed_equals_the_uninterrupted_run(delay, finished_train, tmp_path):  # noqa: F811
    out = tmp_path / "train"
    proc = _cli(["train", *NANO_TRAIN_FLAGS, "--epochs", "2", "--out", str(out)])
    killed = _kill_when(proc, lambda: (out / "checkpoints" / "last.safetensors").exists(), delay)
    if not killed:
        pytest.fail("training finished before the kill; nothing was tested")
    _loads_or_is_incomplete(out)
    with pytest.raises(SystemExit) as e:
        main(["-q", "train", *NANO_TRAIN_FLAGS, "--epochs", "2", "--resume", "--out", str(out)])
    assert e.value.code == 0
    for name in ("config.json", "model.json"):
        assert (out / name).read_bytes() == (finished_train / name).read_bytes(), name
    _same_weights(out / "model.safetensors", finished_train / "model.safetensors")
    resumed, uninterrupted = read_jsonl(out / "metrics.jsonl"), read_jsonl(finished_train / "metrics.jsonl")
    assert _without_clocks(resumed) == _without_clocks(uninterrupted)


#: the nano FO-MAML run (4 epochs of 2 meta-steps, a checkpoint after each epoch)
META_KILLS = [pytest.param(0.0, id="after-epoch-1-checkpoint"),
              pytest.param(random.Random(11).uniform(0.1, 0.5), id="random-later", marks=pytest.mark.slow),
              pytest.param("epoch-3", id="after-epoch-3-checkpoint", marks=pytest.mark.slow)]


def _checkpoint_epoch(run: Path) -> int:
    from metantk_zoo.errors import CheckpointError
    from metantk_zoo.train.loop import Checkpointer

    try:
        return int(Checkpointer(run).load()[1]["epoch"])
    except CheckpointError:  # not there yet
        return 0


@pytest.mark.parametrize("delay", META_KILLS)
def test_meta_training_killed_then_resumed_equals_the_uninterrupted_run(delay, finished_meta, tmp_path,  # noqa: F811
                                                                        capsys):
    """``train --method fomaml`` killed (-9) after a checkpoint, a torn metrics line planted, then ``--resume``:
    the same weights, config, model spec and metrics as the uninterrupted run."""
    out = tmp_path / "meta"
    proc = _cli(["train", *META_TRAIN_FLAGS, "--out", str(out)])
    ckpt = out / "checkpoints" / "last.safetensors"
    if delay == "epoch-3":
        killed = _kill_when(proc, lambda: ckpt.exists() and _checkpoint_epoch(out) >= 3, 0.0)
    else:
        killed = _kill_when(proc, ckpt.exists, delay)
    if not killed:
        pytest.fail("meta-training finished before the kill; nothing was tested")
    _loads_or_is_incomplete(out)
    assert not (out / "model.safetensors").exists()  # killed part-way
    done = _checkpoint_epoch(out)
    assert 1 <= done < 4
    with open(out / "metrics.jsonl", "ab") as f:  # as a kill mid-append would leave it
        f.write(b'{"epoch": 9, "loss": 0.1')
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["-q", "train", *META_TRAIN_FLAGS, "--resume", "--out", str(out)])
    assert e.value.code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["resumed_from"] == done
    for name in ("config.json", "model.json", ".metantk-zoo.json"):
        assert (out / name).read_bytes() == (finished_meta / name).read_bytes(), name
    _same_weights(out / "model.safetensors", finished_meta / "model.safetensors")
    resumed, uninterrupted = read_jsonl(out / "metrics.jsonl"), read_jsonl(finished_meta / "metrics.jsonl")
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]
    assert _without_clocks(resumed) == _without_clocks(uninterrupted)


@pytest.mark.parametrize("kind", ["train", "meta"])
def test_resume_repairs_a_torn_last_metrics_line(kind, finished_train, finished_meta, tmp_path):  # noqa: F811
    """``--resume`` of a finished run whose ``metrics.jsonl`` ends in a torn line: the line is dropped, and the run
    directory is byte for byte the finished run again (nothing else is rewritten)."""
    src, flags = {"train": (finished_train, [*NANO_TRAIN_FLAGS, "--epochs", "2"]),
                  "meta": (finished_meta, META_TRAIN_FLAGS)}[kind]
    run = copy_run(src, tmp_path / "run")
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'{"epoch": 3, "loss": 0.4')
    assert read_jsonl(run / "metrics.jsonl") == read_jsonl(src / "metrics.jsonl")  # tolerated on read
    assert tree_hash(run) != tree_hash(src)
    with pytest.raises(SystemExit) as e:
        main(["-q", "train", *flags, "--resume", "--out", str(run)])
    assert e.value.code == 0
    assert (run / "metrics.jsonl").read_bytes() == (src / "metrics.jsonl").read_bytes()
    assert tree_hash(run) == tree_hash(src)


@pytest.mark.parametrize("delay", [0.2, pytest.param(1.0, marks=pytest.mark.slow)])
def test_data_prepare_killed_leaves_old_or_new_and_rerun_equals(delay, tmp_path):
    from metantk_zoo.data import load_fewshot

    ref, out = tmp_path / "ref", tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["-q", "data", "prepare", TINY_DATA, "--out", str(ref)])
    assert e.value.code == 0
    proc = _cli(["data", "prepare", TINY_DATA, "--out", str(out)])
    _kill_when(proc, lambda: True, delay)
    assert not out.exists() or tree_hash(out) == tree_hash(ref)  # nothing, or the complete dataset
    with pytest.raises(SystemExit) as e:
        main(["-q", "data", "prepare", TINY_DATA, "--out", str(out), *(["--overwrite"] if out.exists() else [])])
    assert e.value.code == 0
    assert tree_hash(out) == tree_hash(ref)
    assert load_fewshot(str(out)).summary()["splits"] == load_fewshot(str(ref)).summary()["splits"]


@pytest.mark.parametrize("delay", [0.5, pytest.param(2.0, marks=pytest.mark.slow)])
def test_export_killed_leaves_nothing_or_a_complete_export(delay, finished_train, tmp_path):  # noqa: F811
    ref, out = tmp_path / "ref", tmp_path / "out"
    args = ["push", str(finished_train), "--repo", "org/nano", "--dry-run"]
    with pytest.raises(SystemExit) as e:
        main(["-q", *args, "--local-dir", str(ref)])
    assert e.value.code == 0
    proc = _cli([*args, "--local-dir", str(out)])
    _kill_when(proc, lambda: True, delay)
    assert not out.exists() or tree_hash(out) == tree_hash(ref)
    if out.exists():
        return
    with pytest.raises(SystemExit) as e:
        main(["-q", *args, "--local-dir", str(out)])
    assert e.value.code == 0
    assert tree_hash(out) == tree_hash(ref)


# ------------------------------------------------------------------------------------------------ disk, renames
def _full_disk(monkeypatch, match: str = "") -> None:
    """Every atomic write whose target contains ``match`` fails as on a full disk."""
    import metantk_zoo.utils.io as io_mod

    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr(io_mod.os, "fdopen", lambda fd, mode="r", *a, **k: Full(real_fdopen(fd, mode, *a, **k)))


def test_disk_full_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    write_json(path, {"a": 1})
    before = path.read_bytes()
    _full_disk(monkeypatch)
    with pytest.raises(DiskFullError) as e:
        write_json(path, {"a": 2})
    assert "no space left" in str(e.value) and "\n" not in str(e.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # no temporary file left behind


def test_disk_full_in_a_command_is_one_line_and_keeps_the_run(finished_train, tmp_path, monkeypatch, capsys):  # noqa: F811
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_train, run)
    before = tree_hash(run)
    _full_disk(monkeypatch)
    with pytest.raises(SystemExit) as e:
        main(["eval", str(run), "--dataset", TINY_DATA, "--episodes", "2", "--n-way", "2", "--n-query", "2",
              "--protocol", "rfs", "--device", "cpu"])
    err = capsys.readouterr().err
    assert e.value.code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: no space left") and sum(x.startswith("Error:") for x in lines) == 1, err
    assert tree_hash(run) == before


def test_cross_device_rename_is_one_line(finished_train, tmp_path, monkeypatch, capsys):  # noqa: F811
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if ".export-" in str(src):
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src), None, str(dst))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "export"
    with pytest.raises(SystemExit) as e:
        main(["push", str(finished_train), "--repo", "org/nano", "--dry-run", "--local-dir", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 1
    assert err.strip().splitlines()[-1].startswith("Error: cannot move") and "filesystems" in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ metrics.jsonl
def test_torn_last_metrics_line_is_dropped_on_read_and_repaired(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "loss": 2.5}\n{"epoch": 2, "loss": 2.1}\n{"epoch": 3, "lo')
    assert read_jsonl(path) == [{"epoch": 1, "loss": 2.5}, {"epoch": 2, "loss": 2.1}]
    assert repair_jsonl(path) == read_jsonl(path)
    assert path.read_text() == '{"epoch": 1, "loss": 2.5}\n{"epoch": 2, "loss": 2.1}\n'
    path.write_text('{"epoch": 1}\n{"ep\n{"epoch": 3}\n')  # corrupt in the middle: not a torn line
    from metantk_zoo.errors import CheckpointError

    with pytest.raises(CheckpointError, match="line 2"):
        read_jsonl(path)


# ------------------------------------------------------------------------------------------------ modes
@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_files_and_staging_folders_honour_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        staging = make_staging_dir(tmp_path, ".stage-")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == file_mode
    assert stat.S_IMODE(staging.stat().st_mode) == dir_mode


def test_run_directory_files_are_readable_by_the_group(finished_search, finished_train):  # noqa: F811
    mask = os.umask(0o022)
    os.umask(mask)
    want = 0o666 & ~mask
    for run in (finished_search, finished_train):
        for p in run.rglob("*"):
            if p.is_file():
                assert stat.S_IMODE(p.stat().st_mode) == want, p
