"""Sharing on the Hugging Face Hub: export a run as a timm repository, push and pull it, the model card, and
genotype cards (card data, Markdown, SVG/PNG cell diagrams).
"""

from __future__ import annotations

from .cards import (
    CARD_FILES,
    CardData,
    card_data,
    cell_diagram_png,
    cell_diagram_svg,
    complexity,
    count_macs,
    render_markdown,
    render_results_table,
    write_card,
)
from .push_pull import (
    REPO_FILES,
    PullResult,
    PushResult,
    check_repo_dir,
    export_run,
    model_card,
    pull,
    push,
    sha256_file,
)

__all__ = [
    "CardData",
    "card_data",
    "count_macs",
    "complexity",
    "render_markdown",
    "render_results_table",
    "cell_diagram_svg",
    "cell_diagram_png",
    "write_card",
    "CARD_FILES",
    "REPO_FILES",
    "PushResult",
    "PullResult",
    "export_run",
    "push",
    "pull",
    "check_repo_dir",
    "model_card",
    "sha256_file",
]
