"""``python -m metantk_zoo.cli`` (and ``torchrun -m metantk_zoo.cli``) runs the metantk-zoo CLI."""

from . import main

if __name__ == "__main__":
    main()
