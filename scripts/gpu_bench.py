#!/usr/bin/env python
"""The GPU benchmarks of ``scripts/gpu_check.sh``, one part per call, and the report that gathers them.

Parts (each writes ``DIR/part_<name>.json``; a part killed by its time limit leaves the others):

* ``search``: at the ``mini5`` size (C=48, 5 cells, 32x32, 3 tasks x 5 ways x 2 images), the Gram (hook vs
  opacus vs a plain forward+backward, peak memory of each) and the time per round-0 candidate, engine vs the
  reference procedure, both through ``scripts/bench_search.py`` on this device.
* ``full``: the whole ``mini5`` search (500 candidates) on random images, in a child process under a time budget:
  measured when it finishes, else projected from the candidates it scored (seconds per candidate so far x 500).
* ``batch``: round-0 candidates scored one by one and ``--candidate-batch`` at a time (when the engine has it).
* ``graphs``: round-0 candidates 8 at a time with eager kernel passes and with the pass recorded in a CUDA graph
  and replayed (``kernel_graph="cuda-graph"``), time per candidate and the one-off recording time.
* ``rfs``: RFS training images/s, ``metantk_cell5`` at 84x84, batch 64: fp32 eager vs bf16 autocast + channels_last.
* ``eval``: few-shot evaluation episodes/s (features of every image, then the batched probe), ``metantk_cell5``
  at 84x84, RFS protocol.

Every part records the peak GPU memory (``torch.cuda.max_memory_allocated``) of what it timed.
``--report`` writes ``gpu_check.json`` and ``gpu_check.md`` from the parts and the pytest JUnit file.

    python scripts/gpu_bench.py --part rfs --out gpu_check_out
    python scripts/gpu_bench.py --report --out gpu_check_out
    python scripts/gpu_bench.py --part all --out /tmp/x --device cpu --quick      # CPU smoke run of every part
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from metantk_zoo.utils.device import resolve_device  # noqa: E402

PARTS = ("search", "batch", "graphs", "full", "rfs", "eval")
MINI5_CANDIDATES = 18 * (7 + 6 + 5 + 4 + 3 + 2) + 2 * (3 + 4)  # 6 pruning rounds + the edge-group stages = 500


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _machine(device: torch.device) -> dict:
    return {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None}


def _source(n_classes: int = 64, per_class: int = 12, size: int = 84, seed: int = 0):
    from metantk_zoo.nas import TensorSource

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_classes * per_class, 3, size, size), dtype=torch.uint8, generator=g)
    return TensorSource(images, torch.arange(n_classes * per_class) % n_classes)


# ------------------------------------------------------------------------------------------------------- parts
def part_search(device: torch.device, quick: bool, budget: float) -> dict:
    """Gram (hook / opacus / forward+backward, time and peak memory) and round-0 time per candidate, engine vs
    reference, at the mini5 size (``scripts/bench_search.py``)."""
    import bench_search

    from metantk_zoo.nas import SearchConfig

    cfg = SearchConfig.preset("mini5")
    if quick:
        cfg = SearchConfig.preset("mini5", channels=16, num_cells=3, n_tasks=1, repeats=1, region_patches=100)
    out = {"config": {k: cfg.to_dict()[k] for k in ("channels", "num_cells", "resolution", "n_tasks", "repeats")}}
    out["gram"] = bench_search.bench_gram(cfg, device, reps=2 if quick else 5, memory=not quick)
    out["round"] = bench_search.bench_round(cfg, device, 2 if quick else 3)
    rd = out["round"]
    engine = rd["engine_seconds"][1:]
    out["seconds_per_candidate"] = {"engine": sum(engine) / len(engine),
                                    "reference": sum(rd["baseline_seconds"]) / len(rd["baseline_seconds"])}
    return out


def part_batch(device: torch.device, quick: bool, budget: float) -> dict:
    """Time per round-0 candidate scored one by one and in batches (the engine's ``candidate_batch``)."""
    import bench_search

    from metantk_zoo.nas import SearchConfig

    if not hasattr(bench_search, "bench_batching"):
        return {"skipped": "this engine has no candidate batching (scripts/bench_search.py: bench_batching)"}
    cfg = SearchConfig.preset("mini5")
    sizes, n = (1, 8, 16, 32), 32
    if quick:
        cfg = SearchConfig.preset("mini5", channels=16, num_cells=3, n_tasks=1, repeats=1, region_patches=100)
        sizes, n = (1, 2), 4
    return bench_search.bench_batching(cfg, device, sizes, n, reps=1, source=_source())


def part_graphs(device: torch.device, quick: bool, budget: float) -> dict:
    """Time per round-0 candidate, eager kernel passes vs the recorded pass replayed (CUDA graph; fx on the CPU)."""
    import bench_search

    from metantk_zoo.nas import SearchConfig

    cfg = SearchConfig.preset("mini5")
    size, n = 8, 32
    if quick:
        cfg = SearchConfig.preset("mini5", channels=4, num_cells=3, n_tasks=1, repeats=1)
        size, n = 2, 4
    mode = "cuda-graph" if device.type == "cuda" else "fx"
    _reset_peak(device)
    out = bench_search.bench_kernel_graph(cfg, device, mode, size, n, reps=2, source=_source())
    out["peak_mib"] = _peak_mib(device)
    return out


_FULL_CHILD = """
import sys, torch
sys.path.insert(0, {root!r}); sys.path.insert(0, {scripts!r})
from gpu_bench import _source
from metantk_zoo.nas import SearchConfig, search
cfg = SearchConfig.preset("mini5", **{overrides!r})
res = search(_source(), cfg, seed=0, device={device!r}, checkpoint={ckpt!r}, show_progress=False{extra})
print("GENOTYPE", res.genotype.to_darts())
"""


def part_full(device: torch.device, quick: bool, budget: float) -> dict:
    """The whole mini5 search in a child process; measured if it ends within ``budget`` s, else projected."""
    out_dir = Path(os.environ.get("GPU_BENCH_TMP", "/tmp")) / f"gpu_bench_full_{os.getpid()}"
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "search.json"
    overrides = {"channels": 16, "num_cells": 3, "repeats": 1, "region_patches": 100} if quick else {}
    batch = os.environ.get("GPU_BENCH_CANDIDATE_BATCH")
    extra = f", candidate_batch={int(batch)}" if batch else ""
    code = _FULL_CHILD.format(root=str(ROOT), scripts=str(ROOT / "scripts"), overrides=overrides,
                              device=str(device), ckpt=str(ckpt), extra=extra)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=budget)
        finished = proc.returncode == 0
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        finished = False
    elapsed = time.perf_counter() - start
    state = json.loads(ckpt.read_text()) if ckpt.exists() else {"rounds": [], "wall_time": 0.0}
    # the stage under way: the search checkpoints its finished candidates every few seconds
    partial = state.get("partial") or {"scores": [], "seconds": 0.0}
    done = sum(len(r["candidates"]) for r in state["rounds"])
    scored, seconds = done + len(partial["scores"]), state["wall_time"] + partial["seconds"]
    result = {"budget_s": budget, "elapsed_s": elapsed, "finished": finished, "stages_done": len(state["rounds"]),
              "candidates_done": done, "candidates_scored": scored,
              "candidates_total": MINI5_CANDIDATES if not quick else None,
              "scoring_seconds": seconds, "candidate_batch": int(batch) if batch else None}
    if finished:
        result["search_seconds"] = state["wall_time"]
        result["measured"] = True
        result["genotype"] = next((line[9:] for line in stdout.splitlines() if line.startswith("GENOTYPE ")), None)
    elif scored:  # projected from the candidates scored so far (finished stages and the one under way)
        per = seconds / scored
        result.update(measured=False, seconds_per_candidate=per, search_seconds=per * MINI5_CANDIDATES)
    else:
        result.update(measured=False, search_seconds=None,
                      error=(stderr or "no stage finished within the budget")[-1500:])
    return result


