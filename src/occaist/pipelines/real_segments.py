"""Prepared real segments as a DPC-layout root: the point-cloud model evaluates them unchanged.

``python -m occaist.prep`` writes ``<prepared>/{train,test}/<id>.png`` (RGBA, normalised to the
renders' size) and ``manifest.csv``. For sources from the synthetic world the manifest carries each
segment's ``model_id`` and true camera pose, which the thesis never had for its real images. This
module writes one single-view "model" per segment in the ShapeNet-renders layout::

    <out>/renders/02958343/<segment id>/render_0.png   the segment (alpha = its mask)
    <out>/renders/02958343/<segment id>/camera_0.mat   pos from the true azimuth/elevation/distance
    <out>/renders/02958343_test.txt                     the segment ids
    <out>/gt/downsampled/02958343/<segment id>.mat      the car's GT cloud (copied)

so that ``ShapeNetRendersDataModule(root=<out>, num_views=1)`` yields the real test set with
Chamfer and pose ground truth, and ``mask`` is the real segmentation for the mask-XOR metric.
Segments without a model id (real Stanford Cars) get no camera/GT and are skipped with a count.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import scipy.io
import torch

from occaist.data.shapenet_renders import CAR_SYNSET
from occaist.geometry.camera import (
    blender_extrinsic_from_quaternion,
    campos_from_azimuth_elevation,
    quaternion_from_campos,
)
from occaist.utils.io import atomic_path, write_text_atomic
from occaist.utils.logging import get_logger

log = get_logger(__name__)


def write_real_as_dpc(
    prepared_root: str | Path,
    renders_root: str | Path,
    out: str | Path,
    split: str = "test",
    synset: str = CAR_SYNSET,
) -> dict[str, int]:
    """Write the ``split`` segments of ``prepared_root`` as a DPC-layout root at ``out``.

    Args:
        prepared_root: output folder of ``python -m occaist.prep`` (holds ``manifest.csv``).
        renders_root: the synthetic ``shapenet_renders`` root whose GT clouds the segments'
            ``model_id`` refer to.
        out: the root to write (created; existing files are overwritten atomically).
        split: which prepared split to convert.

    Returns:
        counts: ``written`` and ``skipped_no_pose`` (segments without model id or pose).
    """
    prepared_root, renders_root, out = Path(prepared_root), Path(renders_root), Path(out)
    manifest = prepared_root / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: run `python -m occaist.prep` first")
    with manifest.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == split]
    ids: list[str] = []
    skipped = 0
    for row in sorted(rows, key=lambda r: r["id"]):
        annotation = json.loads(row["true_pose"]) if row.get("true_pose") else {}
        pose = annotation.get("pose") if isinstance(annotation, dict) else None
        gt = renders_root / "gt" / "downsampled" / synset / f"{row['model_id']}.mat"
        if not row.get("model_id") or not pose or not gt.is_file():
            skipped += 1
            continue
        seg_id = row["id"]
        model_dir = out / "renders" / synset / seg_id
        model_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(model_dir / "render_0.png") as tmp:
            shutil.copyfile(prepared_root / split / f"{seg_id}.png", tmp)
        pos = campos_from_azimuth_elevation(
            torch.tensor(float(pose["azimuth_deg"]), dtype=torch.float64),
            torch.tensor(float(pose["elevation_deg"]), dtype=torch.float64),
            float(pose["distance"]),
        )
        extrinsic = blender_extrinsic_from_quaternion(quaternion_from_campos(pos))
        with atomic_path(model_dir / "camera_0.mat") as tmp:
            scipy.io.savemat(
                tmp, {"extrinsic": extrinsic.numpy(), "pos": pos.numpy().reshape(1, 3)}
            )
        gt_out = out / "gt" / "downsampled" / synset / f"{seg_id}.mat"
        gt_out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(gt_out) as tmp:
            shutil.copyfile(gt, tmp)
        ids.append(seg_id)
    if not ids:
        raise RuntimeError(
            f"no {split} segment of {prepared_root} has a model id, pose and GT cloud; the real "
            "test set with ground truth exists only for synthetic-world sources"
        )
    write_text_atomic(out / "renders" / f"{synset}_{split}.txt", "\n".join(ids) + "\n")
    log.info("real segments as DPC root: %d written, %d skipped (no pose/GT)", len(ids), skipped)
    return {"written": len(ids), "skipped_no_pose": skipped}


def masks_of(root: str | Path, synset: str = CAR_SYNSET) -> dict[str, np.ndarray]:
    """``{segment id: alpha > 0}`` of a root written by :func:`write_real_as_dpc` (for plots)."""
    from PIL import Image

    out = {}
    for png in sorted(Path(root).glob(f"renders/{synset}/*/render_0.png")):
        out[png.parent.name] = np.asarray(Image.open(png))[..., 3] > 0
    return out
