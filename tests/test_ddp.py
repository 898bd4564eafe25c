"""DistributedDataParallel: two gloo processes on the CPU (torchrun) train like one process on the same batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from metantk_zoo.train import train_rfs
from tests._train_helpers import tiny_cfg, tiny_data, tiny_model

HELPER = Path(__file__).with_name("_train_helpers.py")


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    """Each rank trains on half of every global batch; averaged gradients equal the full batch's (no BatchNorm)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "METANTK_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           str(HELPER), str(tmp_path / "ddp"), "2", "--mlp"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_rfs(tiny_model(mlp=True), tiny_data(augment=False), tiny_cfg(2), run_dir=tmp_path / "one",
                  device="cpu", architecture="mlp")
    finally:
        torch.set_num_threads(n)
    ddp, one = load_file(tmp_path / "ddp" / "model.safetensors"), load_file(tmp_path / "one" / "model.safetensors")
    assert ddp.keys() == one.keys()
    for k in one:
        assert torch.allclose(ddp[k], one[k], atol=1e-5), k
    assert not torch.equal(one["1.weight"], tiny_model(mlp=True)[1].weight.detach())  # it did train
    rows = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == [pytest_approx(r["loss"]) for r in ref]  # loss reduced over both ranks


def pytest_approx(v):
    import pytest

    return pytest.approx(v, rel=1e-5)
