"""``python -m occaist.evaluate ...``: the same as ``python eval.py``, from any directory."""

from occaist.cli import eval_main

if __name__ == "__main__":
    eval_main()
