"""Tiny models and data for the training tests, and a worker run as a subprocess (kill-and-resume, DDP).

Usage as a script: ``python tests/_train_helpers.py RUN_DIR EPOCHS [--kill-after N] [--resume] [--mlp]
[--device DEV]``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402

import metantk_zoo  # noqa: E402,F401
from metantk_zoo.train import TensorBatchSource, preset_config, train_rfs  # noqa: E402
from metantk_zoo.utils.device import resolve_device  # noqa: E402


def tiny_data(n: int = 48, classes: int = 4, size: int = 16, seed: int = 0, augment: bool = True) -> TensorBatchSource:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 3, size, size, generator=g) + y.view(-1, 1, 1, 1) * 0.5
    # a random flip drawn from torch's RNG: augmentation that resume must replay
    if not augment:
        return TensorBatchSource(x, y)
    return TensorBatchSource(x, y, transform=lambda b: torch.where(torch.rand(len(b), 1, 1, 1) < 0.5, b.flip(-1), b))


def tiny_model(mlp: bool = False) -> nn.Module:
    torch.manual_seed(0)
    if mlp:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 16), nn.ReLU(), nn.Linear(16, 4))
    return timm.create_model("metantk_nano", num_classes=4, init_channels=4)


def tiny_cfg(epochs: int, **kw):
    return preset_config("rfs-mini", epochs=epochs, batch_size=8, lr_decay_epochs=(1,), lr=0.05, **kw)


def main(argv: list[str]) -> None:
    run_dir, epochs = argv[0], int(argv[1])
    kill_after = int(argv[argv.index("--kill-after") + 1]) if "--kill-after" in argv else None
    mlp = "--mlp" in argv
    device = resolve_device(argv[argv.index("--device") + 1] if "--device" in argv else "cpu")  # cuda: this rank's

    def on_epoch_end(epoch: int, metrics: dict) -> None:
        if kill_after is not None and epoch == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # a hard kill right after the epoch's checkpoint

    train_rfs(tiny_model(mlp), tiny_data(augment=not mlp), tiny_cfg(epochs), run_dir=run_dir, device=device,
              architecture="mlp" if mlp else "metantk_nano", resume="--resume" in argv, on_epoch_end=on_epoch_end)


if __name__ == "__main__":
    os.environ.setdefault("METANTK_NO_PROGRESS", "1")
    torch.set_num_threads(1)
    main(sys.argv[1:])
