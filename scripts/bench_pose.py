"""Benchmark: what the on-the-fly domain randomisation adds to a pose-regression training step.

Times, in one run (one thread, medians), on a random batch of the study's size: the network's
forward and backward pass, ``DomainRandomizer``, and the kornia photometric augmentation with
and without its hue jitter (``model.augment_hue``; ``pose_dr`` sets 0 because the randomizer
already rotates the hue). Ratios are to the network step.

    python scripts/bench_pose.py [--batch 32] [--size 64] [--repeats 30]
"""

from __future__ import annotations

import argparse

import torch

from occaist.models.pose_regression.module import _photometric_augmentation
from occaist.models.pose_regression.networks import PoseRegressionNet
from occaist.models.pose_regression.randomization import DomainRandomizer
from occaist.utils.timing import median_seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    image = torch.rand(args.batch, 3, args.size, args.size)
    yy, xx = torch.meshgrid(torch.arange(args.size), torch.arange(args.size), indexing="ij")
    disc = ((yy - args.size / 2) ** 2 + (xx - args.size / 2) ** 2) < (args.size / 3) ** 2
    mask = disc.float().expand(args.batch, 1, -1, -1)
    obj = torch.randint(0, 3, (args.batch,))
    net = PoseRegressionNet(num_objects=3, image_size=args.size, channels=[16, 32, 64, 128])

    def step() -> None:
        out = net(image, obj)
        sum(v.float().pow(2).mean() for v in out.values()).backward()

    randomizer = DomainRandomizer()
    with_hue = _photometric_augmentation(1.0, hue=0.05)
    without_hue = _photometric_augmentation(1.0, hue=0.0)
    rows = [
        ("network forward + backward", step),
        ("DomainRandomizer", lambda: randomizer(image, mask)),
        ("kornia augmentation, hue 0.05", lambda: with_hue(image)),
        ("kornia augmentation, hue 0 (pose_dr)", lambda: without_hue(image)),
    ]
    times = {name: 1e3 * median_seconds(fn, args.repeats) for name, fn in rows}
    base = times["network forward + backward"]
    print(f"batch {args.batch} x 3 x {args.size}^2, 1 thread, median of {args.repeats}")
    print(f"{'part':40s} {'ms':>8s} {'/ network':>10s}")
    for name, ms in times.items():
        print(f"{name:40s} {ms:8.1f} {ms / base:10.2f}")


if __name__ == "__main__":
    main()
