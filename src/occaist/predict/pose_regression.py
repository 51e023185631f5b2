"""Pose regression: the BOP results CSV and the object's silhouette drawn at the predicted pose.

The regressor is conditioned on the object: it answers "where is object o in this image", so
every image is asked about a set of objects, and each answer is one CSV row
(``scene_id,im_id,obj_id,score,R,t,time``; ``score`` is 1, the regressor gives no confidence;
``time`` is the image's share of its batch's model time, in seconds):

* an image inside a BOP scene (``<scene>/rgb/<im_id>.png``) is asked about the objects of its
  ``scene_gt.json`` entry (the BOP test targets) with the intrinsics of ``scene_camera.json``,
  and keeps its ``scene_id`` / ``im_id``;
* any other image is asked about the model's objects (``data.obj_ids``, else every object of
  ``<data.root>/models/models_info.json``), with ``camera_K`` (nine numbers, row-major, in the
  image's pixels) or the dataset's nominal ``camera.json`` scaled to the image, and gets
  ``scene_id`` 0 and ``im_id`` from its numeric file name, else its position in the listing.

Meshes and object diameters come from ``data.root`` (the BOP dataset the model was trained on).
Overlays tint the mesh's silhouette (its triangles projected with K, R, t) and outline its
3D bounding box.
"""

from __future__ import annotations

import functools
import json
from itertools import combinations
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image, ImageDraw

from occaist.data.bop import (
    CAMERA,
    IMAGE_DIRS,
    SCENE_CAMERA,
    SCENE_GT,
    ObjectModel,
    _fit,
    load_model,
    read_models_info,
    scaled_intrinsics,
)
from occaist.predict.base import Predictor
from occaist.predict.inputs import DecodedInput
from occaist.predict.overlays import draw_polylines, tint
from occaist.predict.writers import bop_csv_row, output_path, write_bop_csv, write_png
from occaist.utils.logging import get_logger

log = get_logger(__name__)

RESULTS_FILE = "results_bop.csv"


