"""A pose dataset in the BOP layout (seed 004): three fixed objects, two synthetic training splits
and a real-look test split with exact poses.

Layout (``occaist.data.bop`` defines the format and reads it)::

    bop/occaist/models/obj_00000{1,2,3}.ply, models_info.json     meshes in mm
    bop/occaist/camera.json                                       nominal intrinsics
    bop/occaist/<split>/<scene:06d>/rgb/<im:06d>.png|.jpg         one scene per object
    bop/occaist/<split>/<scene:06d>/mask/ and mask_visib/<im:06d>_000000.png
    bop/occaist/<split>/<scene:06d>/scene_camera.json, scene_gt.json, scene_gt_info.json
    bop/occaist/synthetic/objects.json                            side file: names and kinds

Objects, chosen to match the seed's three test cases (tabletop scale, mm):

1. ``toy_car`` (complex): a sedan-like car of the world's parametric family, 180 mm long;
2. ``printed_box`` (box-like): a 120 x 70 x 50 mm box whose six faces carry six different
   prints (materials), so no rotation maps its appearance onto itself (no symmetry declared);
3. ``cone`` (symmetric): a 100 mm traffic cone (32-sided frustums, orange with a white band),
   declared continuously symmetric about its axis (``symmetries_continuous``, axis y).

Splits (``<split>/<scene = obj_id>``), every image showing one object on the ground plane, seen
from a camera at elevation 10-60° (preset), any yaw, the object filling 45-70 % of the width:

- ``train_plain``: no randomisation: the objects' own colours, flat Lambert shading under one
  fixed light, black background (like a plain CAD rendering);
- ``train_dr``: domain randomisation baked at generation: random procedural backgrounds
  (flat, gradients, stripes, checkers, colour noise, random rectangles), random object colours
  (:func:`random_object_colours`: the own colours under one random hue rotation, saturation and
  brightness, so the parts keep their contrast), 1-3 random coloured lights with random ambient;
- ``test``: the world's "real" look (``occaist.synth.domains``: paint, highlights, reflections,
  traced street backgrounds with shadows, sensor noise, blur, JPEG) with the objects' own
  colours: the stand-in for real photographs, with exact ground truth.

Deviations from BOP: no depth images (``scene_camera.json`` has no ``depth_scale`` and
``px_count_valid`` equals ``px_count_visib``); ``mask`` equals ``mask_visib`` (nothing occludes
the single object, so ``visib_fract`` is 1 unless the object leaves the image).
"""

from __future__ import annotations

from functools import cache
from itertools import pairwise

import numpy as np
import torch

from occaist.data.bop import (
    CAMERA,
    MODELS_DIR,
    MODELS_INFO,
    SCENE_CAMERA,
    SCENE_GT,
    SCENE_GT_INFO,
    mask_path,
    model_diameter,
    model_path,
    scene_dir,
    write_ply,
)
from occaist.geometry.camera import look_at
from occaist.synth.cars import (
    GLASS,
    HEADLIGHT,
    PAINT,
    RIM,
    TAILLIGHT,
    TYRE,
    CarMesh,
    build_car,
    sample_car_params,
)
from occaist.synth.context import WorldContext, save_jpeg, save_png
from occaist.synth.domains import (
    degrade,
    material_albedo_synthetic,
    sample_environment,
    shade_real,
    to_srgb_uint8,
)
from occaist.synth.raster import PinholeCamera
from occaist.synth.scene import CarInstance, render_gbuffer, yaw_rotation
from occaist.utils.io import atomic_write, write_json_atomic

FOLDER = "bop/occaist"
SPLITS = ("train_plain", "train_dr", "test")
SPLIT_CODE = {name: i for i, name in enumerate(SPLITS)}
STREAM_BOP = 100
"""Random stream of the BOP items (apart from ``occaist.synth.context``'s 0-4)."""
OBJECTS = {1: ("toy_car", "complex"), 2: ("printed_box", "box-like"), 3: ("cone", "symmetric")}
_CAR_SEED = 2026  # the toy car's proportions (a sedan), fixed across world seeds
_CAR_LENGTH_MM = 180.0
_BOX_MM = (120.0, 50.0, 70.0)  # x (length), y (height), z (depth)
_CONE_MM = (35.0, 9.0, 100.0)  # base radius, top radius, height
_CONE_SEGMENTS = 32
_MM = 1e-3  # object units (mm) to world units (m)
_FIXED_LIGHT = np.array([0.4, 1.0, 0.3]) / np.linalg.norm([0.4, 1.0, 0.3])
_PLAIN_AMBIENT, _PLAIN_DIFFUSE = 0.35, 0.75
# Own colours (linear RGB): the car red, the cone orange, the box blue with other prints.
_OWN_PAINT = {1: (0.62, 0.06, 0.06), 2: (0.1, 0.2, 0.48), 3: (0.9, 0.3, 0.03)}


