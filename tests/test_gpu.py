"""Every CUDA path against its CPU twin: kernels (float64), TF32 discipline, search, RFS (bf16 + channels_last),
meta-learning, evaluation, DDP over NCCL, kill and resume. ``pytest -m gpu`` (``scripts/gpu_check.sh`` runs it);
skipped with the reason where there is no GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

NO_GPU = (f"no CUDA GPU here (torch {torch.__version__}: torch.cuda.is_available() is False); "
          "these tests run where one is lent: scripts/gpu_check.sh or `pytest -m gpu`")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)]

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")
HELPER = Path(__file__).with_name("_train_helpers.py")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max())


class _Head(nn.Module):
    """Supernet body + a linear head: the kernel network as the search scores it."""

    def __init__(self, body: nn.Module, head: nn.Linear):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body.forward_features(x))


def _supernet(dtype=torch.float64, seed: int = 0) -> nn.Module:
    from metantk_zoo.nas.supernet import SuperNet

    torch.manual_seed(seed)
    net = SuperNet.kernel_net(channels=4, num_cells=3, num_classes=10, share_inputs=True).to(dtype).train()
    alive = net.alive.clone()
    alive[0, 2, 3] = False  # a masked op and a removed edge, as mid-search
    alive[1, 5, :] = False
    net.set_alive(alive)
    return _Head(net, nn.Linear(net.num_features, 5).to(dtype))


# ----------------------------------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("backend", ["hook", "opacus", "func"])
def test_kernel_backends_on_cuda_equal_the_cpu_in_float64(backend):
    from metantk_zoo.nas.kernels import empirical_ntk

    x = torch.randn(8, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    model = _supernet()
    cpu = empirical_ntk(model, x, backend=backend)
    gpu = empirical_ntk(model.to(CUDA), x.to(CUDA), backend=backend)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float64
    assert _rel(gpu, cpu) < 1e-10


def test_kernels_run_in_ieee_fp32_and_restore_the_callers_tf32_setting():
    """The caller asks for TF32; inside the kernel computation every conv and matmul is IEEE fp32, so the float32
    CUDA Gram stays within float32 rounding of the float64 one (TF32 alone is about 1e-3 off); afterwards the
    caller's TF32 setting is back."""
    from metantk_zoo.nas.kernels import empirical_ntk

    conv, mm = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, mm.fp32_precision
    seen = []
    model = _supernet(torch.float32).to(CUDA)
    model.head.register_forward_hook(lambda *a: seen.append((conv.fp32_precision, mm.fp32_precision)))
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    try:
        conv.fp32_precision = mm.fp32_precision = "tf32"
        got = empirical_ntk(model, x.to(CUDA))
        assert (conv.fp32_precision, mm.fp32_precision) == ("tf32", "tf32")
    finally:
        conv.fp32_precision, mm.fp32_precision = before
    assert seen == [("ieee", "ieee")]
    ref = empirical_ntk(model.double().cpu(), x.double())
    assert _rel(got, ref) < 1e-4


# ------------------------------------------------------------------------------------------------------ search
def test_tiny_search_on_cuda_gives_the_cpu_genotype():
    from metantk_zoo.nas import search
    from tests._search_helpers import nano_config, nano_source

    cfg = nano_config()
    cpu = search(nano_source(), cfg, seed=0, device="cpu", show_progress=False)
    gpu = search(nano_source(), cfg, seed=0, device="cuda", show_progress=False)
    assert gpu.genotype == cpu.genotype
    assert gpu.device.startswith("cuda")
    pruned = [[c["pruned"] for c in r["candidates"]] for r in cpu.rounds]
    assert [[c["pruned"] for c in r["candidates"]] for r in gpu.rounds] == pruned


def test_cuda_graph_kernel_pass_equals_each_candidate_alone_in_float64():
    """The CUDA-graph recording of a kernel pass, replayed with new inputs, masks, heads and re-drawn body weights,
    equals each candidate's eager CUDA kernel computed alone (1e-10 relative), as the fx recording does on the CPU
    (tests/test_recorded.py)."""
    from metantk_zoo.nas.recorded import RecordedKernelPass
    from metantk_zoo.nas.supernet import candidate_weights, reset_parameters
    from tests.test_recorded import _alone, _candidates, _heads, _net

    net, structure = _net()
    net, structure = net.to(CUDA), structure.to(CUDA)
    n = 4
    gen = torch.Generator().manual_seed(1)
    recorded = None
    results = []
    for seed, ops in ((0, [(0, 0, 1), (1, 4, 2)]), (1, [(1, 5, -1), (0, 3, 3)])):
        reset_parameters(net, torch.Generator().manual_seed(seed + 10))
        masks = _candidates(structure, ops)
        x = torch.randn(len(ops) * n, 3, 8, 8, dtype=torch.float64, generator=gen).to(CUDA)
        heads = [h.to(CUDA) for h in _heads(seed, len(ops), net.num_features)]
        if recorded is None:
            recorded = RecordedKernelPass(net, structure, x, candidate_weights(masks), heads, "cuda-graph")
        theta, nngp = recorded(x, candidate_weights(masks), heads)
        for i in range(len(ops)):
            want_theta, want_nngp = _alone(net, masks[i], x[i * n:(i + 1) * n], heads[i])
            assert _rel(theta[i], want_theta) < 1e-10 and _rel(nngp[i], want_nngp) < 1e-10
        results.append(theta)
    assert _rel(results[1], results[0]) > 1e-3  # the replay saw the new values


