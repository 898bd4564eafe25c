"""Sharing on the Hugging Face Hub: export a run as a timm repository, push and pull it, the model card, and
genotype cards (card data, Markdown, SVG/PNG cell diagrams).
"""

from __future__ import annotations

from .card import model_card
from .cards import (
    CARD_FILES,
    CardData,
    card_data,
    cell_diagram_png,
    cell_diagram_svg,
    render_markdown,
    render_results_table,
    write_card,
)
from .export import REPO_FILES, check_repo_dir, export_run, write_manifest_files
from .push_pull import PullResult, PushResult, pull, push

__all__ = [
    "CardData",
    "card_data",
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
    "write_manifest_files",
]
