"""Benchmark: kornia's quaternion conversions against occaist's closed forms, in one run.

Prints the largest difference and the median time of each (float32, one thread): the evidence
for ``occaist.geometry.quaternion`` keeping its own closed forms:
kornia's give equal results but were slower on this CPU (ratio < 1 = kornia slower).

    python scripts/bench_geometry.py [--batch 4096] [--repeats 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from kornia.geometry import conversions

from occaist.geometry.quaternion import (
    quaternion_normalize,
    quaternion_to_rotation_matrix,
    rotation_matrix_to_quaternion,
)


def _median_us(fn, arg, repeats: int) -> float:
    fn(arg)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    q64 = quaternion_normalize(torch.randn(args.batch, 4, dtype=torch.float64))
    m64 = quaternion_to_rotation_matrix(q64)

    def kornia_matrix(q: torch.Tensor) -> torch.Tensor:
        return conversions.quaternion_to_rotation_matrix(quaternion_normalize(q))

    def kornia_quaternion(m: torch.Tensor) -> torch.Tensor:
        q = conversions.rotation_matrix_to_quaternion(m, eps=torch.finfo(m.dtype).eps)
        return torch.where(q[..., :1] < 0, -q, q)

    d_matrix = (kornia_matrix(q64) - m64).abs().max().item()
    d_quat = (kornia_quaternion(m64) - rotation_matrix_to_quaternion(m64)).abs().max().item()
    q, m = q64.float(), m64.float()
    rows = [
        ("quaternion -> matrix", d_matrix, kornia_matrix, quaternion_to_rotation_matrix, q),
        ("matrix -> quaternion", d_quat, kornia_quaternion, rotation_matrix_to_quaternion, m),
    ]
    print(f"batch {args.batch}, float32, 1 thread, median of {args.repeats}")
    print("| conversion | max difference (float64) | kornia (us) | occaist (us) | ratio |")
    print("|---|---|---|---|---|")
    for name, diff, ours, ref, arg in rows:
        a, b = _median_us(ours, arg, args.repeats), _median_us(ref, arg, args.repeats)
        print(f"| {name} | {diff:.1e} | {a:.0f} | {b:.0f} | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
