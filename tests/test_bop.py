"""BOP layout: the world's writer and the reader agree; real BOP datasets load; clear errors."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import binary_dilation

from occaist.data.bop import (
    BOPDataModule,
    BOPDataset,
    load_model,
    model_diameter,
    read_models_info,
    read_ply,
    scaled_intrinsics,
    write_ply,
)


def _bop(world: Path) -> Path:
    return world / "bop" / "occaist"


def test_world_writes_bop_file_names_and_three_objects(tiny_world: Path) -> None:
    root = _bop(tiny_world)
    info = read_models_info(root)
    assert sorted(info) == [1, 2, 3]
    for split in ("train_plain", "train_dr", "test"):
        for obj in (1, 2, 3):
            scene = root / split / f"{obj:06d}"
            gt = json.loads((scene / "scene_gt.json").read_text())
            assert sorted(gt, key=int) == ["0", "1", "2", "3"]
            assert (scene / "mask_visib" / "000000_000000.png").is_file()
            assert (scene / "mask" / "000003_000000.png").is_file()
    assert (root / "models" / "obj_000001.ply").is_file()
    assert info[3]["symmetries_continuous"][0]["axis"] == [0, 1, 0]
    assert "symmetries_continuous" not in info[1] and "symmetries_discrete" not in info[2]


def test_models_info_diameters_are_the_largest_vertex_distance(tiny_world: Path) -> None:
    root = _bop(tiny_world)
    for obj, entry in read_models_info(root).items():
        v, _ = read_ply(root / "models" / f"obj_{obj:06d}.ply")
        brute = max(np.linalg.norm(a - b) for a in v[::3] for b in v)  # exact pairs, some rows
        assert entry["diameter"] == pytest.approx(model_diameter(v), abs=1e-5)
        assert model_diameter(v) >= brute - 1e-9
        assert entry["size_x"] == pytest.approx(np.ptp(v[:, 0]), abs=1e-4)


def test_reader_round_trips_the_writer(tiny_world: Path) -> None:
    """Every item's pose and K are the JSON's; the model's surface projects onto its mask."""
    root = _bop(tiny_world)
    ds = BOPDataset(root, "test", image_size=128, num_points=300, cache=False)
    assert len(ds) == 12 and ds.obj_ids == [1, 2, 3]
    for i in range(len(ds)):
        item, rec = ds[i], ds.records[i]
        gt = json.loads((root / "test" / f"{rec['scene_id']:06d}" / "scene_gt.json").read_text())
        entry = gt[str(rec["im_id"])][rec["inst_id"]]
        assert item["R"].numpy() == pytest.approx(np.reshape(entry["cam_R_m2c"], (3, 3)), abs=1e-6)
        assert item["t"].numpy() == pytest.approx(np.array(entry["cam_t_m2c"]), rel=1e-6)
        assert abs(np.linalg.det(item["R"].numpy()) - 1) < 1e-5
        # 128-pixel images at image_size 128: K unchanged; vertices project into the mask
        v = ds.models[rec["obj_id"]].points
        cam = v @ item["R"].double().numpy().T + item["t"].double().numpy()
        uv = cam @ item["K"].double().numpy().T
        uv = np.round(uv[:, :2] / uv[:, 2:]).astype(int)
        mask = binary_dilation(item["mask"][0].numpy() > 0, iterations=1)
        assert mask[uv[:, 1], uv[:, 0]].mean() > 0.97
        assert item["symmetric"].item() == (rec["obj_id"] == 3)
        x1, y1, x2, y2 = item["box"].tolist()
        rows, cols = np.nonzero(item["mask"][0].numpy())
        assert (x1, y1, x2, y2) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


