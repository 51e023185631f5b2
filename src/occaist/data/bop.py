"""Object pose datasets in the BOP layout: format, reader, Dataset and LightningDataModule.

Layout (BOP toolkit, ``bop.felk.cvut.cz/datasets``), under a dataset folder ``root``::

    models/obj_000001.ply                 meshes in mm (ASCII or binary little-endian PLY)
    models/models_info.json               {"1": {"diameter": mm, "min_x".., "size_x"..,
                                           "symmetries_discrete": [[16 floats, 4x4 row-major]],
                                           "symmetries_continuous": [{"axis", "offset"}]}}
    camera.json                           nominal intrinsics (optional here)
    <split>/<scene:06d>/rgb/<im:06d>.png|.jpg    (``gray/`` for grey-only datasets)
    <split>/<scene:06d>/mask_visib/<im:06d>_<inst:06d>.png   visible mask of each instance
    <split>/<scene:06d>/mask/<im:06d>_<inst:06d>.png         full mask (optional here)
    <split>/<scene:06d>/scene_camera.json  {"<im>": {"cam_K": 9 floats row-major, ...}}
    <split>/<scene:06d>/scene_gt.json      {"<im>": [{"obj_id", "cam_R_m2c" (9), "cam_t_m2c"
                                            (3, mm)}]}  (list index = instance index)
    <split>/<scene:06d>/scene_gt_info.json {"<im>": [{"bbox_obj", "bbox_visib" (x, y, w, h),
                                            "px_count_all", "px_count_visib", "visib_fract"}]}

Conventions: ``x_cam = R·x + t`` with model points in mm; pixel centres at integer coordinates
(OpenCV/BOP: the top-left pixel's centre is (0, 0)). Real BOP datasets load unchanged
(``scene_gt_info.json`` is optional: without it every instance counts as fully visible and the
box comes from the mask). This module is the format's single definition: the synthetic world's
writer (``occaist.synth.writers.bop``) imports its names and helpers from here.

The Dataset serves one object instance per item: the whole image, scaled so that its longer
side is ``image_size`` and zero-padded to a square (the intrinsics follow the scaling), the
instance's visible mask, its pose, 2D box and its model's sampled surface points.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from occaist.data.common import SplitLoaders, warn_if_synthetic
from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__, rank_zero_only=False)

__all__ = [
    "BOPDataModule",
    "BOPDataset",
    "ObjectModel",
    "find_image",
    "load_model",
    "mask_path",
    "model_diameter",
    "model_path",
    "read_models_info",
    "read_ply",
    "read_scene",
    "sample_surface",
    "scene_dir",
    "scene_ids",
    "write_ply",
]

MODELS_DIR = "models"
MODELS_INFO = "models_info.json"
CAMERA = "camera.json"
SCENE_CAMERA = "scene_camera.json"
SCENE_GT = "scene_gt.json"
SCENE_GT_INFO = "scene_gt_info.json"
IMAGE_DIRS = ("rgb", "gray")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif")
MASK_VISIB = "mask_visib"
MASK = "mask"
_HOW_TO_GET = (
    "generate a synthetic world with `python -m occaist.synth --root DIR --preset tiny` (then "
    "data.root=DIR/bop/occaist), or download a BOP dataset (bop.felk.cvut.cz: base archive with "
    "models/ and a split archive) and pass data.root=<its folder>"
)


# ---------------------------------------------------------------------------- file names


def model_path(root: str | os.PathLike, obj_id: int) -> Path:
    """``<root>/models/obj_<id:06d>.ply``."""
    return Path(root) / MODELS_DIR / f"obj_{obj_id:06d}.ply"


def scene_dir(root: str | os.PathLike, split: str, scene_id: int) -> Path:
    """``<root>/<split>/<scene:06d>``."""
    return Path(root) / split / f"{scene_id:06d}"


def mask_path(scene: str | os.PathLike, im_id: int, inst: int, visible: bool = True) -> Path:
    """``<scene>/mask_visib/<im:06d>_<inst:06d>.png`` (``mask/`` when not ``visible``)."""
    return Path(scene) / (MASK_VISIB if visible else MASK) / f"{im_id:06d}_{inst:06d}.png"


def find_image(scene: str | os.PathLike, im_id: int) -> Path:
    """The image of ``im_id`` in ``rgb/`` (or ``gray/``) with any BOP extension."""
    scene = Path(scene)
    for folder in IMAGE_DIRS:
        for ext in IMAGE_EXTS:
            path = scene / folder / f"{im_id:06d}{ext}"
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"no image {im_id:06d}.(png|jpg|tif) in {scene / 'rgb'} or {scene / 'gray'}"
    )


def scene_ids(root: str | os.PathLike, split: str) -> list[int]:
    """Scene ids of ``split`` (six-digit folders holding a ``scene_gt.json``), sorted."""
    folder = Path(root) / split
    if not folder.is_dir():
        found = (
            sorted(p.name for p in Path(root).iterdir() if p.is_dir())
            if Path(root).is_dir()
            else []
        )
        raise FileNotFoundError(
            f"BOP split folder {folder} does not exist (folders in {root}: {found}).\n"
            f"  To get a BOP dataset, {_HOW_TO_GET}."
        )
    ids = sorted(
        int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / SCENE_GT).is_file()
    )
    if not ids:
        raise FileNotFoundError(f"no scene with a {SCENE_GT} in {folder}")
    return ids


# ---------------------------------------------------------------------------- PLY meshes

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


def write_ply(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray) -> str:
    """The ASCII PLY text of a triangle mesh (vertices ``(V, 3)`` mm, faces ``(F, 3)``); written
    to ``path`` when given as a path, returned in any case."""
    lines = [
        "ply",
        "format ascii 1.0",
        "comment occaist BOP model (mm)",
        f"element vertex {len(vertices)}",
        "property float x",
        "property float y",
        "property float z",
        f"element face {len(faces)}",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    lines += [f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in np.asarray(vertices, dtype=np.float64)]
    lines += [f"3 {a} {b} {c}" for a, b, c in np.asarray(faces, dtype=np.int64)]
    text = "\n".join(lines) + "\n"
    if path is not None:
        Path(path).write_text(text)
    return text


def read_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(V, 3)`` float64 and triangles ``(F, 3)`` int64 of an ASCII or binary
    little-endian PLY (extra vertex properties such as normals or colours are ignored)."""
    path = Path(path)
    data = path.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{path} is not a PLY file")
    body_start = data.index(b"\n", end) + 1
    header = data[:end].decode("ascii", "replace").splitlines()
    fmt, elements = "", []
    for line in header:
        words = line.split()
        if not words:
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            elements[-1][2].append(words[1:])
    names = [e[0] for e in elements]
    if names[:2] != ["vertex", "face"]:
        raise ValueError(f"{path}: expected vertex then face elements, found {names}")
    (_, n_vert, vprops), (_, n_face, fprops) = elements[0], elements[1]
    if fmt == "ascii":
        rows = data[body_start:].decode("ascii").split("\n")
        table = np.array([r.split() for r in rows[:n_vert]], dtype=np.float64)
        names_v = [p[-1] for p in vprops]
        vertices = table[:, [names_v.index(a) for a in "xyz"]]
        faces = np.array([r.split()[1:4] for r in rows[n_vert : n_vert + n_face]], dtype=np.int64)
        return vertices, faces
    if fmt != "binary_little_endian":
        raise ValueError(f"{path}: PLY format {fmt!r} not supported (ascii, binary_little_endian)")
    vdtype = np.dtype([(p[-1], "<" + _PLY_TYPES[p[0]]) for p in vprops])
    vert = np.frombuffer(data, dtype=vdtype, count=n_vert, offset=body_start)
    vertices = np.stack([vert[a].astype(np.float64) for a in "xyz"], axis=1)
    if len(fprops) != 1 or fprops[0][0] != "list":
        raise ValueError(f"{path}: faces must have a single list property, found {fprops}")
    count_t, index_t = _PLY_TYPES[fprops[0][1]], _PLY_TYPES[fprops[0][2]]
    fdtype = np.dtype([("n", "<" + count_t), ("v", "<" + index_t, 3)])
    face = np.frombuffer(
        data, dtype=fdtype, count=n_face, offset=body_start + n_vert * vdtype.itemsize
    )
    if n_face and not np.all(face["n"] == 3):
        raise ValueError(f"{path}: only triangle meshes are supported")
    return vertices, face["v"].astype(np.int64)


