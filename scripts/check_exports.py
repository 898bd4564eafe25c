"""Export round trips of the zoo: TorchScript, torch.fx, torch.export and ONNX (dynamo) against eager.

    python scripts/check_exports.py                      # every registered entry at its registered size, 84x84
    python scripts/check_exports.py --names metantk_nano metantk_conv4 --formats onnx
    python scripts/check_exports.py --init-channels 8    # cells at reduced width (quick)
    python scripts/check_exports.py --markdown docs/exports.md   # also write the table the README links to

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
    parser.add_argument("--markdown", type=Path, default=None, help="also write the results as a Markdown table")
    args = parser.parse_args(argv)
    rows: dict[str, dict[str, str]] = {}
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
        rows.setdefault(name, {})["eager max abs"] = f"{float(ref.abs().max()):.2e}"
        for fmt in args.formats:
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
                try:
                    diff = float((_run(fmt, model, x, Path(tmp)) - ref).abs().max())
                except Exception as e:  # noqa: BLE001  (a report: every failure is printed and counted)
                    failed += 1
                    print(f"{name:22s} {fmt:12s} FAILED: {' '.join(str(e).split())[:200]}")
                    rows.setdefault(name, {})[fmt] = "FAILED"
                    continue
            failed += diff > args.atol
            rows.setdefault(name, {})[fmt] = f"{diff:.1e}"
            print(f"{name:22s} {fmt:12s} {diff:18.3e} {time.perf_counter() - start:8.1f}", flush=True)
    if args.markdown is not None:
        _write_markdown(args, rows, failed)
    return 1 if failed else 0


def _write_markdown(args: argparse.Namespace, rows: dict[str, dict[str, str]], failed: int) -> None:
    """Write ``rows`` (entry -> format -> max |diff| or FAILED) as the table ``docs/exports.md`` holds."""
    width = f", cells at init_channels={args.init_channels}" if args.init_channels else ""
    lines = [
        "# Export round trips",
        "",
        f"Written by `python scripts/check_exports.py --markdown {args.markdown}` (torch {torch.__version__}, "
        f"timm {timm.__version__}). Largest absolute difference of the outputs (logits) to the eager model, next to "
        f"the largest absolute eager output: eval mode, "
        f"batch 2, {args.size}x{args.size}, random weights and inputs (seed 0){width}; tolerance {args.atol:g}; "
        f"{failed} failure(s).",
        "",
        "| entry | eager max abs | " + " | ".join(args.formats) + " |",
        "|---|---:|" + "---:|" * len(args.formats),
    ]
    cols = ["eager max abs", *args.formats]
    lines += [f"| `{name}` | " + " | ".join(r.get(f, "-") for f in cols) + " |" for name, r in rows.items()]
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
