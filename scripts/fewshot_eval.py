#!/usr/bin/env python
"""Few-shot evaluation of any backbone: a timm name, hf-hub:/local-dir: id, genotype or run directory.

Prints the result table and writes the JSON result (merged into --out, default fewshot_eval.json). Every option of
``metantk-zoo eval`` is accepted; this script only adds the default output file.

    python scripts/fewshot_eval.py runs/c5 --dataset synthetic --protocol paper --n-shot 5
    python scripts/fewshot_eval.py hf-hub:org/metantk_cell5.rfs_miniimagenet --dataset timm/mini-imagenet
"""

from __future__ import annotations

import sys

from metantk_zoo.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--out" not in argv and "-h" not in argv and "--help" not in argv:
        argv += ["--out", "fewshot_eval.json"]
    main(["eval", *argv])