def test_scaled_images_keep_the_projection(tiny_world: Path) -> None:
    """At image_size 32 the scaled K still maps the model's centre inside the scaled mask."""
    ds = BOPDataset(_bop(tiny_world), "train_plain", image_size=32, num_points=100)
    for i in range(0, len(ds), 3):
        item = ds[i]
        assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (1, 32, 32)
        uv = item["K"].double() @ item["t"].double()
        u, v = (uv[:2] / uv[2]).round().long().tolist()
        assert item["mask"][0, v, u] == 1
    K = np.array([[100.0, 0, 63.5], [0, 100.0, 63.5], [0, 0, 1]])
    half = scaled_intrinsics(K, 0.5)  # the centre of a 128 image is the centre of a 64 image
    assert half[0, 2] == pytest.approx(31.5) and half[0, 0] == pytest.approx(50.0)


def _binary_ply(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """A PLY as BOP ships them: binary, with normals and colours."""
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(vertices)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property float nx\nproperty float ny\nproperty float nz\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    vdt = np.dtype(
        [(n, "<f4") for n in ("x", "y", "z", "nx", "ny", "nz")] + [(c, "u1") for c in "rgb"]
    )
    vert = np.zeros(len(vertices), vdt)
    for k, n in enumerate("xyz"):
        vert[n] = vertices[:, k]
    fdt = np.dtype([("n", "u1"), ("v", "<i4", 3)])
    face = np.zeros(len(faces), fdt)
    face["n"], face["v"] = 3, faces
    path.write_bytes(header.encode() + vert.tobytes() + face.tobytes())


def _real_like_dataset(root: Path) -> Path:
    """A BOP dataset as downloaded: binary PLYs, two objects in one image, no gt_info, .jpg."""
    verts = np.array([[0, 0, 0], [50, 0, 0], [0, 50, 0], [0, 0, 50]], dtype=np.float64)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    (root / "models").mkdir(parents=True)
    for obj in (5, 7):
        _binary_ply(root / "models" / f"obj_{obj:06d}.ply", verts, faces)
    (root / "models" / "models_info.json").write_text(
        json.dumps({"5": {"diameter": 70.71}, "7": {}})
    )
    scene = root / "test_primesense" / "000002"
    (scene / "rgb").mkdir(parents=True)
    (scene / "mask_visib").mkdir()
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(scene / "rgb" / "000010.jpg")
    for inst, (r0, c0) in enumerate(((5, 5), (20, 30))):
        m = np.zeros((48, 64), np.uint8)
        m[r0 : r0 + 10, c0 : c0 + 12] = 255
        Image.fromarray(m).save(scene / "mask_visib" / f"000010_{inst:06d}.png")
    K = [500.0, 0, 32, 0, 500.0, 24, 0, 0, 1]
    (scene / "scene_camera.json").write_text(json.dumps({"10": {"cam_K": K, "depth_scale": 0.1}}))
    gt = [
        {"obj_id": o, "cam_R_m2c": np.eye(3).ravel().tolist(), "cam_t_m2c": [0, 0, 600 + o]}
        for o in (5, 7)
    ]
    (scene / "scene_gt.json").write_text(json.dumps({"10": gt}))
    return root


def test_a_real_bop_dataset_loads_unchanged(tmp_path: Path) -> None:
    root = _real_like_dataset(tmp_path / "lm")
    v, f = read_ply(root / "models" / "obj_000005.ply")
    assert v[1] == pytest.approx([50, 0, 0]) and f.tolist()[0] == [0, 2, 1]
    ds = BOPDataset(root, "test_primesense", image_size=32, num_points=50)
    assert [r["obj_id"] for r in ds.records] == [5, 7] and len(ds) == 2
    second = ds[1]
    assert second["obj_index"].item() == 1 and second["t"][2].item() == 607
    assert (
        second["image"].shape == (3, 32, 32) and second["image"][:, 25:].abs().sum() == 0
    )  # padded
    assert second["box"].tolist() == pytest.approx([15.0, 10.0, 21.0, 15.0])  # mask box x 0.5
    assert ds.models[5].diameter == pytest.approx(70.71)
    assert ds.models[7].diameter == pytest.approx(np.sqrt(2) * 50)  # computed from the mesh
    only7 = BOPDataset(root, "test_primesense", obj_ids=[7], image_size=32)
    assert [r["inst_id"] for r in only7.records] == [1]


def test_ascii_ply_round_trip(tmp_path: Path) -> None:
    model = load_model(_real_like_dataset(tmp_path / "d"), 5, num_points=10)
    write_ply(tmp_path / "m.ply", model.vertices, model.faces)
    v, f = read_ply(tmp_path / "m.ply")
    assert v == pytest.approx(model.vertices) and np.array_equal(f, model.faces)


def test_clear_errors_name_the_missing_files(tmp_path: Path) -> None:
    root = _real_like_dataset(tmp_path / "d")
    with pytest.raises(
        FileNotFoundError, match=r"test_pbr does not exist.*'models', 'test_primesense'"
    ):
        BOPDataset(root, "test_pbr")
    (root / "test_primesense" / "000002" / "mask_visib" / "000010_000001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"mask_visib/000010_000001\.png"):
        BOPDataset(root, "test_primesense")[1]
    shutil.rmtree(root / "test_primesense" / "000002" / "rgb")
    with pytest.raises(FileNotFoundError, match=r"no image 000010"):
        BOPDataset(root, "test_primesense")[0]
    (root / "models" / "models_info.json").unlink()
    dm = BOPDataModule(str(root))
    with pytest.raises(
        FileNotFoundError, match=r"(?s)models_info\.json does not exist.*occaist\.synth"
    ):
        dm.setup("fit")


def test_datamodule_warns_on_synthetic_data(
    tiny_world: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dm = BOPDataModule(str(_bop(tiny_world)), train_split="train_dr", batch_size=5, image_size=32)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert "SYNTHETIC" in caplog.text or (_bop(tiny_world).resolve() in __import__(
        "occaist.data.common", fromlist=["_warned"])._warned)  # fmt: skip
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (5, 3, 32, 32) and batch["points"].shape == (5, 500, 3)
    assert batch["K"].dtype == torch.float32 and len(dm.data_val) == 12


def test_dr_object_colours_turn_together_and_keep_the_parts_apart() -> None:
    """The baked split's object randomisation: one hue rotation, saturation and brightness for
    the whole object, so the box's prints stay apart (an independent random colour per material
    would make the box look the same as its half turn)."""
    from occaist.synth.cars import HEADLIGHT, PAINT, TAILLIGHT, TYRE
    from occaist.synth.writers.bop import _own_albedo, random_object_colours

    rng = np.random.default_rng(0)
    own = _own_albedo(2)
    draws = np.stack([random_object_colours(rng, 2) for _ in range(40)])  # (40, M, 3)
    assert np.allclose(draws[:, TYRE], draws[:, TYRE].mean(-1, keepdims=True))  # grey stays grey
    # one brightness for all parts: each unclipped part's mean is the own mean times one factor
    unclipped = ((draws > 0) & (draws < 1)).all(-1)  # (40, M)
    brightness = draws.mean(-1) / own.mean(-1)
    checked = 0
    for factors, ok in zip(brightness, unclipped, strict=True):
        if ok.sum() >= 3:
            assert np.allclose(factors[ok], factors[ok][0], rtol=1e-6)
            checked += 1
    assert checked > 20
    paint, tail = draws[:, PAINT], draws[:, TAILLIGHT]
    assert (np.abs(paint - tail).sum(-1) > 0.02).all()  # the blue and the red face stay apart
    hue = paint / paint.sum(-1, keepdims=True)
    assert hue.std(0).max() > 0.1  # ... while their colours change between images
    assert np.array_equal(
        random_object_colours(np.random.default_rng(3), 1),
        random_object_colours(np.random.default_rng(3), 1),
    )
    assert draws[:, HEADLIGHT].min() >= 0
