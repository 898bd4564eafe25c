#!/usr/bin/env python
"""Training throughput (images/s) of one RFS step: bf16 autocast + channels_last versus fp32 eager, same run.

On CUDA it compares fp32 eager, bf16 + channels_last, and (with --compile) the same under torch.compile, and prints
the implied epoch time for mini-ImageNet's 38,400 training images. On a CPU it runs fp32 eager only (autocast and
channels_last are CUDA settings in the trainer).

    python scripts/bench_train.py --model metantk_cell5 --size 84 --batch-size 64
    python scripts/bench_train.py --model metantk_nano --size 32 --steps 5     # CPU smoke run
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

MINI_IMAGENET_TRAIN = 38_400


def bench(model, x, y, steps: int, amp: bool, channels_last: bool, warmup: int = 2) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if amp else None
    for i in range(warmup + steps):
        if i == warmup:
            if x.is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast(x.device.type, dtype=dtype, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return steps * len(x) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="metantk_cell5")
    ap.add_argument("--size", type=int, default=84)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--init-channels", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (CUDA)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    args = ap.parse_args()

    import timm

    import metantk_zoo  # noqa: F401
    from metantk_zoo.utils.device import resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    kw = {"init_channels": args.init_channels} if args.init_channels else {}

    def fresh():
        torch.manual_seed(0)
        return timm.create_model(args.model, num_classes=64, drop_path_rate=0.1, **kw).to(device).train()

    x = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
    y = torch.randint(0, 64, (args.batch_size,), device=device)
    rows = [("fp32 eager", bench(fresh(), x, y, args.steps, amp=False, channels_last=False))]
    if cuda:
        rows.append(("bf16 + channels_last", bench(fresh(), x, y, args.steps, amp=True, channels_last=True)))
        if args.compile:
            rows.append(("bf16 + channels_last + compile",
                         bench(torch.compile(fresh()), x, y, args.steps, amp=True, channels_last=True, warmup=5)))
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.model} {args.size}x{args.size}, batch {args.batch_size}, {name}")
    base = rows[0][1]
    for label, ips in rows:
        print(f"  {label:32s} {ips:9.1f} img/s  x{ips / base:4.2f}   mini-ImageNet epoch "
              f"{MINI_IMAGENET_TRAIN / ips:8.1f} s")


if __name__ == "__main__":
    main()