def model_diameter(vertices: np.ndarray) -> float:
    """The largest distance between two vertices (BOP's object diameter), exact."""
    v = np.asarray(vertices, dtype=np.float64)
    best = 0.0
    for start in range(0, len(v), 512):
        d = np.linalg.norm(v[start : start + 512, None] - v[None], axis=-1)
        best = max(best, float(d.max()))
    return best


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``(n, 3)`` points uniform on the mesh surface (area-weighted), reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    tri = np.asarray(vertices, dtype=np.float64)[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    idx = rng.choice(len(tri), size=n, p=area / area.sum())
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    t = tri[idx]
    return (
        (1 - r1)[:, None] * t[:, 0]
        + (r1 * (1 - r2))[:, None] * t[:, 1]
        + (r1 * r2)[:, None] * t[:, 2]
    )


@dataclass
class ObjectModel:
    """One object: mesh (mm), ``points`` sampled on its surface, diameter and symmetries."""

    obj_id: int
    vertices: np.ndarray
    faces: np.ndarray
    points: np.ndarray
    diameter: float
    symmetries_discrete: list[np.ndarray] = field(default_factory=list)
    symmetries_continuous: list[dict[str, Any]] = field(default_factory=list)

    @property
    def symmetric(self) -> bool:
        """Whether the object has any symmetry (ADD-S is then its pose error)."""
        return bool(self.symmetries_discrete or self.symmetries_continuous)


def read_models_info(root: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """``models/models_info.json`` keyed by integer object id."""
    path = Path(root) / MODELS_DIR / MODELS_INFO
    if not path.is_file():
        raise FileNotFoundError(
            f"BOP models info not found: {path} does not exist.\n  To get a BOP dataset, "
            f"{_HOW_TO_GET}."
        )
    return {int(k): v for k, v in json.loads(path.read_text()).items()}


def load_model(
    root: str | os.PathLike, obj_id: int, num_points: int = 500, info: dict | None = None
) -> ObjectModel:
    """Mesh, ``num_points`` surface points (seeded by the id) and ``models_info`` entry of one
    object; the diameter is computed from the mesh when ``models_info`` lacks it."""
    path = model_path(root, obj_id)
    if not path.is_file():
        raise FileNotFoundError(f"BOP model of object {obj_id} not found: {path}")
    vertices, faces = read_ply(path)
    info = info if info is not None else read_models_info(root).get(obj_id, {})
    discrete = [
        np.asarray(s, dtype=np.float64).reshape(4, 4) for s in info.get("symmetries_discrete", [])
    ]
    return ObjectModel(
        obj_id=obj_id,
        vertices=vertices,
        faces=faces,
        points=sample_surface(vertices, faces, num_points, seed=obj_id),
        diameter=float(info["diameter"]) if "diameter" in info else model_diameter(vertices),
        symmetries_discrete=discrete,
        symmetries_continuous=list(info.get("symmetries_continuous", [])),
    )


def read_scene(scene: str | os.PathLike) -> tuple[dict, dict, dict | None]:
    """``(scene_camera, scene_gt, scene_gt_info or None)`` of a scene folder, keyed by str id."""
    scene = Path(scene)
    out = []
    for name in (SCENE_CAMERA, SCENE_GT):
        path = scene / name
        if not path.is_file():
            raise FileNotFoundError(f"BOP scene file missing: {path}")
        out.append(json.loads(path.read_text()))
    info = scene / SCENE_GT_INFO
    return out[0], out[1], json.loads(info.read_text()) if info.is_file() else None


# ---------------------------------------------------------------------------- Dataset


def _read_mask(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"BOP visible mask missing: {path}")
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 0


def scaled_intrinsics(K: np.ndarray, scale: float) -> np.ndarray:
    """Intrinsics of the image resized by ``scale`` (pixel centres at integer coordinates:
    ``u' + ½ = s·(u + ½)``)."""
    S = np.array([[scale, 0.0, 0.5 * (scale - 1)], [0.0, scale, 0.5 * (scale - 1)], [0, 0, 1]])
    return S @ np.asarray(K, dtype=np.float64)


class BOPDataset(Dataset):
    """Object instances of one BOP split, one per item.

    Item: ``image`` (3, S, S) in [0, 1] (scaled to the longer side ``S`` = ``image_size`` and
    zero-padded right/bottom), ``mask`` (1, S, S) the instance's visible mask, ``K`` (3, 3) of
    the scaled image, ``R`` (3, 3), ``t`` (3,) mm, ``box`` (4,) visible box ``x1, y1, x2, y2``
    in scaled pixels, ``points`` (P, 3) mm, ``diameter``, ``symmetric``, ``obj_id``,
    ``obj_index`` (position in ``obj_ids``), ``scene_id``, ``im_id``, ``inst_id``.

    Args:
        root: the dataset folder (holding ``models/`` and the split folders).
        split: split folder name, e.g. ``train_pbr``, ``test``.
        obj_ids: objects to serve (None: all in ``models_info.json``).
        image_size: side ``S`` of the served square.
        min_visib_fract: instances less visible than this are skipped (needs
            ``scene_gt_info.json``; without it every instance is kept).
        num_points: model surface points per object (losses and ADD).
        max_images: use only the first images of each scene (quick runs); None = all.
        cache: keep decoded, scaled images and masks in memory after the first read.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        obj_ids: list[int] | None = None,
        image_size: int = 64,
        min_visib_fract: float = 0.1,
        num_points: int = 500,
        max_images: int | None = None,
        cache: bool = True,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.image_size = image_size
        info = read_models_info(self.root)
        self.obj_ids = sorted(info) if obj_ids is None else sorted(int(i) for i in obj_ids)
        missing = [i for i in self.obj_ids if i not in info]
        if missing:
            raise ValueError(
                f"objects {missing} are not in {self.root / MODELS_DIR / MODELS_INFO}"
            )
        self.models = {i: load_model(self.root, i, num_points, info[i]) for i in self.obj_ids}
        self.records: list[dict[str, Any]] = []
        for sid in scene_ids(self.root, split):
            sdir = scene_dir(self.root, split, sid)
            cams, gts, infos = read_scene(sdir)
            for key in sorted(gts, key=int)[: max_images if max_images is not None else None]:
                if key not in cams:
                    raise KeyError(
                        f"image {key} of {sdir / SCENE_GT} has no entry in {SCENE_CAMERA}"
                    )
                K = np.asarray(cams[key]["cam_K"], dtype=np.float64).reshape(3, 3)
                for inst, gt in enumerate(gts[key]):
                    obj = int(gt["obj_id"])
                    gi = infos[key][inst] if infos is not None else {}
                    if obj not in self.models or gi.get("visib_fract", 1.0) < min_visib_fract:
                        continue
                    self.records.append(
                        {
                            "scene_id": sid,
                            "im_id": int(key),
                            "inst_id": inst,
                            "obj_id": obj,
                            "K": K,
                            "R": np.asarray(gt["cam_R_m2c"], dtype=np.float64).reshape(3, 3),
                            "t": np.asarray(gt["cam_t_m2c"], dtype=np.float64).reshape(3),
                            "bbox_visib": gi.get("bbox_visib"),
                        }
                    )
        self._cache: dict[tuple[int, int], tuple[torch.Tensor, float]] | None = (
            {} if cache else None
        )
        self._mask_cache: dict[tuple[int, int, int], tuple[torch.Tensor, np.ndarray]] | None = (
            {} if cache else None
        )

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, sdir: Path, sid: int, im_id: int) -> tuple[torch.Tensor, float]:
        """The scaled, padded image ``(3, S, S)`` in [0, 1] and its scale factor."""
        key = (sid, im_id)
        if self._cache is not None and key in self._cache:
            stored, scale = self._cache[key]
            return stored.float() / 255.0, scale
        with Image.open(find_image(sdir, im_id)) as im:
            rgb = np.array(im.convert("RGB"))
        scale = self.image_size / max(rgb.shape[:2])
        out = _fit(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0, scale, self.image_size)
        stored = (out.clamp(0, 1) * 255).round().to(torch.uint8)  # cache a quarter of the bytes
        if self._cache is not None:
            self._cache[key] = (stored, scale)
        return stored.float() / 255.0, scale

    def _mask_and_box(
        self, sdir: Path, rec: dict, scale: float
    ) -> tuple[torch.Tensor, np.ndarray]:
        """The instance's scaled visible mask ``(1, S, S)`` (bool) and its box in scaled pixels."""
        key = (rec["scene_id"], rec["im_id"], rec["inst_id"])
        if self._mask_cache is not None and key in self._mask_cache:
            return self._mask_cache[key]
        mask = _read_mask(mask_path(sdir, rec["im_id"], rec["inst_id"]))
        scaled = _fit(torch.from_numpy(mask).float()[None], scale, self.image_size) > 0.5
        if rec["bbox_visib"] is not None and rec["bbox_visib"][2] > 0:
            x, y, bw, bh = rec["bbox_visib"]
            box = np.array([x, y, x + bw, y + bh], dtype=np.float64) * scale
        else:
            rows, cols = np.nonzero(mask)
            box = (
                np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]) * scale
                if len(rows)
                else np.zeros(4)
            )
        if self._mask_cache is not None:
            self._mask_cache[key] = (scaled, box)
        return scaled, box

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        sdir = scene_dir(self.root, self.split, rec["scene_id"])
        image, scale = self._image(sdir, rec["scene_id"], rec["im_id"])
        mask, box = self._mask_and_box(sdir, rec, scale)
        model = self.models[rec["obj_id"]]
        return {
            "image": image,
            "mask": mask.float(),
            "K": torch.from_numpy(scaled_intrinsics(rec["K"], scale)).float(),
            "R": torch.from_numpy(rec["R"]).float(),
            "t": torch.from_numpy(rec["t"]).float(),
            "box": torch.from_numpy(box).float(),
            "points": torch.from_numpy(model.points).float(),
            "diameter": torch.tensor(model.diameter, dtype=torch.float32),
            "symmetric": torch.tensor(model.symmetric),
            "obj_id": torch.tensor(rec["obj_id"]),
            "obj_index": torch.tensor(self.obj_ids.index(rec["obj_id"])),
            "scene_id": torch.tensor(rec["scene_id"]),
            "im_id": torch.tensor(rec["im_id"]),
            "inst_id": torch.tensor(rec["inst_id"]),
        }


