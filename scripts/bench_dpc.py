"""Benchmark of the DPC point cloud renderer and training step (``geometry.point_renderer``).

Measured in one run, so the ratios are comparable on a shared machine (medians over
``--repeats``, forward + backward of the silhouette sum unless stated):

1. the renderer at the paper's size: ``--projections`` (128 = 8 models x 4 views x 4 candidates)
   clouds of ``--points`` (8000) points into a ``--grid``³ grid (64), blur σ 3 voxels, DRC;
2. its scaling with N (``--n-list``) and with G (``--g-list``), at ``--sweep-projections``
   projections (reported per projection);
3. the same splat done the straightforward way, a dense Gaussian of every point evaluated at
   every voxel (upstream's slow ``pointcloud2voxels``, written as one batched matrix product),
   followed by the same DRC; both on ``--dense-projections`` projections, and the speed-up;
4. one full ``PointCloudPoseNet`` training step (paper-sized network, B x V images, Adam, every
   point kept) and the renderer's share of it: the same step with the renderer swapped for a
   near-free stand-in of the same output shape gives the time of everything else.

    python scripts/bench_dpc.py                      # about a minute or two on one CPU core
    python scripts/bench_dpc.py --device cuda --sweep-projections 128 --dense-projections 16
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from collections.abc import Callable

import torch

from occaist.geometry.camera import dpc_project
from occaist.geometry.point_renderer import render_point_cloud, render_voxels

log = logging.getLogger("bench_dpc")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], repeats: int, device: torch.device, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_inputs(p: int, n: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    points = ((torch.rand(p, n, 3, generator=g) - 0.5) * 0.8).to(device).requires_grad_(True)
    quats = torch.nn.functional.normalize(torch.randn(p, 4, generator=g), dim=-1).to(device)
    return points, quats.requires_grad_(True)


def fast_render_step(
    p: int, n: int, grid: int, sigma: float, device: torch.device, chunk: int | None = None
):
    points, quats = make_inputs(p, n, device)

    def step() -> None:
        out = render_point_cloud(
            points,
            quats,
            vox_size=grid,
            sigma=sigma,
            kernel_size=21,
            return_depth=False,
            chunk_size=chunk,
        )
        out["silhouette"].sum().backward()

    return step


def dense_gaussian_occupancy(coords: torch.Tensor, grid: int, sigma: float) -> torch.Tensor:
    """Every point's Gaussian (σ in voxels) evaluated at every voxel: ``(P, G, G, G)``.

    The analytic normaliser ``1/((2π)^{3/2} σ³)`` makes a point's mass about one voxel of
    occupancy, as upstream's dense path does; separable per axis, summed by one batched matmul.
    """
    p, n, _ = coords.shape
    depth, v, u = coords.unbind(-1)
    g = torch.stack((depth + 0.5, 0.5 - v, u + 0.5), -1) * (grid - 1)  # (P, N, 3) voxel units
    centres = torch.arange(grid, dtype=coords.dtype, device=coords.device)
    valid = ((coords >= -0.5) & (coords <= 0.5)).all(-1).to(coords.dtype)  # (P, N)
    w = torch.exp(-((centres - g[..., None]) ** 2) / (2 * sigma**2))  # (P, N, 3, G)
    norm = 1.0 / ((2 * math.pi) ** 1.5 * sigma**3)
    gd = w[:, :, 0] * (valid * norm)[..., None]  # (P, N, G)
    rows_cols = (w[:, :, 1, :, None] * w[:, :, 2, None, :]).reshape(p, n, grid * grid)
    occ = torch.bmm(gd.transpose(1, 2), rows_cols)  # (P, G, G*G)
    return occ.view(p, grid, grid, grid)


def dense_render_step(p: int, n: int, grid: int, sigma: float, device: torch.device):
    points, quats = make_inputs(p, n, device)

    def step() -> None:
        coords = dpc_project(points, quats)
        occ = dense_gaussian_occupancy(coords, grid, sigma).clamp(0.0, 1.0)
        out = render_voxels(occ, return_depth=False)
        out["silhouette"].sum().backward()

    return step


def train_step_timing(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """One paper-sized training step, and the renderer's time within it (same inputs)."""
    from occaist.models.dpc.module import PointCloudPoseNet
    from occaist.models.dpc.networks import DPCNet

    net = DPCNet(num_points=args.points, num_candidates=args.candidates)
    model = PointCloudPoseNet(
        net,
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-4),
        vox_size=args.grid,
        keep_prob_start=1.0,  # the end of training: every point rendered (the costly case)
        image_log_every_n_steps=0,
        render_chunk_size=args.chunk_size,
    ).to(device)
    model.log = lambda *a, **k: None  # no Trainer around the module: drop logging
    optimizer = model.configure_optimizers()["optimizer"]
    b, v, size = args.models, args.views, net.image_size
    batch = {
        "image": torch.rand(b, v, 3, size, size, device=device),
        "mask": (torch.rand(b, v, 1, size, size, device=device) > 0.5).float(),
        "quaternion": torch.nn.functional.normalize(torch.randn(b, v, 4, device=device), dim=-1),
    }
    original = model.render

    def stand_in(points, quaternions, scale, sigma, rgb=None):
        """A near-free differentiable stand-in for the renderer: same output shape."""
        g = args.grid
        value = 0.5 + 0.0 * (points.mean((1, 2)) + quaternions.mean(-1) + scale)
        return {"silhouette": value[:, None, None].expand(-1, g, g)}

    def step() -> None:
        optimizer.zero_grad()
        model.training_step(batch, 0).backward()
        optimizer.step()

    with_renderer, without = [], []
    for _ in range(args.train_repeats):
        model.render = original
        with_renderer.append(timed(step, 1, device))
        model.render = stand_in
        without.append(timed(step, 1, device))
    step_s, rest_s = statistics.median(with_renderer), statistics.median(without)
    return {
        "train_step_s": step_s,
        "train_step_without_renderer_s": rest_s,
        "renderer_share": (step_s - rest_s) / step_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--projections", type=int, default=128)
    parser.add_argument("--points", type=int, default=8000)
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--sigma", type=float, default=3.0, help="blur sigma in voxels")
    parser.add_argument("--chunk-size", type=int, default=16, help="renderer chunk_size")
    parser.add_argument("--n-list", default="2000,8000,32000")
    parser.add_argument("--g-list", default="32,64,128")
    parser.add_argument("--sweep-projections", type=int, default=8)
    parser.add_argument("--dense-projections", type=int, default=2)
    parser.add_argument("--models", type=int, default=8, help="B of the training step")
    parser.add_argument("--views", type=int, default=4, help="V of the training step")
    parser.add_argument("--candidates", type=int, default=4, help="K of the training step")
    parser.add_argument("--train-repeats", type=int, default=1)
    parser.add_argument("--skip-train-step", action="store_true")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results: dict[str, object] = {"device": str(device), "threads": args.threads}

    for chunk in (None, args.chunk_size):
        main_s = timed(
            fast_render_step(args.projections, args.points, args.grid, args.sigma, device, chunk),
            args.repeats,
            device,
        )
        results[f"renderer_fwd_bwd_s_chunk_{chunk}"] = main_s
        log.info(
            "renderer fwd+bwd: %d projections x %d points, G=%d, chunks of %s: %.3f s "
            "(median of %d)",
            args.projections, args.points, args.grid, chunk or "all", main_s, args.repeats,
        )  # fmt: skip

    sweep = args.sweep_projections
    by_n = {}
    for n in (int(x) for x in args.n_list.split(",")):
        t = timed(fast_render_step(sweep, n, args.grid, args.sigma, device), args.repeats, device)
        by_n[n] = t / sweep
        log.info("  N=%6d, G=%d: %.2f ms per projection", n, args.grid, 1e3 * by_n[n])
    by_g = {}
    for g in (int(x) for x in args.g_list.split(",")):
        t = timed(
            fast_render_step(sweep, args.points, g, args.sigma, device), args.repeats, device
        )
        by_g[g] = t / sweep
        log.info("  G=%4d, N=%d: %.2f ms per projection", g, args.points, 1e3 * by_g[g])
    results["per_projection_s_by_n"] = by_n
    results["per_projection_s_by_g"] = by_g

    p = args.dense_projections
    fast_s = timed(fast_render_step(p, args.points, args.grid, args.sigma, device), args.repeats,
                   device)  # fmt: skip
    dense_s = timed(dense_render_step(p, args.points, args.grid, args.sigma, device),
                    args.repeats, device)  # fmt: skip
    results.update(dense_fwd_bwd_s=dense_s, fast_same_size_s=fast_s, speedup=dense_s / fast_s)
    log.info(
        "dense Gaussian vs trilinear splat + separable blur (%d projections, N=%d, G=%d): "
        "%.3f s vs %.3f s -> %.1fx faster",
        p, args.points, args.grid, dense_s, fast_s, dense_s / fast_s,
    )  # fmt: skip

    if not args.skip_train_step:
        step = train_step_timing(args, device)
        results.update(step)
        log.info(
            "training step (B=%d x V=%d images, K=%d, N=%d, G=%d): %.3f s; %.3f s with a "
            "stand-in renderer, so the renderer is %.0f%% of the step",
            args.models, args.views, args.candidates, args.points, args.grid,
            step["train_step_s"], step["train_step_without_renderer_s"],
            100 * step["renderer_share"],
        )  # fmt: skip
    if args.json:
        from occaist.utils.io import write_json_atomic

        write_json_atomic(args.json, results)
    log.info("%s", json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
