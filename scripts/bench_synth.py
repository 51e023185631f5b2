"""Benchmark the synthetic world generator (single core).

Measures, in one run, the median time of

- a ShapeNet-look view (128×128, 2×2 supersampled, flat shading: rasterise + shade),
- a real-look CarFusion view (640×360, 2-6 cars, background, shading, degradations),
- a real-look Stanford Cars photo (320-640 px wide),

reports renders per second per core and their ratio, then times whole presets (``--presets``;
``tiny`` by default, ``demo`` takes about a minute on two cores).

    python scripts/bench_synth.py --repeats 5 --presets tiny demo --workers 2
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from occaist.synth import generate_world
from occaist.synth.context import WorldContext
from occaist.synth.domains import (
    degrade,
    downsample,
    sample_synthetic_lighting,
    shade_real,
    shade_synthetic,
    synthetic_paint,
    to_srgb_uint8,
)
from occaist.synth.presets import load_preset
from occaist.synth.scene import CarInstance, render_gbuffer
from occaist.synth.writers import carfusion, stanford_cars
from occaist.synth.writers.shapenet import dpc_view_camera
from occaist.utils.timing import median_seconds

log = logging.getLogger("bench_synth")


def bench_views(repeats: int, per_repeat: int) -> dict[str, float]:
    ctx = WorldContext(Path(tempfile.mkdtemp()), load_preset("demo"), 0)
    rng = np.random.default_rng(0)
    cars = [
        CarInstance(ctx.mesh(i), 1.0, np.eye(3), np.zeros(3), synthetic_paint(rng))
        for i in range(per_repeat)
    ]

    def synthetic_views() -> None:
        for car in cars:
            _, _, camera = dpc_view_camera(float(rng.uniform(0, 360)), 15.0, 128)
            gb = render_gbuffer(camera.scaled(2), [car])
            rgb, alpha = shade_synthetic(gb, [car], sample_synthetic_lighting(rng))
            downsample(rgb * alpha[..., None], 2)

    scenes = [carfusion.frame_scene(ctx, 0, f) for f in range(per_repeat)]

    def carfusion_views() -> None:
        for _, cameras, env, instances in scenes:
            gb = render_gbuffer(cameras[0], instances)
            degrade(to_srgb_uint8(shade_real(gb, instances, env, rng)), seed=0)

    photos = [stanford_cars.photo_scene(ctx, "train", j) for j in range(per_repeat)]

    def stanford_views() -> None:
        for _, camera, env, _, cars_ in photos:
            gb = render_gbuffer(camera, cars_)
            degrade(to_srgb_uint8(shade_real(gb, cars_, env, rng)), seed=0)

    out = {}
    for name, fn in (
        ("shapenet_128", synthetic_views),
        ("carfusion_640x360", carfusion_views),
        ("stanford_photo", stanford_views),
    ):
        fn()  # warm-up (imports, caches)
        out[name] = median_seconds(fn, repeats, warmup=0) / per_repeat
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--per-repeat", type=int, default=8, help="renders per timed repeat")
    parser.add_argument("--presets", nargs="*", default=["tiny"])
    parser.add_argument("--workers", type=int, default=None, help="for the preset timings")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)

    views = bench_views(args.repeats, args.per_repeat)
    for name, seconds in views.items():
        log.info("%-18s %8.1f ms/render  %7.1f renders/s/core", name, 1e3 * seconds, 1 / seconds)
    log.info(
        "ratio 640x360 real / 128 synthetic: %.1fx",
        views["carfusion_640x360"] / views["shapenet_128"],
    )
    for preset in args.presets:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            generate_world(Path(tmp) / "world", preset, 0, workers=args.workers, progress=False)
            log.info("preset %-5s %.1f s (workers=%s)", preset, time.perf_counter() - start,
                     args.workers or "auto")  # fmt: skip


if __name__ == "__main__":
    main()