def test_tiny_search_with_cuda_graphs_gives_the_eager_result():
    from metantk_zoo.nas import search
    from tests._search_helpers import nano_config, nano_source

    cfg = nano_config(protocol="reference")
    eager = search(nano_source(), cfg, seed=0, device="cuda", show_progress=False)
    graphs = search(nano_source(), cfg, seed=0, device="cuda", show_progress=False, kernel_graph="cuda-graph",
                    candidate_batch=4)
    assert graphs.genotype == eager.genotype
    assert [[c["pruned"] for c in r["candidates"]] for r in graphs.rounds] == \
        [[c["pruned"] for c in r["candidates"]] for r in eager.rounds]


def test_candidate_batching_on_cuda_equals_one_by_one_in_float64():
    """Round-0 candidates scored 4 at a time on CUDA equal the one-by-one CUDA scores (float64, 1e-10 relative)."""
    from metantk_zoo.nas import loop
    from metantk_zoo.nas.supernet import initial_alive
    from tests._search_helpers import nano_config, nano_source

    cfg = nano_config(repeats=2)
    alive = initial_alive(len(cfg.space))
    keys = [(c, e, o) for c in range(2) for e in (0, 4, 8) for o in range(1, len(cfg.space))][:4]
    cands = [alive.clone() for _ in keys]
    for cand, key in zip(cands, keys, strict=True):
        cand[key] = False

    def scorer():
        sc = loop._Scorer(cfg, 0, loop._Data(nano_source(), cfg, CUDA), CUDA, "hook", candidate_batch=4)
        sc.kernel_net.double()
        draw = sc._kernel_input
        sc._kernel_input = lambda g: draw(g).double()
        sc.start_stage("round0")
        return sc

    one = scorer()
    rows_one = {k: one.score("round0", k, c, alive, alive) for k, c in zip(keys, cands, strict=True)}
    rows_many = scorer().score_many("round0", keys, cands, alive, alive)
    for k in keys:
        for a, b in zip(rows_many[k]["cond"], rows_one[k]["cond"], strict=True):
            assert abs(a - b) / abs(b) < 1e-10, k
        assert rows_many[k]["regions"] == rows_one[k]["regions"]


# --------------------------------------------------------------------------------------------------------- RFS
def test_rfs_step_under_bf16_autocast_and_channels_last_tracks_fp32():
    """One forward/backward of the RFS recipe on CUDA (bf16 autocast, channels_last weights and inputs) against
    fp32 on the CPU with the same weights: loss within bf16 rounding, gradients pointing the same way."""
    from tests._train_helpers import tiny_model

    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    y = torch.arange(16) % 4
    ref_model = tiny_model().train()
    model = tiny_model().train().to(CUDA, memory_format=torch.channels_last)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(x.to(CUDA, memory_format=torch.channels_last)), y.to(CUDA))
    loss.backward()
    ref = nn.functional.cross_entropy(ref_model(x), y)
    ref.backward()
    assert torch.isfinite(loss) and abs(loss.item() - ref.item()) / ref.item() < 3e-2
    g = torch.cat([p.grad.flatten().float().cpu() for p in model.parameters()])
    g_ref = torch.cat([p.grad.flatten() for p in ref_model.parameters()])
    assert torch.nn.functional.cosine_similarity(g, g_ref, dim=0) > 0.95  # 0.97 measured for bf16 on a CPU


def test_rfs_training_on_cuda_writes_a_channels_last_bf16_run(tmp_path):
    from safetensors.torch import load_file

    from metantk_zoo.train import train_rfs
    from tests._train_helpers import tiny_cfg, tiny_data, tiny_model

    cfg = tiny_cfg(2, amp=True)  # the Table-1 presets train in fp32; bf16 autocast is the option tested here
    assert cfg.amp and cfg.channels_last
    res = train_rfs(tiny_model(), tiny_data(), cfg, run_dir=tmp_path, device="cuda", architecture="metantk_nano")
    assert res.epochs == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in res.history)
    weights = load_file(tmp_path / "model.safetensors")
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())  # fp32 master weights


