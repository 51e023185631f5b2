"""Evaluate a checkpoint: ``python eval.py experiment=dpc_baseline ckpt_path=...``."""

from occaist.cli import eval_main

if __name__ == "__main__":
    eval_main()
