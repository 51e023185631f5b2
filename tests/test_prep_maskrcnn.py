"""The ``maskrcnn`` segmenter end to end with random weights (plumbing, not accuracy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from occaist.prep.pipeline import PrepSettings, run_prep
from occaist.prep.segment import MaskRCNNSegmenter
from occaist.utils.weights import MissingWeightsError
from tests.test_stanford_cars import make_cars_layout, make_renders

TINY = {"min_size": 64, "max_size": 96, "box_score_thresh": 0.0, "detections_per_img": 5}


@pytest.mark.slow
def test_maskrcnn_segmenter_random_weights_end_to_end(tmp_path: Path):
    import torch

    torch.manual_seed(0)
    seg = MaskRCNNSegmenter(weights=None, device="cpu", **TINY)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (90, 120, 3), dtype=np.uint8),
              rng.integers(0, 255, (70, 50, 3), dtype=np.uint8)]  # fmt: skip
    out = seg.segment(images, ["a.jpg", "b.jpg"])
    assert len(out) == 2
    for cands, im in zip(out, images, strict=True):
        assert len(cands) <= TINY["detections_per_img"]
        for c in cands:
            assert c.mask.shape == im.shape[:2] and c.mask.dtype == bool
            assert c.label in seg.categories and 0.0 <= c.score <= 1.0
            assert 0 <= c.box[0] <= c.box[2] <= im.shape[1]

    cars = make_cars_layout(tmp_path, {"train": ["good", "mixed"], "test": ["good", "good"]})
    renders = make_renders(tmp_path)
    s = PrepSettings(
        data_root=str(cars),
        out_dir=str(tmp_path / "out"),
        max_images=2,
        batch_size=2,
        progress=False,
        segmenter={
            "_target_": "occaist.prep.segment.MaskRCNNSegmenter",
            "weights": None,
            "device": "cpu",
            **TINY,
        },
    )
    s.ratio_fit.renders_root = str(renders)
    report = run_prep(s)
    # random weights find random things; the run must complete and account for each of them
    assert report["stages"]["images_segmented"] == 2
    detected = report["stages"]["candidates_detected"]
    assert detected == report["stages"]["accepted"] + sum(report["rejected_by_rule"].values())


def test_missing_weights_error_names_the_file(tmp_path: Path):
    missing = tmp_path / "maskrcnn.pth"
    with pytest.raises(MissingWeightsError, match=str(missing)):
        MaskRCNNSegmenter(weights=str(missing), device="cpu", **TINY)
