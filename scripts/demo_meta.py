"""Short CPU meta-training of Conv4 with every method on the embedded benchmark, scored on identical episodes.

For each method: the same seed-0 Conv4 (so the same untrained network), ``--meta-steps`` outer steps on
meta-train episodes, then 5-way query accuracy after the method's own adaptation (``inner_steps_test`` steps;
ANIL adapts the head only) on the same ``--test-episodes`` meta-test episodes, before and after training.

    python scripts/demo_meta.py --meta-steps 1500 --size 32 --threads 1   # about 3-8 minutes per method on one core
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import timm  # noqa: E402
import torch  # noqa: E402

import metantk_zoo  # noqa: E402,F401
from metantk_zoo.data import load_fewshot  # noqa: E402
from metantk_zoo.meta import METHODS, adapted_accuracies, make_meta_config, make_outer_optimizer, meta_step  # noqa: E402
from metantk_zoo.pipeline import episode_fn  # noqa: E402
from metantk_zoo.utils.device import resolve_device  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--meta-steps", type=int, default=1500)
    ap.add_argument("--test-episodes", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="MetaConfig overrides (JSON values)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    fs = load_fewshot(f"{a.dataset}:size={a.size}" if a.dataset == "synthetic" else a.dataset)
    rows = []
    for method in a.methods:
        cfg = make_meta_config(method, "demo", meta_steps=a.meta_steps,
                               **{k: json.loads(v) for k, v in (item.split("=", 1) for item in a.set)})
        train = episode_fn(fs, "train", cfg.n_way, cfg.n_shot, cfg.n_query, seed=cfg.seed, size=a.size)
        test = episode_fn(fs, "test", cfg.n_way, cfg.n_shot, 15, seed=12345, size=a.size)  # 15 queries, as RFS
        test_eps = [test(i) for i in range(a.test_episodes)]
        torch.manual_seed(0)
        model = timm.create_model("metantk_conv4", width=a.width, num_classes=cfg.n_way, img_size=a.size).to(device)

        def score(model=model, test_eps=test_eps, method=method, cfg=cfg):
            acc = adapted_accuracies(model, test_eps, method=method, lr=cfg.inner_lr, steps=cfg.inner_steps_test,
                                     device=device)
            return float(acc.mean()), float(1.96 * acc.std() / len(acc) ** 0.5)

        before = score()
        opt = make_outer_optimizer(model, cfg)
        t0, losses = time.perf_counter(), []
        for t in range(cfg.meta_steps):
            batch = [tuple(x.to(device) for x in train(t * cfg.meta_batch + i)) for i in range(cfg.meta_batch)]
            losses.append(meta_step(model, batch, opt, cfg)["loss"])
        secs = time.perf_counter() - t0
        after = score()
        k = max(1, len(losses) // 5)
        rows.append({"method": method, "before": before, "after": after, "sec_per_step": secs / cfg.meta_steps,
                     "loss_first": sum(losses[:k]) / k, "loss_last": sum(losses[-k:]) / k})
        print(f"{method:8s} untrained {100 * before[0]:5.1f} ± {100 * before[1]:4.1f}%  ->  meta-trained "
              f"{100 * after[0]:5.1f} ± {100 * after[1]:4.1f}%   query loss {rows[-1]['loss_first']:.3f} -> "
              f"{rows[-1]['loss_last']:.3f}   {secs / cfg.meta_steps:.2f} s/step", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
