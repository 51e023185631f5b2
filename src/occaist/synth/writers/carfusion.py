"""Multi-camera sequences of cars at an intersection, in the CarFusion layout.

Layout (the real one, plus side files)::

    carfusion/car_<seq>/images_jpg/<cam>_<frame>.jpg     640×360 (preset), cam 01.., frame 0000..
    carfusion/car_<seq>/gt/<cam>_<frame>.txt             lines  x,y,kp_id,instance_id,vis
    carfusion/car_<seq>/synthetic/cameras.json           {"<cam>_<frame>": 3×4 P}
    carfusion/car_<seq>/synthetic/keypoints3d.json       {"<frame>": {"<instance_id>": 14×3}}

``kp_id`` is 1..14 (``occaist.data.keypoints`` order + 1), ``instance_id`` is stable across
cameras and frames of a sequence (1-based), ``vis`` is 1 (visible: in the image and not hidden
by any car, exactly) or 2 (occluded). A car is listed in a view when at least one of its
keypoints falls inside the image; its keypoints **outside the image keep their projected
coordinates and are written with vis 2** (the upstream converter turns them into v=0);
keypoints behind the camera are omitted. ``P = K[R|t]`` maps world points (metres, y up, ground
``y = 0``) to pixels ``(x, y)`` with pixel ``(r, c)`` covering ``[c, c+1) × [r, r+1)``.
"""

from __future__ import annotations

import numpy as np
import torch

from occaist.geometry.camera import look_at
from occaist.synth.context import STREAM_CARFUSION, WorldContext, save_jpeg
from occaist.synth.domains import (
    degrade,
    real_paint,
    road_frame,
    road_half_width,
    sample_environment,
    shade_real,
    to_srgb_uint8,
)
from occaist.synth.raster import PinholeCamera
from occaist.synth.scene import CarInstance, keypoint_annotations, render_gbuffer
from occaist.synth.writers.stanford_cars import footprint, footprints_overlap, place_on_ground
from occaist.utils.io import write_json_atomic, write_text_atomic

FOLDER = "carfusion"
_UP = np.array([0.0, 1.0, 0.0])
_MAX_TRIES = 60


def camera_name(index: int) -> str:
    return f"{index + 1:02d}"


def frame_name(index: int) -> str:
    return f"{index:04d}"


def sequences(ctx: WorldContext) -> list[tuple[str, str]]:
    """``(name, split)`` of every sequence, train first."""
    cfg = ctx.preset.carfusion
    return [(s, "train") for s in cfg.train_sequences] + [(s, "test") for s in cfg.test_sequences]


