"""ShapeNetRendersDataModule on the tiny synthetic world: formats, batches, errors, and the
agreement between the world's ground truth and the renderer's image convention."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from occaist.data import ShapeNetRendersDataModule
from occaist.data.shapenet_renders import (
    CAR_SYNSET,
    ShapeNetRendersDataset,
    UnreadableFileError,
    collate_models,
    find_split_file,
    read_split,
    read_view,
    split_render_files,
)
from occaist.geometry.camera import quaternion_from_campos
from occaist.geometry.point_renderer import render_point_cloud


def _renders(world: Path) -> Path:
    return world / "shapenet_renders"


def _mini_root(world: Path, dst: Path, n_models: int = 2) -> Path:
    """A copy of the first val models of the tiny world, listed as train, val and test."""
    src = _renders(world)
    ids = read_split(src, CAR_SYNSET, "val")[:n_models]
    for mid in ids:
        shutil.copytree(src / "renders" / CAR_SYNSET / mid, dst / "renders" / CAR_SYNSET / mid)
        gt = src / "gt" / "downsampled" / CAR_SYNSET / f"{mid}.mat"
        (dst / "gt" / "downsampled" / CAR_SYNSET).mkdir(parents=True, exist_ok=True)
        shutil.copy(gt, dst / "gt" / "downsampled" / CAR_SYNSET / gt.name)
    for split in ("train", "val", "test"):
        (dst / "renders" / f"{CAR_SYNSET}_{split}.txt").write_text("\n".join(ids) + "\n")
    return dst


def test_read_view_composites_on_white_and_masks_with_alpha(tiny_world: Path) -> None:
    root = _renders(tiny_world)
    mid = read_split(root, CAR_SYNSET, "train")[0]
    model_dir = root / "renders" / CAR_SYNSET / mid
    view = read_view(model_dir, 0, load_depth=True)
    rgba = np.asarray(Image.open(model_dir / "render_0.png").convert("RGBA")) / 255.0
    alpha = rgba[..., 3]
    np.testing.assert_allclose(view["mask"], alpha, atol=1e-6)
    expected = rgba[..., :3] * alpha[..., None] + (1 - alpha[..., None])
    np.testing.assert_allclose(view["rgb"], expected, atol=1e-6)
    assert (view["rgb"][alpha == 0] == 1.0).all()  # white background
    assert view["depth"].max() == pytest.approx(10.0) and view["depth"].min() < 3.0
    small = read_view(model_dir, 0, image_size=32)
    assert (
        small["rgb"].shape == (32, 32, 3) and 0 <= small["mask"].min() <= small["mask"].max() <= 1
    )


def test_split_render_files_lists_five_views_per_model(tiny_world: Path) -> None:
    root = _renders(tiny_world)
    files = split_render_files(root, "train")
    assert len(files) == 5 * len(read_split(root, CAR_SYNSET, "train"))
    assert all(f.name.startswith("render_") for f in files)


def test_datamodule_batches(tiny_world: Path) -> None:
    dm = ShapeNetRendersDataModule(
        str(_renders(tiny_world)), batch_size=2, views_per_model=3, image_size=64,
        eval_batch_size=2,
    )  # fmt: skip
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 3, 64, 64) and batch["mask"].shape == (2, 3, 1, 64, 64)
    assert batch["quaternion"].shape == (2, 3, 4)
    for views in batch["view"]:
        assert len(set(views.tolist())) == 3  # drawn without replacement
    torch.testing.assert_close(
        batch["quaternion"], quaternion_from_campos(batch["cam_pos"].double()).float()
    )
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[1] == 5 and val["view"][0].tolist() == [0, 1, 2, 3, 4]
    assert val["points"].shape[0] == 2 and (val["num_points"] > 100).all()
    n = int(val["num_points"][0])
    assert val["points"][0, :n].abs().max() < 0.5


def test_gt_cloud_rendered_with_gt_pose_overlaps_the_alpha_mask(tiny_world: Path) -> None:
    """The renderer's image convention and the world's cameras agree (not flipped, not
    mirrored): the ground-truth cloud under the ground-truth pose covers the mask."""
    ds = ShapeNetRendersDataset(_renders(tiny_world), "val", with_gt=True)
    item = ds[0]
    views = item["quaternion"].shape[0]
    sil = (
        render_point_cloud(
            item["points"][None].expand(views, -1, -1), item["quaternion"], vox_size=64, sigma=0.5
        )["silhouette"]
        > 0.5
    )
    mask = F.interpolate(item["mask"], size=(64, 64), mode="bilinear")[:, 0] > 0.5

    def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a & b).flatten(1).sum(1) / (a | b).flatten(1).sum(1)

    assert iou(sil, mask).mean() > 0.85
    assert (iou(sil, mask) > iou(sil.flip(-1), mask)).all()
    assert (iou(sil, mask) > iou(sil.flip(-2), mask)).all()


def test_cache_round_trip(tiny_world: Path, tmp_path: Path) -> None:
    root = _renders(tiny_world)
    plain = ShapeNetRendersDataset(root, "val", image_size=32)
    cached = ShapeNetRendersDataset(root, "val", image_size=32, cache_dir=tmp_path / "cache")
    first, again = cached[0], cached[0]
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 1
    ref = plain[0]
    for item in (first, again):
        torch.testing.assert_close(item["image"], ref["image"], atol=1 / 255, rtol=0)
        torch.testing.assert_close(item["mask"], ref["mask"], atol=1 / 255, rtol=0)
        torch.testing.assert_close(item["quaternion"], ref["quaternion"])


def test_clear_errors_for_missing_root_split_and_views(tiny_world: Path, tmp_path: Path) -> None:
    dm = ShapeNetRendersDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"occaist\.synth"):
        dm.setup("fit")
    root = _mini_root(tiny_world, tmp_path / "mini")
    (root / "renders" / f"{CAR_SYNSET}_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"02958343_test\.txt"):
        ShapeNetRendersDataModule(str(root)).setup("test")
    mid = read_split(root, CAR_SYNSET, "val")[0]
    (root / "renders" / CAR_SYNSET / mid / "render_4.png").unlink()
    with pytest.raises(ValueError, match=f"{mid}.*4 views.*num_views=5"):
        ShapeNetRendersDataset(root, "val")
    assert len(ShapeNetRendersDataset(root, "val", num_views=4)) == 2


def test_unreadable_image_is_skipped_and_counted(tiny_world: Path, tmp_path: Path) -> None:
    root = _mini_root(tiny_world, tmp_path / "mini")
    bad = read_split(root, CAR_SYNSET, "val")[1]
    (root / "renders" / CAR_SYNSET / bad / "render_2.png").write_bytes(b"not a png")
    ds = ShapeNetRendersDataset(root, "val", with_gt=True)
    batch = collate_models([ds[0], ds[1]])
    assert batch["model_id"] == [read_split(root, CAR_SYNSET, "val")[0]]
    assert ds.unreadable == [bad]
    assert collate_models([ds[1]]) is None


@pytest.mark.parametrize(
    "bad_file",
    ["camera_3.mat", "render_0.png", "gt"],
    ids=["empty_camera", "empty_render", "empty_gt_cloud"],
)
def test_every_empty_file_is_skipped_counted_and_named(
    tiny_world: Path, tmp_path: Path, bad_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = _mini_root(tiny_world, tmp_path / "mini")
    good, bad = read_split(root, CAR_SYNSET, "test")
    if bad_file == "gt":
        path = root / "gt" / "downsampled" / CAR_SYNSET / f"{bad}.mat"
    else:
        path = root / "renders" / CAR_SYNSET / bad / bad_file
    path.write_bytes(b"")
    dm = ShapeNetRendersDataModule(str(root), eval_batch_size=2, num_workers=0)
    dm.setup("test")
    with caplog.at_level("WARNING"):
        batches = list(dm.test_dataloader())  # the test loop's reads: no exception
    assert [b["model_id"] for b in batches] == [[good]]
    assert dm.data_test.unreadable == [bad]
    (record,) = dm.skipped()
    assert record["file"] == str(path) and "empty" in record["reason"]
    assert str(path) in caplog.text and "1 model(s) skipped" in caplog.text
    with caplog.at_level("WARNING"):
        dm.teardown("test")
    assert f"test/{bad}: {path}" in caplog.text


def test_read_view_names_a_corrupt_camera_file(tiny_world: Path, tmp_path: Path) -> None:
    root = _mini_root(tiny_world, tmp_path / "mini")
    model_dir = root / "renders" / CAR_SYNSET / read_split(root, CAR_SYNSET, "val")[0]
    (model_dir / "camera_1.mat").write_bytes(b"garbage" * 20)
    with pytest.raises(UnreadableFileError, match=r"camera_1\.mat") as err:
        read_view(model_dir, 1)
    assert err.value.path == model_dir / "camera_1.mat"
    assert isinstance(err.value, OSError)  # callers catching OSError keep working


def test_split_files_in_two_folders_must_agree(
    tiny_world: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _mini_root(tiny_world, tmp_path / "mini")
    renders_copy = root / "renders" / f"{CAR_SYNSET}_val.txt"
    (root / "splits").mkdir()
    splits_copy = root / "splits" / f"{CAR_SYNSET}_val.txt"
    splits_copy.write_text(renders_copy.read_text() + "\n")  # same ids, one more blank line
    with caplog.at_level("INFO"):
        assert find_split_file(root, CAR_SYNSET, "val") == renders_copy
    assert str(renders_copy) in caplog.text and str(splits_copy) in caplog.text
    splits_copy.write_text(renders_copy.read_text().splitlines()[0] + "\n")  # one id fewer
    with pytest.raises(ValueError, match="two different split files") as err:
        read_split(root, CAR_SYNSET, "val")
    assert str(renders_copy) in str(err.value) and str(splits_copy) in str(err.value)
