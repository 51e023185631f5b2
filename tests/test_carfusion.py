"""CarFusion reader: gt parsing, hull boxes, sequences, multi-view targets, flip swap, COCO."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from occaist.data.carfusion import (
    CarFusionDataModule,
    hull_box,
    match_sequences,
    read_gt_file,
    stable_image_id,
)
from occaist.data.keypoints import FLIP_PERMUTATION, LATERAL_AXIS
from occaist.geometry.multiview import project

IMAGE_W, IMAGE_H = 160, 120
#: a box-shaped car, 14 keypoints in the occaist car frame (x forward, y up, z right)
BASE_SHAPE = np.array(
    [[1.2, 0.3, 0.8], [1.2, 0.3, -0.8], [-1.2, 0.3, 0.8], [-1.2, 0.3, -0.8],
     [1.9, 0.7, 0.6], [1.9, 0.7, -0.6], [-1.9, 0.8, 0.6], [-1.9, 0.8, -0.6],
     [-1.9, 0.4, 0.0], [0.5, 1.4, 0.6], [0.5, 1.4, -0.6], [-0.9, 1.4, 0.6],
     [-0.9, 1.4, -0.6], [0.0, 0.8, 0.0]]
)  # fmt: skip


def _camera(center: np.ndarray, focal: float = 90.0) -> np.ndarray:
    forward = -center / np.linalg.norm(center)
    up = np.array([0.0, 1.0, 0.0])
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    K = np.array([[focal, 0, IMAGE_W / 2], [0, focal, IMAGE_H / 2], [0, 0, 1]])
    return K @ np.concatenate([R, (-R @ center)[:, None]], axis=1)


def _three_cams() -> tuple[torch.Tensor, ...]:
    """The fixture's three cameras as float64 tensors."""
    centers = [np.array([9.0, 4.0, 2.0]), np.array([2.0, 5.0, 9.0]), np.array([-8.0, 4.5, 4.0])]
    return tuple(torch.as_tensor(_camera(c)) for c in centers)


