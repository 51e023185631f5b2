"""Real-look photos in the Stanford Cars layout that ``torchvision.datasets.StanfordCars`` reads.

Layout (``torchvision.datasets.StanfordCars(root=<world root>)`` opens ``<root>/stanford_cars``)::

    stanford_cars/cars_train/00001.jpg ...           JPEG, 320-640 px wide
    stanford_cars/cars_test/00001.jpg ...
    stanford_cars/devkit/cars_meta.mat               class_names (1, C) cell
    stanford_cars/devkit/cars_train_annos.mat        annotations: bbox_x1, bbox_y1, bbox_x2,
    stanford_cars/cars_test_annos_withlabels.mat       bbox_y2 (1-based, inclusive), class, fname
    stanford_cars/synthetic/instances.json           COCO instances (side file, below)

The devkit box is the main car's visible mask box; its class is the car's body type.
``instances.json`` holds every car instance with a visible pixel: COCO ``bbox`` (x, y, w, h),
``area``, ``segmentation`` (compressed RLE, ``occaist.data.coco_rle``), ``model_id`` (a
``shapenet_renders`` model, so its GT cloud exists) and ``pose``: ``azimuth_deg``,
``elevation_deg`` and ``distance`` of the camera in the car's frame (DPC/Blender convention,
object units, the car normalised to bounding-box diagonal 1) and ``quaternion`` (w, x, y, z), the
DPC-convention rotation under which this camera sees the car (for a car centred in view it
equals ``quaternion_from_campos``), and ``projection``, the 3×4 matrix taking the model's
object-frame points (its GT cloud) to the photo's pixels, for re-rendering silhouettes (mask
XOR). Train images use shapenet *train* models, test images the *val* and *test* models.
"""

from __future__ import annotations

import numpy as np
import torch

from occaist.data import coco_rle
from occaist.geometry.camera import look_at
from occaist.geometry.quaternion import rotation_matrix_to_quaternion
from occaist.synth.cars import BODY_TYPES, CarMesh
from occaist.synth.context import STREAM_STANFORD, WorldContext, save_jpeg, save_mat
from occaist.synth.domains import (
    degrade,
    real_paint,
    road_frame,
    sample_environment,
    shade_real,
    to_srgb_uint8,
)
from occaist.synth.raster import PinholeCamera
from occaist.synth.scene import (
    CarInstance,
    dpc_rotation,
    object_campos,
    render_gbuffer,
    yaw_rotation,
)
from occaist.utils.io import write_json_atomic

FOLDER = "stanford_cars"
COCO_CAR = 3
SPLIT_CODE = {"train": 0, "test": 1}
CLASS_NAMES = [f"Occaist Synthetic {b.capitalize()} 2026" for b in BODY_TYPES]
_UP = np.array([0.0, 1.0, 0.0])
_MIN_EYE_HEIGHT = 0.3  # metres; the camera stays above the ground
_SIGHT_SAMPLES = 16  # points on the camera-to-main-car ground segment kept free of other cars
_PLACEMENT_TRIES = 20


def image_name(index: int) -> str:
    """Stanford Cars file name of the ``index``-th image of a split (``00001.jpg`` ...)."""
    return f"{index + 1:05d}.jpg"


def footprint(car: CarInstance) -> np.ndarray:
    """``(4, 2)`` ground-plane (x, z) corners of the car's box."""
    lo, hi = car.mesh.vertices.min(axis=0), car.mesh.vertices.max(axis=0)
    corners = np.array(
        [[lo[0], 0, lo[2]], [hi[0], 0, lo[2]], [hi[0], 0, hi[2]], [lo[0], 0, hi[2]]]
    )
    return car.to_world(corners)[:, [0, 2]]


def footprints_overlap(a: np.ndarray, b: np.ndarray, margin: float) -> bool:
    """Separating-axis test of two convex quads ``(4, 2)`` grown by ``margin``."""
    for poly in (a, b):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-edge[1], edge[0]]) / np.linalg.norm(edge)
            pa, pb = a @ axis, b @ axis
            if pa.max() + margin < pb.min() or pb.max() + margin < pa.min():
                return False
    return True


def _inside_quad(quad: np.ndarray, point: np.ndarray, margin: float) -> bool:
    """Whether a ground point ``(2,)`` lies in a convex quad ``(4, 2)`` grown by ``margin``."""
    centre = quad.mean(axis=0)
    for i in range(4):
        edge = quad[(i + 1) % 4] - quad[i]
        normal = np.array([edge[1], -edge[0]]) / np.linalg.norm(edge)
        if normal @ (centre - quad[i]) > 0:
            normal = -normal  # outward
        if normal @ (point - quad[i]) > margin:
            return False
    return True


def object_projection(camera: PinholeCamera, car: CarInstance) -> np.ndarray:
    """The 3×4 matrix taking the car's object-frame points (GT cloud) to this photo's pixels."""
    world_from_object = np.eye(4)
    world_from_object[:3, :3] = car.scale * car.rotation
    world_from_object[:3, 3] = car.translation
    return camera.P @ world_from_object