def part_rfs(device: torch.device, quick: bool, budget: float) -> dict:
    """RFS step images/s: fp32 eager vs bf16 autocast + channels_last (``scripts/bench_train.py``'s step)."""
    import bench_train
    import timm

    import metantk_zoo  # noqa: F401

    size, batch, steps = (32, 8, 2) if quick else (84, 64, 30)
    name = "metantk_nano" if quick else "metantk_cell5"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 64, (batch,), device=device)
    rows = {}
    variants = {"fp32 eager": (False, False), "bf16 + channels_last": (True, True)}
    for label, (amp, cl) in variants.items():
        if amp and device.type != "cuda" and not quick:
            continue
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=64, drop_path_rate=0.1).to(device).train()
        _reset_peak(device)
        ips = bench_train.bench(model, x, y, steps, amp=amp, channels_last=cl, warmup=3)
        rows[label] = {"images_per_s": ips, "peak_mib": _peak_mib(device)}
    out = {"model": name, "size": size, "batch": batch, "steps": steps, "variants": rows}
    if len(rows) == 2:
        out["speedup"] = rows["bf16 + channels_last"]["images_per_s"] / rows["fp32 eager"]["images_per_s"]
    return out


class _Images:
    """An in-memory :class:`~metantk_zoo.fewshot.ImageSource`: normalised random images, jittered when augmented."""

    def __init__(self, n: int, size: int):
        self.x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))

    def load(self, indices, augment: bool) -> torch.Tensor:
        x = self.x[list(indices)]
        return x + 0.1 * torch.randn_like(x) if augment else x


