"""Export round trips of the zoo: TorchScript, torch.fx, torch.export and ONNX (dynamo) against eager.

    python scripts/check_exports.py                      # every registered entry at its registered size, 84x84
    python scripts/check_exports.py --names metantk_nano metantk_conv4 --formats onnx
    python scripts/check_exports.py --init-channels 8    # cells at reduced width (quick)

Prints one line per entry and format with the largest absolute difference of the outputs (eval mode, batch 2,
random weights and inputs with seed 0) to the eager model, and exits 1 when a difference exceeds ``--atol`` or an
export fails. ONNX needs ``onnx``, ``onnxscript`` and ``onnxruntime`` (the package's ``test`` extra).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch

import metantk_zoo  # noqa: F401  (registers the zoo in timm)

FORMATS = ("torchscript", "fx", "export", "onnx")


def _run(fmt: str, model: torch.nn.Module, x: torch.Tensor, tmp: Path) -> torch.Tensor:
    if fmt == "torchscript":
        return torch.jit.script(model)(x)
    if fmt == "fx":
        return torch.fx.symbolic_trace(model)(x)
    if fmt == "export":
        return torch.export.export(model, (x,)).module()(x)
    import onnxruntime

    path = tmp / "model.onnx"
    torch.onnx.export(model, (x,), dynamo=True, verbose=False).save(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", nargs="*", default=None, help="entries (default: timm.list_models('metantk_*'))")
    parser.add_argument("--formats", nargs="*", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--init-channels", type=int, default=None, help="override the cells' width")
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--atol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    names = args.names or timm.list_models("metantk_*")
    failed = 0
    print(f"{'entry':22s} {'format':12s} {'max |out - eager|':>18s} {'seconds':>8s}")
    for name in names:
        kwargs = {}
        if args.init_channels and name != "metantk_conv4":
            kwargs["init_channels"] = args.init_channels
        torch.manual_seed(0)
        model = timm.create_model(name, **kwargs).eval()
        x = torch.randn(2, 3, args.size, args.size)
        with torch.no_grad():
            ref = model(x)
        for fmt in args.formats:
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
                try:
                    diff = float((_run(fmt, model, x, Path(tmp)) - ref).abs().max())
                except Exception as e:  # noqa: BLE001  (a report: every failure is printed and counted)
                    failed += 1
                    print(f"{name:22s} {fmt:12s} FAILED: {' '.join(str(e).split())[:200]}")
                    continue
            failed += diff > args.atol
            print(f"{name:22s} {fmt:12s} {diff:18.3e} {time.perf_counter() - start:8.1f}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