def _fit(chw: torch.Tensor, scale: float, size: int) -> torch.Tensor:
    """Resize ``(C, H, W)`` by ``scale`` (antialiased bilinear); zero-pad to ``(C, size, size)``"""
    h, w = chw.shape[-2:]
    nh, nw = min(size, round(h * scale)), min(size, round(w * scale))
    out = F.interpolate(
        chw[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False
    )[0]
    return F.pad(out, (0, size - nw, 0, size - nh))


# ---------------------------------------------------------------------------- DataModule


class BOPDataModule(SplitLoaders, pl.LightningDataModule):
    """Train / val / test splits of one BOP dataset (see the module docstring).

    Args:
        root: the dataset folder (``models/`` and split folders), e.g. ``<world>/bop/occaist``.
        train_split, val_split, test_split: split folder names.
        obj_ids: objects to use (None: every object in ``models_info.json``).
        image_size: network input side ``S``.
        batch_size: training batch size.
        eval_batch_size: validation / test batch size.
        num_points: model surface points per object.
        min_visib_fract: skip instances less visible than this.
        max_images: first images of each scene only (quick runs); None = all.
        cache: keep decoded images in memory.
        num_workers: DataLoader workers.
        pin_memory: DataLoader ``pin_memory``.
        shuffle: shuffle the training set.
    """

    def __init__(
        self,
        root: str,
        train_split: str = "train_dr",
        val_split: str = "test",
        test_split: str = "test",
        obj_ids: list[int] | None = None,
        image_size: int = 64,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_points: int = 500,
        min_visib_fract: float = 0.1,
        max_images: int | None = None,
        cache: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.data_train: BOPDataset | None = None
        self.data_val: BOPDataset | None = None
        self.data_test: BOPDataset | None = None

    def _dataset(self, split: str) -> BOPDataset:
        hp = self.hparams
        return BOPDataset(
            hp.root,
            split,
            obj_ids=hp.obj_ids,
            image_size=hp.image_size,
            min_visib_fract=hp.min_visib_fract,
            num_points=hp.num_points,
            max_images=hp.max_images,
            cache=hp.cache,
        )

    def setup(self, stage: str | None = None) -> None:
        root = Path(self.hparams.root)
        if not (root / MODELS_DIR / MODELS_INFO).is_file():
            raise FileNotFoundError(
                f"BOP dataset not found: {root / MODELS_DIR / MODELS_INFO} does not exist.\n"
                f"  To get one, {_HOW_TO_GET}."
            )
        warn_if_synthetic(root)
        hp = self.hparams
        if stage in (None, "fit") and self.data_train is None:
            self.data_train = self._dataset(hp.train_split)
        if stage in (None, "fit", "validate") and self.data_val is None:
            self.data_val = self._dataset(hp.val_split)
        if stage in (None, "test", "predict") and self.data_test is None:
            self.data_test = self._dataset(hp.test_split)
        for name, ds in (
            ("train", self.data_train),
            ("val", self.data_val),
            ("test", self.data_test),
        ):
            if ds is not None:
                log.info(
                    "bop %s (%s): %d instances of objects %s", name, ds.split, len(ds), ds.obj_ids
                )
