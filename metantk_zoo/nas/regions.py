"""Linear-region counting: the number of distinct ReLU activation patterns a network shows on a set of inputs.

As TE-NAS and MetaNTK-NAS (``reference/method-facts.md`` §5): a forward hook on every ``nn.ReLU`` records the sign
of its output; per sample the patterns of all ReLUs are concatenated, and the count is the number of distinct
rows (the reference hooks ReLUs with 4-D inputs, which in its thin network are all of them). The reference
computes it as ``sum_i 1 / #{j : Hamming(i, j) = 0}`` from an n x n matmul; here the rows are
packed into 64-bit words and counted with ``torch.unique`` (exact, same count, O(n log n)).

Inputs are passed in batches; the model is run as it is (the reference's thin networks use BatchNorm in train
mode, so each batch is normalised with its own statistics: pass the same batches to the networks you compare).

MetaNTK-NAS: https://arxiv.org/abs/2203.09137; TE-NAS: https://arxiv.org/abs/2102.11535.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..errors import KernelError

__all__ = ["activation_patterns", "count_distinct_rows", "count_linear_regions"]


@torch.no_grad()
def activation_patterns(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Binary ReLU patterns: (N, n_neurons) bool, ``True`` where a ReLU output is positive.

    Every executed ``nn.ReLU`` module contributes its flattened output, in execution order.

    Raises:
        KernelError: the model has no ReLU module that fires on this input.
    """
    records: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        records.append((output > 0).reshape(output.shape[0], -1))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    if not records:
        raise KernelError(f"{type(model).__name__} has no nn.ReLU that fires; linear regions are undefined")
    return torch.cat(records, dim=1)


def count_distinct_rows(patterns: torch.Tensor) -> int:
    """Number of distinct rows of a (N, D) boolean matrix (bits packed into int64 words, then ``unique``)."""
    if patterns.dim() != 2:
        raise KernelError(f"expected a (N, D) pattern matrix, found shape {tuple(patterns.shape)}")
    n, d = patterns.shape
    if n == 0:
        return 0
    pad = (-d) % 63
    bits = torch.cat([patterns.to(torch.int64), patterns.new_zeros(n, pad, dtype=torch.int64)], 1)
    weights = 2 ** torch.arange(63, device=bits.device, dtype=torch.int64)  # 63 bits keep the words non-negative
    words = (bits.reshape(n, -1, 63) * weights).sum(-1)  # (N, ceil(D/63))
    return int(torch.unique(words, dim=0).shape[0])


def count_linear_regions(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Distinct activation patterns of ``model`` over all samples of all ``batches`` (each batch one forward).

    Args:
        model: a ReLU network; run in its current mode (train-mode BatchNorm uses each batch's statistics).
        batches: tensors (B, ...) of inputs.

    Returns:
        The number of distinct ReLU sign patterns among all samples.
    """
    with torch.no_grad():  # patterns need no graph
        patterns = [activation_patterns(model, x) for x in batches]
    if not patterns:
        raise KernelError("no input batch given to count linear regions")
    return count_distinct_rows(torch.cat(patterns, 0))
