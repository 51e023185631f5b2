"""The whole preparation with provided masks: outputs, counts, kill + rerun, bad input, shards."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occaist.prep.pipeline import PrepSettings, run_prep
from occaist.prep.ratio_fit import render_ratio
from tests.test_stanford_cars import make_cars_layout, make_renders, salt


class Killed(RuntimeError):
    """Raised by the test hook to simulate a kill."""


def _settings(cars: Path, renders: Path, out: Path, **kw) -> PrepSettings:
    s = PrepSettings(
        data_root=str(cars),
        out_dir=str(out),
        batch_size=3,
        progress=False,
        segmenter={
            "_target_": "occaist.prep.segment.ProvidedSegmenter",
            "instances_file": str(cars / "synthetic" / "instances.json"),
        },
        **kw,
    )
    s.ratio_fit.renders_root = str(renders)
    return s


def _snapshot(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".tmp" not in p.name
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("prepworld")
    return make_cars_layout(root), make_renders(root)


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory) -> tuple[Path, dict]:
    cars, renders = world
    out = tmp_path_factory.mktemp("ref") / "out"
    report = run_prep(_settings(cars, renders, out))
    return out, report


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_pipeline_outputs(world, reference):
    out, report = reference
    manifest = _csv(out / "manifest.csv")
    rejections = _csv(out / "rejections.csv")
    # 4 "good" scenes + the truck of "mixed" pass; occluded, cropped and 4 of mixed are rejected
    assert report["stages"] == {
        "images_listed": 7,
        "images_usable": 7,
        "images_segmented": 7,
        "candidates_detected": 11,
        "after_segmentation_filters": 7,
        "after_cleaning": 5,
        "accepted": 5,
    }
    rules = {r["rule"] for r in rejections}
    assert sorted(r["rule"] for r in rejections) == sorted(
        ["box_size", "box_size", "label", "score", "occlusion", "cropping"]
    )
    assert rules <= set(report["rejected_by_rule"])
    assert report["rejected_by_rule"]["box_size"] == 2
    assert len(manifest) == 5 and {m["label"] for m in manifest} == {"car", "truck"}
    assert sum(report["splits"].values()) == 5
    for row in manifest:
        png = out / row["split"] / f"{row['id']}.png"
        img = np.asarray(Image.open(png))
        assert img.shape == (128, 128, 4) and img.dtype == np.uint8
        # colour correction: no black car pixel; background transparent black
        assert not ((img[..., 3] > 0) & (img[..., :3].sum(-1) == 0)).any()
        assert (img[img[..., 3] == 0, :3] == 0).all()
        ratio = np.count_nonzero(img[..., 3]) / np.count_nonzero(img[..., 3] == 0)
        assert float(row["ratio_after"]) == pytest.approx(ratio, abs=1e-6)
        assert row["model_id"].startswith("m") and "quaternion" in row["true_pose"]
    # sampled ratios come from the synthetic fit; normalised ratios follow them
    fit = json.loads((out / "ratio_fit.json").read_text())
    assert fit["count"] == 15 and fit["split"] == "train"
    brute = [render_ratio(p) for p in sorted((world[1] / "renders").rglob("render_*.png"))]
    assert fit["mean"] == pytest.approx(np.mean(brute)) and fit["std"] == pytest.approx(
        np.std(brute)
    )
    sampled = np.array([float(m["ratio_sampled"]) for m in manifest])
    after = np.array([float(m["ratio_after"]) for m in manifest])
    assert np.abs(after - sampled).max() < 0.05
    assert (out / "figures" / "ratio_before.png").stat().st_size > 1000
    assert (out / "figures" / "ratio_after.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize(("event", "at"), [("outputs_written", 2), ("committed", 4)])
def test_kill_and_rerun_gives_identical_outputs(world, reference, tmp_path, event, at):
    cars, renders = world
    ref_out, _ = reference
    out = tmp_path / "out"
    seen: list[str] = []

    def hook(ev: str, key: str) -> None:
        if ev == event:
            seen.append(key)
            if len(seen) == at:
                raise Killed(key)

    with pytest.raises(Killed):
        run_prep(_settings(cars, renders, out), hook=hook)
    assert not (out / "manifest.csv").exists()
    run_prep(_settings(cars, renders, out))
    assert _snapshot(out) == _snapshot(ref_out)
    # a third run changes nothing and has nothing to do
    calls: list[str] = []
    run_prep(_settings(cars, renders, out), hook=lambda ev, key: calls.append(key))
    assert calls == [] and _snapshot(out) == _snapshot(ref_out)


@pytest.mark.slow
def test_shards_then_aggregate(world, reference, tmp_path):
    cars, renders = world
    ref_out, _ = reference
    out = tmp_path / "out"
    assert run_prep(_settings(cars, renders, out, shard="1/2")) is None  # incomplete
    report = run_prep(_settings(cars, renders, out, shard="0/2"))
    assert report is not None
    ref = _snapshot(ref_out)
    mine = _snapshot(out)
    # batches differ between shardings, but provided masks do not depend on batches
    assert mine == ref


@pytest.mark.slow
def test_changed_settings_are_refused(world, reference, tmp_path):
    cars, renders = world
    out = tmp_path / "out"
    s = _settings(cars, renders, out, max_images=1)
    run_prep(s)
    s2 = _settings(cars, renders, out, max_images=1, seed=1)
    with pytest.raises(ValueError, match="seed"):
        run_prep(s2)


@pytest.mark.slow
def test_a_run_that_committed_nothing_does_not_lock_its_out_dir(world, tmp_path):
    """A first run with a wrong ratio-fit folder fails; the corrected rerun must go through."""
    cars, renders = world
    out = tmp_path / "out"
    wrong = _settings(cars, renders, out, max_images=1)
    wrong.ratio_fit.renders_root = str(tmp_path / "no_renders_here")
    with pytest.raises(FileNotFoundError):
        run_prep(wrong)
    assert run_prep(_settings(cars, renders, out, max_images=1)) is not None


@pytest.mark.slow
def test_salted_folder_counts_bad_input(tmp_path):
    cars = make_cars_layout(tmp_path, {"train": ["good", "mixed"], "test": ["good", "good"]})
    renders = make_renders(tmp_path)
    expected = salt(cars)
    # a zero-size box on the good image
    inst_file = cars / "synthetic" / "instances.json"
    inst = json.loads(inst_file.read_text())
    zero = dict(inst["annotations"][0], id=999, bbox=[50.0, 60.0, 0.0, 30.0])
    inst["annotations"].append(zero)
    broken = next(a for a in inst["annotations"] if a["image_id"] == 2)  # cars_train/00002.jpg
    broken["segmentation"] = {"size": [3, 3], "counts": [1, 2]}  # runs do not cover the mask
    inst_file.write_text(json.dumps(inst))
    report = run_prep(_settings(cars, renders, tmp_path / "out"))
    assert report["images_unusable_by_reason"] == {
        "empty_file": 1, "missing_file": 1, "tiny_image": 1, "truncated": 1, "unreadable": 1,
        "segmentation_failed": 1,
    }  # fmt: skip
    for note in ("cmyk", "16bit", "palette", "rgba"):
        assert report["input_conversions"][note] == 1, note
    assert report["rejected_by_rule"]["zero_size_box"] == 1
    # noise images without instances are segmented with nothing found
    assert report["stages"]["images_segmented"] + report["images_grayscale"] == 3 + 4
    assert report["stages"]["images_listed"] == 4 + len(expected)
    rows = _csv(tmp_path / "out" / "rejections.csv")
    assert {r["rule"] for r in rows if r["stage"] == "input"} == {
        "empty_file", "missing_file", "tiny_image", "truncated", "unreadable",
        "segmentation_failed",
    }  # fmt: skip
    assert report["stages"]["accepted"] == 3


@pytest.mark.slow
def test_two_workers_with_progress_bar_match_reference(world, reference, tmp_path):
    cars, renders = world
    ref_out, _ = reference
    out = tmp_path / "out"
    s = _settings(cars, renders, out, workers=2, mp_context="fork")
    s.progress = True
    assert run_prep(s) is not None
    assert _snapshot(out) == _snapshot(ref_out)