def place_on_ground(
    mesh: CarMesh, length_m: float, yaw: float, xz: np.ndarray, paint, seed: int
) -> CarInstance:
    """A car of real length ``length_m`` standing on ``y = 0`` at ground position ``xz``."""
    extent = mesh.vertices.max(axis=0) - mesh.vertices.min(axis=0)
    scale = length_m / extent[0]
    y = -scale * mesh.vertices[:, 1].min()
    return CarInstance(
        mesh, scale, yaw_rotation(yaw), np.array([xz[0], y, xz[1]]), np.asarray(paint), seed
    )


def photo_scene(ctx: WorldContext, split: str, index: int):
    """``(rng, camera, environment, model indices, car instances)`` of one photo."""
    cfg = ctx.preset.stanford_cars
    rng = ctx.rng(STREAM_STANFORD, SPLIT_CODE[split], index)
    pool = ctx.splits["train"] if split == "train" else ctx.splits["val"] + ctx.splits["test"]
    width = int(rng.integers(cfg.width[0], cfg.width[1] + 1))
    height = round(width / rng.uniform(*cfg.aspect))
    focal = width / 2 / np.tan(np.deg2rad(rng.uniform(*cfg.fov_deg)) / 2)

    def new_car(yaw: float, xz) -> tuple[int, CarInstance]:
        m = int(pool[int(rng.integers(len(pool)))])
        paint = real_paint(rng)
        car = place_on_ground(
            ctx.mesh(m), float(rng.uniform(*cfg.car_length_m)), yaw, np.asarray(xz), paint, m
        )
        return m, car

    env = sample_environment(rng)
    along, _ = road_frame(env)
    yaw = float(rng.uniform(0, 2 * np.pi))
    if rng.random() < cfg.road_aligned_prob:  # driving or parked along the road
        yaw = float(-np.arctan2(along[1], along[0]) + np.pi * rng.integers(2) + rng.normal(0, 0.1))
    main_index, main = new_car(yaw, (0.0, 0.0))
    models, cars = [main_index], [main]

    az = np.deg2rad(rng.uniform(0, 360))
    el = np.deg2rad(rng.uniform(*cfg.elevation_deg))
    fill = rng.uniform(*cfg.fill)
    radius = 0.5 * main.scale  # half the bounding-box diagonal, in metres
    distance = 2 * radius * focal / (fill * width)
    centre = main.translation
    direction = main.rotation @ np.array(
        [np.cos(el) * np.cos(az), np.sin(el), -np.cos(el) * np.sin(az)]
    )
    eye = centre + distance * direction
    eye[1] = max(eye[1], _MIN_EYE_HEIGHT)
    # Ground points between the camera and the main car: no other car may stand on them, so
    # the main car can be partly hidden by its neighbours but never entirely.
    sight = eye[[0, 2]] + np.linspace(0.0, 1.0, _SIGHT_SAMPLES)[:, None] * (
        centre[[0, 2]] - eye[[0, 2]]
    )

    if rng.random() < cfg.multi_car_prob:
        yaw0 = float(np.arctan2(-main.rotation[2, 0], main.rotation[0, 0]))
        for _ in range(int(rng.integers(cfg.extra_cars[0], cfg.extra_cars[1] + 1))):
            for _try in range(_PLACEMENT_TRIES):
                yaw = yaw0 + (np.pi if rng.random() < 0.3 else 0.0) + rng.normal(0, 0.15)
                if rng.random() < 0.6:  # parked in a row beside the main car
                    side = (
                        rng.choice([-1.0, 1.0]) * rng.uniform(2.1, 3.2) * int(rng.integers(1, 3))
                    )
                    offset = main.rotation @ np.array([rng.normal(0, 0.6), 0.0, side])
                else:  # anywhere around
                    ang, r = rng.uniform(0, 2 * np.pi), rng.uniform(4.5, 9.0)
                    offset = np.array([r * np.cos(ang), 0.0, r * np.sin(ang)])
                    yaw = float(rng.uniform(0, 2 * np.pi))
                m, car = new_car(yaw, offset[[0, 2]])
                box = footprint(car)
                if not any(footprints_overlap(box, footprint(c), 0.3) for c in cars) and not any(
                    _inside_quad(box, p, 0.3) for p in sight
                ):
                    models.append(m)
                    cars.append(car)
                    break

    R, t = look_at(torch.from_numpy(eye), torch.from_numpy(centre), torch.from_numpy(_UP))
    cx, cy = width / 2 + rng.normal(0, 0.04) * width, height / 2 + rng.normal(0, 0.04) * height
    if rng.random() < cfg.crop_prob:  # push the car against a border so it is cut off
        if rng.random() < 0.5:
            cx += rng.choice([-1, 1]) * rng.uniform(0.25, 0.4) * width
        else:
            cy += rng.choice([-1, 1]) * rng.uniform(0.2, 0.35) * height
    K = np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])
    camera = PinholeCamera(K, R.numpy(), t.numpy(), height, width)
    return rng, camera, env, models, cars


