#!/usr/bin/env python
"""Benchmark the MetaNTK search engine against the reference procedure, in one run on one machine.

Measures (``reference/performance-facts.md``):

1. **Gram**: the empirical NTK of the kernel supernet with a 5-way head: the hook Gram on the network as the search
   runs it (``share_inputs``) and on the reference's per-op network, opacus and a plain forward+backward on the
   per-op network; wall time (median of ``--reps``, the methods taking turns in every repetition) and peak memory
   (each in a fresh subprocess: peak RSS growth on CPU (sampled every ms after ``malloc_trim``),
   ``max_memory_allocated`` on CUDA).
2. **Round scoring**: the first ``--candidates`` candidates of pruning round 0, scored by this engine (masking,
   hook Gram, ``unique`` region count) under both protocols (``reference``: a fresh meta-batch and the unpruned
   kernel for every candidate and repeat, as the reference draws them: the like-for-like ratio; ``shared``: the
   unpruned kernel once per round and repeat) and by a baseline that follows the
   reference procedure (a network rebuilt per candidate with the round network's weights copied in, a no-grad
   forward of the queries per kernel to read the feature size, opacus per-sample gradients, the unpruned kernel
   recomputed for every candidate and repeat, thin networks rebuilt per candidate, region patches built per image
   through PIL, n x n Hamming region count), timed as blocks shared / like-for-like / reference / like-for-like /
   shared. The full round (126
   candidates) is extrapolated from them.
3. **Candidate batching** (``--candidate-batch N``): the same round-0 candidates scored one by one and N at a time
   (stacked meta-batches, per-sample masks, the Gram folded per candidate), the two taking turns; time per candidate
   and the ratio one-by-one / batched, and on CUDA the peak memory of one pass of each.
4. **Recorded kernel passes** (``--kernel-graph fx|cuda-graph``): round-0 candidates ``--candidate-batch`` at a time
   (default 4) with eager kernel passes and with the stage's pass recorded once and replayed
   (:mod:`metantk_zoo.nas.recorded`), taking turns; time per candidate, the ratio eager / replay, and the one-off
   recording time.

Example (full size, slow on a CPU):  python scripts/bench_search.py --json bench.json
Reduced configuration (a minute):    python scripts/bench_search.py --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metantk_zoo.nas.config import SearchConfig  # noqa: E402
from metantk_zoo.nas.kernels import condition_number, empirical_ntk, meta_ntk  # noqa: E402
from metantk_zoo.nas.loop import TensorSource, _Data, _rng, _Scorer, _WithHead  # noqa: E402
from metantk_zoo.nas.regions import activation_patterns  # noqa: E402
from metantk_zoo.nas.supernet import SuperNet, initial_alive, reset_parameters  # noqa: E402
from metantk_zoo.utils.device import resolve_device  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


#: Gram methods timed: name -> (backend, share_inputs). The engine's hook Gram runs on the network as the search
#: builds it (each state's ReLU and pools computed once for all its edges); opacus and the plain forward+backward run
#: on the reference's per-op network; the hook Gram on the per-op network shows what the backend alone gives.
GRAM_METHODS = {
    "forward+backward": (None, False),
    "hook": ("hook", True),
    "hook, per-op network": ("hook", False),
    "opacus": ("opacus", False),
}


def _gram_setup(cfg: SearchConfig, device: torch.device, share_inputs: bool = False):
    torch.manual_seed(0)
    net = SuperNet.kernel_net(cfg.channels, cfg.num_cells, cfg.num_classes, share_inputs=share_inputs)
    net = net.to(device).train()
    model = _WithHead(net, torch.nn.Linear(net.num_features, cfg.n_way).to(device))
    n = cfg.n_tasks * cfg.n_way * (cfg.n_shot + cfg.n_query)
    x = torch.randn(n, 3, cfg.resolution, cfg.resolution, device=device)
    return model, x


def _gram_op(name: str, model, x):
    backend = GRAM_METHODS[name][0]
    if backend is None:
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()
        model.zero_grad(set_to_none=True)
    else:
        empirical_ntk(model, x, backend=backend)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory_child(name: str, cfg_dict: dict, device: str, queue) -> None:
    dev = torch.device(device)
    model, x = _gram_setup(SearchConfig.from_dict(cfg_dict), dev, GRAM_METHODS[name][1])
    _gram_op(name, model, x)  # warm-up: one-time allocations (kernel caches) are not the method's memory
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _gram_op(name, model, x)
        torch.cuda.synchronize()
        queue.put(torch.cuda.max_memory_allocated() - base)
        return
    import ctypes
    import threading

    ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed memory back so RSS growth measures this call only
    base = _rss_bytes()
    peak, done = [base], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    t = threading.Thread(target=sample)
    t.start()
    _gram_op(name, model, x)
    peak[0] = max(peak[0], _rss_bytes())
    done.set()
    t.join()
    queue.put(peak[0] - base)


def bench_gram(cfg: SearchConfig, device: torch.device, reps: int, memory: bool) -> dict:
    """Median wall time of each Gram method; the methods take turns within every repetition, so a machine whose
    speed drifts during the run (shared cores) slows them alike instead of whichever ran last."""
    models = {share: _gram_setup(cfg, device, share) for share in (False, True)}  # the same weights and inputs
    times: dict[str, list[float]] = {name: [] for name in GRAM_METHODS}
    for rep in range(reps + 1):  # repetition 0 warms up
        for name, (_, share) in GRAM_METHODS.items():
            model, x = models[share]
            _sync(device)
            t = time.perf_counter()
            _gram_op(name, model, x)
            _sync(device)
            if rep:
                times[name].append(time.perf_counter() - t)
    out = {}
    for name in GRAM_METHODS:
        out[name] = {"seconds": statistics.median(times[name]), "all_seconds": times[name]}
        print(f"  gram {name:22s} {out[name]['seconds']:.3f} s  {[round(t, 2) for t in times[name]]}", file=sys.stderr)
    k_hook = empirical_ntk(*models[True], backend="hook")
    k_plain = empirical_ntk(*models[False], backend="hook")
    k_opacus = empirical_ntk(*models[False], backend="opacus")
    out["hook_vs_opacus_rel_diff"] = ((k_hook - k_opacus).abs().max() / k_opacus.abs().max()).item()
    out["hook_per_op_vs_opacus_rel_diff"] = ((k_plain - k_opacus).abs().max() / k_opacus.abs().max()).item()
    if memory:
        ctx = mp.get_context("spawn")
        for name in GRAM_METHODS:
            q = ctx.Queue()
            p = ctx.Process(target=_memory_child, args=(name, cfg.to_dict(), str(device), q))
            p.start()
            out[name]["peak_bytes"] = q.get()
            p.join()
            print(f"  peak {name:22s} {out[name]['peak_bytes'] / 2**20:.0f} MiB", file=sys.stderr)
    return out


# ------------------------------------------------------------------------------------- the reference procedure
def _hamming_count(patterns: torch.Tensor) -> float:
    a = patterns.float()
    d = a @ (1 - a).T + (1 - a) @ a.T  # (n, n) Hamming distances, as the reference
    return (1.0 / (d == 0).sum(1).float()).sum().item()


def _pil_patches(data, cfg: SearchConfig, g: torch.Generator) -> list[torch.Tensor]:
    """The reference's region inputs: per image to PIL, resize to 32, random 3x3 crop, normalise, one channel."""
    import numpy as np
    from PIL import Image

    from metantk_zoo.data.constants import MINI_IMAGENET_MEAN as MINI_MEAN
    from metantk_zoo.data.constants import MINI_IMAGENET_STD as MINI_STD
    from metantk_zoo.nas.loop import _draw

    idx = _draw(len(data.labels), cfg.region_batches * cfg.region_patches, g)
    images = data.load(idx).cpu()
    out = []
    for img in images:
        pil = Image.fromarray(img.permute(1, 2, 0).numpy()).resize((cfg.resolution, cfg.resolution), Image.BILINEAR)
        i, j = torch.randint(0, cfg.resolution - 2, (2,), generator=g).tolist()
        c = int(torch.randint(0, 3, (1,), generator=g))
        patch = np.asarray(pil.crop((j, i, j + 3, i + 3)), dtype=np.float32) / 255  # (3, 3, 3) HWC
        patch = (patch - np.array(MINI_MEAN, dtype=np.float32)) / np.array(MINI_STD, dtype=np.float32)
        out.append(torch.from_numpy(patch[:, :, c].copy()).view(1, 3, 3))
    return list(torch.stack(out).to(data.device).split(cfg.region_patches))