def write_tiny_carfusion(root: Path, seed: int = 0) -> Path:
    """A tiny CarFusion-format world (the synthetic world's layout): 2 sequences x 3 cameras x
    2 frames, 2 cars each, with cameras.json, keypoints3d.json and a shape basis."""
    from occaist.geometry.shape_basis import ShapeBasis

    rng = np.random.default_rng(seed)
    (root / "SYNTHETIC").parent.mkdir(parents=True, exist_ok=True)
    (root / "SYNTHETIC").write_text("synthetic\n")
    shapes = BASE_SHAPE + rng.normal(scale=0.05, size=(40, 14, 3))
    basis = root / "shapenet_renders" / "synthetic" / "shape_basis.npz"
    basis.parent.mkdir(parents=True, exist_ok=True)
    ShapeBasis.fit(shapes, 4, FLIP_PERMUTATION, LATERAL_AXIS).save(basis)
    cams = {f"{i + 1:02d}": P.numpy() for i, P in enumerate(_three_cams())}
    for seq in ("car_butler1", "car_penn1"):
        d = root / "carfusion" / seq
        for sub in ("images_jpg", "gt", "synthetic"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        cameras, points3d = {}, {}
        for frame in ("0000", "0001"):
            points3d[frame] = {}
            for inst, offset in ((1, np.array([-1.5, 0.0, -1.0])), (2, np.array([1.5, 0.0, 1.0]))):
                pts = BASE_SHAPE + offset + rng.normal(scale=0.05, size=(14, 3))
                points3d[frame][str(inst)] = pts.tolist()
            for cam, P in cams.items():
                cameras[f"{cam}_{frame}"] = P.tolist()
                img = Image.fromarray(rng.integers(0, 60, (IMAGE_H, IMAGE_W, 3), dtype=np.uint8))
                draw = ImageDraw.Draw(img)
                lines = []
                for inst, pts in points3d[frame].items():
                    uv = project(torch.as_tensor(P), torch.as_tensor(np.array(pts))).numpy()
                    draw.rectangle([*uv.min(0), *uv.max(0)], fill=(200, 40, 40))
                    for k, (x, y) in enumerate(uv):
                        vis = 2 if rng.random() < 0.3 else 1
                        lines.append(f"{x:.3f},{y:.3f},{k + 1},{inst},{vis}")
                img.save(d / "images_jpg" / f"{cam}_{frame}.jpg")
                (d / "gt" / f"{cam}_{frame}.txt").write_text("\n".join(lines) + "\n")
        (d / "synthetic" / "cameras.json").write_text(json.dumps(cameras))
        (d / "synthetic" / "keypoints3d.json").write_text(json.dumps(points3d))
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return write_tiny_carfusion(tmp_path_factory.mktemp("occworld"))


def test_read_gt_file_vis_codes_and_out_of_frame(tmp_path) -> None:
    path = tmp_path / "01_0000.txt"
    path.write_text("10,20,1,5,1\n30,40,2,5,2\n50,45,3,5,3\n-4,10,4,5,1\n100,10,5,5,1\n")
    kps = read_gt_file(path, width=80, height=50)[5]
    assert kps.shape == (14, 3)
    assert kps[:5, 2].tolist() == [2, 1, 2, 0, 0]  # vis 1->2, 2->1, 3->2; out of frame -> 0
    assert kps[3, :2].tolist() == [-4, 10]  # coordinates kept
    assert kps[5:, 2].sum() == 0


def test_hull_box_matches_converter() -> None:
    kps = np.zeros((14, 3))
    kps[:3] = [[10, 20, 2], [50, 20, 1], [30, 60, 2]]
    box = hull_box(kps, 200, 100)
    assert np.allclose(box, [10 - 4, 20 - 4, 6 + 50, 16 + 50])
    kps[2, 2] = 0
    assert hull_box(kps, 200, 100) is None  # fewer than 3 labelled points
    kps[2, 2] = 2
    assert hull_box(kps, 45, 100)[2] == 45  # clipped to the image


def test_sequence_matching_and_stable_ids() -> None:
    avail = ["car_butler1", "car_butler2", "car_penn1", "car_penn2"]
    assert match_sequences(avail, ["butler"]) == ["car_butler1", "car_butler2"]
    assert match_sequences(avail, ["penn2"]) == ["car_penn2"]
    with pytest.raises(FileNotFoundError, match="craig"):
        match_sequences(avail, ["craig"])
    assert stable_image_id("a/b.jpg") == stable_image_id("a/b.jpg") != stable_image_id("a/c.jpg")


def _datamodule(root: Path, **kw) -> CarFusionDataModule:
    args = dict(
        root=str(root / "carfusion"),
        train_sequences=["butler"],
        test_sequences=["penn"],
        min_image_keypoints=3,
        color_jitter=0.0,
    )
    args.update(kw)
    return CarFusionDataModule(**args)


def test_multiview_targets_are_exact_reprojections(world: Path) -> None:
    dm = _datamodule(world, multiview=True, flip_prob=0.0)
    dm.setup("test")
    ds = dm.datasets["test"]
    image, target = ds[0]
    assert image.shape == (3, IMAGE_H, IMAGE_W) and image.min() >= 0 and image.max() <= 1
    rec = ds.records[0]
    assert target["keypoints"].shape == (2, 14, 3) and target["boxes"].shape == (2, 4)
    seq = world / "carfusion" / rec.sequence / "synthetic"
    pts3d = json.loads((seq / "keypoints3d.json").read_text())[rec.frame]
    X = torch.tensor([pts3d["1"], pts3d["2"]], dtype=torch.float64)
    want = project(target["camera"], X)  # (2, 14, 2)
    m = target["tri_mask"]
    assert m.any()
    assert torch.allclose(target["tri_target"][m].double(), want[m], atol=1e-3)
    assert torch.allclose(target["keypoints"][..., :2].double(), want, atol=1e-2)
    mv = target["mv_mask"]
    assert torch.equal(mv, m)
    assert target["mv_cameras"].shape == (2, 14, 2, 3, 4)


def test_flip_swaps_left_right_and_moves_camera(world: Path) -> None:
    plain = _datamodule(world, multiview=True, flip_prob=0.0)
    flipped = _datamodule(world, multiview=True, flip_prob=1.0)
    plain.setup("fit"), flipped.setup("fit")
    (_, a), (img_b, b) = plain.datasets["train"][0], flipped.datasets["train"][0]
    perm = list(FLIP_PERMUTATION)
    ka, kb = a["keypoints"], b["keypoints"]
    assert torch.equal(kb[:, :, 2], ka[:, perm, 2])
    width = img_b.shape[-1]
    mirrored = kb[:, :, 0] + ka[:, perm, 0]  # x' = c - x with c = width or width - 1
    assert torch.allclose(mirrored, mirrored[0, 0].expand_as(mirrored), atol=1e-3)
    assert abs(float(mirrored[0, 0]) - width) <= 1.0
    c = mirrored[0, 0]
    m = b["tri_mask"]
    assert torch.equal(m, a["tri_mask"][:, perm])
    assert torch.allclose(
        b["tri_target"][..., 0][m], (c - a["tri_target"][:, perm, 0])[m], atol=1e-3
    )
    # the moved camera A P projects the (relabelled) 3D points onto the flipped keypoints
    rec = flipped.datasets["train"].records[0]
    seq = world / "carfusion" / rec.sequence / "synthetic"
    pts3d = json.loads((seq / "keypoints3d.json").read_text())[rec.frame]
    X = torch.tensor([pts3d["1"], pts3d["2"]], dtype=torch.float64)[:, perm]
    assert torch.allclose(project(b["camera"], X), kb[..., :2].double(), atol=1e-2)
    assert torch.allclose(b["boxes"][:, 0], mirrored[0, 0] - a["boxes"][:, 2], atol=1e-3)


def test_trifocal_without_cameras_fails_clearly(world: Path, tmp_path) -> None:
    import shutil

    root = tmp_path / "nocam"
    shutil.copytree(world / "carfusion", root / "carfusion")
    for f in root.glob("carfusion/*/synthetic/cameras.json"):
        f.unlink()
    dm = _datamodule(root, multiview=True, require_cameras=True)
    with pytest.raises(FileNotFoundError, match="cameras"):
        dm.setup("fit")


def test_coco_conversion_round_trip(world: Path, tmp_path, repo_root) -> None:
    import importlib.util

    out = tmp_path / "ann"
    spec = importlib.util.spec_from_file_location(
        "carfusion_to_coco", repo_root / "scripts" / "carfusion_to_coco.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["--root", str(world / "carfusion"), "--out", str(out)]
    script.main([*argv, "--train", "butler", "--test", "penn"])
    coco = json.loads((out / "car_keypoints_train.json").read_text())
    assert len(coco["images"]) == 6 and len(coco["annotations"]) == 12
    img = coco["images"][0]
    assert img["id"] == stable_image_id(img["file_name"])
    dm = _datamodule(world, annotation_files={"train": str(out / "car_keypoints_train.json")})
    dm.setup("fit")
    _, t_coco = dm.datasets["train"][0]
    assert t_coco["keypoints"].shape[1:] == (14, 3)
    raw = _datamodule(world, flip_prob=0.0)
    raw.setup("fit")
    rec = dm.datasets["train"].records[0]
    raw_rec = next(r for r in raw.datasets["train"].records if r.image == rec.image)
    assert np.allclose(
        np.stack([raw_rec.boxes[i] for i in sorted(raw_rec.boxes)]),
        np.stack([rec.boxes[i] for i in sorted(rec.boxes)]),
        atol=0.01,
    )


def _convert(world: Path, out: Path, repo_root: Path) -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "carfusion_to_coco", repo_root / "scripts" / "carfusion_to_coco.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["--root", str(world / "carfusion"), "--out", str(out)]
    script.main([*argv, "--train", "butler", "--test", "penn"])
    return json.loads((out / "car_keypoints_train.json").read_text())


def test_coco_output_follows_conventions_and_scores_ap_1_against_itself(
    world: Path, tmp_path, repo_root
) -> None:
    from pycocotools.coco import COCO

    from occaist.metrics.oks import CAR_OKS_SIGMAS, coco_keypoint_ap

    coco = _convert(world, tmp_path / "ann", repo_root)
    assert {"info", "licenses", "images", "annotations", "categories"} <= set(coco)
    names, skeleton = coco["categories"][0]["keypoints"], coco["categories"][0]["skeleton"]
    first = [names[i - 1] for i in skeleton[0]]  # COCO is 1-based
    assert first == ["Right_Front_wheel", "Right_Back_wheel"] and min(min(skeleton)) == 1
    assert all(1 <= x["id"] <= 2**53 for x in coco["images"] + coco["annotations"])
    kps = [np.array(a["keypoints"], dtype=object).reshape(14, 3) for a in coco["annotations"]]
    assert all(isinstance(v, int) for k in kps for v in k[:, 2])
    assert all(x == y == 0 for k in kps for x, y, v in k if v == 0)
    COCO(str(tmp_path / "ann" / "car_keypoints_train.json"))  # pycocotools reads it
    dets = [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
        for a in coco["annotations"]
    ]
    assert coco_keypoint_ap(coco, dets)["AP"] == pytest.approx(1.0)
    moved = [dict(d, keypoints=[v + 15.0 * (i % 3 < 2) for i, v in enumerate(d["keypoints"])])
             for d in dets]  # fmt: skip
    assert coco_keypoint_ap(coco, moved)["AP"] < 0.9  # 15 px off on 60-px cars
    with pytest.raises(ValueError, match="sigmas"):
        coco_keypoint_ap(coco, dets, sigmas=CAR_OKS_SIGMAS[:12])


def test_coco_reader_per_split_roots_and_image_checks(world: Path, tmp_path, repo_root) -> None:
    """upstream's converter writes per-split roots (train/<seq>/images_jpg/...): the reader
    finds them through image_roots or the JSON's own folder, and names what is missing."""
    import shutil

    coco = _convert(world, tmp_path / "ann", repo_root)
    split = tmp_path / "split" / "train"
    shutil.copytree(world / "carfusion" / "car_butler1", split / "car_butler1")
    (split / "car_keypoints_train.json").write_text(json.dumps(coco))
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    files = {"train": str(split / "car_keypoints_train.json")}
    for kw in ({}, {"image_roots": {"train": str(split)}}):
        dm = CarFusionDataModule(
            root=str(empty), annotation_files=files, min_image_keypoints=3, **kw
        )
        records = dm._records("train")
        assert len(records) == 6 and (Path(records[0].image)).is_file()
    (split / coco["images"][0]["file_name"]).unlink()
    dm = CarFusionDataModule(root=str(empty), annotation_files=files, min_image_keypoints=3)
    with pytest.raises(FileNotFoundError, match="images_jpg"):
        dm._records("train")


def test_bad_label_rows_are_counted_named_and_skipped(tmp_path, caplog) -> None:
    from occaist.data.carfusion import LabelReport

    path = tmp_path / "03_0007.txt"
    rows = [
        "10,20,1,5,1",  # good
        "nan,nan,3,5,2",  # non-finite
        "inf,20,4,5,1",  # non-finite
        "10,20,2,5",  # 4 fields
        "10,20,15,5,1",  # keypoint id 15
        "10,abc,2,5,1",  # non-numeric
        "10,20,2,5,7",  # unknown vis code
        "11,21,1,5,1",  # duplicate of line 1
        "",  # blank lines are not rows
        "30,40,2,5,2",  # good
    ]
    path.write_text("\n".join(rows) + "\n")
    report = LabelReport()
    with caplog.at_level("WARNING"):
        kps = read_gt_file(path, width=80, height=50, report=report)[5]
    assert dict(report.counts) == {
        "non-finite": 2, "fields": 1, "keypoint id": 1, "non-numeric": 1, "vis code": 1,
        "duplicate": 1,
    }  # fmt: skip
    assert np.isfinite(kps).all()
    assert kps[:3].tolist() == [[10, 20, 2], [30, 40, 1], [0, 0, 0]]
    assert f"{path}:2 (non-finite)" in caplog.text and f"{path}:6 (non-numeric)" in caplog.text
    read_gt_file(path, width=80, height=50)  # without a report: one summary naming the file
    assert "skipped 7 bad label rows in 1 files" in caplog.text


def test_nan_label_never_reaches_a_box(world: Path, tmp_path) -> None:
    import shutil

    root = tmp_path / "nan"
    shutil.copytree(world / "carfusion", root / "carfusion")
    gt = sorted((root / "carfusion" / "car_butler1" / "gt").glob("*.txt"))[0]
    gt.write_text(gt.read_text() + "nan,nan,3,1,2\n")
    dm = _datamodule(root)
    dm.setup("fit")
    for _, target in dm.datasets["train"]:
        assert torch.isfinite(target["boxes"]).all() and torch.isfinite(target["keypoints"]).all()
