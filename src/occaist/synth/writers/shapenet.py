"""The ShapeNet renders of DPC (``shapenet_renders/``), synthetic look.

Layout (DPC's, see docs/synthetic_world.md)::

    shapenet_renders/renders/02958343/<model_id>/render_{i}.png   RGBA 128×128, i = 0..4
    shapenet_renders/renders/02958343/<model_id>/depth_{i}.png    uint16, depth·65535/10, bg 65535
    shapenet_renders/renders/02958343/<model_id>/camera_{i}.mat   extrinsic (4, 4), pos (1, 3)
    shapenet_renders/splits/02958343_{train,val,test}.txt         one model id per line
    shapenet_renders/renders/02958343_{train,val,test}.txt        the same lists (copy)
    shapenet_renders/gt/downsampled/02958343/<model_id>.mat       points float64 (N, 3)
    shapenet_renders/synthetic/keypoints3d.json                   {model_id: 14×3}
    shapenet_renders/synthetic/shape_basis.npz                    fit on the train models

Each view uses exactly the DPC camera (distance 2.0, focal 1.875) with rotation
``quaternion_from_campos(pos)``, so ``dpc_project(points, q)`` maps the GT cloud onto the mask.
Depth is the camera-frame z (``δ + 2``) of the nearest surface among the pixel's supersamples.
"""

from __future__ import annotations

import numpy as np
import torch

from occaist.data.keypoints import FLIP_PERMUTATION, LATERAL_AXIS
from occaist.geometry.camera import (
    blender_extrinsic_from_quaternion,
    campos_from_azimuth_elevation,
    dpc_pinhole,
    quaternion_from_campos,
)
from occaist.geometry.shape_basis import ShapeBasis
from occaist.synth.context import (
    STREAM_PAINT,
    STREAM_SHAPENET,
    WorldContext,
    save_mat,
    save_png,
)
from occaist.synth.domains import (
    downsample,
    sample_synthetic_lighting,
    shade_synthetic,
    synthetic_paint,
    to_srgb_uint8,
)
from occaist.synth.raster import PinholeCamera
from occaist.synth.scene import CarInstance, render_gbuffer
from occaist.utils.io import write_json_atomic, write_text_atomic

SYNSET = "02958343"
DEPTH_MAX = 10.0  # DPC's max_dataset_depth; depth PNG value = depth·65535/DEPTH_MAX
FOLDER = "shapenet_renders"


def dpc_view_camera(azimuth_deg: float, elevation_deg: float, size: int):
    """``(pos, q, camera)`` of a DPC view: Blender position, pose quaternion, pinhole."""
    pos = campos_from_azimuth_elevation(
        torch.tensor(azimuth_deg, dtype=torch.float64),
        torch.tensor(elevation_deg, dtype=torch.float64),
    )
    q = quaternion_from_campos(pos)
    K, R, t = dpc_pinhole(q, size, size)
    return pos, q, PinholeCamera(K.numpy(), R.numpy(), t.numpy(), size, size)


def render_model(ctx: WorldContext, index: int) -> dict:
    """Write one model's views, cameras and GT cloud; returns its 3D keypoints for the index."""
    cfg = ctx.preset.shapenet
    mid = ctx.model_id(index)
    mesh = ctx.mesh(index)
    base = ctx.root / FOLDER
    model_dir = base / "renders" / SYNSET / mid
    rng = ctx.rng(STREAM_SHAPENET, index)
    car = CarInstance(
        mesh, 1.0, np.eye(3), np.zeros(3), synthetic_paint(ctx.rng(STREAM_PAINT, index))
    )
    ss = cfg.supersample
    for view in range(cfg.views):
        az = float(rng.uniform(*cfg.azimuth_deg))
        el = float(rng.uniform(*cfg.elevation_deg))
        pos, q, camera = dpc_view_camera(az, el, cfg.image_size)
        gb = render_gbuffer(camera.scaled(ss), [car])
        rgb, alpha = shade_synthetic(gb, [car], sample_synthetic_lighting(rng))
        a = downsample(alpha, ss)
        colour = downsample(rgb * alpha[..., None], ss) / np.maximum(a, 1e-12)[..., None]
        rgba = np.concatenate(
            (to_srgb_uint8(colour), np.round(a * 255).astype(np.uint8)[..., None]), axis=-1
        )
        rgba[a == 0, :3] = 0
        n = cfg.image_size
        depth = gb.depth.reshape(n, ss, n, ss).min(axis=(1, 3))
        depth_png = np.where(
            np.isfinite(depth), np.round(np.clip(depth, 0, DEPTH_MAX) * 65535 / DEPTH_MAX), 65535
        ).astype(np.uint16)
        save_png(model_dir / f"render_{view}.png", rgba)
        save_png(model_dir / f"depth_{view}.png", depth_png)
        save_mat(
            model_dir / f"camera_{view}.mat",
            {
                "extrinsic": blender_extrinsic_from_quaternion(q).numpy(),
                "pos": pos.numpy(),
            },
        )
    n_points = int(rng.integers(cfg.points[0], cfg.points[1] + 1))
    points = mesh.sample_surface(n_points, rng)
    save_mat(base / "gt" / "downsampled" / SYNSET / f"{mid}.mat", {"points": points})
    return {"model_id": mid, "keypoints": mesh.keypoints.round(12).tolist()}


def finalize(ctx: WorldContext, items: dict[int, dict]) -> dict[str, int]:
    """Split lists, the keypoint side file and the shape basis; returns counts."""
    base = ctx.root / FOLDER
    ids = {i: items[i]["model_id"] for i in range(ctx.n_models)}
    for split, indices in ctx.splits.items():
        text = "".join(f"{ids[i]}\n" for i in indices)
        write_text_atomic(base / "splits" / f"{SYNSET}_{split}.txt", text)
        write_text_atomic(base / "renders" / f"{SYNSET}_{split}.txt", text)
    write_json_atomic(
        base / "synthetic" / "keypoints3d.json", {ids[i]: items[i]["keypoints"] for i in ids}
    )
    train = np.array([items[i]["keypoints"] for i in ctx.splits["train"]], dtype=np.float64)
    k = min(ctx.preset.shapenet.basis_components, 2 * len(train) - 1)
    basis = ShapeBasis.fit(train, k, FLIP_PERMUTATION, LATERAL_AXIS)
    basis.save(base / "synthetic" / "shape_basis.npz")
    return {f"shapenet_{s}": len(v) for s, v in ctx.splits.items()}
