"""The tiny world in the real formats: layout, readers, and the geometric round trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import torch
from PIL import Image
from scipy import ndimage

from occaist.data import coco_rle
from occaist.data.keypoints import FLIP_PERMUTATION, LATERAL_AXIS
from occaist.geometry.camera import (
    blender_extrinsic_from_quaternion,
    camera_from_blender,
    campos_from_azimuth_elevation,
    dpc_project,
    dpc_to_pixels,
    quaternion_from_campos,
)
from occaist.geometry.quaternion import quaternion_to_rotation_matrix
from occaist.geometry.shape_basis import ShapeBasis, mirror_keypoints
from occaist.synth.context import WorldContext
from occaist.synth.presets import load_preset
from occaist.synth.writers import carfusion

SYNSET = "02958343"


def _model_ids(root: Path, split: str) -> list[str]:
    return (root / "shapenet_renders" / "splits" / f"{SYNSET}_{split}.txt").read_text().split()


def test_world_files_and_counts(tiny_world: Path):
    world = json.loads((tiny_world / "world.json").read_text())
    assert (tiny_world / "SYNTHETIC").is_file()
    assert world["preset"] == "tiny" and world["seed"] == 0 and world["generator_version"]
    counts = world["counts"]
    assert (counts["shapenet_train"], counts["shapenet_val"], counts["shapenet_test"]) == (6, 2, 2)
    assert (counts["stanford_train"], counts["stanford_test"]) == (8, 4)
    assert counts["carfusion_sequences"] == 2 and counts["carfusion_views"] == 2 * 3 * 2


def test_shapenet_layout(tiny_world: Path):
    base = tiny_world / "shapenet_renders"
    ids = {s: _model_ids(tiny_world, s) for s in ("train", "val", "test")}
    all_ids = [i for v in ids.values() for i in v]
    assert len(set(all_ids)) == 10 and all(len(i) == 32 for i in all_ids)
    for split, v in ids.items():  # the copy beside the renders lists the same ids
        assert (base / "renders" / f"{SYNSET}_{split}.txt").read_text().split() == v
    sizes = set()
    for mid in all_ids:
        folder = base / "renders" / SYNSET / mid
        assert sorted(p.name for p in folder.glob("render_*.png")) == [
            f"render_{i}.png" for i in range(5)
        ]
        rgba = Image.open(folder / "render_0.png")
        assert rgba.mode == "RGBA" and rgba.size == (128, 128)
        alpha = np.array(rgba)[..., 3]
        assert 0 < (alpha > 0).mean() < 0.6 and ((alpha > 0) & (alpha < 255)).any()
        depth = np.array(Image.open(folder / "depth_0.png"))
        assert depth.dtype in (np.uint16, np.int32) and depth.shape == (128, 128)
        assert np.all(depth[alpha == 0] == 65535)
        d = depth[alpha == 255].astype(np.float64) * 10 / 65535  # camera z = δ + 2, |δ| < 0.87
        assert d.min() > 1.13 and d.max() < 2.87
        cam = sio.loadmat(folder / "camera_0.mat")
        assert cam["extrinsic"].shape == (4, 4) and cam["pos"].size == 3
        points = sio.loadmat(base / "gt" / "downsampled" / SYNSET / f"{mid}.mat")["points"]
        assert points.dtype == np.float64 and points.ndim == 2 and points.shape[1] == 3
        assert np.abs(points).max() < 0.5
        sizes.add(len(points))
    assert len(sizes) > 1  # N varies per model
    keypoints = json.loads((base / "synthetic" / "keypoints3d.json").read_text())
    assert sorted(keypoints) == sorted(all_ids)
    assert all(np.asarray(v).shape == (14, 3) for v in keypoints.values())


def test_dpc_round_trip_gt_cloud_covers_the_mask(tiny_world: Path):
    """The GT cloud projected with the pose read back from camera_i.mat lands on the alpha mask."""
    base = tiny_world / "shapenet_renders"
    for mid in [i for s in ("train", "val", "test") for i in _model_ids(tiny_world, s)]:
        points = torch.from_numpy(
            sio.loadmat(base / "gt" / "downsampled" / SYNSET / f"{mid}.mat")["points"]
        )
        for view in range(5):
            folder = base / "renders" / SYNSET / mid
            cam = sio.loadmat(folder / f"camera_{view}.mat")
            q = quaternion_from_campos(torch.from_numpy(cam["pos"].reshape(3)))
            # The stored extrinsic is the same camera for DPC's matrix pose path.
            ours = camera_from_blender(torch.from_numpy(cam["extrinsic"]))
            torch.testing.assert_close(ours[:3, :3], quaternion_to_rotation_matrix(q))
            torch.testing.assert_close(
                ours[:3, 3], torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)
            )
            proj = dpc_project(points, q)
            row, col = dpc_to_pixels(proj[:, 1], proj[:, 2], 128, 128)
            r = np.floor(row.numpy()).astype(int)
            c = np.floor(col.numpy()).astype(int)
            assert r.min() >= 0 and c.min() >= 0 and r.max() < 128 and c.max() < 128
            alpha = np.array(Image.open(folder / f"render_{view}.png"))[..., 3]
            # Every point on the car, up to the sub-pixel rim the 2×2 supersamples miss.
            assert ndimage.binary_dilation(alpha > 0)[r, c].all()
            hit = np.zeros((128, 128), bool)
            hit[r, c] = True
            hit = ndimage.binary_closing(hit, iterations=2)  # fill the gaps between points
            mask = alpha >= 128
            iou = (hit & mask).sum() / (hit | mask).sum()
            assert iou >= 0.9, (mid, view, iou)


def test_dpc_extrinsic_of_an_exact_view():
    q = quaternion_from_campos(
        campos_from_azimuth_elevation(torch.tensor(0.0).double(), torch.tensor(0.0).double())
    )
    ext = blender_extrinsic_from_quaternion(q)
    torch.testing.assert_close(camera_from_blender(ext)[:3, 3], torch.tensor([2.0, 0, 0]).double())


def test_shape_basis_side_file(tiny_world: Path):
    base = tiny_world / "shapenet_renders" / "synthetic"
    basis = ShapeBasis.load(base / "shape_basis.npz")
    assert basis.mean.shape == (14, 3) and basis.basis.shape[1:] == (14, 3)
    mirrored = mirror_keypoints(basis.mean, FLIP_PERMUTATION, LATERAL_AXIS)
    assert np.abs(basis.mean - mirrored).max() < 1e-6
    keypoints = json.loads((base / "keypoints3d.json").read_text())
    train = np.array([keypoints[i] for i in _model_ids(tiny_world, "train")])
    recon = basis.reconstruct(basis.project(train))
    explained = basis.explained_variance_ratio.sum()
    resid = ((train - recon) ** 2).sum() / ((train - basis.mean) ** 2).sum()
    np.testing.assert_allclose(1 - resid, explained, rtol=1e-6)  # PCA on the training shapes
    assert explained > 0.9


def test_stanford_cars_layout_reads_with_torchvision(tiny_world: Path):
    from torchvision.datasets import StanfordCars

    train = StanfordCars(str(tiny_world), split="train")
    test = StanfordCars(str(tiny_world), split="test")
    assert len(train) == 8 and len(test) == 4 and len(train.classes) == 5
    image, label = train[0]
    assert 320 <= image.size[0] <= 640 and 0 <= label < 5
    annos = sio.loadmat(
        tiny_world / "stanford_cars" / "devkit" / "cars_train_annos.mat", squeeze_me=True
    )["annotations"]
    first = annos[0]
    assert 1 <= first["bbox_x1"] < first["bbox_x2"] <= image.size[0]
    assert 1 <= first["bbox_y1"] < first["bbox_y2"] <= image.size[1]


def test_stanford_instances_side_file(tiny_world: Path):
    base = tiny_world / "stanford_cars"
    coco = json.loads((base / "synthetic" / "instances.json").read_text())
    assert coco["categories"] == [{"id": 3, "name": "car", "supercategory": "vehicle"}]
    shapenet_ids = {i for s in ("train", "val", "test") for i in _model_ids(tiny_world, s)}
    images = {im["id"]: im for im in coco["images"]}
    assert len(images) == 12
    big = 0
    for ann in coco["annotations"]:
        im = images[ann["image_id"]]
        assert (base / im["file_name"]).is_file()
        mask = coco_rle.decode(ann["segmentation"])
        assert mask.shape == (im["height"], im["width"])
        assert ann["area"] == int(mask.sum()) > 0
        assert ann["bbox"] == coco_rle.to_bbox(ann["segmentation"])
        assert ann["category_id"] == 3 and ann["model_id"] in shapenet_ids
        pose = ann["pose"]
        q = torch.tensor(pose["quaternion"], dtype=torch.float64)
        torch.testing.assert_close(q.norm(), torch.tensor(1.0, dtype=torch.float64))
        if ann["id"] % 100 == 1:  # the main car: the camera looks at its centre, no roll
            pos = campos_from_azimuth_elevation(
                torch.tensor(pose["azimuth_deg"], dtype=torch.float64),
                torch.tensor(pose["elevation_deg"], dtype=torch.float64),
            )
            q_ref = quaternion_from_campos(pos)
            assert min((q - q_ref).abs().max(), (q + q_ref).abs().max()) < 1e-9
            big += ann["bbox"][2] * ann["bbox"][3] >= 128**2
    assert big >= 8  # most main cars survive the AIST size filter


def test_stanford_projection_puts_the_gt_cloud_on_the_mask(tiny_world: Path):
    """Each instance's 3×4 ``projection`` maps its model's GT cloud onto the car pixels."""
    base = tiny_world / "stanford_cars"
    coco = json.loads((base / "synthetic" / "instances.json").read_text())
    images = {im["id"]: im for im in coco["images"]}
    cars_mask: dict[int, np.ndarray] = {}
    for ann in coco["annotations"]:
        m = coco_rle.decode(ann["segmentation"]).astype(bool)
        cars_mask[ann["image_id"]] = cars_mask.get(ann["image_id"], False) | m
    gt = tiny_world / "shapenet_renders" / "gt" / "downsampled" / SYNSET
    for ann in coco["annotations"]:
        im = images[ann["image_id"]]
        points = sio.loadmat(gt / f"{ann['model_id']}.mat")["points"]
        h = np.column_stack((points, np.ones(len(points)))) @ np.asarray(ann["projection"]).T
        assert (h[:, 2] > 0).all()
        x, y = h[:, 0] / h[:, 2], h[:, 1] / h[:, 2]
        inside = (x >= 0) & (x < im["width"]) & (y >= 0) & (y < im["height"])
        r, c = y[inside].astype(int), x[inside].astype(int)
        # Points fall on car pixels (this car's, or a nearer car hiding it), up to the rim.
        on_cars = ndimage.binary_dilation(cars_mask[ann["image_id"]], iterations=2)[r, c]
        assert on_cars.mean() > 0.99, ann["id"]
        own = coco_rle.decode(ann["segmentation"]).astype(bool)
        hit = np.zeros_like(own)
        hit[r, c] = True
        # And they cover the visible pixels of the car, up to the gaps between points (their
        # spacing grows with the car's size in the photo).
        spacing = np.sqrt(own.sum() / max(int((hit & own).sum()), 1))
        grown = ndimage.binary_dilation(hit, iterations=int(np.ceil(1.5 * spacing)) + 1)
        uncovered = own & ~grown
        assert uncovered.sum() < 0.05 * own.sum(), (ann["id"], uncovered.sum() / own.sum())


def _read_gt(path: Path) -> list[tuple[float, float, int, int, int]]:
    rows = []
    for line in path.read_text().splitlines():
        x, y, kp, inst, vis = line.split(",")
        rows.append((float(x), float(y), int(kp), int(inst), int(vis)))
    return rows


def _moller_trumbore_blocked(origin, target, tri, rel_tol=1e-4):
    """Independent check: does the segment origin->target hit a triangle before the target?"""
    d = target - origin
    e1 = tri[:, 1] - tri[:, 0]
    e2 = tri[:, 2] - tri[:, 0]
    p = np.cross(d, e2)
    det = np.einsum("tc,tc->t", e1, p)
    ok = np.abs(det) > 1e-14
    inv = 1.0 / np.where(ok, det, 1.0)
    s = origin - tri[:, 0]
    u = np.einsum("tc,tc->t", s, p) * inv
    qv = np.cross(s, e1)
    v = (qv @ d) * inv
    t = np.einsum("tc,tc->t", e2, qv) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0) & (t < 1 - rel_tol)
    return bool(hit.any())


def test_carfusion_layout_reprojection_and_visibility(tiny_world: Path):
    """gt/*.txt agree with the side files (0.5 px) and with ray casting against the meshes."""
    ctx = WorldContext(tiny_world, load_preset("tiny"), 0)
    checked = visible = 0
    for s, (name, _split) in enumerate(carfusion.sequences(ctx)):
        seq = tiny_world / "carfusion" / name
        cameras = json.loads((seq / "synthetic" / "cameras.json").read_text())
        kp3d = json.loads((seq / "synthetic" / "keypoints3d.json").read_text())
        assert len(cameras) == 3 * 2
        for view, P in cameras.items():
            _cam, frame = view.split("_")
            image = Image.open(seq / "images_jpg" / f"{view}.jpg")
            assert image.size == (640, 360)
            P = np.asarray(P)
            _, _, _, instances = carfusion.frame_scene(ctx, s, int(frame))
            tri = np.concatenate([car.to_world(car.mesh.triangles) for car in instances])
            M, p4 = P[:, :3], P[:, 3]
            eye = -np.linalg.solve(M, p4)
            for x, y, kp_id, inst, vis in _read_gt(seq / "gt" / f"{view}.txt"):
                X = np.asarray(kp3d[frame][str(inst)][kp_id - 1])
                np.testing.assert_allclose(
                    X, instances[inst - 1].keypoints_world[kp_id - 1], atol=1e-9
                )
                h = P @ np.append(X, 1.0)
                assert abs(h[0] / h[2] - x) < 0.5 and abs(h[1] / h[2] - y) < 0.5
                inside = 0 <= x < 640 and 0 <= y < 360
                expected = 1 if inside and not _moller_trumbore_blocked(eye, X, tri) else 2
                assert vis == expected, (name, view, kp_id, inst)
                checked += 1
                visible += vis == 1
    assert checked > 100 and 0.2 < visible / checked < 0.8


def test_readers_warn_on_the_world(tiny_world: Path):
    from occaist.data.common import warn_if_synthetic

    assert warn_if_synthetic(tiny_world / "carfusion")


@pytest.mark.parametrize("name", ["tiny", "demo", "full"])
def test_presets_load(name):
    preset = load_preset(name)
    assert preset.name == name and preset.shapenet.views == 5 and preset.shapenet.image_size == 128
