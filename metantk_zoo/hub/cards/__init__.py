"""Genotype cards: card data, Markdown, SVG/PNG cell diagrams and card folders (the committed ``cards/``)."""

from __future__ import annotations

from .data import CardData, card_data
from .diagrams import cell_diagram_png, cell_diagram_svg
from .folder import CARD_FILES, render_cards_folder, write_card, zoo_card_keys
from .markdown import PAPER, render_markdown, render_results_table

__all__ = [
    "CardData",
    "card_data",
    "render_markdown",
    "render_results_table",
    "PAPER",
    "cell_diagram_svg",
    "cell_diagram_png",
    "write_card",
    "CARD_FILES",
    "zoo_card_keys",
    "render_cards_folder",
]
