"""Training: the generic epoch loop with checkpoints, the one distributed initialisation, the RFS recipe
(https://arxiv.org/abs/2003.11539) and the registry of training methods.
"""

from __future__ import annotations

from .loop import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    PLOT_FILE,
    PRESETS,
    TRAINING_METHODS,
    BatchSource,
    Checkpointer,
    DistInfo,
    EpochFn,
    RfsConfig,
    TensorBatchSource,
    TrainingMethod,
    TrainResult,
    drop_path_at_epoch,
    epoch_batches,
    lr_at_epoch,
    preset_config,
    register_method,
    run_epochs,
    setup_distributed,
    train_rfs,
)
from .plot import (
    plot_metrics,
)

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
    "DistInfo",
    "setup_distributed",
    "Checkpointer",
    "EpochFn",
    "TrainResult",
    "run_epochs",
    "train_rfs",
    "TrainingMethod",
    "TRAINING_METHODS",
    "register_method",
    "CONFIG_FILE",
    "METRICS_FILE",
    "PLOT_FILE",
    "CHECKPOINT_FILE",
]
