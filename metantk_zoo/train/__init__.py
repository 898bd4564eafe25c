"""Training: the generic epoch loop with checkpoints, the one distributed initialisation, the RFS recipe
(https://arxiv.org/abs/2003.11539) and the registry of training methods.
"""

from __future__ import annotations

from ..utils.distributed import DistInfo, setup_distributed
from .loop import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    PLOT_FILE,
    BatchSource,
    Checkpointer,
    EpochFn,
    TensorBatchSource,
    TrainResult,
    batch_loader,
    epoch_batches,
    run_epochs,
    run_method,
)
from .methods import TRAINING_METHODS, TrainingMethod, register_method
from .plot import plot_metrics
from .rfs import PRESETS, RfsConfig, drop_path_at_epoch, lr_at_epoch, preset_config, train_rfs

__all__ = [
    "plot_metrics",
    "RfsConfig",
    "PRESETS",
    "preset_config",
    "lr_at_epoch",
    "drop_path_at_epoch",
    "BatchSource",
    "TensorBatchSource",
    "epoch_batches",
    "batch_loader",
    "DistInfo",
    "setup_distributed",
    "Checkpointer",
    "EpochFn",
    "TrainResult",
    "run_epochs",
    "run_method",
    "train_rfs",
    "TrainingMethod",
    "TRAINING_METHODS",
    "register_method",
    "CONFIG_FILE",
    "METRICS_FILE",
    "PLOT_FILE",
    "CHECKPOINT_FILE",
]
