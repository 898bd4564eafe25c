"""Worker for the torchrun tests: a nano search on 2 gloo ranks; rank 0 writes the result JSON.

Usage: ``torchrun --nproc_per_node=2 _search_dist.py OUT.json [tiny]``; ``tiny`` applies ``DIST_CONFIG``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from _search_helpers import DIST_CONFIG, nano_config, nano_source  # noqa: E402

from metantk_zoo.nas import search  # noqa: E402

if __name__ == "__main__":
    dist.init_process_group("gloo")
    overrides = DIST_CONFIG if sys.argv[2:] == ["tiny"] else {}
    res = search(nano_source(), nano_config(**overrides), seed=3, show_progress=False)
    if dist.get_rank() == 0:
        Path(sys.argv[1]).write_text(json.dumps({**res.to_dict(), "world_size": dist.get_world_size()}))
    dist.destroy_process_group()
