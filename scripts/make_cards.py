"""Regenerate cards/: one genotype card per registered zoo genotype, plus an index.

Usage: python scripts/make_cards.py [--out cards] [--check]

``--check`` writes nothing and exits 1 when a committed card differs from what the code renders
(tests/test_cards.py runs the same comparison).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metantk_zoo.hub.cards import render_cards_folder  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "cards")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when out of date")
    args = parser.parse_args()
    files = render_cards_folder()
    if args.check:
        stale = [name for name, data in files.items() if not (args.out / name).is_file()
                 or (args.out / name).read_bytes() != data]
        for name in stale:
            print(f"out of date: {args.out / name}")
        return 1 if stale else 0
    for name, data in files.items():
        path = args.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
