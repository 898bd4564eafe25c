"""``python -m metantk_zoo`` runs the metantk-zoo CLI."""

from .cli import main

if __name__ == "__main__":
    main()