# -------------------------------------------------------------------------------------------------------- meta
@pytest.mark.parametrize("method", ["maml", "fomaml", "hfmaml", "anil", "fobmaml"])
def test_meta_methods_on_cuda_equal_the_cpu_in_float64(method):
    from metantk_zoo.meta import METHODS, MetaConfig, meta_gradient
    from tests._meta_problems import TinyNet, mse, regression_task

    assert method in METHODS
    torch.manual_seed(0)
    model = TinyNet().double()
    task = regression_task()
    cfg = MetaConfig(method=method, inner_lr=0.3, inner_steps=2)
    cpu = meta_gradient(model, *task, cfg, loss_fn=mse)
    gpu = meta_gradient(model.to(CUDA), *(t.to(CUDA) for t in task), cfg, loss_fn=mse)
    for name, g in cpu.grads.items():
        assert gpu.grads[name].device.type == "cuda"
        assert _rel(gpu.grads[name], g) < 1e-10, name


# -------------------------------------------------------------------------------------------------- evaluation
def test_evaluation_on_cuda_equals_the_cpu():
    """The probe on CUDA and on the CPU, same float64 features and episodes: the same accuracies; and the feature
    extractor on CUDA within float32 rounding of the CPU's."""
    import numpy as np
    import timm

    from metantk_zoo.fewshot import Episodes, evaluate_features, extract_features, protocol_config

    g = np.random.default_rng(0)
    n_img, t, n_way, n_shot, n_query = 60, 40, 5, 1, 3
    ids = np.stack([g.permutation(n_img)[: n_way * (n_shot + n_query)].reshape(n_way, -1) for _ in range(t)])
    eps = Episodes(torch.as_tensor(ids[:, :, :n_shot].reshape(t, -1)),
                   torch.arange(n_way).repeat_interleave(n_shot).expand(t, -1),
                   torch.as_tensor(ids[:, :, n_shot:].reshape(t, -1)),
                   torch.arange(n_way).repeat_interleave(n_query).expand(t, -1), manifest_hash="gpu")
    cfg = protocol_config("rfs", n_way=n_way, n_shot=n_shot, n_query=n_query, n_episodes=t)
    model = timm.create_model("metantk_nano", num_classes=0, init_channels=4).eval()
    x = torch.randn(n_img, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    f_cpu = extract_features(model, [x], device=CPU)
    f_gpu = extract_features(model.to(CUDA), [x], device=CUDA)
    assert _rel(f_gpu, f_cpu) < 1e-4
    feats = f_cpu.double()
    a = evaluate_features(feats, eps, cfg, device=CPU)
    b = evaluate_features(feats, eps, cfg, device=CUDA)
    assert a.accuracies == b.accuracies and a.mean == b.mean


# --------------------------------------------------------------------------------------------- DDP and resume
def _torchrun(n: int, run_dir: Path, epochs: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "METANTK_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={n}",
           str(HELPER), str(run_dir), str(epochs), "--mlp", "--device", "cuda"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_nccl_process_group_at_world_size_1(tmp_path):
    """NCCL initialises and reduces on this GPU (one rank); the library's gather works over it."""
    code = (
        "import os, torch, torch.distributed as dist\n"
        "from metantk_zoo.utils.distributed import current, gather_objects\n"
        "dist.init_process_group('nccl', rank=0, world_size=1, device_id=torch.device('cuda', 0))\n"
        "t = torch.full((4,), 3.0, device='cuda'); dist.all_reduce(t)\n"
        "assert t.tolist() == [3.0] * 4 and current().world_size == 1\n"
        "assert gather_objects({'a': 1}) == [{'a': 1}]\n"
        "dist.destroy_process_group(); print('ok')\n"
    )
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29531"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP over 2 ranks needs 2 GPUs; this machine has fewer")
def test_two_rank_nccl_ddp_matches_one_process(tmp_path):
    from safetensors.torch import load_file

    proc = _torchrun(2, tmp_path / "ddp", 2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one = subprocess.run([sys.executable, str(HELPER), str(tmp_path / "one"), "2", "--mlp", "--device", "cuda"],
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    ddp, ref = load_file(tmp_path / "ddp" / "model.safetensors"), load_file(tmp_path / "one" / "model.safetensors")
    for k in ref:
        assert torch.allclose(ddp[k], ref[k], atol=1e-5), k


def test_kill_and_resume_on_cuda(tmp_path):
    """A CUDA run hard-killed after epoch 2 and resumed ends where an uninterrupted CUDA run ends (same epochs and
    data order; weights within the float noise of non-deterministic CUDA kernels)."""
    from safetensors.torch import load_file

    from metantk_zoo.train import train_rfs
    from tests._train_helpers import tiny_cfg, tiny_data, tiny_model

    killed = subprocess.run([sys.executable, str(HELPER), str(tmp_path / "cut"), "3", "--kill-after", "2",
                             "--device", "cuda"], timeout=300, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    kw = dict(device="cuda", architecture="metantk_nano")
    train_rfs(tiny_model(), tiny_data(), tiny_cfg(3), run_dir=tmp_path / "full", **kw)
    res = train_rfs(tiny_model(), tiny_data(), tiny_cfg(3), run_dir=tmp_path / "cut", resume=True, **kw)
    assert res.resumed_from == 2
    full, cut = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert full.keys() == cut.keys()
    for k in full:
        assert torch.allclose(full[k], cut[k], rtol=1e-3, atol=1e-4), k
    rows = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
