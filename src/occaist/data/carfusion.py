"""CarFusion (Reddy et al., CVPR 2018) reader and data modules for Occlusion-Net.

On-disk layout (raw release, reproduced by the synthetic world)::

    <root>/car_<seq>/images_jpg/<cam>_<frame>.jpg
    <root>/car_<seq>/gt/<cam>_<frame>.txt      lines "x,y,kp_id,instance_id,vis"
    <root>/car_<seq>/synthetic/cameras.json    {"<cam>_<frame>": 3x4}   (synthetic world only)

``kp_id`` 1..14 is keypoint index ``kp_id - 1`` (``occaist.data.keypoints.KEYPOINT_NAMES``);
``vis`` 1 visible -> COCO ``v=2``, 2 occluded -> ``v=1``, 3 -> ``v=2`` (undocumented code, as the
official converter); points outside the frame get ``v=0`` with their coordinates kept. Boxes are
the hull of the labelled points, padded 10 % left/top and 15 % right/bottom and clipped
(``hull_box``); instances with fewer than 3 labelled points are dropped. The COCO-keypoint JSON
of ``scripts/carfusion_to_coco.py`` (or the official converter) is read with ``annotation_files``.

Sequences: train ``butler, craig, fifth, morewood`` and test ``penn1, penn2`` by default; a name
matches folders ``<name>``, ``car_<name>`` and ``car_<name><digits>``. CarFusion has no
validation split: validation uses ``val_sequences`` (default: the test ones).

Multi-view targets (``multiview=true``): the other cameras of the same frame that see the same
instance give, per keypoint, ``tri_target`` (DLT triangulation from the views where it is
visible, reprojected here) and the trifocal data (``camera`` of this view, two other views'
normalised cameras and points). They need 3x4 cameras, which real CarFusion does not ship.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from occaist.data.common import warn_if_synthetic
from occaist.data.keypoints import FLIP_PERMUTATION, NUM_KEYPOINTS
from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__)

__all__ = [
    "CarFusionDataModule",
    "CarFusionDataset",
    "FrameRecord",
    "LabelReport",
    "collate_detection",
    "hull_box",
    "read_gt_file",
    "scan_carfusion",
    "stable_image_id",
]

#: CarFusion ``vis`` code -> COCO ``v``.
VIS_TO_COCO = {1: 2, 2: 1, 3: 2}
#: Padding of the hull box (official converter): 10 % left/top, width and height x 1.25.
BOX_PAD_BEFORE = 0.1
BOX_SCALE = 1.25
MIN_INSTANCE_KEYPOINTS = 3


def stable_image_id(relative_path: str) -> int:
    """A machine-independent image id in ``1 .. 2^52``: the first 52 bits of SHA-1 of the
    relative path, plus one (the official converter's ids depend on ``os.listdir`` order; ids
    above 2^53 lose digits in JSON readers that parse numbers as doubles)."""
    return int(hashlib.sha1(relative_path.encode()).hexdigest()[:13], 16) + 1


class LabelReport:
    """Bad label rows met while reading ``gt/*.txt`` files: counted per reason, each one logged
    with its file and line (the first ``max_logged``), and summarised by :meth:`log_summary`.

    Reasons: ``fields`` (not 5 comma-separated fields), ``non-numeric``, ``non-finite`` (NaN or
    infinite coordinate or code), ``keypoint id`` (not an integer in 1..14), ``instance id`` (not
    an integer), ``vis code`` (not 1, 2 or 3), ``duplicate`` (the same keypoint of the same
    instance listed again; the first row is kept).
    """

    def __init__(self, max_logged: int = 20) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.files: set[str] = set()
        self.max_logged = max_logged
        self.logged = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def skip(self, path: Path, lineno: int, reason: str, line: str) -> None:
        """Count one skipped row and log it (file and 1-based line)."""
        self.counts[reason] += 1
        self.files.add(str(path))
        if self.logged < self.max_logged:
            log.warning("skipping bad label row %s:%d (%s): %r", path, lineno, reason, line)
            self.logged += 1

    def log_summary(self) -> None:
        if self.total:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
            log.warning(
                "skipped %d bad label rows in %d files (%s); files: %s",
                self.total,
                len(self.files),
                reasons,
                sorted(self.files)[:5],
            )


def _as_int(text: str) -> int | None:
    """An integer field (``"3"`` or ``"3.0"``), or None."""
    value = float(text)
    return int(value) if value.is_integer() else None


def read_gt_file(
    path: str | Path, width: int, height: int, report: LabelReport | None = None
) -> dict[int, np.ndarray]:
    """Parse one ``gt/<cam>_<frame>.txt``: ``{instance_id: (K, 3) float [x, y, v_coco]}``.

    Unlisted keypoints are ``(0, 0, 0)``; points with ``x <= 0``, ``x > width``, ``y <= 0`` or
    ``y > height`` get ``v = 0`` and keep their coordinates (as the official converter). Rows
    that are not a valid ``x,y,kp_id,instance_id,vis`` (see :class:`LabelReport` for the
    checks, non-finite values included) are skipped, counted in ``report`` and logged with the
    file and line; without ``report`` a summary is logged for this file.
    """
    path = Path(path)
    own = report is None
    report = LabelReport() if report is None else report
    out: dict[int, np.ndarray] = {}
    seen: set[tuple[int, int]] = set()
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if parts and parts[-1] == "":
            parts = parts[:-1]  # a trailing comma
        if len(parts) != 5:
            report.skip(path, lineno, "fields", line)
            continue
        try:
            values = [float(p) for p in parts]
        except ValueError:
            report.skip(path, lineno, "non-numeric", line)
            continue
        if not all(np.isfinite(values)):
            report.skip(path, lineno, "non-finite", line)
            continue
        x, y = values[0], values[1]
        kp, inst, vis = _as_int(parts[2]), _as_int(parts[3]), _as_int(parts[4])
        if kp is None or not 1 <= kp <= NUM_KEYPOINTS:
            report.skip(path, lineno, "keypoint id", line)
            continue
        if inst is None:
            report.skip(path, lineno, "instance id", line)
            continue
        if vis not in VIS_TO_COCO:
            report.skip(path, lineno, "vis code", line)
            continue
        if (inst, kp) in seen:
            report.skip(path, lineno, "duplicate", line)
            continue
        seen.add((inst, kp))
        kps = out.setdefault(inst, np.zeros((NUM_KEYPOINTS, 3)))
        v = VIS_TO_COCO[vis]
        if x <= 0 or x > width or y <= 0 or y > height:
            v = 0
        kps[kp - 1] = (x, y, v)
    if own:
        report.log_summary()
    return out


def hull_box(keypoints: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """The official converter's box (xyxy) around the labelled keypoints ``(K, 3)``, or None
    with fewer than 3 of them: the hull's extent ``(x0, y0, w, h)`` within the frame, moved
    ``10 %`` up-left and scaled by 1.25, clipped to the image."""
    pts = keypoints[keypoints[:, 2] > 0, :2]
    if len(pts) < MIN_INSTANCE_KEYPOINTS:
        return None
    x0, y0 = np.clip(pts.min(0), 0, [width, height])
    x1, y1 = np.clip(pts.max(0), 0, [width, height])
    w, h = x1 - x0, y1 - y0
    nx0, ny0 = max(x0 - BOX_PAD_BEFORE * w, 0.0), max(y0 - BOX_PAD_BEFORE * h, 0.0)
    nx1, ny1 = min(nx0 + BOX_SCALE * w, width), min(ny0 + BOX_SCALE * h, height)
    if nx1 - nx0 < 1 or ny1 - ny0 < 1:
        return None
    return np.array([nx0, ny0, nx1, ny1])


@dataclass
class FrameRecord:
    """One image: its path relative to the root, view name, frame, size and instances."""

    image: str
    sequence: str
    cam: str
    frame: str
    width: int
    height: int
    keypoints: dict[int, np.ndarray] = field(default_factory=dict)  # instance -> (K, 3)
    boxes: dict[int, np.ndarray] = field(default_factory=dict)  # instance -> (4,) xyxy
    camera: np.ndarray | None = None  # (3, 4)

    @property
    def image_id(self) -> int:
        return stable_image_id(self.image)


def match_sequences(
    available: Sequence[str], names: Sequence[str], allow_missing: bool = False
) -> list[str]:
    """Folders of ``available`` matching the configured ``names`` (see module docstring).

    A name matching nothing is an error, or with ``allow_missing`` a warning (the synthetic
    presets hold subsets of CarFusion's sequences); matching nothing at all is always an error.
    """
    out = []
    for name in names:
        pattern = re.compile(rf"(car_)?{re.escape(name)}\d*")
        hits = [a for a in available if a == name or pattern.fullmatch(a)]
        if not hits:
            msg = f"no CarFusion sequence matches {name!r}; sequences found: {sorted(available)}"
            if not allow_missing:
                raise FileNotFoundError(msg)
            log.warning("%s (skipped: allow_missing_sequences)", msg)
        out.extend(h for h in sorted(hits) if h not in out)
    if not out:
        raise FileNotFoundError(
            f"no CarFusion sequence matches {list(names)} in {sorted(available)}"
        )
    return out


def _load_cameras(seq_dir: Path) -> dict[str, np.ndarray] | None:
    path = seq_dir / "synthetic" / "cameras.json"
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    return {k: np.asarray(v, dtype=np.float64).reshape(3, 4) for k, v in raw.items()}


def scan_carfusion(
    root: str | Path, sequences: Sequence[str], allow_missing: bool = False
) -> list[FrameRecord]:
    """Read every ``gt/*.txt`` of the matching sequences into :class:`FrameRecord` s."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"CarFusion root {root} does not exist. Request the data at "
            "http://www.cs.cmu.edu/~ILIM/projects/IM/CarFusion/ or generate the synthetic world: "
            "python -m occaist.synth --root DIR --preset demo (then data.root=DIR/carfusion)"
        )
    available = [p.name for p in root.iterdir() if (p / "gt").is_dir()]
    records = []
    report = LabelReport()
    for seq in match_sequences(available, sequences, allow_missing):
        seq_dir = root / seq
        cameras = _load_cameras(seq_dir)
        for gt in sorted((seq_dir / "gt").glob("*.txt")):
            cam, _, frame = gt.stem.partition("_")
            image_rel = f"{seq}/images_jpg/{gt.stem}.jpg"
            if not (root / image_rel).is_file():
                log.warning("skipping %s: image %s missing", gt, image_rel)
                continue
            with Image.open(root / image_rel) as im:
                width, height = im.size
            rec = FrameRecord(image_rel, seq, cam, frame, width, height)
            for inst, kps in read_gt_file(gt, width, height, report).items():
                box = hull_box(kps, width, height)
                if box is not None:
                    rec.keypoints[inst], rec.boxes[inst] = kps, box
            if cameras is not None:
                rec.camera = cameras.get(gt.stem)
            records.append(rec)
    report.log_summary()
    return records


def resolve_image_root(
    annotation_file: Path, file_names: Sequence[str], candidates: Sequence[Path]
) -> Path:
    """The folder that ``file_name`` s of a COCO JSON are relative to: the first of
    ``candidates`` (a per-split image root, the data root), then the JSON's own folder and its
    parent, holding the first image (upstream's converter writes per-split roots such as
    ``train/``, ``test/``). Raises ``FileNotFoundError`` naming every folder tried."""
    tried = [*candidates, annotation_file.parent, annotation_file.parent.parent]
    if not file_names:
        return Path(tried[0])
    for base in tried:
        if (Path(base) / file_names[0]).is_file():
            return Path(base)
    raise FileNotFoundError(
        f"{annotation_file}: image {file_names[0]!r} is under none of "
        f"{[str(t) for t in tried]}; set data.image_roots.<split> to the folder its file_name "
        "values are relative to"
    )


def check_images(root: Path, images: Sequence[dict[str, Any]], source: Path) -> None:
    """Every image of a COCO ``images`` list exists under ``root`` with the listed size (read
    from the header only); the error names the first few that do not."""
    problems = []
    for img in images:
        path = root / img["file_name"]
        if not path.is_file():
            problems.append(f"{img['file_name']}: missing")
            continue
        with Image.open(path) as im:
            if im.size != (img["width"], img["height"]):
                problems.append(
                    f"{img['file_name']}: {im.size[0]}x{im.size[1]} on disk, "
                    f"{img['width']}x{img['height']} in the JSON"
                )
    if problems:
        raise FileNotFoundError(
            f"{source}: {len(problems)} of {len(images)} images unusable under {root}: "
            + "; ".join(problems[:5])
        )


def read_coco_keypoints(
    root: str | Path, annotation_file: str | Path, image_root: str | Path | None = None
) -> list[FrameRecord]:
    """Records from a CarFusion COCO-keypoint JSON (boxes ``xywh``). ``file_name`` is resolved
    by :func:`resolve_image_root` (``image_root``, then ``root``, then the JSON's folder) and
    every image is checked (:func:`check_images`). No instance ids or cameras survive the
    conversion, so no multi-view targets. ``FrameRecord.image`` is the path relative to
    ``root`` when the image lies under it, else absolute."""
    root, annotation_file = Path(root), Path(annotation_file)
    if not annotation_file.is_file():
        raise FileNotFoundError(f"COCO annotation file {annotation_file} not found")
    data = json.loads(annotation_file.read_text())
    for key in ("images", "annotations"):
        if key not in data:
            raise ValueError(f"{annotation_file}: not a COCO file (no {key!r})")
    candidates = [Path(image_root)] if image_root is not None else []
    names = [img["file_name"] for img in data["images"]]
    base = resolve_image_root(annotation_file, names, [*candidates, root])
    check_images(base, data["images"], annotation_file)
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann)
    records = []
    for img in data["images"]:
        path = (base / img["file_name"]).resolve()
        try:
            rel = str(path.relative_to(root.resolve()))
        except ValueError:
            rel = str(path)
        seq = Path(img["file_name"]).parts[0]
        cam, _, frame = Path(img["file_name"]).stem.partition("_")
        rec = FrameRecord(rel, seq, cam, frame, img["width"], img["height"])
        for i, ann in enumerate(by_image[img["id"]]):
            x, y, w, h = ann["bbox"]
            if w < 1 or h < 1:
                continue
            rec.keypoints[i] = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
            rec.boxes[i] = np.array([x, y, x + w, y + h])
        records.append(rec)
    return records


def _multiview_targets(
    rec: FrameRecord, inst: int, views: list[FrameRecord]
) -> dict[str, np.ndarray]:
    """Per-keypoint multi-view targets of instance ``inst`` in ``rec`` (numpy, this view's
    pixels): ``tri_target`` (K, 2), ``tri_mask`` (K,), ``mv_cameras`` (K, 2, 3, 4) and
    ``mv_points`` (K, 2, 2) of two other views where the keypoint is visible, normalised by
    their larger image side, and ``mv_mask`` (K,)."""
    from occaist.geometry.multiview import project, triangulate

    k = NUM_KEYPOINTS
    out = {
        "tri_target": np.zeros((k, 2)),
        "tri_mask": np.zeros(k, dtype=bool),
        "mv_cameras": np.zeros((k, 2, 3, 4)),
        "mv_points": np.zeros((k, 2, 2)),
        "mv_mask": np.zeros(k, dtype=bool),
    }
    others = [v for v in views if v is not rec and inst in v.keypoints and v.camera is not None]
    if rec.camera is None or len(others) < 2:
        return out
    Ps = torch.as_tensor(np.stack([v.camera for v in others]))  # (V, 3, 4)
    kps = np.stack([v.keypoints[inst] for v in others])  # (V, K, 3)
    seen = kps[..., 2] == 2  # (V, K) visible in the other view
    usable = seen.sum(axis=0) >= 2  # (K,)
    if not usable.any():
        return out
    X = triangulate(  # all keypoints at once, each from the views where it is visible
        Ps.expand(k, *Ps.shape),
        torch.as_tensor(kps[..., :2]).transpose(0, 1),
        torch.as_tensor(seen).transpose(0, 1),
    )  # (K, 3); undefined where not usable
    reproj = project(torch.as_tensor(rec.camera), X[torch.as_tensor(usable)]).numpy()
    out["tri_target"][usable] = reproj
    out["tri_mask"] = usable
    scale = np.array([1.0 / max(v.width, v.height) for v in others])  # (V,)
    for j in np.flatnonzero(usable):
        for slot, i in enumerate(np.flatnonzero(seen[:, j])[:2]):
            out["mv_cameras"][j, slot] = np.diag([scale[i], scale[i], 1.0]) @ others[i].camera
            out["mv_points"][j, slot] = kps[i, j, :2] * scale[i]
    out["mv_mask"] = usable.copy()
    return out


def _affine_from_probes(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 affine map taking the three probe points ``src`` (3, 2) to ``dst`` (3, 2)."""
    a = np.concatenate([src, np.ones((3, 1))], axis=1)
    m = np.linalg.solve(a, dst).T  # (2, 3)
    return np.concatenate([m, [[0.0, 0.0, 1.0]]], axis=0)


class CarFusionDataset(Dataset):
    """Images and Keypoint R-CNN targets of CarFusion frames.

    Each item is ``(image (3, H, W) float in [0, 1], target)`` with ``boxes`` (N, 4) xyxy,
    ``labels`` (N,) ones, ``keypoints`` (N, K, 3) COCO ``v``, ``image_id``, and with
    ``multiview`` the targets of :func:`_multiview_targets` plus ``camera`` (3, 4), all
    following the augmentation (``A P`` for the camera; keypoint arrays permuted by the
    left/right ``FLIP_PERMUTATION`` when the image is mirrored).
    """

    def __init__(
        self,
        root: str | Path,
        records: list[FrameRecord],
        transform: Any = None,
        multiview: bool = False,
    ) -> None:
        self.root = Path(root)
        self.records = records
        self.transform = transform
        self.multiview = multiview
        self._views: dict[tuple[str, str], list[FrameRecord]] = defaultdict(list)
        self._mv_cache: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        for rec in records:
            self._views[(rec.sequence, rec.frame)].append(rec)

    def __len__(self) -> int:
        return len(self.records)

    def _multiview(self, index: int, inst: int) -> dict[str, np.ndarray]:
        """Multi-view targets of one instance, cached (they do not depend on augmentation)."""
        key = (index, inst)
        if key not in self._mv_cache:
            rec = self.records[index]
            views = self._views[(rec.sequence, rec.frame)]
            self._mv_cache[key] = _multiview_targets(rec, inst, views)
        return self._mv_cache[key]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rec = self.records[index]
        with Image.open(self.root / rec.image) as im:
            image = np.asarray(im.convert("RGB"))
        instances = sorted(rec.boxes)
        kps = np.stack([rec.keypoints[i] for i in instances]).reshape(-1, NUM_KEYPOINTS, 3)
        boxes = np.stack([rec.boxes[i] for i in instances]).reshape(-1, 4)
        extra: dict[str, np.ndarray] = {}
        if self.multiview:
            mv = [self._multiview(index, i) for i in instances]
            extra = {key: np.stack([m[key] for m in mv]) for key in mv[0]} if mv else {}
        camera = rec.camera
        if self.transform is not None:
            image, kps, boxes, extra, camera = self._augment(image, kps, boxes, extra, camera)
        target = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32),
            "labels": torch.ones(len(boxes), dtype=torch.int64),
            "keypoints": torch.as_tensor(kps, dtype=torch.float32),
            "image_id": torch.tensor(rec.image_id),
        }
        if self.multiview and camera is not None:
            target["camera"] = torch.as_tensor(camera, dtype=torch.float64)
            for key, value in extra.items():
                dtype = torch.bool if value.dtype == bool else torch.float32
                dtype = torch.float64 if key == "mv_cameras" else dtype
                target[key] = torch.as_tensor(value, dtype=dtype)
        tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float() / 255.0
        return tensor, target

    def _augment(self, image, kps, boxes, extra, camera):
        """Apply the albumentations pipeline to the image, keypoints, box corners, triangulated
        targets and three probe points; recover the affine ``A`` from the probes."""
        h, w = image.shape[:2]
        probes = np.array([[0.0, 0.0], [w, 0.0], [0.0, h]])
        corners = boxes[:, [0, 1, 2, 1, 0, 3, 2, 3]].reshape(-1, 2)
        tri = extra.get("tri_target", np.zeros((0, NUM_KEYPOINTS, 2))).reshape(-1, 2)
        points = np.concatenate([kps[..., :2].reshape(-1, 2), corners, tri, probes])
        res = self.transform(image=image, keypoints=points)
        image, pts = res["image"], np.asarray(res["keypoints"], dtype=np.float64)
        n_kp, n_c, n_t = kps.shape[0] * NUM_KEYPOINTS, len(corners), len(tri)
        kps = kps.copy()
        kps[..., :2] = pts[:n_kp].reshape(-1, NUM_KEYPOINTS, 2)
        c = pts[n_kp : n_kp + n_c].reshape(-1, 4, 2)
        boxes = np.concatenate([c.min(1), c.max(1)], axis=1)
        A = _affine_from_probes(probes, pts[-3:])
        if "tri_target" in extra:
            extra = dict(extra)
            extra["tri_target"] = pts[n_kp + n_c : n_kp + n_c + n_t].reshape(-1, NUM_KEYPOINTS, 2)
        if np.linalg.det(A[:2, :2]) < 0:  # mirrored: left and right keypoints swap names
            perm = list(FLIP_PERMUTATION)
            kps = kps[:, perm]
            extra = {k: v[:, perm] for k, v in extra.items()}
        if camera is not None:
            camera = A @ camera
        return image, kps, boxes, extra, camera


def collate_detection(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list, list]:
    """Lists of images and targets (torchvision detection models take lists)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def build_augmentation(flip_prob: float, color_jitter: float) -> Any:
    """Keypoint-aware albumentations pipeline: horizontal flip (left/right swap handled by the
    dataset) and colour jitter; ``remove_invisible=False`` keeps every point and its index."""
    import albumentations as A

    return A.Compose(
        [
            A.HorizontalFlip(p=flip_prob),
            A.ColorJitter(
                brightness=color_jitter,
                contrast=color_jitter,
                saturation=color_jitter,
                hue=color_jitter / 4,
                p=1.0 if color_jitter > 0 else 0.0,
            ),
        ],
        keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
    )


class CarFusionDataModule(pl.LightningDataModule):
    """CarFusion (raw ``gt/*.txt`` layout or COCO-keypoint JSON) for Keypoint R-CNN training.

    Args:
        root: the folder holding ``car_<seq>/`` (the synthetic world: ``<world>/carfusion``).
        train_sequences, test_sequences: sequence names (see module docstring).
        val_sequences: validation sequences (``None``: the test ones).
        allow_missing_sequences: warn instead of failing for names matching no folder.
        annotation_files: COCO-keypoint JSONs ``{"train": ..., "val": ..., "test": ...}``
            (relative to ``root`` or absolute) read instead of ``gt/*.txt`` when given.
        image_roots: per-split folders the JSONs' ``file_name`` s are relative to (upstream's
            converter writes ``train/``, ``test/``); default: ``root``, else the JSON's folder.
        multiview: build the multi-view targets (``triangulated``/``trifocal`` losses).
        require_cameras: fail at set-up when a training sequence has no ``cameras.json``
            (set by the ``trifocal`` experiments; real CarFusion has none).
        min_image_keypoints: drop training images with fewer labelled keypoints summed over
            instances (upstream: 10).
        max_images: cap per split (quick runs); ``None`` for all.
        flip_prob, color_jitter: training augmentation.
        batch_size, num_workers, pin_memory: loaders.
    """

    def __init__(
        self,
        root: str,
        train_sequences: list[str] = ("butler", "craig", "fifth", "morewood"),
        test_sequences: list[str] = ("penn1", "penn2"),
        val_sequences: list[str] | None = None,
        allow_missing_sequences: bool = False,
        annotation_files: dict[str, Any] | None = None,
        image_roots: dict[str, Any] | None = None,
        multiview: bool = False,
        require_cameras: bool = False,
        min_image_keypoints: int = 10,
        max_images: int | None = None,
        flip_prob: float = 0.5,
        color_jitter: float = 0.2,
        batch_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.root = Path(root)
        self.datasets: dict[str, CarFusionDataset] = {}

    def _records(self, split: str) -> list[FrameRecord]:
        hp = self.hparams
        files = hp.annotation_files or {}
        if files.get(split):
            path = Path(files[split])
            path = path if path.is_absolute() else self.root / path
            roots = hp.image_roots or {}
            image_root = roots.get(split) or roots.get("train" if split == "train" else "test")
            if image_root is not None and not Path(image_root).is_absolute():
                image_root = self.root / image_root
            records = read_coco_keypoints(self.root, path, image_root)
        else:
            names = {
                "train": hp.train_sequences,
                "val": hp.val_sequences if hp.val_sequences is not None else hp.test_sequences,
                "test": hp.test_sequences,
            }[split]
            records = scan_carfusion(self.root, list(names), hp.allow_missing_sequences)
        if split == "train" and hp.require_cameras:
            missing = sorted({r.sequence for r in records if r.camera is None})
            if missing:
                raise FileNotFoundError(
                    f"occluded_loss=trifocal needs 3x4 cameras for every view, but {missing} "
                    f"under {self.root} have no synthetic/cameras.json (real CarFusion ships "
                    "none). Use model.net.occluded_loss=annotated (experiment occnet_carfusion)."
                )
        records = [r for r in records if r.boxes]
        if split == "train":
            records = [
                r
                for r in records
                if sum(int((k[:, 2] > 0).sum()) for k in r.keypoints.values())
                >= hp.min_image_keypoints
            ]
        if hp.max_images is not None:
            records = records[: hp.max_images]
        if not records:
            raise ValueError(f"CarFusion split {split!r} under {self.root} has no usable image")
        return records

    def setup(self, stage: str | None = None) -> None:
        warn_if_synthetic(self.root)
        hp = self.hparams
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        wanted = splits.get(stage, ("train", "val", "test")) if stage else ("train", "val", "test")
        for split in wanted:
            if split in self.datasets:
                continue
            augment = (
                build_augmentation(hp.flip_prob, hp.color_jitter) if split == "train" else None
            )
            self.datasets[split] = CarFusionDataset(
                self.root, self._records(split), augment, multiview=hp.multiview
            )
            log.info("CarFusion %s: %d images", split, len(self.datasets[split]))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        hp = self.hparams
        return DataLoader(
            self.datasets[split],
            batch_size=hp.batch_size,
            shuffle=shuffle,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            collate_fn=collate_detection,
            persistent_workers=hp.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
