"""Stanford Cars reader: the published layout via torchvision, robust decoding, the DataModule.

``make_cars_layout`` also builds the small hand-made world the preparation tests use: scenes with
known instance masks (``synthetic/instances.json``, COCO RLE) and a few DPC-layout renders.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

from occaist.data.coco_rle import encode
from occaist.data.stanford_cars import (
    StanfordCarsDataModule,
    dataset_folder,
    list_images,
    read_image_rgb,
)

H, W = 240, 320
CATEGORIES = [{"id": 3, "name": "car"}, {"id": 8, "name": "truck"}, {"id": 1, "name": "person"}]


def _ellipse_mask(cx: float, cy: float, rx: float, ry: float, h: int = H, w: int = W):
    yy, xx = np.mgrid[:h, :w]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _box_of(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()),
            float(ys.max() + 1 - ys.min())]  # fmt: skip


#: Instances per scene kind: (mask, category id, score); the comment says which rule rejects it.
def _scene_instances(kind: str) -> list[tuple[np.ndarray, int, float]]:
    good = _ellipse_mask(160, 120, 100, 60)  # box 200x120 -> sqrt 155, fill pi/4
    if kind == "good":
        return [(good, 3, 0.95)]
    if kind == "mixed":
        two = _ellipse_mask(90, 120, 40, 30) | _ellipse_mask(230, 120, 40, 30)
        return [
            (good, 8, 0.9),  # truck: accepted
            (_ellipse_mask(40, 40, 20, 15), 3, 0.99),  # box_size
            (good, 1, 0.99),  # label
            (good, 3, 0.5),  # score
            (two, 3, 0.99),  # box 190x60 -> sqrt 107: box_size
        ]
    if kind == "occluded":
        two = _ellipse_mask(110, 120, 70, 60) | _ellipse_mask(240, 120, 50, 60)
        return [(two, 3, 0.99)]  # occlusion
    if kind == "cropped":
        return [(_ellipse_mask(60, 120, 110, 70), 3, 0.99)]  # cropping (left border)
    raise ValueError(kind)


def _paint(kind: str, rng: np.random.Generator) -> np.ndarray:
    img = rng.integers(60, 200, size=(H, W, 3)).astype(np.uint8)  # colourful background
    for mask, _, _ in _scene_instances(kind):
        img[mask] = rng.integers(0, 255, size=3)
    if kind == "good":
        img[110:115, 150:170] = 0  # absolute black on the car: colour correction must fix it
    return img


def make_renders(root: Path, n_models: int = 3, size: int = 64) -> Path:
    """A DPC-layout ``shapenet_renders`` with ``render_i.png`` RGBA ellipses of known ratio."""
    base = root / "shapenet_renders" / "renders"
    ids = [f"model{i:03d}" for i in range(n_models)]
    for i, mid in enumerate(ids):
        folder = base / "02958343" / mid
        folder.mkdir(parents=True, exist_ok=True)
        for v in range(5):
            rgba = np.zeros((size, size, 4), np.uint8)
            m = _ellipse_mask(32, 32, 14 + i + v, 9 + v, size, size)
            rgba[m] = (90, 90, 200, 255)
            Image.fromarray(rgba).save(folder / f"render_{v}.png")
    (base / "02958343_train.txt").write_text("\n".join(ids) + "\n")
    (base / "02958343_test.txt").write_text(ids[0] + "\n")
    return root / "shapenet_renders"


def make_cars_layout(root: Path, kinds: dict[str, list[str]] | None = None) -> Path:
    """A Stanford Cars folder (torchvision layout) plus ``synthetic/instances.json``."""
    kinds = kinds or {
        "train": ["good", "mixed", "occluded", "good"],
        "test": ["cropped", "good", "good"],
    }
    folder = root / "stanford_cars"
    (folder / "devkit").mkdir(parents=True, exist_ok=True)
    sio.savemat(folder / "devkit" / "cars_meta.mat",
                {"class_names": np.array(["Sedan A", "Truck B"], dtype=object)})  # fmt: skip
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for split, split_kinds in kinds.items():
        (folder / f"cars_{split}").mkdir(exist_ok=True)
        annos = []
        for j, kind in enumerate(split_kinds):
            fname = f"{j + 1:05d}.jpg"
            Image.fromarray(_paint(kind, rng)).save(folder / f"cars_{split}" / fname, quality=95)
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": f"cars_{split}/{fname}",
                           "width": W, "height": H})  # fmt: skip
            for mask, cat, score in _scene_instances(kind):
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                    "bbox": _box_of(mask), "segmentation": encode(mask.astype(np.uint8)),
                    "score": score, "model_id": f"m{len(annotations)}",
                    "pose": {"quaternion": [1.0, 0.0, 0.0, 0.0]},
                })  # fmt: skip
            annos.append((0, 0, W - 1, H - 1, 1 + j % 2, fname))
        fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
        arr = np.array(annos, dtype=[(f, "O") for f in fields])
        mat = folder / ("devkit/cars_train_annos.mat" if split == "train"
                        else "cars_test_annos_withlabels.mat")  # fmt: skip
        sio.savemat(mat, {"annotations": arr})
    side = folder / "synthetic"
    side.mkdir(exist_ok=True)
    (side / "instances.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": CATEGORIES}))  # fmt: skip
    return folder


def salt(folder: Path) -> dict[str, str]:
    """Add bad files to ``cars_train`` (and the listing); returns file name -> expected outcome."""
    train = folder / "cars_train"
    rng = np.random.default_rng(5)
    photo = rng.integers(0, 255, size=(80, 100, 3)).astype(np.uint8)
    good = train / "00001.jpg"
    data = good.read_bytes()
    (train / "90001.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    Image.fromarray(photo).convert("CMYK").save(train / "90002.jpg")
    cv2.imwrite(str(train / "90003.png"), (rng.random((80, 100, 3)) * 65535).astype(np.uint16))
    Image.fromarray(photo).convert("P").save(train / "90004.png")
    Image.fromarray(photo).convert("RGBA").save(train / "90005.png")
    Image.fromarray(photo[:10, :12]).save(train / "90006.jpg")  # tiny
    (train / "90007.jpg").write_bytes(b"")  # empty
    (train / "90008.jpg").write_bytes(b"not an image at all")
    names = [
        "90001.jpg",
        "90002.jpg",
        "90003.png",
        "90004.png",
        "90005.png",
        "90006.jpg",
        "90007.jpg",
        "90008.jpg",
        "90009.jpg",
    ]  # fmt: skip  (90009 is listed but missing)
    mat = folder / "devkit" / "cars_train_annos.mat"
    old = sio.loadmat(mat, squeeze_me=True)["annotations"]
    rows = [tuple(a[k] for k in old.dtype.names) for a in old]
    rows += [(0, 0, 1, 1, 1, n) for n in names]
    sio.savemat(mat, {"annotations": np.array(rows, dtype=old.dtype)})
    return {
        "90001.jpg": "truncated", "90002.jpg": "cmyk", "90003.png": "16bit",
        "90004.png": "palette", "90005.png": "rgba", "90006.jpg": "tiny_image",
        "90007.jpg": "empty_file", "90008.jpg": "unreadable", "90009.jpg": "missing_file",
    }  # fmt: skip


@pytest.fixture
def cars(tmp_path: Path) -> Path:
    return make_cars_layout(tmp_path)


def test_listing_merges_splits_in_order(cars: Path):
    records = list_images(cars)
    assert [r.key for r in records] == [
        "train/00001", "train/00002", "train/00003", "train/00004",
        "test/00001", "test/00002", "test/00003",
    ]  # fmt: skip
    assert records[1].class_index == 1 and records[0].class_index == 0
    assert dataset_folder(cars.parent) == cars == dataset_folder(cars)
    with pytest.raises(FileNotFoundError, match="cars_train"):
        list_images(cars.parent / "nowhere")


def test_listing_matches_torchvision_and_any_folder_name(cars: Path, tmp_path: Path):
    """Same (path, class) order as torchvision's StanfordCars; a renamed folder lists the same."""
    from torchvision.datasets import StanfordCars

    ours = [(r.path, r.class_index) for r in list_images(cars, splits=["train"])]
    assert ours == [(str(p), c) for p, c in StanfordCars(str(cars.parent), "train")._samples]
    renamed = cars.rename(tmp_path / "my_copy_of_the_cars")
    assert [r.key for r in list_images(renamed)][:2] == ["train/00001", "train/00002"]
    (renamed / "devkit" / "cars_train_annos.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"cars_train_annos\.mat"):
        list_images(renamed)


def test_listing_a_split_of_one_image(tmp_path: Path):
    folder = make_cars_layout(tmp_path, {"train": ["good", "good"], "test": ["good"]})
    assert [r.key for r in list_images(folder)] == ["train/00001", "train/00002", "test/00001"]


def test_read_image_rgb_handles_bad_files(cars: Path):
    expected = salt(cars)
    for name, outcome in expected.items():
        decoded = read_image_rgb(cars / "cars_train" / name, min_side=32)
        if outcome in ("cmyk", "16bit", "palette", "rgba"):
            assert decoded.reason is None, name
            assert outcome in decoded.notes, name
            assert decoded.rgb.dtype == np.uint8 and decoded.rgb.shape == (80, 100, 3)
        else:
            assert decoded.rgb is None and decoded.reason == outcome, name


def test_exif_orientation_applied(tmp_path: Path):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    Image.fromarray(img).save(tmp_path / "r.jpg", exif=exif, quality=100)
    decoded = read_image_rgb(tmp_path / "r.jpg")
    assert decoded.rgb.shape == (40, 20, 3)
    assert "exif_rotated" in decoded.notes
    assert decoded.rgb[:15].mean() > 200 and decoded.rgb[25:].mean() < 50  # white went on top


def test_datamodule_yields_lists(cars: Path):
    salt(cars)
    dm = StanfordCarsDataModule(str(cars), batch_size=4, num_workers=0, max_images=6)
    dm.setup()
    batches = list(dm.predict_dataloader())
    items = [it for b in batches for it in b]
    assert len(items) == 6 and [len(b) for b in batches] == [4, 2]
    assert items[0]["image"].shape == (3, H, W) and items[0]["reason"] is None
    dm_all = StanfordCarsDataModule(str(cars))
    dm_all.setup()
    reasons = {it["key"]: it["reason"] for it in dm_all.dataset}
    assert reasons["train/90001"] == "truncated" and reasons["train/90006"] == "tiny_image"