def _sequence(ctx: WorldContext, seq_index: int):
    """Cameras, environment and per-car trajectories of a sequence (the same for every frame)."""
    cfg = ctx.preset.carfusion
    name, split = sequences(ctx)[seq_index]
    rng = ctx.rng(STREAM_CARFUSION, seq_index)
    pool = ctx.splits["train"] if split == "train" else ctx.splits["test"] or ctx.splits["val"]
    env = sample_environment(rng)
    cameras = []
    phi0 = rng.uniform(0, 2 * np.pi)
    for k in range(cfg.cameras):
        phi = phi0 + 2 * np.pi * k / cfg.cameras + rng.normal(0, 0.2)
        dist = rng.uniform(*cfg.camera_distance_m)
        eye = np.array([dist * np.cos(phi), rng.uniform(*cfg.camera_height_m), dist * np.sin(phi)])
        target = np.array([rng.normal(0, 2.0), 0.0, rng.normal(0, 2.0)])
        R, t = look_at(torch.from_numpy(eye), torch.from_numpy(target), torch.from_numpy(_UP))
        f = rng.uniform(*cfg.focal_px)
        K = np.array([[f, 0, cfg.width / 2], [0, f, cfg.height / 2], [0, 0, 1.0]])
        cameras.append(PinholeCamera(K, R.numpy(), t.numpy(), cfg.height, cfg.width))
    n_cars = int(rng.integers(cfg.cars[0], cfg.cars[1] + 1))
    along, across = road_frame(env)
    half = road_half_width(env)
    lanes = int(min(half, cfg.area_m) // env.lane_width)
    cars: list[tuple[int, float, float, np.ndarray, np.ndarray, np.ndarray]] = []
    for _ in range(n_cars):
        for _try in range(_MAX_TRIES):
            m = int(pool[int(rng.integers(len(pool)))])
            # On a lane of the road, driving along it either way (or parked, speed ~0).
            lane = int(rng.integers(-lanes, lanes))
            direction = 1.0 if lane >= 0 else -1.0
            offset = (lane + 0.5) * env.lane_width + rng.normal(0, 0.2)
            start = rng.uniform(-cfg.area_m, cfg.area_m) * along + offset * across
            heading = direction * along
            yaw = float(-np.arctan2(heading[1], heading[0]) + rng.normal(0, 0.05))
            velocity = rng.uniform(*cfg.speed_mps) * heading
            length = float(rng.uniform(*cfg.car_length_m))
            paint = real_paint(rng)
            candidate = (m, yaw, length, start, velocity, paint)
            times = [f * cfg.frame_dt_s for f in range(cfg.frames)]
            if not any(
                footprints_overlap(
                    footprint(_place(ctx, candidate, time)),
                    footprint(_place(ctx, other, time)),
                    0.4,
                )
                for time in times
                for other in cars
            ):
                cars.append(candidate)
                break
    return name, cameras, env, cars


def _place(ctx: WorldContext, car, time: float) -> CarInstance:
    m, yaw, length, start, velocity, paint = car
    return place_on_ground(ctx.mesh(m), length, yaw, start + velocity * time, paint, m)


def frame_scene(ctx: WorldContext, seq_index: int, frame: int):
    """``(name, cameras, environment, instances)`` of one frame of a sequence."""
    name, cameras, env, cars = _sequence(ctx, seq_index)
    time = frame * ctx.preset.carfusion.frame_dt_s
    return name, cameras, env, [_place(ctx, c, time) for c in cars]


def render_frame(ctx: WorldContext, seq_index: int, frame: int) -> dict:
    """Write every camera's image and annotation of one frame; returns its side-file entries."""
    cfg = ctx.preset.carfusion
    name, cameras, env, instances = frame_scene(ctx, seq_index, frame)
    rng = ctx.rng(STREAM_CARFUSION, seq_index, 1 + frame)
    base = ctx.root / FOLDER / name
    projections = {}
    for k, camera in enumerate(cameras):
        view = f"{camera_name(k)}_{frame_name(frame)}"
        gb = render_gbuffer(camera, instances)
        linear = shade_real(gb, instances, env, rng)
        image = degrade(
            to_srgb_uint8(linear), seed=int(rng.integers(1 << 31)), strength=cfg.degrade_strength
        )
        save_jpeg(base / "images_jpg" / f"{view}.jpg", image, cfg.jpeg_quality)
        xy, depth, inside, visible = keypoint_annotations(camera, instances)
        lines = []
        for i in range(len(instances)):
            if not inside[i].any():
                continue
            for j in range(xy.shape[1]):
                if depth[i, j] <= 0:
                    continue
                vis = 1 if visible[i, j] else 2
                lines.append(f"{xy[i, j, 0]:.3f},{xy[i, j, 1]:.3f},{j + 1},{i + 1},{vis}\n")
        write_text_atomic(base / "gt" / f"{view}.txt", "".join(lines))
        projections[view] = camera.P.round(10).tolist()
    keypoints = {
        str(i + 1): car.keypoints_world.round(10).tolist() for i, car in enumerate(instances)
    }
    return {
        "sequence": name,
        "cameras": projections,
        "keypoints3d": {frame_name(frame): keypoints},
    }


def finalize(ctx: WorldContext, items: dict[tuple[int, int], dict]) -> dict[str, int]:
    """Per-sequence side files; returns counts."""
    cfg = ctx.preset.carfusion
    views = 0
    for s, (name, _split) in enumerate(sequences(ctx)):
        cams: dict = {}
        kps: dict = {}
        for f in range(cfg.frames):
            cams.update(items[(s, f)]["cameras"])
            kps.update(items[(s, f)]["keypoints3d"])
        views += len(cams)
        base = ctx.root / FOLDER / name / "synthetic"
        write_json_atomic(base / "cameras.json", cams)
        write_json_atomic(base / "keypoints3d.json", kps)
    return {"carfusion_sequences": len(sequences(ctx)), "carfusion_views": views}