def part_eval(device: torch.device, quick: bool, budget: float) -> dict:
    """Evaluation episodes/s: feature extraction of every image the episodes use, then the batched probe."""
    import numpy as np
    import timm

    import metantk_zoo  # noqa: F401
    from metantk_zoo.data import EpisodeSampler
    from metantk_zoo.fewshot import Episodes, evaluate_fewshot, protocol_config

    classes, per_class = (10, 30) if quick else (20, 200)  # mini-ImageNet's test split has 20 classes (x 600 images)
    size, n_episodes = (32, 20) if quick else (84, 300)
    labels = torch.arange(classes).repeat_interleave(per_class).numpy()
    rows = {}
    for shot in (1, 5):
        cfg = protocol_config("rfs", n_shot=shot, n_episodes=n_episodes)
        sampler = EpisodeSampler(labels, cfg.n_way, cfg.n_shot, cfg.n_query, seed=0, n_episodes=n_episodes)
        eps = [sampler.episode(i) for i in range(n_episodes)]
        fields = [torch.as_tensor(np.stack([getattr(e, name) for e in eps]))
                  for name in ("support", "y_support", "query", "y_query")]
        episodes = Episodes(*fields, manifest_hash="bench")
        torch.manual_seed(0)
        model = timm.create_model("metantk_nano" if quick else "metantk_cell5", num_classes=0).to(device)
        images = _Images(len(labels), size)
        evaluate_fewshot(model, images, Episodes(*(t[:2] for t in (episodes.support, episodes.y_support,
                                                                    episodes.query, episodes.y_query)),
                                                 manifest_hash="warm"), cfg, device=device)  # warm-up
        _reset_peak(device)
        t0 = time.perf_counter()
        res = evaluate_fewshot(model, images, episodes, cfg, device=device)
        _sync(device)
        seconds = time.perf_counter() - t0
        rows[f"5way_{shot}shot"] = {"episodes": n_episodes, "seconds": seconds, "episodes_per_s": n_episodes / seconds,
                                    "peak_mib": _peak_mib(device), "mean_acc": res.mean}
    return {"model": "metantk_nano" if quick else "metantk_cell5", "size": size, "protocol": "rfs", "settings": rows}


# ------------------------------------------------------------------------------------------------------ report
def _junit(path: Path) -> dict | None:
    if not path.exists():
        return None
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = []
    for case in suite.iter("testcase"):
        status, detail = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                status = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                detail = node.get("message", "")
        cases.append({"name": case.get("name"), "status": status, "seconds": float(case.get("time", 0)),
                      "detail": detail[:300]})
    counts = {s: sum(c["status"] == s for c in cases) for s in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "cases": cases}


def _fmt(v, unit: str = "", digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}{unit}"


