"""Episode throughput of the data layer vs a naive per-image loop, in the same run.

Measures 5-way 5-shot 15-query episodes at 84x84 on the embedded benchmark (meta-test split), each episode fully
materialised as normalised float tensors (support with the RFS training augmentation, query with the eval
transform). Batched path: one ``load_images`` call per support/query set + one vectorised transform each.
Naive baseline: ``ds[i]["image"]`` per image (PIL decode through datasets), then torchvision's per-image
transforms (RandomCrop(pad 8) + ColorJitter + flip + ToTensor + Normalize).

    python scripts/bench_data.py --episodes 200
    python scripts/bench_data.py --baselines     # trivial-cue check of the embedded benchmark instead

``--baselines`` scores 5-way 5-shot nearest-centroid classifiers on hand-made features of the meta-test images
(pixels, mean colour, colour histogram, grey gradients): if a trivial cue identified classes, these would be far
above the 20% chance level.
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


def baselines(fs, n_episodes: int) -> dict[str, float]:
    ds = fs.split("test")
    x = load_images(ds, list(range(len(ds)))).float() / 255  # (N, 3, H, W)
    grey = x.mean(1, keepdim=True)
    feats = {
        "pixels": torch.nn.functional.adaptive_avg_pool2d(x, 21).flatten(1),
        "mean_colour": x.mean((2, 3)),
        "colour_histogram": torch.stack([torch.histc(img[c], 8, 0, 1) for img in x for c in range(3)]).view(len(x), -1),
        "grey_gradients": torch.nn.functional.adaptive_avg_pool2d((grey[..., 1:, :] - grey[..., :-1, :]).abs(), 21)
        .flatten(1),
    }
    sampler = EpisodeSampler(fs.labels("test"), n_way=5, n_shot=5, n_query=15, seed=0, n_episodes=n_episodes)
    out = {}
    for name, f in feats.items():
        f = torch.nn.functional.normalize(f - f.mean(0), dim=1)
        accs = []
        for ep in sampler:
            proto = f[ep.support].view(5, 5, -1).mean(1)  # (n_way, D)
            accs.append(float((torch.cdist(f[ep.query], proto).argmin(1).numpy() == ep.y_query).mean()))
        acc = torch.tensor(accs)
        out[name] = f"{100 * acc.mean():.1f} +- {196 * acc.std() / len(acc) ** 0.5:.1f} %"
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default="synthetic")
    p.add_argument("--episodes", type=int, default=200)
    # 1 by default: on a small shared CPU, intra-op threads oversubscribe the cores (more threads, slower)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--baselines", action="store_true", help="trivial-cue baselines instead of throughput")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    fs = load_fewshot(args.spec)
    if args.baselines:
        print(json.dumps({"spec": fs.spec, "episodes": args.episodes, "5way5shot_nearest_centroid":
                          baselines(fs, args.episodes)}, indent=2))
        return
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