# ---------------------------------------------------------------------------- the objects


def _outward(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Flip faces of one convex part so that their normals point away from its centroid."""
    centre = vertices.mean(axis=0)
    tri = vertices[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = np.einsum("fc,fc->f", n, tri.mean(axis=1) - centre) < 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return faces


def _mesh(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> CarMesh:
    """A mesh (mm) of convex parts ``(vertices, faces, materials)``, bounding box centred."""
    verts, faces, mats, offset = [], [], [], 0
    for v, f, m in parts:
        verts.append(v)
        faces.append(_outward(v, f) + offset)
        mats.append(m)
        offset += len(v)
    v = np.concatenate(verts)
    v = v - 0.5 * (v.min(axis=0) + v.max(axis=0))
    f = np.concatenate(faces).astype(np.int32)
    return CarMesh(
        vertices=v,
        faces=f,
        face_material=np.concatenate(mats).astype(np.int8),
        surface=np.ones(len(f), dtype=bool),
        keypoints=np.zeros((14, 3)),
        body_type="object",
    )


def _box() -> CarMesh:
    lx, ly, lz = (0.5 * s for s in _BOX_MM)
    v = np.array([[x, y, z] for x in (-lx, lx) for y in (-ly, ly) for z in (-lz, lz)])
    quads = {  # vertex index = 4·(x>0) + 2·(y>0) + (z>0); one print (material) per face
        PAINT: (4, 5, 7, 6),  # +x front: the box colour
        TAILLIGHT: (0, 2, 3, 1),  # -x back: red
        HEADLIGHT: (2, 6, 7, 3),  # +y top: off-white
        TYRE: (0, 1, 5, 4),  # -y bottom: black
        RIM: (1, 3, 7, 5),  # +z side: grey
        GLASS: (0, 4, 6, 2),  # -z side: dark glossy
    }
    faces, mats = [], []
    for mat, (a, b, c, d) in quads.items():
        faces += [(a, b, c), (a, c, d)]
        mats += [mat, mat]
    return _mesh([(v, np.array(faces), np.array(mats))])


def _frustum(r0: float, r1: float, y0: float, y1: float, material: int):
    angles = 2 * np.pi * np.arange(_CONE_SEGMENTS) / _CONE_SEGMENTS
    ring = np.column_stack((np.cos(angles), np.zeros_like(angles), np.sin(angles)))
    v = np.concatenate((ring * r0 + [0, y0, 0], ring * r1 + [0, y1, 0]))
    n = _CONE_SEGMENTS
    faces = []
    for i in range(n):
        j = (i + 1) % n
        faces += [(i, j, n + j), (i, n + j, n + i)]
    faces += [(0, i, i + 1) for i in range(1, n - 1)]  # bottom cap fan
    faces += [(n, n + i, n + i + 1) for i in range(1, n - 1)]  # top cap fan
    return v, np.array(faces), np.full(len(faces), material)


def _cone() -> CarMesh:
    r0, r1, h = _CONE_MM
    radius = lambda y: r0 + (r1 - r0) * y / h  # noqa: E731
    cuts = (0.0, 0.45 * h, 0.62 * h, h)  # orange, white band, orange
    parts = [
        _frustum(radius(a), radius(b), a, b, mat)
        for (a, b), mat in zip(pairwise(cuts), (PAINT, HEADLIGHT, PAINT))
    ]
    return _mesh(parts)


def _car() -> CarMesh:
    car = build_car(sample_car_params(np.random.default_rng(_CAR_SEED)))
    extent = car.vertices.max(axis=0) - car.vertices.min(axis=0)
    scale = _CAR_LENGTH_MM / extent[0]
    return CarMesh(
        car.vertices * scale,
        car.faces,
        car.face_material,
        car.surface,
        car.keypoints * scale,
        car.body_type,
    )


@cache
def object_meshes() -> dict[int, CarMesh]:
    """The three objects (mm, y up), by BOP object id (built once per process)."""
    return {1: _car(), 2: _box(), 3: _cone()}


@cache
def object_diameter(obj_id: int) -> float:
    """The diameter (mm) of an object of :func:`object_meshes`."""
    return model_diameter(object_meshes()[obj_id].vertices)


def models_info(meshes: dict[int, CarMesh]) -> dict[str, dict]:
    """``models_info.json`` content: diameter, bounding box and symmetries of every object."""
    info = {}
    for obj_id, mesh in meshes.items():
        lo, hi = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
        entry = {
            "diameter": round(object_diameter(obj_id), 6),
            "min_x": float(lo[0]),
            "min_y": float(lo[1]),
            "min_z": float(lo[2]),
            "size_x": float(hi[0] - lo[0]),
            "size_y": float(hi[1] - lo[1]),
            "size_z": float(hi[2] - lo[2]),
        }
        if OBJECTS[obj_id][1] == "symmetric":
            entry["symmetries_continuous"] = [{"axis": [0, 1, 0], "offset": [0, 0, 0]}]
        info[str(obj_id)] = entry
    return info


# ---------------------------------------------------------------------------- the looks


def random_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random procedural texture ``(H, W, 3)`` in linear RGB (domain randomisation)."""
    ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
    a, b = rng.random(3) ** 2.2, rng.random(3) ** 2.2
    kind = int(rng.integers(5))
    if kind == 0:  # flat
        img = np.broadcast_to(a, (height, width, 3)).copy()
    elif kind == 1:  # gradient
        ang = rng.uniform(0, 2 * np.pi)
        s = np.clip(0.5 + (np.cos(ang) * (xs - 0.5) + np.sin(ang) * (ys - 0.5)), 0, 1)
        img = a * (1 - s[..., None]) + b * s[..., None]
    elif kind == 2:  # stripes
        ang, freq = rng.uniform(0, np.pi), rng.uniform(2, 20)
        s = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (np.cos(ang) * xs + np.sin(ang) * ys))
        img = a * (1 - s[..., None]) + b * s[..., None]
    elif kind == 3:  # checkers
        n = rng.uniform(2, 12)
        s = ((np.floor(xs * n) + np.floor(ys * n)) % 2)[..., None]
        img = a * (1 - s) + b * s
    else:  # smooth colour noise
        import cv2

        grid = int(rng.integers(2, 12))
        small = (rng.random((grid, grid, 3)) ** 2.2).astype(np.float32)
        img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    for _ in range(int(rng.integers(0, 6))):  # clutter: random rectangles
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        w, h = (
            rng.integers(width // 10 + 1, width // 2 + 2),
            rng.integers(height // 10 + 1, height // 2 + 2),
        )
        img[y0 : y0 + h, x0 : x0 + w] = rng.random(3) ** 2.2
    return np.clip(img, 0, 1)


def shade_flat(
    gb, albedo: np.ndarray, lights: np.ndarray, colours: np.ndarray, ambient: float
) -> np.ndarray:
    """Lambert shading of the single object: ``(H, W, 3)`` linear RGB, zero on the background.

    ``albedo`` ``(len(MATERIALS), 3)``; ``lights`` ``(L, 3)`` unit directions towards the
    lights (world frame) with RGB intensities ``colours`` ``(L, 3)``.
    """
    fg = gb.mask
    out = np.zeros((*fg.shape, 3))
    n = gb.normals(fg)
    light = ambient + np.clip(n @ lights.T, 0, None) @ colours  # (N, 3)
    out[fg] = albedo[gb.material[fg]] * light
    return out


def _own_albedo(obj_id: int) -> np.ndarray:
    return material_albedo_synthetic(np.asarray(_OWN_PAINT[obj_id]))


def random_object_colours(rng: np.random.Generator, obj_id: int) -> np.ndarray:
    """Object randomisation: the object's own albedos ``(len(MATERIALS), 3)`` (linear RGB) turned
    together by a random hue rotation about the grey axis, with one random saturation and
    brightness for all of them. The parts keep their contrast (the box's six prints, the car's
    dark windows), which is what tells the object from its half-turned copy; an independent
    random colour per material (the first version of this split) hides it, and a network trained
    on that confuses the printed box with its half turn (docs/pose_regression.md)."""
    own = _own_albedo(obj_id)
    angle = rng.uniform(0, 2 * np.pi)
    k = np.full(3, 1 / np.sqrt(3))
    turned = (
        own * np.cos(angle)
        + np.cross(k, own) * np.sin(angle)
        + np.outer(own @ k, k) * (1 - np.cos(angle))
    )
    grey = turned.mean(axis=1, keepdims=True)
    out = (grey + (turned - grey) * rng.uniform(0.3, 1.5)) * rng.uniform(0.5, 1.5)
    return np.clip(out, 0, 1)


# ---------------------------------------------------------------------------- one image


def _scene(ctx: WorldContext, mesh: CarMesh, obj_id: int, rng: np.random.Generator):
    """The object on the ground at the origin and a camera looking at it."""
    cfg = ctx.preset.bop
    width, height = cfg.image_size
    y = -_MM * mesh.vertices[:, 1].min()
    yaw = float(rng.uniform(0, 2 * np.pi))
    paint = np.asarray(_OWN_PAINT[obj_id])
    car = CarInstance(mesh, _MM, yaw_rotation(yaw), np.array([0.0, y, 0.0]), paint, obj_id)
    focal = width / 2 / np.tan(np.deg2rad(cfg.fov_deg) / 2)
    diameter = _MM * object_diameter(obj_id)
    distance = diameter * focal / (rng.uniform(*cfg.fill) * width)
    el = np.deg2rad(rng.uniform(*cfg.elevation_deg))
    az = rng.uniform(0, 2 * np.pi)
    centre = car.translation + rng.normal(0, 0.03 * diameter, 3)
    eye = centre + distance * np.array(
        [np.cos(el) * np.cos(az), np.sin(el), np.cos(el) * np.sin(az)]
    )
    R, t = look_at(
        torch.from_numpy(eye),
        torch.from_numpy(centre),
        torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64),
    )
    cx = width / 2 + rng.normal(0, cfg.centre_jitter) * width
    cy = height / 2 + rng.normal(0, cfg.centre_jitter) * height
    K = np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])
    return PinholeCamera(K, R.double().numpy(), t.double().numpy(), height, width), car