def _reference_cond(net: SuperNet, x: torch.Tensor, cfg: SearchConfig, g: torch.Generator) -> float:
    with torch.no_grad():  # the reference's forward of the queries to read the feature size
        net.forward_features(x[: cfg.n_tasks * cfg.n_way * cfg.n_query])
    head = reset_parameters(torch.nn.Linear(net.num_features, cfg.n_way), g).to(x.device)
    grams = empirical_ntk(_WithHead(net, head), x, backend="opacus", per_layer=True)
    theta = torch.stack(list(grams.values())).sum(0)
    k = theta if cfg.kernel == "maml" else grams["head"]
    phi = meta_ntk(theta, k, n_tasks=cfg.n_tasks, n_query=cfg.n_way * cfg.n_query, n_support=cfg.n_way * cfg.n_shot,
                   inner_lr_time=cfg.inner_lr_time, reg_coef=cfg.reg_coef)
    return condition_number(phi)


def reference_candidate(cfg, data, origin_net, alive, cand_alive, key, device):
    """One candidate scored the reference's way (§4.3-4.6, §5)."""
    net = SuperNet.kernel_net(cfg.channels, cfg.num_cells, cfg.num_classes).to(device).train()  # rebuilt
    net.load_state_dict(origin_net.state_dict())  # weights copied from the round's network
    net.set_alive(cand_alive.to(device))
    thin_o = SuperNet.thin_net().to(device).train()  # fresh thin nets per candidate
    reset_parameters(thin_o, _rng("thin", key))
    thin_c = SuperNet.thin_net().to(device).train()
    thin_c.load_state_dict(thin_o.state_dict())
    thin_c.set_alive(cand_alive.to(device))
    for r in range(cfg.repeats):
        g = _rng("ref", key, r)
        x = data.meta_batch(g)
        c_o = _reference_cond(origin_net, x, cfg, g)  # the unpruned kernel, recomputed every time
        c_c = _reference_cond(net, x, cfg, g)
        pats = _pil_patches(data, cfg, g)
        r_o = _hamming_count(torch.cat([activation_patterns(thin_o, b) for b in pats]))
        r_c = _hamming_count(torch.cat([activation_patterns(thin_c, b) for b in pats]))
        del c_o, c_c, r_o, r_c


