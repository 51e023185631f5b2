"""occaist.predict without a model: listing and decoding inputs, the result formats, options."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError
from PIL import Image

from occaist.data.keypoints import NUM_KEYPOINTS
from occaist.predict.base import SquareFrame
from occaist.predict.config import check_options
from occaist.predict.inputs import decode_rgba, list_inputs
from occaist.predict.writers import (
    BOP_HEADER,
    bop_csv_row,
    coco_images,
    coco_keypoint_result,
    ply_bytes,
    write_bop_csv,
    write_ply,
)

EXIF_ORIENTATION = 0x0112


def _image(path: Path, array: np.ndarray, mode: str | None = None, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path, **save)
    return path


def test_folder_glob_file_and_limit(tmp_path: Path) -> None:
    rgb = np.zeros((5, 7, 3), np.uint8)
    _image(tmp_path / "b.jpg", rgb)
    _image(tmp_path / "a.png", rgb)
    _image(tmp_path / "a.jpg", rgb)  # same stem as a.png: both keep their suffix in the key
    _image(tmp_path / "sub" / "c.JPG", rgb)
    (tmp_path / "notes.txt").write_text("not an image")
    keys = [f.key for f in list_inputs(tmp_path)]
    assert keys == ["a_jpg", "a_png", "b", "sub/c"]
    assert [f.key for f in list_inputs(tmp_path, limit=2)] == ["a_jpg", "a_png"]
    assert [f.key for f in list_inputs(f"{tmp_path}/**/*.[jJ]*")] == ["a", "b", "sub/c"]
    single = list_inputs(tmp_path / "notes.txt")  # an explicit file is taken whatever its suffix
    assert [f.key for f in single] == ["notes"]
    with pytest.raises(FileNotFoundError, match="neither a file"):
        list_inputs(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="no images"):
        list_inputs(f"{tmp_path}/*.bmp")


def test_decode_modes_alpha_and_exif(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (6, 10, 4), dtype=np.uint8)
    out, has_alpha, reason = decode_rgba(_image(tmp_path / "rgba.png", rgba, "RGBA"))
    assert reason is None and has_alpha and np.array_equal(out, rgba)

    gray = rng.integers(0, 256, (6, 10), dtype=np.uint8)
    out, has_alpha, _ = decode_rgba(_image(tmp_path / "gray.png", gray, "L"))
    assert not has_alpha and out.shape == (6, 10, 4)
    assert np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)
    assert (out[..., 3] == 255).all()

    deep = (gray.astype(np.uint16) * 256 + 7).astype(np.uint16)
    out, _, _ = decode_rgba(_image(tmp_path / "deep.png", deep))
    assert np.array_equal(out[..., 1], gray)  # 16-bit reduced to its high byte

    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # the camera was turned: show the picture rotated 90° clockwise
    rgb = np.zeros((6, 10, 3), np.uint8)
    rgb[:, :3] = 255  # a white band on the left becomes a band at the top
    out, _, reason = decode_rgba(_image(tmp_path / "turned.jpg", rgb, quality=100, exif=exif))
    assert reason is None and out.shape == (10, 6, 4)
    assert out[:3, :, 0].mean() > 200 and out[-3:, :, 0].mean() < 50


def test_unreadable_files_give_reasons(tmp_path: Path) -> None:
    good = _image(tmp_path / "good.jpg", np.full((40, 40, 3), 128, np.uint8))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:100])
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    reasons = {p.name: decode_rgba(p)[2] for p in (truncated, text, empty)}
    assert reasons == {
        "truncated.jpg": "truncated",
        "text.jpg": "unreadable",
        "empty.png": "empty_file",
    }
    assert decode_rgba(tmp_path / "gone.png")[2] == "missing_file"


def _read_ply(data: bytes) -> np.ndarray:
    """A reader written from the PLY specification, independent of the writer."""
    head, _, body = data.partition(b"end_header\n")
    lines = head.decode("ascii").splitlines()
    assert lines[0] == "ply" and lines[1] == "format binary_little_endian 1.0"
    count = next(int(line.split()[2]) for line in lines if line.startswith("element vertex"))
    props = [line.split()[1:] for line in lines if line.startswith("property")]
    assert props == [["float", "x"], ["float", "y"], ["float", "z"]]
    return np.frombuffer(body, dtype="<f4", count=count * 3).reshape(count, 3)


def test_ply_round_trip(tmp_path: Path) -> None:
    points = np.random.default_rng(1).normal(size=(123, 3)).astype(np.float32)
    write_ply(tmp_path / "cloud.ply", points)
    data = (tmp_path / "cloud.ply").read_bytes()
    assert data == ply_bytes(points)
    assert np.array_equal(_read_ply(data), points)


def test_coco_results_load_with_pycocotools(tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    rng = np.random.default_rng(2)
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in (1, 2)]
    visibility = rng.uniform(size=NUM_KEYPOINTS)
    results = [
        coco_keypoint_result(
            image_id,
            rng.uniform(0, 40, size=(NUM_KEYPOINTS, 2)),
            visibility,
            0.9,
            np.array([2.0, 3.0, 50.0, 40.0]),
            keypoint_scores=rng.uniform(size=NUM_KEYPOINTS),
        )
        for image_id in (1, 2, 2)
    ]
    (tmp_path / "images.json").write_text(json.dumps(coco_images(images)))
    (tmp_path / "results.json").write_text(json.dumps(results))
    loaded = COCO(str(tmp_path / "images.json")).loadRes(str(tmp_path / "results.json"))
    assert len(loaded.getAnnIds(imgIds=[2])) == 2
    ann = loaded.anns[loaded.getAnnIds(imgIds=[1])[0]]
    assert len(ann["keypoints"]) == 3 * NUM_KEYPOINTS
    codes = ann["keypoints"][2::3]
    assert codes == [2 if p >= 0.5 else 1 for p in visibility]
    assert ann["bbox"] == [2.0, 3.0, 48.0, 37.0] and ann["category_id"] == 1
    assert loaded.loadCats(1)[0]["keypoints"][0] == "Right_Front_wheel"


def test_bop_csv_parses(tmp_path: Path) -> None:
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    rows = [bop_csv_row(3, 17, 2, 0.75, rotation, np.array([10.0, -20.5, 800.0]), 0.012)]
    write_bop_csv(tmp_path / "r.csv", rows)
    reader = csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text()))
    assert reader.fieldnames == BOP_HEADER.split(",")
    (row,) = list(reader)
    r = np.array(row["R"].split(), dtype=float)
    t = np.array(row["t"].split(), dtype=float)
    assert r.size == 9 and np.allclose(r.reshape(3, 3), rotation)
    assert np.allclose(t, [10.0, -20.5, 800.0])
    assert (int(row["scene_id"]), int(row["im_id"]), int(row["obj_id"])) == (3, 17, 2)
    assert float(row["time"]) == pytest.approx(0.012)


def test_square_frame_pad_and_crop() -> None:
    image = np.arange(3 * 5 * 2, dtype=np.uint8).reshape(3, 5, 2)
    frame = SquareFrame(3, 5)
    square = frame.pad(image, fill=255)
    assert square.shape == (5, 5, 2) and (square[0] == 255).all() and (square[-1] == 255).all()
    assert np.array_equal(frame.crop(square), image)


def test_options_are_typed() -> None:
    good = OmegaConf.create({"ckpt_path": "a.ckpt", "input": "x", "output": "o", "limit": 3})
    assert check_options(good).limit == 3
    with pytest.raises(ValidationError, match="limit"):
        check_options(OmegaConf.create({**good, "limit": "ten"}))
