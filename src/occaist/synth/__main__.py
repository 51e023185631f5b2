"""``python -m occaist.synth --root data --preset tiny|demo|full --seed 0 [--workers N]``."""

from __future__ import annotations

import argparse
import logging

from occaist.synth.presets import available_presets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m occaist.synth",
        description="Generate the synthetic car world in the real datasets' formats "
        "(shapenet_renders/, stanford_cars/, carfusion/). Reruns resume; a finished world "
        "is left as it is.",
    )
    parser.add_argument("--root", required=True, help="output folder (e.g. data)")
    parser.add_argument("--preset", default="demo", choices=available_presets())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: all cores; 1 = in-process)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from occaist.synth import generate_world

    generate_world(
        args.root, args.preset, args.seed, workers=args.workers, progress=not args.no_progress
    )


if __name__ == "__main__":
    main()
