"""Episode throughput of the data layer vs a naive per-image loop, in the same run.

Measures 5-way 5-shot 15-query episodes at 84x84 on the embedded benchmark (meta-test split), each episode fully
materialised as normalised float tensors (support with the RFS training augmentation, query with the eval
transform). Batched path: one ``load_images`` call per support/query set + one vectorised transform each.
Naive baseline: ``ds[i]["image"]`` per image (PIL decode through datasets), then torchvision's per-image
transforms (RandomCrop(pad 8) + ColorJitter + flip + ToTensor + Normalize).

    python scripts/bench_data.py --episodes 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from torchvision import transforms as T

from metantk_zoo.data import EpisodeSampler, eval_transform, load_fewshot, load_images, train_transform
from metantk_zoo.data.transforms import MINI_IMAGENET_MEAN, MINI_IMAGENET_STD


def batched(ds, episodes, size):
    aug, ev = train_transform(size, seed=0), eval_transform(size)
    for ep in episodes:
        x_spt = load_images(ds, ep.support, aug)
        x_qry = load_images(ds, ep.query, ev)
        assert x_spt.shape == (25, 3, size, size) and x_qry.shape == (75, 3, size, size)


def naive(ds, episodes, size):
    norm = T.Normalize(MINI_IMAGENET_MEAN, MINI_IMAGENET_STD)
    aug = T.Compose([T.RandomCrop(size, padding=8), T.ColorJitter(0.4, 0.4, 0.4), T.RandomHorizontalFlip(),
                     T.ToTensor(), norm])
    ev = T.Compose([T.ToTensor(), norm])
    for ep in episodes:
        x_spt = torch.stack([aug(ds[int(i)]["image"].convert("RGB")) for i in ep.support])
        x_qry = torch.stack([ev(ds[int(i)]["image"].convert("RGB")) for i in ep.query])
        assert x_spt.shape == (25, 3, size, size) and x_qry.shape == (75, 3, size, size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default="synthetic")
    p.add_argument("--episodes", type=int, default=200)
    # 1 by default: on a small shared CPU, intra-op threads oversubscribe the cores (more threads, slower)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    fs = load_fewshot(args.spec)
    ds = fs.split("test")
    size = ds[0]["image"].size[0]
    sampler = EpisodeSampler(fs.labels("test"), n_way=5, n_shot=5, n_query=15, seed=0, n_episodes=args.episodes)
    episodes = list(sampler)
    batched(ds, episodes[:3], size)  # warm-up (page cache, first torch calls)
    naive(ds, episodes[:3], size)
    result = {"spec": fs.spec, "episodes": args.episodes, "image_size": size, "threads": args.threads,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    for name, fn in (("batched", batched), ("naive", naive)):
        t0 = time.perf_counter()
        fn(ds, episodes, size)
        dt = time.perf_counter() - t0
        result[f"{name}_episodes_per_s"] = round(args.episodes / dt, 2)
    result["speedup"] = round(result["batched_episodes_per_s"] / result["naive_episodes_per_s"], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
