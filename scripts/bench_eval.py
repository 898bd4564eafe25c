#!/usr/bin/env python
"""Benchmark: this evaluator versus the reference's procedure, one run, same machine, same episodes.

Reference (RFS ``meta_eval`` as used by MetaNTK-NAS): for every episode, load and transform its images, run the
backbone on the 5 augmented copies of every support image and on every query, L2-normalise, and fit a scikit-learn
``LogisticRegression(C=1.0, lbfgs, max_iter=1000)``. This evaluator: each image's features once per evaluation,
each support copy once, and one batched probe for all episodes. Prints both timings, the speed-up and both
accuracies with their 95% CIs.

    python scripts/bench_eval.py                       # 1000-episode 5-way 5-shot paper protocol
    python scripts/bench_eval.py --baseline-episodes 100   # time the reference on the first 100 episodes only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

os.environ.setdefault("METANTK_NO_PROGRESS", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="metantk_nano")
    ap.add_argument("--init-channels", type=int, default=None)
    ap.add_argument("--dataset", default="synthetic:size=32")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--protocol", default="paper")
    ap.add_argument("--n-shot", type=int, default=5)
    ap.add_argument("--episodes", type=int, default=None)
    ap.add_argument("--baseline-episodes", type=int, default=None,
                    help="run the reference on the first N episodes only and scale its time (default: all)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import timm
    from sklearn.linear_model import LogisticRegression

    import metantk_zoo  # noqa: F401
    from metantk_zoo.data import EpisodeSampler, load_fewshot
    from metantk_zoo.fewshot import Episodes, evaluate_fewshot, mean_confidence_interval, protocol_config
    from metantk_zoo.pipeline import SplitImages, reseed
    from metantk_zoo.utils.device import resolve_device

    device = resolve_device(args.device)

    kw = {"init_channels": args.init_channels} if args.init_channels else {}
    model = timm.create_model(args.model, num_classes=0, **kw).eval().to(device)
    fs = load_fewshot(args.dataset)
    cfg = protocol_config(args.protocol, n_shot=args.n_shot, n_episodes=args.episodes)
    sampler = EpisodeSampler(fs.labels("test"), cfg.n_way, cfg.n_shot, cfg.n_query, seed=cfg.seed,
                             n_episodes=cfg.n_episodes)
    manifest = sampler.manifest(dataset=fs.spec, split="test")
    eps = manifest.episodes
    episodes = Episodes(torch.as_tensor(np.stack([e.support for e in eps])),
                        torch.as_tensor(np.stack([e.y_support for e in eps])),
                        torch.as_tensor(np.stack([e.query for e in eps])),
                        torch.as_tensor(np.stack([e.y_query for e in eps])), manifest.sha256)
    images = SplitImages(fs.split("test"), args.image_size)

    t0 = time.perf_counter()
    ours = evaluate_fewshot(model, images, episodes, cfg, device=device)
    t_ours = time.perf_counter() - t0

    # the reference: everything per episode
    n_base = args.baseline_episodes or len(eps)
    accs = []
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        for e in eps[:n_base]:
            reseed(images.augment)
            spt = images.load(np.repeat(e.support, cfg.n_aug_support), augment=True).to(device)
            qry = images.load(e.query, augment=False).to(device)
            f_spt = torch.nn.functional.normalize(model.forward_head(model.forward_features(spt), pre_logits=True))
            f_qry = torch.nn.functional.normalize(model.forward_head(model.forward_features(qry), pre_logits=True))
            clf = LogisticRegression(C=cfg.C, solver="lbfgs", max_iter=1000, random_state=0)
            clf.fit(f_spt.cpu().numpy(), np.repeat(e.y_support, cfg.n_aug_support))
            accs.append(float((clf.predict(f_qry.cpu().numpy()) == e.y_query).mean()))
    t_base = (time.perf_counter() - t0) * len(eps) / n_base
    m_base, h_base = mean_confidence_interval(accs)

    out = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
                   f"{torch.get_num_threads()}, "
                   + (torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU only"),
        "model": args.model, "dataset": fs.spec, "protocol": cfg.protocol, "n_way": cfg.n_way, "n_shot": cfg.n_shot,
        "n_query": cfg.n_query, "n_aug_support": cfg.n_aug_support, "episodes": len(eps),
        "baseline_episodes_run": n_base, "manifest": manifest.sha256[:16],
        "ours_s": round(t_ours, 2), "baseline_s": round(t_base, 2), "speedup": round(t_base / t_ours, 1),
        "ours_acc": round(100 * ours.mean, 2), "ours_ci95": round(100 * ours.ci95, 2),
        "baseline_acc": round(100 * m_base, 2), "baseline_ci95": round(100 * h_base, 2),
    }
    scaled = "" if n_base == len(eps) else f" (measured on {n_base} episodes, scaled x{len(eps) / n_base:g})"
    print(f"{cfg.n_episodes}-episode {cfg.n_way}-way {cfg.n_shot}-shot '{cfg.protocol}' protocol, {args.model}, "
          f"{fs.spec}, {out['machine']}")
    print(f"  this evaluator : {t_ours:8.1f} s   accuracy {out['ours_acc']:.2f} ± {out['ours_ci95']:.2f} %")
    print(f"  reference      : {t_base:8.1f} s   accuracy {out['baseline_acc']:.2f} ± {out['baseline_ci95']:.2f} %"
          f"{scaled}")
    print(f"  speed-up       : {out['speedup']:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