def write_report(out: Path) -> dict:
    parts = {}
    for name in PARTS:
        f = out / f"part_{name}.json"
        parts[name] = json.loads(f.read_text()) if f.exists() else {"missing": "did not run or did not finish in time"}
    report = {"machine": parts.get("machine") or _read(out / "machine.json"), "tests": _junit(out / "pytest_gpu.xml"),
              "parts": parts}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    md = ["# GPU check", ""]
    m = report["machine"] or {}
    md.append(f"Machine: {m.get('gpu')} ({m.get('device')}), torch {m.get('torch')}, CUDA {m.get('cuda')}, "
              f"cuDNN {m.get('cudnn')}, {m.get('cpus')} CPUs.")
    t = report["tests"]
    md += ["", "## `pytest -m gpu tests/test_gpu.py`", ""]
    if t:
        md.append(", ".join(f"{k} {v}" for k, v in t["counts"].items()))
        md += ["", "| test | status | s |", "|---|---|---|"]
        md += [f"| {c['name']} | {c['status']} {c['detail'][:80]} | {c['seconds']:.1f} |" for c in t["cases"]]
    else:
        md.append("no JUnit file: the tests did not run")
    md += ["", "## Benchmarks", "", "| measure | value | peak GPU MiB |", "|---|---|---|"]
    s = parts["search"]
    if "round" in s:
        spc = s["seconds_per_candidate"]
        md.append(f"| mini5 time per candidate: engine | {_fmt(spc['engine'], ' s', 3)} | |")
        md.append(f"| mini5 time per candidate: reference procedure | {_fmt(spc['reference'], ' s', 3)} | |")
        md.append(f"| reference / engine | {_fmt(spc['reference'] / spc['engine'])} | |")
        g = s["gram"]
        for k in ("hook", "opacus", "forward+backward"):
            peak = g[k].get("peak_bytes")
            md.append(f"| Gram {k} | {_fmt(g[k]['seconds'], ' s', 4)} | {_fmt(peak / 2**20 if peak else None)} |")
        md.append(f"| Gram opacus / hook | {_fmt(g['opacus']['seconds'] / g['hook']['seconds'])} | |")
    else:
        md.append(f"| search part | {s.get('missing') or s.get('error')} | |")
    f = parts["full"]
    if f.get("search_seconds") is not None:
        how = "measured" if f.get("measured") else f"projected from {f['candidates_scored']} candidates"
        md.append(f"| full mini5 search ({how}) | {_fmt(f['search_seconds'], ' s', 1)} "
                  f"({_fmt(f['search_seconds'] / 60, ' min', 1)}) | |")
    else:
        md.append(f"| full mini5 search | {f.get('missing') or f.get('error', 'no stage finished')[:200]} | |")
    b = parts["batch"]
    for k, v in (b.get("per_candidate_seconds") or {}).items():
        md.append(f"| candidate batch {k}: s per candidate | {_fmt(v, ' s', 4)} | "
                  f"{_fmt((b.get('peak_mib') or {}).get(k))} |")
    if b.get("skipped") or b.get("missing"):
        md.append(f"| candidate batching | {b.get('skipped') or b.get('missing')} | |")
    k = parts["graphs"]
    if k.get("per_candidate_seconds"):
        spc = k["per_candidate_seconds"]
        md.append(f"| batch {k['size']}, eager passes: s per candidate | {_fmt(spc['eager'], ' s', 4)} | |")
        md.append(f"| batch {k['size']}, {k['mode']} replay: s per candidate (recording once: "
                  f"{_fmt(k['record_seconds'], ' s', 2)}) | {_fmt(spc[k['mode']], ' s', 4)} | "
                  f"{_fmt(k.get('peak_mib'))} |")
        md.append(f"| eager / {k['mode']} | {_fmt(k['eager_over_recorded'])} | |")
    else:
        md.append(f"| recorded kernel passes | {k.get('missing') or k.get('error', '')[:200]} | |")
    r = parts["rfs"]
    for k, v in (r.get("variants") or {}).items():
        md.append(f"| RFS {r['model']} {r['size']}x{r['size']} batch {r['batch']}, {k} | "
                  f"{_fmt(v['images_per_s'], ' img/s', 0)} | {_fmt(v['peak_mib'])} |")
    if r.get("speedup"):
        md.append(f"| RFS bf16 + channels_last / fp32 eager | {_fmt(r['speedup'])} (target >= 1.5) | |")
    e = parts["eval"]
    for k, v in (e.get("settings") or {}).items():
        md.append(f"| eval {e['model']} {e['size']}x{e['size']} {k} | {_fmt(v['episodes_per_s'], ' episodes/s', 1)} | "
                  f"{_fmt(v['peak_mib'])} |")
    for name in ("rfs", "eval"):
        if parts[name].get("missing") or parts[name].get("error"):
            md.append(f"| {name} | {parts[name].get('missing') or parts[name].get('error')} | |")
    (out / "gpu_check.md").write_text("\n".join(md) + "\n")
    return report


def _read(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=(*PARTS, "all"), help="run one part (or all) and write part_<name>.json")
    ap.add_argument("--report", action="store_true", help="gather the parts into gpu_check.json / gpu_check.md")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--budget", type=float, default=150.0, help="seconds the full search may run (part full)")
    ap.add_argument("--quick", action="store_true", help="reduced sizes: a smoke run of the script itself")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(a.device)
    if not (a.out / "machine.json").exists():
        (a.out / "machine.json").write_text(json.dumps(_machine(device), indent=2))
    for name in (PARTS if a.part == "all" else (a.part,) if a.part else ()):
        fn = globals()[f"part_{name}"]
        t0 = time.perf_counter()
        try:
            result = fn(device, a.quick, a.budget)
        except Exception as e:  # a part that breaks is reported, and the others still run
            result = {"error": f"{type(e).__name__}: {e}"[:2000]}
        result["part_seconds"] = time.perf_counter() - t0
        (a.out / f"part_{name}.json").write_text(json.dumps(result, indent=2, default=str))
        print(f"[gpu_bench] {name}: {result['part_seconds']:.1f} s" + (f" ERROR {result['error'][:300]}"
                                                                      if "error" in result else ""), file=sys.stderr)
    if a.report:
        write_report(a.out)
        print((a.out / "gpu_check.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
