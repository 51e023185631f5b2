"""The preparation on the shared ``tiny`` synthetic world (provided masks), and a kill + rerun."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occaist.prep.pipeline import PrepSettings, run_prep


class Killed(RuntimeError):
    """Raised by the test hook to simulate a kill."""


def _settings(world: Path, out: Path) -> PrepSettings:
    cars = world / "stanford_cars"
    s = PrepSettings(
        data_root=str(cars),
        out_dir=str(out),
        batch_size=2,
        progress=False,
        segmenter={
            "_target_": "occaist.prep.segment.ProvidedSegmenter",
            "instances_file": str(cars / "synthetic" / "instances.json"),
        },
    )
    s.ratio_fit.renders_root = str(world / "shapenet_renders")
    return s


def _snapshot(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".tmp" not in p.name
    }


@pytest.mark.slow
def test_tiny_world_prep_and_kill_rerun(tiny_world: Path, tmp_path: Path):
    ref = tmp_path / "ref"
    report = run_prep(_settings(tiny_world, ref))
    stages = report["stages"]
    assert stages["images_listed"] == stages["images_usable"] > 0
    assert stages["accepted"] > 0
    per_candidate = sum(n for rule, n in report["rejected_by_rule"].items() if rule != "grayscale")
    assert stages["candidates_detected"] == stages["accepted"] + per_candidate
    with open(ref / "manifest.csv", newline="") as fh:
        manifest = list(csv.DictReader(fh))
    assert len(manifest) == stages["accepted"] == sum(report["splits"].values())
    renders = tiny_world / "shapenet_renders" / "renders" / "02958343"
    for row in manifest:
        assert (renders / row["model_id"]).is_dir()  # synthetic sources name their model
        assert "quaternion" in row["true_pose"]
        img = np.asarray(Image.open(ref / row["split"] / f"{row['id']}.png"))
        assert img.shape == (128, 128, 4)
        assert not ((img[..., 3] > 0) & (img[..., :3].sum(-1) == 0)).any()

    out = tmp_path / "killed"
    done: list[str] = []

    def hook(event: str, key: str) -> None:
        if event == "outputs_written":
            done.append(key)
            if len(done) == 3:
                raise Killed(key)

    with pytest.raises(Killed):
        run_prep(_settings(tiny_world, out), hook=hook)
    run_prep(_settings(tiny_world, out))
    assert _snapshot(out) == _snapshot(ref)