def render_image(ctx: WorldContext, split: str, index: int) -> dict:
    """Write one photo; returns its image record, COCO annotations and devkit record."""
    cfg = ctx.preset.stanford_cars
    rng, camera, env, models, cars = photo_scene(ctx, split, index)
    gb = render_gbuffer(camera, cars)
    linear = shade_real(gb, cars, env, rng)
    image = degrade(to_srgb_uint8(linear), seed=int(rng.integers(1 << 31)))
    gray = rng.random() < cfg.grayscale_prob
    if gray:
        image = np.round(image @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    name = image_name(index)
    folder = "cars_train" if split == "train" else "cars_test"
    save_jpeg(
        ctx.root / FOLDER / folder / name,
        image,
        int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)),
    )
    annotations = []
    for k, (m, car) in enumerate(zip(models, cars)):
        mask = gb.instance == k
        if not mask.any():
            continue
        rle = coco_rle.encode(mask)
        pos = object_campos(camera, car)
        q = rotation_matrix_to_quaternion(torch.from_numpy(dpc_rotation(camera, car))).numpy()
        annotations.append(
            {
                "instance": k,
                "category_id": COCO_CAR,
                "bbox": coco_rle.to_bbox(rle),
                "area": coco_rle.area(rle),
                "iscrowd": 0,
                "segmentation": rle,
                "model_id": ctx.model_id(m),
                "body_type": car.mesh.body_type,
                "pose": {
                    "azimuth_deg": float(np.degrees(np.arctan2(pos[1], pos[0])) % 360.0),
                    "elevation_deg": float(np.degrees(np.arcsin(pos[2] / np.linalg.norm(pos)))),
                    "distance": float(np.linalg.norm(pos)),
                    "quaternion": [float(v) for v in q],
                },
                "projection": object_projection(camera, car).round(10).tolist(),
            }
        )
    main = gb.instance == 0
    if main.any():
        rows, cols = np.nonzero(main)
        box = [int(cols.min()) + 1, int(rows.min()) + 1, int(cols.max()) + 1, int(rows.max()) + 1]
    else:
        box = [1, 1, camera.width, camera.height]
    return {
        "split": split,
        "image": {
            "file_name": f"{folder}/{name}",
            "width": camera.width,
            "height": camera.height,
            "grayscale": bool(gray),
        },
        "annotations": annotations,
        "devkit": {
            "fname": name,
            "bbox": box,
            "class": BODY_TYPES.index(cars[0].mesh.body_type) + 1,
        },
    }


def _annos_mat(records: list[dict]) -> np.ndarray:
    dtype = [
        ("bbox_x1", "O"),
        ("bbox_y1", "O"),
        ("bbox_x2", "O"),
        ("bbox_y2", "O"),
        ("class", "O"),
        ("fname", "O"),
    ]
    out = np.zeros((1, len(records)), dtype=dtype)
    for i, r in enumerate(records):
        x1, y1, x2, y2 = r["bbox"]
        out[0, i] = (
            np.array([[x1]], np.uint16),
            np.array([[y1]], np.uint16),
            np.array([[x2]], np.uint16),
            np.array([[y2]], np.uint16),
            np.array([[r["class"]]], np.uint8),
            np.array([r["fname"]]),
        )
    return out


def finalize(ctx: WorldContext, items: dict[tuple[str, int], dict]) -> dict[str, int]:
    """Devkit ``.mat`` files and the COCO side file; returns counts."""
    cfg = ctx.preset.stanford_cars
    base = ctx.root / FOLDER
    counts = {"train": cfg.train, "test": cfg.test}
    records = {s: [items[(s, i)] for i in range(n)] for s, n in counts.items()}
    names = np.empty((1, len(CLASS_NAMES)), dtype=object)
    names[0, :] = CLASS_NAMES
    save_mat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    save_mat(
        base / "devkit" / "cars_train_annos.mat",
        {"annotations": _annos_mat([r["devkit"] for r in records["train"]])},
    )
    save_mat(
        base / "cars_test_annos_withlabels.mat",
        {"annotations": _annos_mat([r["devkit"] for r in records["test"]])},
    )
    images, annotations = [], []
    image_id = 0
    for split in ("train", "test"):
        for record in records[split]:
            image_id += 1
            images.append({"id": image_id, "split": split, **record["image"]})
            for ann in record["annotations"]:
                annotations.append(
                    {"id": image_id * 100 + ann["instance"] + 1, "image_id": image_id, **ann}
                )
    write_json_atomic(
        base / "synthetic" / "instances.json",
        {
            "info": {"description": "occaist synthetic world: Stanford Cars instances"},
            "images": images,
            "annotations": annotations,
            "categories": [{"id": COCO_CAR, "name": "car", "supercategory": "vehicle"}],
        },
    )
    return {
        "stanford_train": counts["train"],
        "stanford_test": counts["test"],
        "stanford_instances": len(annotations),
    }
