"""Predict on your own images: ``python predict.py experiment=<exp> ckpt_path=<ckpt>
input=<image, folder or glob> output=<dir>`` (see docs/predict.md)."""

from occaist.predict.run import main

if __name__ == "__main__":
    main()