def prepare_scaled(rgba: np.ndarray, size: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """``(3, size, size)`` in [0, 1] as the BOP data: longer side scaled to ``size``, zero-padded
    right and bottom (transparent pixels black, as an image without alpha would be)."""
    rgb = rgba[..., :3].astype(np.float32) * (rgba[..., 3:4].astype(np.float32) / 255.0)
    scale = size / max(rgba.shape[:2])
    tensor = _fit(torch.from_numpy(rgb / 255.0).permute(2, 0, 1), scale, size).clamp(0, 1)
    return tensor, {"scale": scale}


def project(points: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Pixels ``(N, 2)`` and depths of model points ``(N, 3)``: ``x = K (R p + t)``."""
    cam = points @ R.T + t
    uvw = cam @ K.T
    return np.concatenate([uvw[:, :2] / uvw[:, 2:3], cam[:, 2:3]], axis=1)


def silhouette_mask(
    model: ObjectModel, K: np.ndarray, R: np.ndarray, t: np.ndarray, size: tuple[int, int]
) -> np.ndarray:
    """``(H, W)`` float mask of the mesh's triangles in front of the camera."""
    height, width = size
    pixels = project(model.vertices, K, R, t)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for face in model.faces:
        tri = pixels[face]
        if (tri[:, 2] > 0).all():
            draw.polygon([(float(x), float(y)) for x, y in tri[:, :2]], fill=255)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def box_edges(model: ObjectModel, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> list:
    """The 12 edges of the mesh's axis-aligned 3D box, projected: ``(2, 2)`` pixels each."""
    lo, hi = model.vertices.min(0), model.vertices.max(0)
    corners = np.array([[(lo, hi)[(i >> a) & 1][a] for a in range(3)] for i in range(8)])
    pixels = project(corners, K, R, t)
    if (pixels[:, 2] <= 0).any():
        return []
    edges = [(i, j) for i, j in combinations(range(8), 2) if bin(i ^ j).count("1") == 1]
    return [pixels[[i, j], :2] for i, j in edges]


class PosePredictor(Predictor):
    """Predictions of :class:`~occaist.models.PoseRegressor` (module docstring)."""

    module_class: ClassVar[str] = "occaist.models.pose_regression.module.PoseRegressor"
    name: ClassVar[str] = "pose_regression"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.root = Path(self.cfg.data.root)
        info = read_models_info(self.root)
        trained = self.cfg.data.get("obj_ids")
        self.obj_ids = sorted(int(i) for i in (trained if trained is not None else info))
        self.models = {i: load_model(self.root, i, info=info[i]) for i in self.obj_ids}
        self.rows: list[str] = []
        self._warned_guess = False

    def prepare_fn(self):
        return functools.partial(prepare_scaled, size=int(self.model.hparams.image_size))

    @functools.cache  # noqa: B019  (one predictor per run; scenes are few)
    def _scene(self, scene: Path) -> tuple[dict, dict]:
        def read(name: str) -> dict:
            path = scene / name
            return json.loads(path.read_text()) if path.is_file() else {}

        return read(SCENE_CAMERA), read(SCENE_GT)

    def _nominal_camera(self, height: int, width: int) -> np.ndarray:
        if self.cfg.get("camera_K") is not None:
            return np.asarray(self.cfg.camera_K, dtype=np.float64).reshape(3, 3)
        path = self.root / CAMERA
        if path.is_file():
            cam = json.loads(path.read_text())
            K = np.array([[cam["fx"], 0, cam["cx"]], [0, cam["fy"], cam["cy"]], [0, 0, 1.0]])
            return scaled_intrinsics(K, width / float(cam.get("width", width)))
        if not self._warned_guess:
            log.warning("no camera_K and no %s: guessing a 53-degree field of view", path)
            self._warned_guess = True
        f = float(max(height, width))
        return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])

    def _targets(self, item: DecodedInput) -> dict[str, Any]:
        """scene_id, im_id, K (original pixels) and the objects to ask about for one image."""
        path, (height, width) = item.file.path, item.rgba.shape[:2]
        scene = path.parent.parent
        if path.parent.name in IMAGE_DIRS and scene.name.isdigit() and path.stem.isdigit():
            cameras, gts = self._scene(scene)
            key = str(int(path.stem))
            if key in cameras:
                K = np.asarray(cameras[key]["cam_K"], dtype=np.float64).reshape(3, 3)
                objs = sorted({int(g["obj_id"]) for g in gts.get(key, [])} & set(self.obj_ids))
                return {"scene_id": int(scene.name), "im_id": int(key), "K": K, "obj_ids": objs}
        im_id = int(path.stem) if path.stem.isdigit() else item.index
        K = self._nominal_camera(height, width)
        return {"scene_id": 0, "im_id": im_id, "K": K, "obj_ids": list(self.obj_ids)}

    @torch.no_grad()
    def predict(self, items: list[DecodedInput], batch_idx: int) -> list[list[dict[str, Any]]]:
        samples: list[tuple[int, int]] = []
        batch: dict[str, list] = {"image": [], "K": [], "obj_index": [], "diameter": []}
        for pos, item in enumerate(items):
            item.meta.update(self._targets(item))
            K_input = scaled_intrinsics(item.meta["K"], item.meta["scale"])
            for obj in item.meta["obj_ids"]:
                samples.append((pos, obj))
                batch["image"].append(item.tensor)
                batch["K"].append(torch.from_numpy(K_input).float())
                batch["obj_index"].append(torch.tensor(self.obj_ids.index(obj)))
                batch["diameter"].append(torch.tensor(self.models[obj].diameter))
        per_item: list[list[dict[str, Any]]] = [[] for _ in items]
        if not samples:
            return per_item
        stacked = {k: torch.stack(v).to(self.device).float() for k, v in batch.items()}
        stacked["obj_index"] = stacked["obj_index"].long()
        results = self.model.predict_step(stacked, batch_idx)
        for (pos, obj), result in zip(samples, results, strict=True):
            per_item[pos].append({"obj_id": obj, **{k: v.cpu() for k, v in result.items()}})
        return per_item

    def write(self, item: DecodedInput, result: list[dict[str, Any]]) -> None:
        meta = item.meta
        for pose in result:
            self.rows.append(
                bop_csv_row(
                    meta["scene_id"],
                    meta["im_id"],
                    pose["obj_id"],
                    1.0,
                    pose["R"].numpy(),
                    pose["t"].numpy(),
                    meta["time_s"],
                )
            )
        if self.save_overlays:
            picture = item.rgba
            lines = []
            mask = np.zeros(item.rgba.shape[:2], np.float32)
            for pose in result:
                args = (meta["K"], pose["R"].double().numpy(), pose["t"].double().numpy())
                model = self.models[pose["obj_id"]]
                mask = np.maximum(mask, silhouette_mask(model, *args, item.rgba.shape[:2]))
                lines += box_edges(model, *args)
            picture = draw_polylines(tint(item.rgba, mask), lines)
            write_png(output_path(self.output, "overlays", item.file.key, ".png"), picture)

    def finish(self) -> dict[str, str]:
        write_bop_csv(self.output / RESULTS_FILE, self.rows)
        return {"bop_results": str(self.output / RESULTS_FILE)}
