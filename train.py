"""Train a model: ``python train.py experiment=aist_constrained`` (see README for more)."""

from occaist.cli import train_main

if __name__ == "__main__":
    train_main()