def _box_xywh(mask: np.ndarray) -> list[int]:
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return [-1, -1, -1, -1]
    return [
        int(cols.min()),
        int(rows.min()),
        int(cols.max() - cols.min() + 1),
        int(rows.max() - rows.min() + 1),
    ]


def render_image(ctx: WorldContext, split: str, obj_id: int, index: int) -> dict:
    """Render and write one image of ``split`` showing ``obj_id``; return its BOP records."""
    rng = ctx.rng(STREAM_BOP, SPLIT_CODE[split], obj_id, index)
    camera, car = _scene(ctx, object_meshes()[obj_id], obj_id, rng)
    gb = render_gbuffer(camera, [car])
    sdir = ctx.root / FOLDER / split / f"{obj_id:06d}"
    name = f"{index:06d}"
    if split == "train_plain":
        linear = shade_flat(
            gb,
            _own_albedo(obj_id),
            _FIXED_LIGHT[None],
            np.full((1, 3), _PLAIN_DIFFUSE),
            _PLAIN_AMBIENT,
        )
        save_png(sdir / "rgb" / f"{name}.png", to_srgb_uint8(linear))
    elif split == "train_dr":
        albedo = random_object_colours(rng, obj_id)
        n_lights = int(rng.integers(1, 4))
        dirs = rng.normal(size=(n_lights, 3))
        dirs[:, 1] = np.abs(dirs[:, 1]) + 0.2
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        colours = rng.uniform(0.3, 1.0, (n_lights, 3)) * rng.uniform(0.4, 1.2) / n_lights**0.5
        linear = shade_flat(gb, albedo, dirs, colours, float(rng.uniform(0.05, 0.5)))
        background = random_background(rng, camera.height, camera.width)
        linear = np.where(gb.mask[..., None], linear, background)
        save_png(sdir / "rgb" / f"{name}.png", to_srgb_uint8(linear))
    else:
        env = sample_environment(rng)
        linear = shade_real(gb, [car], env, rng)
        image = degrade(to_srgb_uint8(linear), seed=int(rng.integers(1 << 31)))
        save_jpeg(sdir / "rgb" / f"{name}.jpg", image, ctx.preset.bop.jpeg_quality)
    mask = gb.instance == 0
    png = mask.astype(np.uint8) * 255
    save_png(mask_path(sdir, index, 0, visible=True), png)
    save_png(mask_path(sdir, index, 0, visible=False), png)
    K = camera.K.copy()
    K[:2, 2] -= 0.5  # the rasteriser samples pixel centres at +0.5; BOP puts them at integers
    R_m2c = camera.R @ car.rotation
    t_m2c = (camera.R @ car.translation + camera.t) / _MM
    count = int(mask.sum())
    return {
        "split": split,
        "scene_id": obj_id,
        "im_id": index,
        "camera": {"cam_K": [float(v) for v in K.reshape(-1)]},
        "gt": [
            {
                "cam_R_m2c": [float(v) for v in R_m2c.reshape(-1)],
                "cam_t_m2c": [float(v) for v in t_m2c],
                "obj_id": obj_id,
            }
        ],
        "gt_info": [
            {
                "bbox_obj": _box_xywh(mask),
                "bbox_visib": _box_xywh(mask),
                "px_count_all": count,
                "px_count_valid": count,
                "px_count_visib": count,
                "visib_fract": 1.0 if count else 0.0,
            }
        ],
    }


