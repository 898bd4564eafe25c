"""Time and peak memory of one meta-step per method, side by side (Conv4, 5-way, random 84px episodes).

Each (method, inner_steps) cell runs in a fresh Python subprocess so peak memory is not shared: on CPU the
peak is the process's peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``) after the meta-steps minus
its value just before the first one (model, optimiser and episodes already built), with glibc's
``MALLOC_MMAP_THRESHOLD_=65536`` so freed tensors are returned to the OS; torch's CPU allocations are invisible
to ``tracemalloc``. On CUDA it is ``torch.cuda.max_memory_allocated`` over the same span.
Time is the median wall time of ``--steps`` meta-steps after one warm-up step.

    python scripts/bench_meta.py --inner-steps 1 5 --width 32 --meta-batch 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # run from a checkout, installed or not
METHODS = ("maml", "fomaml", "hfmaml", "anil", "fobmaml")


def _one(method: str, inner_steps: int, width: int, meta_batch: int, steps: int, size: int, n_shot: int,
         device: str, threads: int) -> dict:
    import resource

    import timm
    import torch

    import metantk_zoo  # noqa: F401
    from metantk_zoo.meta import MetaConfig, make_outer_optimizer, meta_step

    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    cfg = MetaConfig(method=method, n_way=5, n_shot=n_shot, n_query=15, inner_steps=inner_steps,
                     meta_batch=meta_batch)
    model = timm.create_model("metantk_conv4", width=width, num_classes=5).to(dev)
    opt = make_outer_optimizer(model, cfg)
    g = torch.Generator().manual_seed(0)

    def episode():
        xs = torch.randn(5 * n_shot, 3, size, size, generator=g).to(dev)
        xq = torch.randn(5 * 15, 3, size, size, generator=g).to(dev)
        return xs, torch.arange(5).repeat_interleave(n_shot).to(dev), xq, torch.arange(5).repeat_interleave(15).to(dev)

    batches = [[episode() for _ in range(meta_batch)] for _ in range(steps + 1)]
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    times = []
    for i, b in enumerate(batches):
        t0 = time.perf_counter()
        meta_step(model, b, opt, cfg)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    if dev.type == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    return {"method": method, "inner_steps": inner_steps, "sec_per_step": statistics.median(times),
            "peak_mib": peak_mib, "device": device, "width": width, "meta_batch": meta_batch, "size": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--inner-steps", nargs="+", type=int, default=[1, 5])
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--meta-batch", type=int, default=4)
    ap.add_argument("--n-shot", type=int, default=1)
    ap.add_argument("--size", type=int, default=84)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--_child", nargs=2, metavar=("METHOD", "INNER"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child:
        print(json.dumps(_one(a._child[0], int(a._child[1]), a.width, a.meta_batch, a.steps, a.size, a.n_shot,
                              a.device, a.threads)))
        return
    from metantk_zoo.utils.device import resolve_device

    a.device = str(resolve_device(a.device))  # resolved once, here: every child process runs on the same device
    rows = []
    for inner in a.inner_steps:
        for m in a.methods:
            cmd = [sys.executable, __file__, "--_child", m, str(inner), "--width", str(a.width), "--meta-batch",
                   str(a.meta_batch), "--steps", str(a.steps), "--size", str(a.size), "--n-shot", str(a.n_shot),
                   "--device", a.device, "--threads", str(a.threads)]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
                   # large blocks are mmap'ed and unmapped on free, so the RSS peak tracks torch's live tensors
                   "MALLOC_MMAP_THRESHOLD_": "65536"}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{r['method']:8s} inner={r['inner_steps']:2d}  {r['sec_per_step']:7.3f} s/step  "
                  f"peak +{r['peak_mib']:8.1f} MiB", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
