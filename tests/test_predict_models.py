"""occaist.predict end to end on the tiny world: a checkpoint of each model trained for a step or
two through ``occaist.tasks.train``, then ``predict`` on mixed inputs (RGB and RGBA, grayscale,
EXIF-rotated, odd sizes, one corrupt file); the result files are checked against their formats."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from occaist.predict import predict
from occaist.utils.compose import composed
from tests.helpers import write_segments
from tests.test_predict import EXIF_ORIENTATION, _read_ply

pytestmark = pytest.mark.slow

TRAIN = ["test=false", "~logger", "callbacks=model_checkpoint", "extras.num_threads=1"]
GOOD_INPUTS = 5


def _train(overrides: list[str], out: Path) -> Path:
    from occaist.tasks import train

    with composed([*overrides, *TRAIN], output_dir=out) as cfg:
        train(cfg)
    ckpt = out / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt


def _predict(overrides: list[str], out: Path) -> dict:
    args = [f"output={out}", "progress=false", "extras.num_threads=1", *overrides]
    with composed(args, config_name="predict.yaml", output_dir=out) as cfg:
        return predict(cfg)


@pytest.fixture(scope="session")
def inputs(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five usable images of different kinds and one corrupt file."""
    folder = tmp_path_factory.mktemp("inputs")
    photos = sorted((tiny_world / "stanford_cars" / "cars_test").glob("*.jpg"))
    shutil.copy(photos[0], folder / "photo.jpg")
    render = next(iter(sorted((tiny_world / "shapenet_renders").rglob("render_0.png"))))
    with Image.open(render) as im:
        im.convert("RGBA").crop((0, 10, im.width, im.height - 18)).save(folder / "render.png")
    with Image.open(photos[1]) as im:
        im.convert("L").resize((53, 37)).save(folder / "sub_gray.png")
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6
        im.convert("RGB").resize((90, 60)).save(folder / "turned.jpg", exif=exif)
    Image.fromarray(np.full((17, 11, 3), 90, np.uint8)).save(folder / "tiny.bmp")
    (folder / "broken.jpg").write_bytes(photos[2].read_bytes()[:100])
    return folder


def _input_sizes(folder: Path) -> dict[str, tuple[int, int]]:
    """(height, width) of each usable input as shown (EXIF orientation applied)."""
    sizes = {}
    for path in sorted(folder.iterdir()):
        if path.name != "broken.jpg":
            with Image.open(path) as im:
                width, height = ImageOps.exif_transpose(im).size
            sizes[path.stem] = (height, width)
    assert sizes["turned"] == (90, 60)
    return sizes


def _check_skipped(summary: dict, caplog: pytest.LogCaptureFixture) -> None:
    assert summary["predicted"] == GOOD_INPUTS and summary["skipped"] == 1
    assert summary["skipped_files"][0]["reason"] == "truncated"
    assert "broken.jpg" in caplog.text and "skipped" in caplog.text


