"""``python -m occaist.predict experiment=<exp> ckpt_path=<ckpt> input=<images> output=<dir>``."""

from occaist.predict.run import main

if __name__ == "__main__":
    main()