def bench_round(cfg: SearchConfig, device: torch.device, n_cand: int) -> dict:
    g = torch.Generator().manual_seed(0)
    source = TensorSource(torch.randint(0, 256, (20 * 12, 3, 84, 84), dtype=torch.uint8, generator=g),
                          torch.arange(20 * 12) % 20)
    data = _Data(source, cfg, device)
    alive = initial_alive(len(cfg.space))
    cands = [(c, e, o) for c in range(2) for e in range(9) for o in range(1, len(cfg.space))]
    n_round = len(cands)
    cands = cands[:n_cand]

    scorer = _Scorer(dataclasses.replace(cfg, protocol="shared"), 0, data, device, "hook")
    scorer.start_stage("round0")
    like = _Scorer(dataclasses.replace(cfg, protocol="reference"), 0, data, device, "hook")
    like.start_stage("round0")
    origin_net = SuperNet.kernel_net(cfg.channels, cfg.num_cells, cfg.num_classes).to(device).train()
    methods = {
        "engine, shared protocol": lambda key, cand: scorer.score("round0", key, cand, alive, alive),
        "engine, reference protocol": lambda key, cand: like.score("round0", key, cand, alive, alive),
        "reference procedure": lambda key, cand: reference_candidate(cfg, data, origin_net, alive, cand, key, device),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    # each method runs its candidates back to back as a search does (the engine's heap stays warm), in the order
    # shared, like-for-like, reference, like-for-like, shared: the engine blocks bracket the reference's, so a
    # machine whose speed drifts during the run moves all measurements alike
    shared, like_name, ref = methods
    for name in (shared, like_name, ref, like_name, shared):
        for key in cands:
            cand = alive.clone()
            cand[key] = False
            _sync(device)
            t = time.perf_counter()
            methods[name](key, cand)
            _sync(device)
            times[name].append(time.perf_counter() - t)
            print(f"  {name:27s} candidate {key}: {times[name][-1]:.2f} s", file=sys.stderr)
    engine, like_times, baseline = times[shared], times[like_name], times[ref]

    per_cand = statistics.mean(engine[1:])  # later calls reuse the unpruned kernels of the first call
    origin = max(engine[0] - per_cand, 0.0)  # the unpruned kernels, computed in the first call
    engine_round = origin + n_round * per_cand
    baseline_round = n_round * statistics.mean(baseline)
    like_round = n_round * statistics.mean(like_times)  # the reference protocol recomputes them every candidate
    return {"candidates_timed": len(cands), "round_candidates": n_round, "engine_seconds": engine,
            "engine_reference_protocol_seconds": like_times, "baseline_seconds": baseline,
            "engine_round_seconds": engine_round, "engine_reference_protocol_round_seconds": like_round,
            "baseline_round_seconds": baseline_round,
            "like_for_like_ratio": statistics.mean(baseline) / statistics.mean(like_times),
            "measured_ratio": statistics.mean(baseline) / statistics.mean(engine),
            "round_ratio": baseline_round / engine_round}


def bench_batching(cfg: SearchConfig, device: torch.device, sizes: tuple[int, ...] = (1, 4), n_candidates: int = 8,
                   reps: int = 2, source=None) -> dict:
    """Time per round-0 candidate scored one by one and ``size`` at a time, in turns, in one run."""
    if source is None:
        g = torch.Generator().manual_seed(0)
        source = TensorSource(torch.randint(0, 256, (20 * 12, 3, 84, 84), dtype=torch.uint8, generator=g),
                              torch.arange(20 * 12) % 20)
    data = _Data(source, cfg, device)
    alive = initial_alive(len(cfg.space))
    keys = [(c, e, o) for c in range(2) for e in range(9) for o in range(1, len(cfg.space))][:n_candidates]
    cands = []
    for key in keys:
        cand = alive.clone()
        cand[key] = False
        cands.append(cand)
    scorer = _Scorer(cfg, 0, data, device, "hook", candidate_batch=1)
    scorer.start_stage("round0")
    scorer.score("round0", keys[0], cands[0], alive, alive)  # warm-up; the unpruned kernels are computed here once

    def run(size: int, keys_, cands_) -> None:
        for start in range(0, len(keys_), size):
            k, c = keys_[start:start + size], cands_[start:start + size]
            if size == 1:
                scorer.score("round0", k[0], c[0], alive, alive)
            else:
                scorer.score_many("round0", k, c, alive, alive)

    peak: dict[str, float] = {}
    failed: dict[str, str] = {}
    for size in sizes:  # warm-up of each size (allocator, cuDNN plans), and its peak memory on CUDA
        try:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            run(size, keys[:size], cands[:size])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                peak[str(size)] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        except torch.OutOfMemoryError as e:
            failed[str(size)] = f"out of memory: {str(e)[:200]}"
            torch.cuda.empty_cache()
    sizes = tuple(s for s in sizes if str(s) not in failed)
    times: dict[int, list[float]] = {s: [] for s in sizes}
    for _ in range(reps):
        for size in sizes:
            _sync(device)
            t = time.perf_counter()
            run(size, keys, cands)
            _sync(device)
            times[size].append((time.perf_counter() - t) / len(keys))
            print(f"  batch {size:3d}: {times[size][-1]:.3f} s per candidate", file=sys.stderr)
    per = {str(s): statistics.median(v) for s, v in times.items()}
    fastest = {str(s): min(v) for s, v in times.items()}  # the least disturbed block: robust on a shared machine
    return {"sizes": list(sizes), "candidates": len(keys), "reps": reps, "per_candidate_seconds": per,
            "all_seconds": {str(s): v for s, v in times.items()}, "peak_mib": peak or None,
            "one_by_one_over_batched": {s: per[str(sizes[0])] / v for s, v in per.items()},
            "fastest_per_candidate_seconds": fastest,
            "one_by_one_over_batched_fastest": {s: fastest[str(sizes[0])] / v for s, v in fastest.items()},
            "failed": failed}


def check_float64(cfg: SearchConfig, device: torch.device) -> dict:
    """Backend agreement in float64 on the configured supernet, and the MetaNTK against a direct scipy version."""
    import math

    import numpy as np
    import scipy.linalg

    model, x = _gram_setup(cfg, device)
    model, x = model.double(), x.double()
    grams = {}
    for b in ("hook", "opacus", "func"):
        t = time.perf_counter()
        grams[b] = empirical_ntk(model, x, backend=b, per_layer=True)
        print(f"  float64 {b}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    total = {b: torch.stack(list(g.values())).sum(0) for b, g in grams.items()}

    def rel(a, b):
        return ((a - b).abs().max() / b.abs().max()).item()

    out = {"hook_vs_opacus": rel(total["hook"], total["opacus"]), "hook_vs_func": rel(total["hook"], total["func"]),
           "opacus_vs_func": rel(total["opacus"], total["func"])}
    theta, nngp = total["hook"].cpu(), grams["hook"]["head"].cpu()
    nq, ns, t_ = cfg.n_way * cfg.n_query, cfg.n_way * cfg.n_shot, cfg.n_tasks
    for kind, k in (("maml", theta), ("anil", nngp)):
        for tau, lam in ((math.inf, 1e-3), (1.0, 1e-5)):
            got = meta_ntk(theta, k, n_tasks=t_, n_query=nq, n_support=ns, inner_lr_time=tau, reg_coef=lam).numpy()
            th, kk = theta.numpy(), k.numpy()
            q = [np.arange(i * nq, (i + 1) * nq) for i in range(t_)]
            s = [t_ * nq + np.arange(i * ns, (i + 1) * ns) for i in range(t_)]
            a = []
            for i in range(t_):
                kss = kk[np.ix_(s[i], s[i])]
                tt = scipy.linalg.pinvh(kss + lam * np.eye(ns))
                if math.isfinite(tau):
                    tt = tt @ (np.eye(ns) - scipy.linalg.expm(-tau * kss))
                a.append(kk[np.ix_(q[i], s[i])] @ tt)
            ref = np.block([[th[np.ix_(q[i], q[j])] - a[i] @ th[np.ix_(s[i], q[j])] - th[np.ix_(q[i], s[j])] @ a[j].T
                             + a[i] @ th[np.ix_(s[i], s[j])] @ a[j].T for j in range(t_)] for i in range(t_)])
            out[f"metantk_{kind}_tau={tau}_vs_direct"] = float(np.abs(got - ref).max() / np.abs(ref).max())
    for k, v in out.items():
        print(f"  {k}: {v:.2e}", file=sys.stderr)
    return out


def bench_kernel_graph(cfg: SearchConfig, device: torch.device, mode: str, size: int = 4, n_candidates: int = 8,
                       reps: int = 2, source=None) -> dict:
    """Time per round-0 candidate, ``size`` at a time, with eager kernel passes and with ``mode``'s recorded pass
    (``fx`` or ``cuda-graph``), in turns in one run; the recording (once per stage and batch shape) is timed apart."""
    if source is None:
        g = torch.Generator().manual_seed(0)
        source = TensorSource(torch.randint(0, 256, (20 * 12, 3, 84, 84), dtype=torch.uint8, generator=g),
                              torch.arange(20 * 12) % 20)
    cfg = dataclasses.replace(cfg, method="metantk-only")  # the kernel only: what the recording changes
    data = _Data(source, cfg, device)
    alive = initial_alive(len(cfg.space))
    keys = [(c, e, o) for c in range(2) for e in range(9) for o in range(1, len(cfg.space))][:n_candidates]
    keys = keys[:len(keys) - len(keys) % size] or keys[:size]
    cands = []
    for key in keys:
        cand = alive.clone()
        cand[key] = False
        cands.append(cand)
    scorers = {m: _Scorer(cfg, 0, data, device, "hook", candidate_batch=size, kernel_graph=m)
               for m in ("eager", mode)}
    record_seconds = None
    for m, scorer in scorers.items():  # warm-up; for the recorded mode this records the pass
        scorer.start_stage("round0")
        _sync(device)
        t = time.perf_counter()
        scorer.score_many("round0", keys[:size], cands[:size], alive, alive)
        _sync(device)
        if m == mode:
            record_seconds = time.perf_counter() - t
    times: dict[str, list[float]] = {m: [] for m in scorers}
    for _ in range(reps):
        for m, scorer in scorers.items():
            _sync(device)
            t = time.perf_counter()
            for start in range(0, len(keys), size):
                scorer.score_many("round0", keys[start:start + size], cands[start:start + size], alive, alive)
            _sync(device)
            times[m].append((time.perf_counter() - t) / len(keys))
            print(f"  {m:10s} batch {size}: {times[m][-1]:.3f} s per candidate", file=sys.stderr)
    per = {m: statistics.median(v) for m, v in times.items()}
    return {"mode": mode, "size": size, "candidates": len(keys), "reps": reps, "per_candidate_seconds": per,
            "all_seconds": times, "record_seconds": record_seconds, "eager_over_recorded": per["eager"] / per[mode]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--channels", type=int, default=48)
    p.add_argument("--cells", type=int, default=5)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--tasks", type=int, default=3, help="tasks per meta-batch (images = tasks x 5 ways x 2)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--candidates", type=int, default=3, help="round-0 candidates timed per method")
    p.add_argument("--patches", type=int, default=1000)
    p.add_argument("--reps", type=int, default=3, help="timing repetitions of the Gram (median)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--skip-round", action="store_true", help="only benchmark the Gram")
    p.add_argument("--skip-gram", action="store_true", help="only benchmark round scoring")
    p.add_argument("--candidate-batch", type=int, default=None,
                   help="also time round-0 candidates scored this many at a time against one by one")
    p.add_argument("--batch-candidates", type=int, default=8, help="candidates timed for --candidate-batch")
    p.add_argument("--kernel-graph", choices=("fx", "cuda-graph"), default=None,
                   help="also time round-0 candidates with this recorded kernel pass against eager passes "
                        "(batch --candidate-batch, default 4)")
    p.add_argument("--quick", action="store_true", help="reduced configuration: C=16, 1 task, 1 repeat, 2 candidates")
    p.add_argument("--check-float64", action="store_true",
                   help="also check hook/opacus/torch.func agreement and the MetaNTK in float64 on this supernet")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    a = p.parse_args(argv)
    if a.quick:
        a.channels, a.tasks, a.repeats, a.candidates, a.reps = 16, 1, 1, 2, 2
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    cfg = SearchConfig(channels=a.channels, num_cells=a.cells, resolution=a.resolution, n_tasks=a.tasks,
                       repeats=a.repeats, region_patches=a.patches)
    machine = {"device": str(device), "cpu": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
               "load_average": os.getloadavg()}
    print(f"config: C={a.channels} cells={a.cells} res={a.resolution} images={a.tasks * 10} repeats={a.repeats} "
          f"on {machine}", file=sys.stderr)
    result = {"config": cfg.to_dict(), "machine": machine}
    if not a.skip_gram:
        result["gram"] = bench_gram(cfg, device, a.reps, not a.no_memory)
    if a.check_float64:
        result["float64"] = check_float64(cfg, device)
    if not a.skip_round:
        result["round"] = bench_round(cfg, device, a.candidates)
    if a.candidate_batch:
        result["batching"] = bench_batching(cfg, device, (1, a.candidate_batch), a.batch_candidates)
    if a.kernel_graph:
        result["kernel_graph"] = bench_kernel_graph(cfg, device, a.kernel_graph, a.candidate_batch or 4,
                                                    a.batch_candidates)

    rows = []
    gram = result.get("gram", {})
    if gram:
        fb, hook, op = gram["forward+backward"], gram["hook"], gram["opacus"]
        plain = gram["hook, per-op network"]
        rows += [("Gram: opacus / hook time", op["seconds"] / hook["seconds"], ">= 2"),
                 ("Gram: opacus / hook time, both on the per-op network", op["seconds"] / plain["seconds"], ""),
                 ("Gram: hook / forward+backward time", hook["seconds"] / fb["seconds"], "(about 1)")]
    if gram and "peak_bytes" in gram["hook"]:
        rows.append(("Gram: hook / forward+backward peak memory", hook["peak_bytes"] / max(fb["peak_bytes"], 1),
                     "<= 1.2"))
        rows.append(("Gram: opacus / forward+backward peak memory", op["peak_bytes"] / max(fb["peak_bytes"], 1), ""))
    if "round" in result:
        rd = result["round"]
        rows.append(("round scoring, like for like: reference procedure / engine, both the reference protocol",
                     rd["like_for_like_ratio"], ""))
        rows.append((f"round scoring: reference procedure / engine with protocol=shared "
                     f"({rd['candidates_timed']} candidates)", rd["measured_ratio"], ""))
        rows.append((f"round scoring: reference procedure / engine with protocol=shared (full round, "
                     f"{rd['round_candidates']} candidates)", rd["round_ratio"], ">= 5"))
    if "batching" in result:
        bt = result["batching"]
        rows.append((f"candidates: one by one / batched {a.candidate_batch} (time per candidate)",
                     bt["one_by_one_over_batched"][str(a.candidate_batch)], ">= 1 (no slowdown)"))
    if "kernel_graph" in result:
        kg = result["kernel_graph"]
        rows.append((f"candidates: eager / {kg['mode']} replay, batch {kg['size']} (time per candidate)",
                     kg["eager_over_recorded"], f"(recording once: {kg['record_seconds']:.1f} s)"))
    result["ratios"] = {name: value for name, value, _ in rows}
    print(f"\n{'measure':68s} {'ratio':>8s}  target")
    for name, value, target in rows:
        print(f"{name:68s} {value:8.2f}  {target}")
    if gram:
        print(f"hook vs opacus Gram max relative difference: {gram['hook_vs_opacus_rel_diff']:.2e} "
              f"(per-op network: {gram['hook_per_op_vs_opacus_rel_diff']:.2e})")
    if "round" in result:
        rd = result["round"]
        print(f"full round estimate: engine {rd['engine_round_seconds']:.0f} s (protocol=shared), "
              f"{rd['engine_reference_protocol_round_seconds']:.0f} s (protocol=reference), "
              f"reference procedure {rd['baseline_round_seconds']:.0f} s")
    for k, v in result.get("float64", {}).items():
        print(f"float64 {k}: max relative difference {v:.2e}")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
