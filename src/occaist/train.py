"""``python -m occaist.train ...``: the same as ``python train.py`` (works from any directory)."""

from occaist.cli import train_main

if __name__ == "__main__":
    train_main()