# ---------------------------------------------------------------------------- the dataset


def _counts(ctx: WorldContext) -> dict[str, int]:
    cfg = ctx.preset.bop
    return {"train_plain": cfg.train_plain, "train_dr": cfg.train_dr, "test": cfg.test}


def items(ctx: WorldContext) -> list[tuple]:
    """The dataset as world items ``("bop", split, obj_id, chunk)``, each of at most
    ``bop.chunk`` images (small worlds then stay in one process)."""
    size = ctx.preset.bop.chunk
    return [
        ("bop", split, obj_id, chunk)
        for split, count in _counts(ctx).items()
        for obj_id in OBJECTS
        for chunk in range(-(-count // size))
    ]


def render_chunk(ctx: WorldContext, split: str, obj_id: int, chunk: int) -> dict:
    """Render the images of one item (each image has its own random stream)."""
    size = ctx.preset.bop.chunk
    stop = min(_counts(ctx)[split], (chunk + 1) * size)
    return {"images": [render_image(ctx, split, obj_id, i) for i in range(chunk * size, stop)]}


def finalize(ctx: WorldContext, metas: dict[tuple[str, int, int], dict]) -> dict[str, int]:
    """Models, ``models_info.json``, ``camera.json`` and every scene's JSON files; counts.

    ``metas`` maps ``(split, obj_id, chunk)`` to :func:`render_chunk`'s record.
    """
    base = ctx.root / FOLDER
    meshes = object_meshes()
    for obj_id, mesh in meshes.items():
        atomic_write(model_path(base, obj_id), lambda p, m=mesh: write_ply(p, m.vertices, m.faces))
    write_json_atomic(base / MODELS_DIR / MODELS_INFO, models_info(meshes))
    width, height = ctx.preset.bop.image_size
    focal = width / 2 / np.tan(np.deg2rad(ctx.preset.bop.fov_deg) / 2)
    write_json_atomic(
        base / CAMERA,
        {
            "cx": width / 2 - 0.5,
            "cy": height / 2 - 0.5,
            "fx": focal,
            "fy": focal,
            "width": width,
            "height": height,
        },
    )
    write_json_atomic(
        base / "synthetic" / "objects.json",
        {str(k): {"name": name, "kind": kind} for k, (name, kind) in OBJECTS.items()},
    )
    counts: dict[str, int] = {}
    for split in SPLITS:
        for obj_id in OBJECTS:
            records = sorted(
                (
                    im
                    for (s, o, _), m in metas.items()
                    if s == split and o == obj_id
                    for im in m["images"]
                ),
                key=lambda m: m["im_id"],
            )
            sdir = scene_dir(base, split, obj_id)
            write_json_atomic(sdir / SCENE_CAMERA, {str(m["im_id"]): m["camera"] for m in records})
            write_json_atomic(sdir / SCENE_GT, {str(m["im_id"]): m["gt"] for m in records})
            write_json_atomic(
                sdir / SCENE_GT_INFO, {str(m["im_id"]): m["gt_info"] for m in records}
            )
            counts[f"bop_{split}"] = counts.get(f"bop_{split}", 0) + len(records)
    return counts
