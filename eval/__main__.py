"""``python -m eval`` (and ``torchrun -m eval``) = ``clip-eval``."""

from eval.cli import main

if __name__ == "__main__":
    main()