@pytest.fixture(scope="session")
def dpc_checkpoint(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    overrides = [
        "experiment=dpc_demo_cpu",
        f"data.root={tiny_world / 'shapenet_renders'}",
        "trainer.max_steps=2",
        "trainer.max_time=null",
    ]
    return _train(overrides, tmp_path_factory.mktemp("dpc"))


def test_point_cloud_model(dpc_checkpoint, inputs, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    summary = _predict(
        ["experiment=dpc_demo_cpu", f"ckpt_path={dpc_checkpoint}", f"input={inputs}"], out
    )
    _check_skipped(summary, caplog)
    sizes = _input_sizes(inputs)
    for key, (height, width) in sizes.items():
        points = _read_ply((out / "clouds" / f"{key}.ply").read_bytes())
        assert points.shape == (2000, 3) and np.isfinite(points).all()  # dpc_demo_cpu: 2000
        pose = json.loads((out / "poses" / f"{key}.json").read_text())
        q, R = np.array(pose["quaternion_wxyz"]), np.array(pose["rotation_matrix"])
        assert abs(np.linalg.norm(q) - 1) < 1e-4 and np.allclose(R @ R.T, np.eye(3), atol=1e-4)
        with Image.open(out / "overlays" / f"{key}.png") as overlay:
            assert overlay.size == (width, height)
        with Image.open(out / "turntables" / f"{key}.gif") as gif:
            assert gif.n_frames == 12
    on_image = np.asarray(Image.open(out / "overlays" / "photo.png"), dtype=float)
    assert np.abs(on_image - np.asarray(Image.open(inputs / "photo.jpg"), dtype=float)).max() > 0

    lean = _predict(
        [
            "experiment=dpc_demo_cpu",
            f"ckpt_path={dpc_checkpoint}",
            f"input={inputs}/*.jpg",
            "limit=2",
            "save_overlays=false",
        ],
        tmp_path / "lean",
    )
    assert (lean["listed"], lean["predicted"]) == (2, 1)  # broken.jpg, photo.jpg
    assert (tmp_path / "lean" / "clouds" / "photo.ply").is_file()
    assert not (tmp_path / "lean" / "overlays").exists()
    assert not (tmp_path / "lean" / "turntables").exists()
    # dpc_demo_cpu takes the pose that fits the input's alpha; a JPEG has none (the student's)
    photo_pose = json.loads((tmp_path / "lean" / "poses" / "photo.json").read_text())
    assert photo_pose["pose_source"] == "student"
    _predict(
        ["experiment=dpc_demo_cpu", f"ckpt_path={dpc_checkpoint}", f"input={inputs}/render.png"],
        tmp_path / "rgba",
    )
    render_pose = json.loads((tmp_path / "rgba" / "poses" / "render.json").read_text())
    assert render_pose["pose_source"] == "silhouette_fit"


def test_checkpoint_of_another_model_is_refused(dpc_checkpoint, inputs, tmp_path) -> None:
    from occaist.utils.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="PointCloudPoseNet"):
        _predict(
            ["experiment=pose_dr", f"ckpt_path={dpc_checkpoint}", f"input={inputs}"], tmp_path
        )


def test_command_line(dpc_checkpoint, inputs, tmp_path, repo_root) -> None:
    out = tmp_path / "cli"
    args = ["experiment=dpc_demo_cpu", f"ckpt_path={dpc_checkpoint}", f"input={inputs}"]
    args += [f"output={out}", "extras.num_threads=1", "save_overlays=false", "num_workers=1"]
    run = subprocess.run(
        [sys.executable, str(repo_root / "predict.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=repo_root,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "broken.jpg (truncated)" in run.stdout + run.stderr
    assert len(list((out / "clouds").glob("*.ply"))) == GOOD_INPUTS
    assert (out / "predict.log").is_file()


def test_occlusion_net(tiny_world, inputs, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO)
    small = [
        "model.net.min_size=96",
        "model.net.max_size=128",
        "model.net.graph_head.encoder_hidden=16",
        "model.net.graph_head.decoder_hidden=16",
        "model.net.graph_head.hidden_3d=16",
        "model.net.box_batch_size_per_image=16",
        "model.net.box_detections_per_img=5",
    ]
    data = [f"data.root={tiny_world / 'carfusion'}", "data.num_workers=0"]
    ckpt = _train(
        ["experiment=occnet_synthetic", *data, *small, "trainer.max_steps=1"], tmp_path / "train"
    )
    out = tmp_path / "out"
    summary = _predict(
        ["experiment=occnet_synthetic", *data, f"ckpt_path={ckpt}", f"input={inputs}"], out
    )
    _check_skipped(summary, caplog)
    results = json.loads((out / "keypoints_results.json").read_text())
    images = json.loads((out / "images.json").read_text())
    assert len(images["images"]) == GOOD_INPUTS
    assert results, "an untrained detector still returns its top boxes"
    for det in results:
        assert len(det["keypoints"]) == 3 * 14 and set(det["keypoints"][2::3]) <= {1, 2}
        assert len(det["keypoint_visibility"]) == 14
    from pycocotools.coco import COCO

    loaded = COCO(str(out / "images.json")).loadRes(str(out / "keypoints_results.json"))
    assert len(loaded.anns) == len(results)
    assert {a["image_id"] for a in results} <= set(loaded.getImgIds())
    assert len(list((out / "overlays").glob("*.png"))) == GOOD_INPUTS


def test_aist(tiny_world, inputs, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO)
    prepared = write_segments(tmp_path / "prepared")
    overrides = [
        "experiment=aist_constrained",
        f"data.renders_root={tiny_world / 'shapenet_renders'}",
        f"data.prepared_root={prepared}",
        "model.generator.base_channels=4",
        "model.generator.num_blocks=1",
        "model.discriminator.base_channels=4",
        "model.res_weights=null",
        "data.image_size=32",
        "data.num_workers=0",
        "data.batch_size=1",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1",
        "+trainer.limit_val_batches=0",
        "trainer.precision=32-true",
    ]
    ckpt = _train(overrides, tmp_path / "train")
    out = tmp_path / "out"
    summary = _predict(
        ["experiment=aist_constrained", f"ckpt_path={ckpt}", f"input={inputs}"], out
    )
    _check_skipped(summary, caplog)
    for key, (height, width) in _input_sizes(inputs).items():
        with Image.open(out / "stylized" / f"{key}.png") as im:
            assert im.mode == "RGBA" and im.size == (width, height)
            alpha = np.asarray(im)[..., 3]
        if key == "render":
            with Image.open(inputs / "render.png") as source:
                assert np.array_equal(alpha, np.asarray(source)[..., 3])  # alpha kept exactly
            assert (alpha == 0).any()
        else:
            assert (alpha == 255).all()
        assert (out / "overlays" / f"{key}.png").is_file()


def test_pose_regression(tiny_world, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO)
    root = tiny_world / "bop" / "occaist"
    ckpt = _train(
        [
            "experiment=pose_dr",
            f"data.root={root}",
            "trainer.max_steps=2",
            "trainer.max_time=null",
        ],
        tmp_path / "train",
    )
    scene = sorted((root / "test").iterdir())[0]
    images = tmp_path / "scene" / scene.name
    shutil.copytree(scene, images)
    first = sorted((images / "rgb").iterdir())[0]
    (images / "rgb" / f"999999{first.suffix}").write_bytes(first.read_bytes()[:100])
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(first, loose / "my_photo.png")

    out = tmp_path / "out"
    summary = _predict(
        ["experiment=pose_dr", f"data.root={root}", f"ckpt_path={ckpt}", f"input={images}/rgb"],
        out,
    )
    assert summary["skipped"] == 1 and "999999" in caplog.text
    rows = list(csv.DictReader(io.StringIO((out / "results_bop.csv").read_text())))
    gt = json.loads((scene / "scene_gt.json").read_text())
    expected = {(int(k), int(g["obj_id"])) for k, v in gt.items() for g in v}
    assert {(int(r["im_id"]), int(r["obj_id"])) for r in rows} == expected
    for row in rows:
        R = np.array(row["R"].split(), dtype=float)
        t = np.array(row["t"].split(), dtype=float)
        assert R.size == 9 and t.size == 3 and int(row["scene_id"]) == int(scene.name)
        assert np.allclose(R.reshape(3, 3) @ R.reshape(3, 3).T, np.eye(3), atol=1e-4)
        assert float(row["score"]) == 1.0 and float(row["time"]) >= 0
    assert len(list((out / "overlays").glob("*.png"))) == summary["predicted"]

    other = _predict(
        ["experiment=pose_dr", f"data.root={root}", f"ckpt_path={ckpt}", f"input={loose}"],
        tmp_path / "loose_out",
    )
    rows = list(
        csv.DictReader(io.StringIO((tmp_path / "loose_out" / "results_bop.csv").read_text()))
    )
    objects = json.loads((root / "models" / "models_info.json").read_text())
    assert other["predicted"] == 1 and len(rows) == len(objects)
    assert {int(r["scene_id"]) for r in rows} == {0}
