"""The exception tree of metantk-zoo (and nothing else).

Every error a user can cause derives from :class:`MetantkZooError` and from the builtin a caller would
naturally catch (``ValueError`` for bad values, ``RuntimeError`` for failed operations), following
huggingface_hub. The CLI prints any ``MetantkZooError`` (and the OS errors a user causes) as one line and exits
with code 1; see :mod:`metantk_zoo.cli` for the whole error contract.
"""

from __future__ import annotations

__all__ = [
    "MetantkZooError",
    "GenotypeError",
    "DatasetError",
    "ConfigError",
    "CheckpointError",
    "KernelError",
    "HubError",
    "DiskFullError",
]


class MetantkZooError(Exception):
    """Base class of every error metantk-zoo raises on purpose."""


class GenotypeError(MetantkZooError, ValueError):
    """A genotype that cannot be parsed or is not a valid cell pair of the few-shot DARTS space."""


class DatasetError(MetantkZooError, ValueError):
    """A dataset spec, file or episode request that the data layer cannot serve."""


class ConfigError(MetantkZooError, ValueError):
    """A configuration value, preset name or option combination that is not valid."""


class CheckpointError(MetantkZooError, RuntimeError):
    """A checkpoint or weights file that is missing, corrupt or belongs to another architecture."""


class KernelError(MetantkZooError, RuntimeError):
    """A kernel (NTK / MetaNTK) computation that cannot be carried out on the given model or inputs."""


class HubError(MetantkZooError, RuntimeError):
    """A Hugging Face Hub operation (push, pull, load) that failed; wraps the client's own errors."""


class DiskFullError(MetantkZooError, OSError):
    """A write failed because the disk (or quota) is full; the file it was replacing is intact."""

    def __str__(self) -> str:
        return str(self.strerror)
