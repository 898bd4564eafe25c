"""Recorded kernel passes: one stage's hook-Gram pass of the kernel network recorded once, replayed per candidate.

On a GPU the search's per-candidate work (a forward and backward of the meta-batch through the supernet, then the
per-layer Gram folds) is thousands of small kernel launches, each with Python and launch overhead. Within a stage
that work has the same shape for every candidate: the stage's origin mask fixes which ops run, and a candidate
differs only in its per-sample op weights (0 on the op it removes, :func:`~.supernet.candidate_weights`), its
input batch and its head's weights. So the pass is recorded once per stage and batch of candidates and replayed
with the new values copied into its static inputs (:class:`RecordedKernelPass`):

* ``"eager"`` (the default): nothing recorded; the search calls the hook Gram directly.
* ``"cuda-graph"``: the eager pass captured in a :class:`torch.cuda.CUDAGraph` and replayed with one launch
  (CUDA only).
* ``"fx"``: the pass traced into a flat graph of ATen ops (``torch.fx`` ``make_fx``) and that graph replayed. It
  runs on the CPU and checks what a CUDA graph needs (every value that changes between candidates reaches the pass
  through a static input, nothing is read back to the host), but gains nothing there (``scripts/bench_search.py``).

A recorded pass gives the candidate-batched eager pass's kernels (float64: equal to 1e-10 relative, tested), which
equal the candidates scored one by one to float rounding (``tests/test_candidate_batching.py``).
``torch.compile`` was tried on the traced graph and is not offered: the hook Gram registers tensor hooks inside
forward hooks, which dynamo cannot trace, and inductor compiling the traced pass (about 10,000 ATen ops for 3
cells) took longer than the whole tiny search (``docs/kernel_graphs.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .kernels import empirical_ntk
from .supernet import SuperNet

__all__ = ["KERNEL_GRAPHS", "WithHead", "StackedHeads", "RecordedKernelPass", "kernel_pass", "check_kernel_graph"]

#: the ways a search can run its kernel passes (``SearchConfig`` does not hold it: it changes no result)
KERNEL_GRAPHS = ("eager", "cuda-graph", "fx")

Passes = tuple[torch.Tensor, torch.Tensor | None]


class WithHead(nn.Module):
    """Supernet body + head: ``head(body.forward_features(x))``, the network whose MetaNTK the search scores."""

    def __init__(self, body: SuperNet, head: nn.Module):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body.forward_features(x))


class StackedHeads(nn.Module):
    """G linear heads over G consecutive blocks of a batch: block ``i``'s output is ``heads[i]`` of its features.

    Every head runs on the whole batch and is masked to its block, so a head's per-sample gradients outside its
    block are exact zeros and each candidate's Gram block sees only its own head."""

    def __init__(self, heads: Sequence[nn.Linear]):
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, f: torch.Tensor) -> torch.Tensor:  # (G*n, F) -> (G*n, n_way)
        n_groups = len(self.heads)
        onehot = torch.eye(n_groups, dtype=f.dtype, device=f.device).repeat_interleave(f.shape[0] // n_groups, 0)
        out = None
        for i, head in enumerate(self.heads):
            y = head(f) * onehot[:, i : i + 1]
            out = y if out is None else out + y
        return out


def check_kernel_graph(kernel_graph: str, device: torch.device) -> None:
    """One line for an unknown mode, or ``cuda-graph`` off CUDA."""
    if kernel_graph not in KERNEL_GRAPHS:
        raise ConfigError(f"kernel_graph must be one of {', '.join(KERNEL_GRAPHS)}, found {kernel_graph!r}")
    if kernel_graph == "cuda-graph" and device.type != "cuda":
        raise ConfigError(f"kernel_graph 'cuda-graph' needs a CUDA device, found {device}")


def kernel_pass(model: nn.Module, net: SuperNet, x: torch.Tensor, structure: torch.Tensor, weights: torch.Tensor,
                with_head: bool) -> Passes:
    """The candidate-batched hook-Gram pass with the ops of ``structure`` running.

    Args:
        model: ``net`` itself (its classifier output, TE-NAS) or :class:`WithHead` of ``net`` and a
            :class:`StackedHeads` of G heads.
        net: the kernel network.
        x: (G*n, 3, r, r) the G candidates' meta-batches, stacked.
        structure: (2, 9, n_ops) bool, a superset of every candidate's mask (the stage's origin).
        weights: (G, 2, 9, n_ops) float64 per-candidate op weights (:func:`~.supernet.candidate_weights`).
        with_head: ``model`` has stacked heads; also return each candidate's head Gram.

    Returns:
        ``theta`` (G, n, n) float64, each candidate's NTK, and ``nngp`` (G, n, n), each candidate's head Gram (the
        ANIL kernel), or None without a head.
    """
    groups = weights.shape[0]
    with net.fixed_structure(structure, weights):
        grams = empirical_ntk(model, x, backend="hook", per_layer=True, groups=groups)
    theta = torch.stack(list(grams.values())).sum(0)
    if groups == 1:
        theta = theta.unsqueeze(0)
    if not with_head:
        return theta, None
    heads = [grams[f"head.heads.{i}"] for i in range(groups)]
    nngp = torch.stack([h if groups == 1 else h[i] for i, h in enumerate(heads)])
    return theta, nngp


def _record_cuda_graph(fn: Callable[[], Passes]) -> Callable[[], Passes]:
    """Capture ``fn`` in a CUDA graph after one warm-up run on a side stream (lazy cuBLAS/cuDNN set-up happens
    outside the capture); the returned replay relaunches the graph and returns its static outputs."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()

    def replay() -> Passes:
        graph.replay()
        return outputs

    return replay


class _Pass(nn.Module):
    """:func:`kernel_pass` as a module whose parameters are the model's (``torch.func.functional_call`` swaps them)."""

    def __init__(self, model: nn.Module, net: SuperNet, structure: torch.Tensor, with_head: bool):
        super().__init__()
        self.model, self.with_head = model, with_head
        self._net, self._structure = [net], structure  # in a list: not a second registration of the body

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> Passes:
        return kernel_pass(self.model, self._net[0], x, self._structure, weights, self.with_head)


def _record_fx(module: _Pass, x: torch.Tensor, weights: torch.Tensor) -> Callable[[], Passes]:
    """Trace ``module(x, weights)`` into a flat ATen graph whose inputs are ``x``, ``weights`` and every parameter
    of the module, and return a replay that runs the graph on their current values."""
    from torch.func import functional_call
    from torch.fx.experimental.proxy_tensor import make_fx

    params = dict(module.named_parameters())

    def traced(state: dict[str, torch.Tensor], xs: torch.Tensor, ws: torch.Tensor) -> Passes:
        return functional_call(module, state, (xs, ws))

    graph = make_fx(traced)(params, x, weights)  # the parameters still require grad: the hook Gram needs that

    def replay() -> Passes:
        return graph({k: v.detach() for k, v in module.named_parameters()}, x, weights)

    return replay


class RecordedKernelPass:
    """:func:`kernel_pass` of one structure and batch shape, recorded once (``"cuda-graph"`` or ``"fx"``) and
    replayed per call with new inputs, per-candidate weights and head weights copied into its static tensors.

    The body's parameters are read where they are: re-drawing them in place (:func:`~.supernet.reset_parameters`)
    between calls is seen by the replay; replacing the tensors is not. Build a new pass for a new structure.
    """

    def __init__(self, net: SuperNet, structure: torch.Tensor, x: torch.Tensor, weights: torch.Tensor,
                 heads: Sequence[nn.Linear] | None, mode: str):
        check_kernel_graph(mode, x.device)
        if mode == "eager":
            raise ConfigError("kernel_graph 'eager' records nothing: call kernel_pass directly")
        self.structure = structure.clone()
        self.x, self.weights = x.detach().clone(), weights.detach().clone()
        self.heads = None
        model: nn.Module = net
        if heads is not None:
            self.heads = StackedHeads([_copy_linear(h) for h in heads])
            model = WithHead(net, self.heads)
        module = _Pass(model, net, self.structure, heads is not None)
        if mode == "cuda-graph":
            self._replay = _record_cuda_graph(lambda: module(self.x, self.weights))
        else:
            self._replay = _record_fx(module, self.x, self.weights)

    def __call__(self, x: torch.Tensor, weights: torch.Tensor, heads: Sequence[nn.Linear] | None) -> Passes:
        """The pass on new values: ``x`` (G*n, 3, r, r), ``weights`` (G, 2, 9, n_ops), one head per candidate."""
        if tuple(x.shape) != tuple(self.x.shape) or tuple(weights.shape) != tuple(self.weights.shape) or \
                (heads is None) != (self.heads is None) or (heads is not None and len(heads) != len(self.heads.heads)):
            raise ConfigError(f"a recorded kernel pass takes inputs {tuple(self.x.shape)} and weights "
                              f"{tuple(self.weights.shape)}, found {tuple(x.shape)} and {tuple(weights.shape)}")
        with torch.no_grad():
            self.x.copy_(x)
            self.weights.copy_(weights)
            for dst, src in zip(self.heads.heads if heads is not None else [], heads or [], strict=True):
                dst.weight.copy_(src.weight)
                dst.bias.copy_(src.bias)
        theta, nngp = self._replay()
        return theta.clone(), None if nngp is None else nngp.clone()


def _copy_linear(head: nn.Linear) -> nn.Linear:
    out = nn.Linear(head.in_features, head.out_features).to(head.weight.device, head.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(head.weight)
        out.bias.copy_(head.bias)
    return out
